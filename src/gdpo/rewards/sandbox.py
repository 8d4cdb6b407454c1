"""Run untrusted Python programs in an isolated, resource-limited child process.

Generated code is hostile until proven otherwise. :func:`run_program` runs one program with
its stdin and returns a :class:`RunResult`; :func:`sandbox_capabilities` says which isolation
holds on this host; :func:`require_level` refuses a host whose best level is too weak. How a
run is isolated (details and the per-host table in ``docs/sandbox.md``):

* The parent writes the program into a private host directory (``gdpo-sbx-*``, held by a
  ``flock`` while the run lasts), makes the run's memory cgroup where it may
  (:mod:`gdpo.rewards.sandbox_cgroup`), and starts the launcher
  (:mod:`gdpo.rewards.sandbox_launch`, run as a script) in a new session, at level
  ``namespaces`` under ``unshare --mount --net --pid --ipc --uts --fork --kill-child
  --mount-proc`` (plus ``--user --map-root-user`` when not root). It hands the launcher a
  pidfd of itself: the launcher kills the program when the parent dies.
* The launcher builds a minimal read-only root (no host directory, so no host socket, is
  reachable), forks the program's process, which joins the cgroup, sets its rlimits, drops
  to a fresh unprivileged uid when we are root, installs the seccomp filter
  (:mod:`gdpo.rewards.sandbox_seccomp`: no memfd, SysV shm, namespaces or mounts) and execs
  ``python -I main.py`` with an almost empty environment.
* The parent reads stdout/stderr with a byte cap and a wall-clock deadline; on either it
  kills the whole process group (and so the namespace). The launcher reports the wait
  status, CPU time and OOM kills on a separate pipe, then deletes the cgroup and the host
  directory itself, so a parent killed mid-run leaves nothing behind; a later run sweeps
  what a killed launcher left.

A level below ``namespaces`` (no ``unshare``, or forced with ``GDPO_SANDBOX_LEVEL``) warns
once per process with :class:`SandboxWeakLevelWarning`, naming what it no longer blocks;
``min_level`` (argument, or ``GDPO_SANDBOX_MIN_LEVEL``) refuses it with a
:class:`SandboxError` instead (:mod:`gdpo.rewards.sandbox_levels`). Types live in
:mod:`gdpo.rewards.sandbox_types`, run folders and the stale sweep in
:mod:`gdpo.rewards.sandbox_sweep`; all public names are re-exported here.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from functools import lru_cache

from gdpo.rewards import sandbox_cgroup, sandbox_seccomp
from gdpo.rewards.sandbox_launch import LAUNCH_FLAG, SAFE_PATH
from gdpo.rewards.sandbox_levels import UNBLOCKED, choose_level, refuse_below, resolve_min_level, warn_if_weak
from gdpo.rewards.sandbox_sweep import DIR_PREFIX, hold_lock, sweep_stale, sweep_stale_once
from gdpo.rewards.sandbox_types import (
    LEVELS,
    STATUSES,
    GiB,
    MiB,
    RunResult,
    SandboxCapabilities,
    SandboxError,
    SandboxLimits,
    SandboxWeakLevelWarning,
)

__all__ = [
    "LEVELS", "STATUSES", "UNBLOCKED", "GiB", "MiB", "RunResult", "SandboxCapabilities", "SandboxError",
    "SandboxLimits", "SandboxWeakLevelWarning", "require_level", "resolve_min_level", "run_program",
    "sandbox_capabilities", "sweep_stale",
]

_UNSHARE_FLAGS = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
_SANDBOX_UID_RANGE = (200_000, 1_200_000)  # fresh uid per run; no passwd entry needed
_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_launch.py")


# ---------------------------------------------------------------------------------------
# Running a program
# ---------------------------------------------------------------------------------------

def run_program(source: str, stdin: str = "", *, limits: SandboxLimits | None = None,
                files: dict[str, str] | None = None, level: str | None = None,
                min_level: str | None = None) -> RunResult:
    """Run Python ``source`` as ``main.py`` with ``stdin``; extra ``files`` sit beside it.

    ``level`` forces a weaker isolation level than detected (tests, debugging); it may not
    ask for more than the host allows. ``min_level`` (default ``GDPO_SANDBOX_MIN_LEVEL``, else
    any level) refuses to run below that level with a :class:`SandboxError`; a level below
    ``namespaces`` that is allowed warns once per process (:class:`SandboxWeakLevelWarning`).
    """
    limits = limits or SandboxLimits()
    if not isinstance(source, str) or not isinstance(stdin, str):
        raise TypeError(f"source and stdin must be str, got {type(source).__name__} and {type(stdin).__name__}")
    caps = sandbox_capabilities()
    level = choose_level(caps, level)
    refuse_below(level, resolve_min_level(min_level), caps)
    warn_if_weak(level, caps)
    return _run(source, stdin, limits, dict(files or {}), level, caps)


def require_level(min_level: str) -> SandboxCapabilities:
    """Refuse (SandboxError, before any program runs) when this host's level is below ``min_level``."""
    caps = sandbox_capabilities()
    refuse_below(choose_level(caps, None), resolve_min_level(min_level), caps)
    return caps


# ---------------------------------------------------------------------------------------
# Parent side of a run
# ---------------------------------------------------------------------------------------

def _run(source: str, stdin: str, limits: SandboxLimits, files: dict[str, str], level: str,
         caps: SandboxCapabilities | None, python: str | None = None, cgroup_parent=None,
         use_seccomp: bool | None = None) -> RunResult:
    """One run. ``caps`` None (capability probes): ``python``/``cgroup_parent``/``use_seccomp`` given."""
    if caps is not None:
        python, cgroup_parent, use_seccomp = caps.python, _cgroup_parent(caps), caps.seccomp
    python = limits.python or python
    sweep_stale_once()
    host_dir = tempfile.mkdtemp(prefix=DIR_PREFIX)
    lock_fd = hold_lock(host_dir)
    uid = _fresh_uid() if os.geteuid() == 0 and level != "rlimits" else None
    status_read, status_write = os.pipe()
    parent_fd = _own_pidfd()
    cgroup = None
    try:
        if cgroup_parent is not None:
            cgroup = sandbox_cgroup.create(cgroup_parent, os.path.basename(host_dir), limits.memory_bytes)
        config = _write_inputs(host_dir, source, stdin, files, limits, level, python, uid,
                               {"status_fd": status_write, "parent_fd": parent_fd, "cgroup": cgroup,
                                "cgroup_version": cgroup_parent.version if cgroup else None,
                                "seccomp": bool(use_seccomp)})
        start = time.monotonic()
        proc = subprocess.Popen(_launch_command(level, config), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env={"PATH": SAFE_PATH, "LANG": "C.UTF-8"},
                                start_new_session=True, pass_fds=tuple(fd for fd in (status_write, parent_fd)
                                                                       if fd >= 0), close_fds=True)
        for fd in (status_write, parent_fd):
            if fd >= 0:
                os.close(fd)
        status_write = parent_fd = -1
        outcome = _collect(proc, status_read, limits, start)
    finally:
        for fd in (status_write, parent_fd, status_read):
            if fd >= 0:
                os.close(fd)
        if uid is not None:
            _kill_uid(uid)
        if cgroup is not None:
            sandbox_cgroup.remove(cgroup)  # usually gone already: the launcher deletes it
        shutil.rmtree(host_dir, ignore_errors=True)
        os.close(lock_fd)
    return _classify(outcome, limits, level, uid)


def _cgroup_parent(caps: SandboxCapabilities):
    return sandbox_cgroup.cached_parent() if caps.memory_cap else None


def _own_pidfd() -> int:
    """A pidfd of this process for the launcher to watch (-1 where the kernel has none)."""
    try:
        return os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return -1


def _write_inputs(host_dir: str, source: str, stdin: str, files: dict[str, str], limits: SandboxLimits,
                  level: str, python: str, uid: int | None, extra: dict) -> str:
    """Write program, stdin and launcher config into ``host_dir``; return the config path."""
    for name in files:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or name in ("main.py", "lock"):
            raise ValueError(f"extra file name {name!r} must be a plain file name other than main.py")
    all_files = {"main.py": source, **files}
    with open(os.path.join(host_dir, "stdin.txt"), "wb") as handle:
        handle.write(stdin.encode("utf-8", "surrogatepass"))
    config = {
        "files": all_files, "stdin": os.path.join(host_dir, "stdin.txt"), "mounts": level == "namespaces",
        "host_dir": host_dir, "workdir": os.path.join(host_dir, "work"), "uid": uid, "python": python,
        "limits": asdict(limits), "nproc_base": _nproc_base(uid), **extra,
    }
    config_path = os.path.join(host_dir, "config.json")
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)  # ensure_ascii: lone surrogates travel as \\ud800 escapes
    if uid is not None and level != "namespaces":
        os.chmod(host_dir, 0o711)  # the uid traverses to its work dir, cannot list or read the rest
    return config_path


def _launch_command(level: str, config_path: str) -> list[str]:
    launcher = [sys.executable, "-I", "-S", _LAUNCHER, LAUNCH_FLAG, config_path]
    if level != "namespaces":
        return launcher
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [_find_unshare() or "unshare", *user, *_UNSHARE_FLAGS, *launcher]


def _find_unshare() -> str | None:
    """util-linux ``unshare`` on PATH, else in the standard places (a bare PATH must not downgrade)."""
    return shutil.which("unshare") or shutil.which("unshare", path=SAFE_PATH + ":/usr/sbin:/sbin")


@dataclass
class _Outcome:
    stdout: bytes
    stderr: bytes
    report: dict | None  # the launcher's status report
    killed_for: str | None  # "timeout" | "output_limit" | None
    wall_time: float
    launcher_rc: int | None


def _collect(proc: subprocess.Popen, status_fd: int, limits: SandboxLimits, start: float) -> _Outcome:
    """Read stdout/stderr/status with a byte cap and a deadline; kill the group on either."""
    import selectors

    out_fd, err_fd = proc.stdout.fileno(), proc.stderr.fileno()
    buffers = {out_fd: bytearray(), err_fd: bytearray(), status_fd: bytearray()}
    selector = selectors.DefaultSelector()
    for fd in buffers:
        selector.register(fd, selectors.EVENT_READ)
    deadline = start + limits.wall_seconds
    killed_for = None
    open_fds = set(buffers)
    while open_fds and killed_for is None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            killed_for = "timeout"
            break
        for key, _ in selector.select(timeout=remaining):
            chunk = os.read(key.fd, 65536)
            if not chunk:
                selector.unregister(key.fd)
                open_fds.discard(key.fd)
            buffers[key.fd] += chunk
        if len(buffers[out_fd]) + len(buffers[err_fd]) > limits.output_bytes:
            killed_for = "output_limit"
    if killed_for:
        _kill_group(proc)
    selector.close()
    rc = _wait(proc)
    wall = time.monotonic() - start
    proc.stdout.close()
    proc.stderr.close()
    cap = limits.output_bytes
    out = bytes(buffers[out_fd][:cap])
    err = bytes(buffers[err_fd][:cap - len(out)])
    return _Outcome(out, err, _parse_report(bytes(buffers[status_fd])), killed_for, wall, rc)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid
    except ProcessLookupError:
        pass


def _wait(proc: subprocess.Popen) -> int | None:
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        return proc.wait()


def _parse_report(raw: bytes) -> dict | None:
    try:
        return json.loads(raw.decode("utf-8")) if raw else None
    except ValueError:
        return None


_SYNTAX_LAST_LINE = re.compile(r"^(SyntaxError|IndentationError|TabError)\b")


def _classify(o: _Outcome, limits: SandboxLimits, level: str, uid: int | None) -> RunResult:
    out = o.stdout.decode("utf-8", errors="replace")
    err = o.stderr.decode("utf-8", errors="replace")
    result = RunResult("killed", out, err, None, o.wall_time, level=level, uid=uid,
                       truncated=o.killed_for == "output_limit")
    if o.killed_for:
        result.status = o.killed_for
        return result
    report = o.report
    if report is None:
        raise SandboxError(f"the sandbox launcher died without a report (exit {o.launcher_rc}); stderr: {err[-2000:]}")
    if "setup_error" in report:
        raise SandboxError(f"sandbox setup failed: {report['setup_error']}; see sandbox_capabilities() and "
                           "docs/sandbox.md, or force a weaker level with GDPO_SANDBOX_LEVEL")
    result.cpu_time = float(report.get("cpu_time", 0.0))
    wait_status = int(report["wait_status"])
    out_of_memory = int(report.get("oom_kills", 0)) > 0  # the run's cgroup hit memory_bytes
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        result.signal, result.returncode = sig, -sig
        cpu_spent = result.cpu_time >= limits.cpu_seconds - 0.05
        if out_of_memory:
            result.status = "memory"
        elif sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_spent) or report.get("ended_by") == "wall":
            result.status = "timeout"
        else:
            result.status = "killed"
        return result
    result.returncode = os.WEXITSTATUS(wait_status)
    result.status = "ok" if result.returncode == 0 else ("memory" if out_of_memory else _classify_error(err))
    return result


def _classify_error(stderr: str) -> str:
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if last.startswith("MemoryError"):
        return "memory"
    if _SYNTAX_LAST_LINE.match(last) and "Traceback (most recent call last)" not in stderr:
        return "compile_error"  # reported before any code ran: the interpreter's own format
    return "runtime_error"


def _fresh_uid() -> int:
    low, high = _SANDBOX_UID_RANGE
    return low + secrets.randbelow(high - low)


def _nproc_base(uid: int | None) -> int:
    """Processes already owned by the uid the program runs as (0 for a fresh uid)."""
    if uid is not None:
        return 0
    return len(_pids_of_uid(os.getuid()))


def _pids_of_uid(uid: int) -> list[int]:
    pids = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    pids.append(int(name))
            except OSError:
                continue
    return pids


def _kill_uid(uid: int) -> None:
    """SIGKILL every process of ``uid`` (``kill(-1)`` run as that uid), a few times against races."""
    for _ in range(3):
        if not _pids_of_uid(uid):
            return
        subprocess.run(["/bin/sh", "-c", "kill -9 -1"], user=uid, group=uid, extra_groups=[],
                       env={"PATH": SAFE_PATH}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd="/", check=False)


# ---------------------------------------------------------------------------------------
# Capability detection
# ---------------------------------------------------------------------------------------

_CAPS_LOCK = threading.Lock()


def sandbox_capabilities() -> SandboxCapabilities:
    """Detect the strongest isolation level that works here by running a probe program.

    Cached; thread-safe (concurrent first callers wait for one detection, not run their own).
    """
    with _CAPS_LOCK:
        return _detect_capabilities()


@lru_cache(maxsize=1)
def _detect_capabilities() -> SandboxCapabilities:
    is_root = os.geteuid() == 0
    notes: list[str] = []
    python = _program_python(is_root, notes)
    use_seccomp = sandbox_seccomp.supported()
    if not use_seccomp:
        notes.append(f"no seccomp filter for {os.uname().machine}: memfd/SysV shm/user namespaces stay open")
    cgroup_parent = _usable_cgroup_parent(notes)
    for level in LEVELS:
        if level == "uid" and not is_root:
            continue
        if level == "namespaces" and not _find_unshare():
            notes.append("util-linux `unshare` not found: no namespaces")
            continue
        problem = _probe(level, python, cgroup_parent, use_seccomp)
        if problem is not None and (cgroup_parent is not None or use_seccomp):
            if _probe(level, python, None, False) is None:  # the level works, the extras do not
                notes.append(f"cgroup/seccomp failed at level {level!r} ({problem}); running without them")
                cgroup_parent, use_seccomp, problem = None, False, None
        if problem is None:
            return _capabilities_for(level, is_root, python, notes, cgroup_parent, use_seccomp)
        notes.append(f"level {level!r} unavailable: {problem}")
    raise SandboxError("no sandbox level works on this host: " + "; ".join(notes))


sandbox_capabilities.cache_clear = _detect_capabilities.cache_clear  # type: ignore[attr-defined]


def _usable_cgroup_parent(notes: list[str]):
    parent = sandbox_cgroup.cached_parent()
    if parent is None:
        notes.append("no writable memory cgroup: memory_bytes bounds each process (RLIMIT_AS), not the run")
        return None
    try:
        sandbox_cgroup.remove(sandbox_cgroup.create(parent, f"{DIR_PREFIX}probe-{secrets.token_hex(4)}", 64 * MiB))
    except OSError as exc:
        notes.append(f"memory cgroup under {parent.path} unusable ({exc}): memory_bytes bounds each process only")
        return None
    return parent


def _capabilities_for(level: str, is_root: bool, python: str, notes: list[str], cgroup_parent,
                      use_seccomp: bool) -> SandboxCapabilities:
    namespaces = level == "namespaces"
    uid_drop = is_root and level != "rlimits"
    if not uid_drop and is_root:
        notes.append("running as root without uid drop: RLIMIT_NPROC does not apply, no process limit")
    return SandboxCapabilities(level=level, is_root=is_root, pid_namespace=namespaces,
                               network_isolated=namespaces, filesystem_isolated=namespaces,
                               uid_drop=uid_drop, process_limit=not is_root or uid_drop, python=python,
                               memory_cap=f"cgroup v{cgroup_parent.version}" if cgroup_parent else None,
                               seccomp=use_seccomp, notes=tuple(notes))


def _probe(level: str, python: str, cgroup_parent, use_seccomp: bool) -> str | None:
    limits = SandboxLimits(cpu_seconds=5, wall_seconds=15, python=python)
    try:
        result = _run("print('gdpo-probe-ok')", "", limits, {}, level, None, python, cgroup_parent, use_seccomp)
    except (SandboxError, OSError) as exc:
        return str(exc)[:300]
    if result.status != "ok" or result.stdout.strip() != "gdpo-probe-ok":
        return f"probe program ended with {result.status}: {result.stderr.strip()[-300:]}"
    return None


def _program_python(is_root: bool, notes: list[str]) -> str:
    """An interpreter the sandboxed program can execute (an unprivileged uid when root)."""
    candidates = [sys.executable, "/usr/bin/python3", "/usr/local/bin/python3", shutil.which("python3")]
    for candidate in candidates:
        if candidate and os.path.exists(candidate) and (not is_root or _others_can_execute(candidate)):
            if candidate != sys.executable:
                notes.append(f"programs run with {candidate} (an unprivileged uid cannot reach {sys.executable})")
            return candidate
    raise SandboxError(f"no Python interpreter that an unprivileged uid can execute among {candidates}; "
                       "install one under /usr/bin or pass SandboxLimits(python=...)")


def _others_can_execute(path: str) -> bool:
    real = os.path.realpath(path)
    if not os.stat(real).st_mode & stat.S_IXOTH:
        return False
    parent = os.path.dirname(real)
    while True:
        if not os.stat(parent).st_mode & stat.S_IXOTH:
            return False
        if parent == "/":
            return True
        parent = os.path.dirname(parent)
