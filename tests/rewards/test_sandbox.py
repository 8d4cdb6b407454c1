"""The sandbox against hostile programs: each must come back within its limit and leave no trace.

Limits are kept small so the whole file runs in a few seconds.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
import uuid

import pytest

from gdpo.rewards.sandbox import (
    LEVELS,
    RunResult,
    SandboxLimits,
    run_program,
    sandbox_capabilities,
)

CAPS = sandbox_capabilities()
FAST = SandboxLimits(cpu_seconds=1, wall_seconds=3, memory_bytes=256 * 1024**2, max_processes=8,
                     output_bytes=64 * 1024)
AVAILABLE_LEVELS = [lvl for lvl in LEVELS[LEVELS.index(CAPS.level):] if lvl != "uid" or CAPS.is_root]


def processes_of(uid: int | None) -> list[int]:
    """Host processes owned by ``uid`` (the run's fresh uid); [] when the run kept our uid."""
    if uid is None:
        return []
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.stat(f"/proc/{name}").st_uid == uid:
                    found.append(int(name))
            except OSError:
                pass
    return found


def assert_no_leftovers(result: RunResult) -> None:
    assert processes_of(result.uid) == [], f"processes of uid {result.uid} survived the run"


# -- plain behaviour ------------------------------------------------------------------------

@pytest.mark.parametrize("level", AVAILABLE_LEVELS)
def test_echo_program_reads_stdin_and_writes_stdout(level):
    result = run_program("print(input()[::-1])", "abc\n", limits=FAST, level=level)
    assert result.status == "ok", result.stderr
    assert result.stdout == "cba\n"
    assert result.returncode == 0
    assert result.level == level


def test_syntax_error_is_compile_error_and_runtime_exception_is_runtime_error():
    assert run_program("def f(:\n    pass\n", limits=FAST).status == "compile_error"
    assert run_program("print(1)\nif True:\nprint(2)\n", limits=FAST).status == "compile_error"  # IndentationError
    assert run_program("1 / 0", limits=FAST).status == "runtime_error"
    # a SyntaxError raised while running (exec) is a runtime error, not a compile error
    assert run_program("exec('def (')", limits=FAST).status == "runtime_error"
    assert run_program("raise SystemExit(3)", limits=FAST).returncode == 3


def test_environment_is_clean():
    os.environ["GDPO_SANDBOX_SECRET"] = "leak"
    try:
        result = run_program("import os; print(sorted(os.environ))", limits=FAST)
    finally:
        del os.environ["GDPO_SANDBOX_SECRET"]
    keys = eval(result.stdout)  # our own program's output: a list literal of names
    assert "GDPO_SANDBOX_SECRET" not in keys
    assert set(keys) <= {"PATH", "HOME", "TMPDIR", "LANG", "LC_ALL", "LC_CTYPE"}


def test_extra_files_sit_beside_main():
    result = run_program("import sys; sys.path.insert(0, ''); import helper; print(helper.VALUE)", files={"helper.py": "VALUE = 41 + 1"}, limits=FAST)
    assert result.stdout.strip() == "42"
    with pytest.raises(ValueError, match="plain file name"):
        run_program("pass", files={"../escape.py": ""}, limits=FAST)


def test_limits_validate_their_values():
    with pytest.raises(ValueError, match="cpu_seconds"):
        SandboxLimits(cpu_seconds=0)
    with pytest.raises(ValueError, match="memory_bytes"):
        SandboxLimits(memory_bytes=1024)


# -- hostile programs -----------------------------------------------------------------------

def test_busy_loop_is_stopped_by_the_cpu_limit():
    result = run_program("while True:\n    pass\n", limits=FAST)
    assert result.status == "timeout"
    # cpu 1 s (+1 s hard) or, on a machine so loaded that 1 s of CPU takes longer, the 3 s wall
    assert result.wall_time < FAST.wall_seconds + 0.5
    assert_no_leftovers(result)


def test_sleep_is_stopped_by_the_wall_limit():
    limits = SandboxLimits(cpu_seconds=1, wall_seconds=1)
    start = time.monotonic()
    result = run_program("import time\ntime.sleep(60)\n", limits=limits)
    assert result.status == "timeout"
    assert time.monotonic() - start < 2.5
    assert_no_leftovers(result)


def test_memory_bomb_hits_the_address_space_limit():
    result = run_program("x = bytearray(1 << 30)\n", limits=FAST)  # 1 GiB > 256 MiB limit
    assert result.status == "memory"
    grow = run_program("chunks = []\nwhile True:\n    chunks.append(bytearray(16 << 20))\n", limits=FAST)
    assert grow.status == "memory"
    assert_no_leftovers(grow)


def test_gigabytes_of_output_are_cut_at_the_cap():
    start = time.monotonic()
    result = run_program("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", limits=FAST)
    assert result.status == "output_limit"
    assert result.truncated
    assert len(result.stdout) + len(result.stderr) <= FAST.output_bytes
    assert time.monotonic() - start < 2.0
    assert_no_leftovers(result)


@pytest.mark.parametrize("level", AVAILABLE_LEVELS)
def test_detached_child_is_killed_when_the_program_ends(level):
    program = (
        "import os, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        "print('parent done')\n"
    )
    start = time.monotonic()
    result = run_program(program, limits=FAST, level=level)
    assert result.status == "ok"
    assert time.monotonic() - start < 2.5  # did not wait for the detached sleeper
    assert_no_leftovers(result)


def _require_process_limit() -> None:
    if not CAPS.process_limit:
        pytest.skip(f"no process limit at sandbox level {CAPS.level!r} on this host: {CAPS.notes}")


def test_process_limit_holds_before_any_fork_bomb():
    _require_process_limit()
    program = (
        "import os, time\n"
        "made = 0\n"
        "for _ in range(40):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    made += 1\n"
        "print(made)\n"
    )
    result = run_program(program, limits=FAST)
    assert result.status == "ok", result.stderr
    # limit 8 counts the program itself, so at most 7 children
    assert int(result.stdout) < FAST.max_processes
    assert_no_leftovers(result)


def test_fork_bomb_is_contained():
    _require_process_limit()
    # Prove the limit is in force with a bounded program first; only then set off the bomb.
    bounded = run_program("import os\nn = 0\nfor _ in range(20):\n    try:\n        pid = os.fork()\n"
                          "    except OSError:\n        break\n    if pid == 0:\n        os._exit(0)\n"
                          "    os.waitpid(pid, 0)\n    n += 1\nprint(n)\n", limits=FAST)
    assert bounded.stdout.strip() == "20"  # sequential forks that are reaped stay under the limit
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result = run_program(bomb, limits=SandboxLimits(cpu_seconds=1, wall_seconds=2, max_processes=8))
    assert result.status in ("timeout", "killed")
    assert result.wall_time < 4.0
    assert_no_leftovers(result)


def test_cannot_write_into_the_host_temp_dir(tmp_path):
    if not CAPS.filesystem_isolated:
        pytest.skip(f"file system isolation not available at level {CAPS.level!r}: {CAPS.notes}")
    token = uuid.uuid4().hex
    targets = [os.path.join(tempfile.gettempdir(), f"gdpo-pwned-{token}"), str(tmp_path / "pwned"),
               f"/var/tmp/gdpo-pwned-{token}", f"/gdpo-pwned-{token}"]
    program = (
        "import sys\n"
        f"for path in {targets!r}:\n"
        "    try:\n"
        "        open(path, 'w').write('x')\n"
        "        print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('refused', path, exc.errno)\n"
    )
    result = run_program(program, limits=FAST)
    assert result.status == "ok", result.stderr
    for path in targets:
        assert not os.path.exists(path), f"the sandboxed program created {path} on the host"
    # the program may write its private /tmp (invisible to the host): that is its scratch space
    assert run_program("open('/tmp/scratch', 'w').write('ok'); print(open('/tmp/scratch').read())",
                       limits=FAST).stdout.strip() == "ok"


def test_cannot_connect_to_a_host_listener():
    if not CAPS.network_isolated:
        pytest.skip(f"network isolation not available at level {CAPS.level!r}: {CAPS.notes}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        program = (
            "import socket\n"
            "try:\n"
            f"    socket.create_connection(('127.0.0.1', {port}), timeout=1).sendall(b'hi')\n"
            "    print('connected')\n"
            "except OSError as exc:\n"
            "    print('refused', exc.errno)\n"
        )
        result = run_program(program, limits=FAST)
        assert result.stdout.startswith("refused"), result.stdout
        with pytest.raises(socket.timeout):
            listener.accept()  # nobody knocked


def test_capabilities_are_consistent():
    assert CAPS.level in LEVELS
    if CAPS.is_root and CAPS.process_limit:
        assert CAPS.uid_drop  # as root, only a dropped uid makes RLIMIT_NPROC apply
    if CAPS.level == "namespaces":
        assert CAPS.pid_namespace and CAPS.network_isolated and CAPS.filesystem_isolated
    assert os.access(CAPS.python, os.X_OK)


# -- issue 11, item 11 ----------------------------------------------------------------------

def test_a_lone_surrogate_is_a_compile_error_of_the_program():
    # Before: SandboxError("sandbox setup failed: UnicodeEncodeError") -- blaming the sandbox.
    # Now the text travels as UTF-8 with the surrogate kept (surrogatepass): the interpreter
    # rejects the file, as it would any invalid UTF-8 source.
    result = run_program("print('\ud800')\n", limits=FAST)
    assert result.status == "compile_error", result.stderr
    assert "utf-8" in result.stderr.lower()
    echoed = run_program("import sys\nprint(len(sys.stdin.buffer.read()))\n", "a\udc80b", limits=FAST)
    assert echoed.stdout.strip() == "5"  # 'a' + 3 surrogatepass bytes + 'b' reached the program


def test_capabilities_are_detected_once_for_many_threads():
    # Before: concurrent first callers each ran their own detection (the issue counted 16 probe
    # rounds for 16 threads) and got different objects. Now one detection, shared.
    import threading

    sandbox_capabilities.cache_clear()
    results, barrier = [], threading.Barrier(16)

    def detect():
        barrier.wait()
        results.append(sandbox_capabilities())

    threads = [threading.Thread(target=detect) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results) == 16
    assert all(r is results[0] for r in results)  # one detection, shared
    assert results[0].level == CAPS.level
