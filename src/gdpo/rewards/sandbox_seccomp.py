"""A seccomp filter for sandboxed programs: close the routes around the memory and mount limits.

Stdlib only (the sandbox launcher loads this file by path, without the ``gdpo`` package).
:func:`install` puts the calling process under ``PR_SET_NO_NEW_PRIVS`` and a classic-BPF
seccomp filter that is inherited by every child and kept across ``execve``. The filter
answers ``EPERM`` to

* memory that outlives a process's own address space and file-size limits: ``memfd_create``,
  ``memfd_secret``, SysV ``shmget`` / ``shmat`` (SysV semaphores / queues are tiny and left);
* new namespaces and mounts -- the way to a fresh tmpfs offering half the host's RAM, or out
  of the private file-system view: ``unshare``, ``setns``, ``clone`` with any ``CLONE_NEW*``
  flag, ``mount`` / ``umount2`` / ``pivot_root`` / ``chroot`` and the new mount API
  (``fsopen`` ... ``mount_setattr``);
* reaching into other processes: ``ptrace``, ``process_vm_readv`` / ``writev``,
  ``pidfd_getfd``;
* kernel surfaces a test program never needs: keyrings, ``bpf``, ``userfaultfd``,
  ``perf_event_open``, ``io_uring_setup``;

and ``ENOSYS`` to ``clone3`` (its flags sit in memory a filter cannot read; glibc then falls
back to ``clone``, whose flags the filter does check). Other ABIs on the same machine
(i386 ``int 0x80``, x32) are refused outright. Supported: x86_64 (the syscall numbers below
come from ``asm/unistd_64.h``); elsewhere :func:`supported` is False and the sandbox reports
that no filter is in force.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000
# x86_64 syscall numbers (asm/unistd_64.h)
_X86_64_DENY = {
    "shmget": 29, "shmat": 30, "ptrace": 101, "pivot_root": 155, "chroot": 161, "mount": 165, "umount2": 166,
    "add_key": 248, "request_key": 249, "keyctl": 250, "unshare": 272, "perf_event_open": 298,
    "setns": 308, "process_vm_readv": 310, "process_vm_writev": 311, "memfd_create": 319, "bpf": 321, "userfaultfd": 323, "io_uring_setup": 425,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "pidfd_getfd": 438, "mount_setattr": 442, "memfd_secret": 447,
}
_X86_64_CLONE, _X86_64_CLONE3 = 56, 435
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET (CLONE_NEWTIME is clone3-only)
CLONE_NEW_MASK = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# classic BPF opcodes
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_RET_ALLOW, _RET_ERRNO, _RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16  # struct seccomp_data; arg0's low word (little-endian)

_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def supported() -> bool:
    """Whether this machine's architecture has a filter here."""
    return platform.machine() in ("x86_64", "AMD64")


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def build_filter() -> list[bytes]:
    """The BPF program (one 8-byte instruction per entry), x86_64."""
    deny = sorted(_X86_64_DENY.values())
    prog = [
        _insn(_LD_W_ABS, _OFF_ARCH),
        _insn(_JEQ_K, AUDIT_ARCH_X86_64, jt=1),
        _insn(_RET_K, _RET_KILL_PROCESS),  # another ABI (i386): not ours
        _insn(_LD_W_ABS, _OFF_NR),
        _insn(_JGE_K, X32_SYSCALL_BIT, jf=1),
        _insn(_RET_K, _RET_ERRNO | errno.ENOSYS),  # x32 syscalls
    ]
    # each denied number: "jeq nr -> the EPERM return at the end of this block"
    for i, number in enumerate(deny):
        prog.append(_insn(_JEQ_K, number, jt=len(deny) - i + 5))  # to the EPERM return, 6 after the last
    prog += [
        _insn(_JEQ_K, _X86_64_CLONE3, jt=4),
        _insn(_JEQ_K, _X86_64_CLONE, jf=2),
        _insn(_LD_W_ABS, _OFF_ARG0),
        _insn(_JSET_K, CLONE_NEW_MASK, jt=2),
        _insn(_RET_K, _RET_ALLOW),
        _insn(_RET_K, _RET_ERRNO | errno.ENOSYS),  # clone3
        _insn(_RET_K, _RET_ERRNO | errno.EPERM),  # denied syscalls and namespace-creating clone
    ]
    return prog


def _check_jumps(prog: list[bytes]) -> None:
    """Every jump lands inside the program (the kernel would refuse it otherwise)."""
    for index, insn in enumerate(prog):
        code, jt, jf, _ = struct.unpack("=HBBI", insn)
        if code in (_JEQ_K, _JGE_K, _JSET_K):
            assert index + 1 + max(jt, jf) < len(prog), f"jump out of the filter at {index}"


def install() -> None:
    """Put this process (and all it starts) under the filter; raises OSError on failure."""
    if not supported():
        raise OSError(errno.ENOSYS, f"no seccomp filter for {platform.machine()}")
    prog = build_filter()
    _check_jumps(prog)
    code = b"".join(prog)
    buffer = ctypes.create_string_buffer(code, len(code))

    class _SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    fprog = _SockFprog(len(prog), ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(NO_NEW_PRIVS): {errno.errorcode.get(err, err)}")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(SECCOMP): {errno.errorcode.get(err, err)}")
