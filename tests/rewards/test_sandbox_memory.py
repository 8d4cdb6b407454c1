"""Issue 11, item 7: memory a program pins outside its address space stays under ``memory_bytes``.

Before: under ``memory_bytes=128 MiB`` a program pinned 20 memfd files of 15 MiB (300 MiB),
SysV shm, or a tmpfs of its own (``unshare -Urm``); only the wall limit bounded it. Now the
run's memory cgroup caps the sum (``memory_cap``), and the seccomp filter refuses memfd,
SysV shm and new namespaces. Each program prints ``pinned <MiB>`` after every chunk it holds,
so the last such line is what it really held when it stopped or was killed.
"""

from __future__ import annotations

import re

import pytest

from gdpo.rewards.sandbox import SandboxLimits, run_program, sandbox_capabilities

CAPS = sandbox_capabilities()
MiB = 1024**2
CAP = SandboxLimits(cpu_seconds=3, wall_seconds=6, memory_bytes=128 * MiB, max_processes=8)

MEMFD = """
import os
chunk = b"x" * (15 << 20)
held = []
for i in range(20):  # 20 x 15 MiB = 300 MiB, each file under RLIMIT_FSIZE (16 MiB), none mapped
    try:
        fd = os.memfd_create(f"m{i}")
        os.write(fd, chunk)
    except OSError as exc:
        print("refused", exc.errno, flush=True)
        break
    held.append(fd)
    print("pinned", 15 * (i + 1), flush=True)
"""

SYSV = """
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.shmat.restype = ctypes.c_void_p
for i in range(20):
    shm_id = libc.shmget(0, 15 << 20, 0o1000 | 0o600)  # IPC_PRIVATE, IPC_CREAT
    if shm_id < 0:
        print("refused", ctypes.get_errno(), flush=True)
        break
    address = libc.shmat(shm_id, None, 0)
    ctypes.memset(address, 120, 15 << 20)
    libc.shmdt(ctypes.c_void_p(address))  # detached, but the segment stays until removed
    print("pinned", 15 * (i + 1), flush=True)
"""

OWN_TMPFS = """
import subprocess
script = "mount -t tmpfs none /mnt && for i in $(seq 20); do head -c 15728640 /dev/zero > /mnt/f$i && echo pinned $((i * 15)); done"
done = subprocess.run(["unshare", "-Urm", "sh", "-c", script], capture_output=True, text=True)
print(done.stdout, done.stderr, flush=True)
"""

FOUR_PROCESSES = """
import os, time
children = []
for i in range(4):  # 4 x 50 MiB anonymous memory: each process is under RLIMIT_AS, the sum is not
    pid = os.fork()
    if pid == 0:
        block = bytearray(50 << 20)
        for j in range(0, len(block), 4096):
            block[j] = 1
        time.sleep(4)
        os._exit(0)
    children.append(pid)
time.sleep(2)
alive = sum(os.waitpid(pid, os.WNOHANG)[0] == 0 for pid in children)
print("alive", alive, "pinned", 50 * alive, flush=True)
"""


def pinned_mib(stdout: str) -> int:
    """The largest ``pinned N`` the program printed (0 if none)."""
    return max((int(n) for n in re.findall(r"pinned (\d+)", stdout)), default=0)


@pytest.mark.parametrize("name,program", [("memfd", MEMFD), ("sysv", SYSV), ("own_tmpfs", OWN_TMPFS)])
def test_shared_memory_cannot_exceed_the_memory_limit(name, program):
    if not (CAPS.memory_cap or CAPS.seccomp):
        pytest.skip(f"neither a memory cgroup nor the seccomp filter on this host: {CAPS.notes}")
    result = run_program(program, limits=CAP)
    held = pinned_mib(result.stdout)
    # 128 MiB cap, the interpreter itself takes ~10 MiB of it: at most 7 chunks of 15 MiB fit
    assert held * MiB < CAP.memory_bytes, f"{name}: pinned {held} MiB > 128 MiB: {result.stdout[-300:]}"
    assert result.status in ("ok", "memory", "runtime_error"), (result.status, result.stderr[-300:])


def test_processes_together_stay_under_the_memory_limit():
    if not CAPS.memory_cap:
        pytest.skip(f"no memory cgroup on this host, memory_bytes bounds each process only: {CAPS.notes}")
    result = run_program(FOUR_PROCESSES, limits=CAP)
    assert result.status == "ok", (result.status, result.stderr[-300:])
    # 4 x 50 = 200 MiB wanted; 3 alive (150 MiB) cannot fit in 128 MiB, so the cgroup killed some
    assert 0 < pinned_mib(result.stdout) <= 100, result.stdout


def test_memory_cgroup_oom_is_reported_as_memory():
    if not CAPS.memory_cap:
        pytest.skip(f"no memory cgroup on this host: {CAPS.notes}")
    # files in the private /dev/shm and /tmp (64 MiB each) charge the run's cgroup: 128 MiB ends it
    program = ("for root in ('/dev/shm', '/tmp'):\n    for i in range(4):\n"
               "        open(f'{root}/f{i}', 'wb').write(b'x' * (15 << 20))\n        print('pinned', flush=True)\n"
               "import time\ntime.sleep(5)\n")
    result = run_program(program, limits=CAP)
    assert result.status == "memory", (result.status, result.stdout, result.stderr[-300:])
    assert result.wall_time < 4.0  # killed by the cgroup, not by the 6 s wall limit
