"""Issue 11, item 8: no host unix socket is reachable from the sandbox.

Before: a 0777 socket bound by the parent under /run accepted a connection from the sandboxed
program (the network namespace stops TCP/UDP and abstract sockets, not socket *files*). Now
the program sees a minimal root (``/usr``, ``/lib*``, ``/etc/ld.so.cache``, its own ``/proc``,
``/dev``, ``/tmp``): no host directory, so no host socket file, exists for it.
"""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from gdpo.rewards.sandbox import SandboxLimits, run_program, sandbox_capabilities

CAPS = sandbox_capabilities()
FAST = SandboxLimits(cpu_seconds=1, wall_seconds=3, memory_bytes=256 * 1024**2, max_processes=8)

CONNECT = """
import socket, sys
for path in sys.stdin.read().split():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(1)
    try:
        s.connect(path)
        s.sendall(b"hi")
        print("connected", path, flush=True)
    except OSError as exc:
        print("refused", path, exc.errno, flush=True)
"""


def _listen_in(directory: str, listeners: list) -> str | None:
    """A 0777 unix socket listening in a fresh 0777 folder under ``directory``; its path, or None."""
    try:
        folder = os.path.join(directory, f"gdpo-sock-{uuid.uuid4().hex[:8]}")
        os.mkdir(folder)
        os.chmod(folder, 0o777)
        path = os.path.join(folder, "s")
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        server.bind(path)
        os.chmod(path, 0o777)
        server.listen(4)
        server.settimeout(0.2)
    except OSError:
        return None
    listeners.append((server, folder, path))
    return path


def test_host_unix_sockets_are_unreachable(tmp_path):
    if not CAPS.filesystem_isolated:
        pytest.skip(f"no private file-system view at level {CAPS.level!r}: {CAPS.notes}")
    listeners: list = []
    try:
        for directory in ("/run", "/var/tmp", "/tmp", os.getcwd(), str(tmp_path)):
            _listen_in(directory, listeners)
        paths = [path for _, _, path in listeners]
        assert paths, "could not bind a test socket anywhere"
        result = run_program(CONNECT, "\n".join(paths), limits=FAST)
        assert result.status == "ok", result.stderr
        for path in paths:
            assert f"refused {path} 2" in result.stdout, result.stdout  # ENOENT: the path does not exist there
        for server, _, path in listeners:
            with pytest.raises(socket.timeout):
                server.accept()  # nobody knocked
    finally:
        for server, folder, path in listeners:
            server.close()
            os.unlink(path)
            os.rmdir(folder)


def test_the_program_sees_a_minimal_root():
    if not CAPS.filesystem_isolated:
        pytest.skip(f"no private file-system view at level {CAPS.level!r}: {CAPS.notes}")
    program = "import os\nprint(sorted(os.listdir('/')))\nprint(sorted(os.listdir('/etc')))\nprint(os.listdir('/tmp'))\n"
    result = run_program(program, limits=FAST)
    assert result.status == "ok", result.stderr
    top, etc, tmp = (eval(line) for line in result.stdout.splitlines())  # our own program's list literals
    assert set(top) <= {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "tmp"}
    assert etc in ([], ["ld.so.cache"])
    assert tmp == ["work"]
    for host_only in ("run", "root", "home", "var", "work", "srv", "opt", "mnt"):
        assert host_only not in top


def test_the_launchers_descriptors_into_the_host_are_out_of_reach():
    # The launcher (PID 1 of the namespace) keeps descriptors to the host's TMPDIR and cgroup
    # to clean up after the pivot; it is not dumpable and the program holds no capability, so
    # neither /proc/1/fd/* nor ptrace reach them.
    if not CAPS.pid_namespace:
        pytest.skip(f"no PID namespace at level {CAPS.level!r}: {CAPS.notes}")
    program = (
        "import ctypes, os\n"
        "reached = []\n"
        "for n in range(64):\n"
        "    try:\n"
        "        os.listdir(f'/proc/1/fd/{n}')\n"
        "        reached.append(n)\n"
        "    except OSError:\n"
        "        pass\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print(reached, libc.ptrace(16, 1, 0, 0))  # PTRACE_ATTACH to the launcher\n"
    )
    result = run_program(program, limits=FAST)
    assert result.status == "ok", result.stderr
    assert result.stdout.strip() == "[] -1"
