"""The sandbox launcher: run as a script (``python -I -S sandbox_launch.py --gdpo-sandbox-launch CONFIG``).

Stdlib only, no ``gdpo`` imports (it loads ``sandbox_seccomp.py`` from its own directory by
path). The parent (:mod:`gdpo.rewards.sandbox`) starts it in a new session, under ``unshare``
at level ``namespaces``. Steps:

1. Read the config, take stdin, open descriptors to what it must still reach after leaving
   the host's file system: the run's host directory (to delete it at the end), the run's
   memory cgroup (``cgroup.procs`` for the program, the OOM counter, its parent to delete it).
2. Level ``namespaces``: SysV shm limits of the fresh IPC namespace set to 0, then a
   **minimal root**: a read-only tmpfs holding bind mounts of ``/usr`` (and ``/bin``, ``/lib*``,
   ``/sbin``, as symlinks where the host has them), the interpreter's prefixes, ``/etc/ld.so.cache``,
   a fresh ``/proc`` of the PID namespace, a ``/dev`` with null/zero/full/random/urandom, and
   private tmpfs ``/tmp`` and ``/dev/shm`` (``scratch_bytes`` each). ``pivot_root`` into it and
   detach the old root: no host directory is reachable, so neither is any host unix socket.
3. Fork the program: join the cgroup, ``oom_score_adj`` 1000, rlimits, fresh uid (or, without
   one -- e.g. "root" of a user namespace -- no capabilities, for good), the seccomp filter,
   ``execve(python -I main.py)``. The launcher itself is not dumpable: the program cannot
   ptrace it nor open ``/proc/1/fd/*`` (the launcher's descriptors into the host).
4. Wait for the program, the wall limit, or the parent's death (a pidfd of the parent,
   passed in; plus POLLERR on the status pipe once its reader is gone), whichever first; on
   the last two the program is SIGKILLed. Then kill and reap everything left, report
   ``{"wait_status", "cpu_time", "oom_kills", "ended_by"}`` on the status pipe, delete the
   cgroup and the host directory, exit. As PID 1 of the PID namespace its exit also ends
   anything it missed. So a SIGKILLed parent leaves nothing running past the wall limit and,
   unless the launcher itself is SIGKILLed first, no files or cgroups behind.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import math
import os
import resource
import select
import shutil
import signal
import sys
import time

LAUNCH_FLAG = "--gdpo-sandbox-launch"
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_DEVICES = ("null", "zero", "full", "random", "urandom")
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT, _MS_BIND, _MS_REC = 1, 2, 4, 8, 32, 4096, 16384
_MS_NOATIME, _MS_NODIRATIME, _MS_RELATIME = 1024, 2048, 1 << 21
_MNT_DETACH = 2
_PR_SET_DUMPABLE, _PR_CAPBSET_DROP, _PR_SET_SECUREBITS, _PR_CAP_AMBIENT = 4, 24, 28, 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
# SECBIT_NOROOT | _LOCKED | SECBIT_NO_SETUID_FIXUP | _LOCKED | SECBIT_KEEP_CAPS_LOCKED | SECBIT_NO_CAP_AMBIENT_RAISE | _LOCKED
_SECUREBITS_NO_ROOT_POWERS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
_SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
_LIBC = ctypes.CDLL(None, use_errno=True)


def main(config_path: str) -> None:
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    status_fd = int(config["status_fd"])
    handles = None
    report: dict
    try:
        _LIBC.prctl(_PR_SET_DUMPABLE, 0, 0, 0, 0)  # no ptrace, no /proc/1/fd/* for the program
        handles = _Handles(config)
        seccomp = _load_seccomp() if config["seccomp"] else None
        workdir = _prepare(config)
        if not config["mounts"]:
            _become_subreaper()
        pid = os.fork()
        if pid == 0:
            _exec_program(config, workdir, status_fd, handles.procs_fd, seccomp)
        report = _wait_program(pid, config, status_fd)
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a setup error
        report = {"setup_error": f"{type(exc).__name__}: {exc}"}
    _end_leftovers(config)
    report["oom_kills"] = handles.oom_kills() if handles else 0
    try:
        os.write(status_fd, json.dumps(report).encode())
    except OSError:
        pass  # the parent is gone; clean up all the same
    if handles:
        handles.clean_up()
    os._exit(0)  # as PID 1 of the namespace, this kills whatever the program left behind


# -- descriptors kept across the pivot ------------------------------------------------------

class _Handles:
    """Descriptors into the host that stay usable after ``pivot_root``."""

    def __init__(self, config: dict) -> None:
        host_dir = config["host_dir"]
        self.host_parent_fd = os.open(os.path.dirname(host_dir), os.O_RDONLY | os.O_DIRECTORY)
        self.host_name = os.path.basename(host_dir)
        self.procs_fd = self.events_fd = self.cgroup_parent_fd = -1
        cgroup = config.get("cgroup")
        if cgroup:
            self.procs_fd = os.open(os.path.join(cgroup, "cgroup.procs"), os.O_WRONLY)
            events = "memory.events" if config["cgroup_version"] == 2 else "memory.oom_control"
            self.events_fd = os.open(os.path.join(cgroup, events), os.O_RDONLY)
            self.cgroup_parent_fd = os.open(os.path.dirname(cgroup), os.O_RDONLY | os.O_DIRECTORY)
            self.cgroup_name = os.path.basename(cgroup)

    def oom_kills(self) -> int:
        if self.events_fd < 0:
            return 0
        for line in os.pread(self.events_fd, 4096, 0).decode().splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill" and value.strip().isdigit():
                return int(value)
        return 0

    def clean_up(self) -> None:
        if self.cgroup_parent_fd >= 0:
            for _ in range(100):  # empty once every member is reaped; give the kernel a moment
                try:
                    os.rmdir(self.cgroup_name, dir_fd=self.cgroup_parent_fd)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.01)
        try:
            shutil.rmtree(self.host_name, dir_fd=self.host_parent_fd)
        except OSError:
            pass


def _load_seccomp():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_seccomp.py")
    spec = importlib.util.spec_from_file_location("gdpo_sandbox_seccomp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- file system ----------------------------------------------------------------------------

def _prepare(config: dict) -> str:
    """Take stdin, build the file-system view, write the program files; return the work dir."""
    stdin_fd = os.open(config["stdin"], os.O_RDONLY)
    os.dup2(stdin_fd, 0)
    os.close(stdin_fd)
    workdir = config["workdir"]
    if config["mounts"]:
        _zero_sysv_shm()
        _minimal_root(int(config["limits"]["scratch_bytes"]), config["python"])
        workdir = "/tmp/work"
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    for name, text in config["files"].items():
        with open(os.path.join(workdir, name), "wb") as handle:
            handle.write(text.encode("utf-8", "surrogatepass"))  # a lone surrogate is the program's problem
    uid = config["uid"]
    if uid is not None:
        for name in os.listdir(workdir):
            os.chown(os.path.join(workdir, name), uid, uid)
        os.chown(workdir, uid, uid)
    return workdir


def _zero_sysv_shm() -> None:
    """The fresh IPC namespace gets no SysV shared memory at all (per-namespace sysctls)."""
    for name in ("shmmni", "shmall", "shmmax"):
        try:
            with open(f"/proc/sys/kernel/{name}", "w", encoding="ascii") as handle:
                handle.write("0")
        except OSError:
            pass  # the seccomp filter refuses shmget anyway


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    rc = _LIBC.mount(source.encode() if source else None, target.encode(), fstype.encode() if fstype else None,
                     flags, data.encode() if data else None)
    if rc != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"mount {source} on {target}: {os.strerror(errno)}")


def _locked_flags(path: str) -> int:
    """Mount flags of ``path`` that a read-only remount of its bind must keep (user namespaces)."""
    flag = os.statvfs(path).f_flag
    pairs = ((os.ST_NOSUID, _MS_NOSUID), (os.ST_NODEV, _MS_NODEV), (os.ST_NOEXEC, _MS_NOEXEC),
             (os.ST_NOATIME, _MS_NOATIME), (os.ST_NODIRATIME, _MS_NODIRATIME), (os.ST_RELATIME, _MS_RELATIME))
    return sum(ms for st, ms in pairs if flag & st)


def _bind(source: str, target: str, read_only: bool = True) -> None:
    _mount(source, target, None, _MS_BIND | _MS_REC)
    if read_only:
        _mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _locked_flags(source))


def _minimal_root(scratch_bytes: int, python: str) -> None:
    """Replace the file-system view with a minimal read-only root (see module doc)."""
    _mount("tmpfs", "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0700")  # staging, private
    new = "/tmp/root"
    os.mkdir(new, 0o755)
    _mount("tmpfs", new, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            os.symlink(os.readlink(path), new + path)
        elif os.path.isdir(path):
            os.mkdir(new + path)
            _bind(path, new + path)
    for prefix in _interpreter_prefixes(python):
        os.makedirs(new + prefix, exist_ok=True)
        _bind(prefix, new + prefix)
    os.makedirs(new + "/etc")
    if os.path.isfile("/etc/ld.so.cache"):
        open(new + "/etc/ld.so.cache", "w").close()
        _bind("/etc/ld.so.cache", new + "/etc/ld.so.cache")
    os.mkdir(new + "/proc")
    _mount("proc", new + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)
    _minimal_dev(new + "/dev", scratch_bytes)
    os.mkdir(new + "/tmp")
    _mount("tmpfs", new + "/tmp", "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={scratch_bytes},mode=1777")
    _pivot_into(new)


def _interpreter_prefixes(python: str) -> list[str]:
    """Folders outside the system dirs the interpreter needs: its own prefix (a venv keeps
    its packages) and that of the binary it links to (the standard library)."""
    prefixes = []
    for path in (os.path.abspath(python), os.path.realpath(python)):
        prefix = os.path.dirname(os.path.dirname(path))
        outside = not any(prefix == d or prefix.startswith(d + "/") for d in _SYSTEM_DIRS)
        if outside and prefix != "/" and prefix not in prefixes:
            prefixes.append(prefix)
    return prefixes


def _minimal_dev(dev: str, scratch_bytes: int) -> None:
    os.mkdir(dev)
    _mount("tmpfs", dev, "tmpfs", _MS_NOSUID | _MS_NOEXEC, "size=64k,mode=0755")
    for name in _DEVICES:
        open(os.path.join(dev, name), "w").close()
        _bind(f"/dev/{name}", os.path.join(dev, name), read_only=False)
    for name, target in (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
                         ("stderr", "/proc/self/fd/2")):
        os.symlink(target, os.path.join(dev, name))
    os.mkdir(os.path.join(dev, "shm"))
    _mount("tmpfs", os.path.join(dev, "shm"), "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={scratch_bytes},mode=1777")


def _pivot_into(new: str) -> None:
    number = _SYS_PIVOT_ROOT.get(os.uname().machine)
    if number is None:
        raise OSError(f"pivot_root: syscall number unknown on {os.uname().machine}")
    os.chdir(new)
    if _LIBC.syscall(number, b".", b".") != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"pivot_root: {os.strerror(errno)}")
    if _LIBC.umount2(b".", _MNT_DETACH) != 0:  # the old root, stacked under the new one
        errno = ctypes.get_errno()
        raise OSError(errno, f"detach the old root: {os.strerror(errno)}")
    os.chdir("/")
    _mount(None, "/", None, _MS_REMOUNT | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)


# -- the program ----------------------------------------------------------------------------

def _exec_program(config: dict, workdir: str, status_fd: int, procs_fd: int, seccomp) -> None:
    """Child: cgroup, limits, privilege drop, filter, clean exec. Never returns."""
    try:
        for fd in (status_fd, int(config.get("parent_fd", -1))):
            if fd >= 0:
                os.set_inheritable(fd, False)  # the program sees neither the status pipe nor the parent's pidfd
        if procs_fd >= 0:
            os.write(procs_fd, b"0")  # this process joins the run's memory cgroup
            os.close(procs_fd)
        with open("/proc/self/oom_score_adj", "w", encoding="ascii") as handle:
            handle.write("1000")  # under memory pressure the program goes first, never the launcher
        _set_rlimits(config["limits"], int(config["nproc_base"]))
        uid = config["uid"]
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        else:
            _drop_capabilities()  # e.g. "root" of a user namespace: root in name only
        os.chdir(workdir)
        os.umask(0o077)
        if seccomp is not None:
            seccomp.install()
        env = {"PATH": SAFE_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        python = config["python"]
        os.execve(python, [python, "-I", "main.py"], env)
    except BaseException as exc:  # noqa: BLE001
        os.write(status_fd, json.dumps({"setup_error": f"{type(exc).__name__}: {exc}"}).encode())
        os._exit(127)


def _drop_capabilities() -> None:
    """Keep uid 0 (where we are it) but give up every capability, for good: exec grants none
    back (SECBIT_NOROOT), the bounding and ambient sets are empty. A no-op for other users."""
    if os.geteuid() != 0:
        return
    if _LIBC.prctl(_PR_SET_SECUREBITS, _SECUREBITS_NO_ROOT_POWERS, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(SET_SECUREBITS): {os.strerror(errno)}")
    _LIBC.prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    cap = 0
    while _LIBC.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) == 0:  # EINVAL past the last capability
        cap += 1
    if cap == 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(CAPBSET_DROP): {os.strerror(errno)}")


def _set_rlimits(limits: dict, nproc_base: int) -> None:
    cpu = int(math.ceil(limits["cpu_seconds"]))
    nproc = nproc_base + int(limits["max_processes"])
    for which, soft, hard in (
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
        (resource.RLIMIT_FSIZE, limits["file_size_bytes"], limits["file_size_bytes"]),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
        (resource.RLIMIT_MEMLOCK, 0, 0),
    ):
        resource.setrlimit(which, (soft, hard))


# -- waiting --------------------------------------------------------------------------------

def _wait_program(pid: int, config: dict, status_fd: int) -> dict:
    """Wait for the program; SIGKILL it at the wall limit or when the parent dies."""
    deadline = time.monotonic() + float(config["limits"]["wall_seconds"]) + 1.0
    poller = select.poll()
    child_fd = _pidfd(pid)
    if child_fd >= 0:
        poller.register(child_fd, select.POLLIN)
    parent_fd = int(config.get("parent_fd", -1))
    if parent_fd >= 0:
        poller.register(parent_fd, select.POLLIN)
    poller.register(status_fd, 0)  # a pipe's writer gets POLLERR once no reader is left
    ended_by = "exit"
    while True:
        done, wait_status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            ended_by = "wall"
        else:
            step = remaining if child_fd >= 0 else min(remaining, 0.05)
            for fd, _ in poller.poll(step * 1000):
                if fd != child_fd:
                    ended_by = "parent_gone"
        if ended_by != "exit":
            os.kill(pid, signal.SIGKILL)
            _, wait_status, usage = os.wait4(pid, 0)
            break
    return {"wait_status": wait_status, "cpu_time": usage.ru_utime + usage.ru_stime, "ended_by": ended_by}


def _pidfd(pid: int) -> int:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def _become_subreaper() -> None:
    """Orphans of the program get re-parented to the launcher (not to the host's init)."""
    pr_set_child_subreaper = 36
    _LIBC.prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def _end_leftovers(config: dict, budget_seconds: float = 3.0) -> None:
    """Kill and reap everything the program left (PID 1 of its namespace, or its subreaper)."""
    deadline = time.monotonic() + budget_seconds
    uid = config["uid"]
    while time.monotonic() < deadline:
        if config["mounts"]:
            _kill_quietly(-1)  # PID 1 of the namespace: every other process in it
        elif uid is not None:
            _kill_all_as(int(uid))
        for child in _children_of(os.getpid()):
            _kill_quietly(child)
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # no children left
        time.sleep(0.01)


def _kill_quietly(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _children_of(parent: int) -> list[int]:
    children = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as handle:
                    fields = handle.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == parent:
                children.append(int(name))
    return children


def _kill_all_as(uid: int) -> None:
    """Root launcher without PID namespace: SIGKILL every process of ``uid``, even setsid ones."""
    pid = os.fork()
    if pid == 0:
        os.setresuid(uid, uid, uid)
        _kill_quietly(-1)  # every process we may signal, except ourselves
        os._exit(0)
    os.waitpid(pid, 0)


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == LAUNCH_FLAG:
    main(sys.argv[2])
