"""Issue 11, item 9: what a scorer starts dies with it, and leaves no folder behind.

Before: SIGKILL / SIGTERM of the scoring process left the sandboxed program and its
``unshare`` / launcher parents alive past their wall limit (still there 30 s later), the
``gdpo-sbx-*`` folders on disk, and the math-verify worker at 100 % CPU on a hard item.
Now the launcher watches a pidfd of the scorer and the worker has a watcher on one: both
kill their charge at once, and the launcher deletes the run's folder and cgroup itself.

The scorer here is a real subprocess: one thread runs a sandboxed ``sleep(60)`` (wall limit
30 s), another asks math-verify about ``2^{2^{2^{2^{5}}}}`` (minutes of big-integer work).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from gdpo.rewards.sandbox import sandbox_capabilities

CAPS = sandbox_capabilities()

SCORER = r"""
import threading, time
from gdpo.rewards.math import ExtractedAnswer, MathVerifier
from gdpo.rewards.sandbox import SandboxLimits, run_program

limits = SandboxLimits(cpu_seconds=5, wall_seconds=30)
threading.Thread(target=run_program, args=("import time\ntime.sleep(60)\n",), kwargs={"limits": limits}).start()
verifier = MathVerifier(timeout_s=60)
threading.Thread(target=verifier.verify, args=("1", ExtractedAnswer("2^{2^{2^{2^{5}}}}", "boxed"))).start()
time.sleep(120)
"""


def _proc_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (ppid, start time, command line) for every process now."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        table[int(name)] = (int(fields[1]), fields[19].decode(), cmdline)
    return table


def _descendants(root: int) -> dict[int, tuple[str, str]]:
    """pid -> (start time, command line) of every process below ``root``."""
    table = _proc_table()
    found, frontier = {}, [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, start, cmdline) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = (start, cmdline)
                frontier.append(pid)
    return found


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            fields = handle.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int, start: str) -> bool:
    entry = _proc_table().get(pid)
    return entry is not None and entry[1] == start


def _wait_for(condition, timeout: float, step: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(step)
    return condition()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_killing_the_scorer_ends_everything_it_started(sig, tmp_path):
    if not CAPS.pid_namespace:
        pytest.skip(f"the orphan guarantee below holds at level 'namespaces'; here {CAPS.level!r}")
    env = {**os.environ, "TMPDIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    scorer = subprocess.Popen([sys.executable, "-c", SCORER], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        def started():
            tree = _descendants(scorer.pid)
            program = any(c.endswith("-I main.py ") for _, c in tree.values())
            workers = [p for p, (_, c) in tree.items() if "_worker_main" in c]
            return tree if program and workers and _cpu_seconds(workers[0]) >= 2.5 else None

        # the worker imported math-verify (~2 s of CPU) and is deep in the hard item
        tree = _wait_for(started, timeout=90)
        assert tree, "the scorer did not start its children" + (
            f": {scorer.stderr.read().decode()[-2000:]}" if scorer.poll() is not None else "")
        tree.update(_descendants(scorer.pid))
        run_dirs = [n for n in os.listdir(tmp_path) if n.startswith("gdpo-sbx-")]
        assert run_dirs, "the sandbox run has a folder while it runs"
        scorer.send_signal(sig)
        scorer.wait(timeout=10)
        survivors = _wait_for(lambda: not [p for p, (s, _) in tree.items() if _alive(p, s)], timeout=5)
        assert survivors, f"still alive 5 s after {sig.name}: " + "; ".join(
            f"{p} {c[:80]}" for p, (s, c) in tree.items() if _alive(p, s))
        assert _wait_for(lambda: not [n for n in os.listdir(tmp_path) if n.startswith("gdpo-sbx-")], timeout=3), \
            os.listdir(tmp_path)
    finally:
        if scorer.poll() is None:
            scorer.kill()
            scorer.wait()
        scorer.stderr.close()


def test_the_sweep_removes_unheld_run_folders_and_keeps_held_ones(tmp_path, monkeypatch):
    # What a parent and launcher SIGKILLed together leave: a folder whose lock nobody holds.
    import fcntl
    import tempfile

    from gdpo.rewards import sandbox

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    stale, held, fresh = (tmp_path / f"gdpo-sbx-{name}" for name in ("stale", "held", "fresh"))
    for folder in (stale, held, fresh):
        folder.mkdir()
        (folder / "lock").write_text("")
        (folder / "config.json").write_text("{}")
    for folder in (stale, held):
        os.utime(folder, (time.time() - 10, time.time() - 10))  # older than the 2 s grace
    lock_fd = os.open(held / "lock", os.O_RDWR)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)  # a live run's parent holds its lock
    try:
        removed = sandbox.sweep_stale()
    finally:
        os.close(lock_fd)
    assert [path for path in removed if path.startswith(str(tmp_path))] == [str(stale)]  # (+ stale cgroups)
    assert not stale.exists() and held.exists() and fresh.exists()  # fresh: may be taking its lock
