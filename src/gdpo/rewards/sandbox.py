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
:class:`SandboxError` instead.
"""

from __future__ import annotations

import fcntl
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
import warnings
from dataclasses import asdict, dataclass
from functools import lru_cache

from gdpo.rewards import sandbox_cgroup, sandbox_seccomp
from gdpo.rewards.sandbox_launch import LAUNCH_FLAG, SAFE_PATH

GiB = 1024**3
MiB = 1024**2

STATUSES = ("ok", "runtime_error", "compile_error", "timeout", "memory", "output_limit", "killed")
LEVELS = ("namespaces", "uid", "rlimits")  # strongest first
_UNSHARE_FLAGS = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
_SANDBOX_UID_RANGE = (200_000, 1_200_000)  # fresh uid per run; no passwd entry needed
_DIR_PREFIX = "gdpo-sbx-"
_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sandbox_launch.py")

# What each level no longer blocks, compared with "namespaces" (the warning and the refusal name these).
UNBLOCKED = {
    "namespaces": (),
    "uid": (
        "network access (TCP/UDP to any address, 127.0.0.1 included)",
        "host unix sockets (any world-connectable socket file, abstract sockets)",
        "writes into world-writable host directories (/tmp, /var/tmp, /dev/shm)",
        "reading world-readable host files and other processes' command lines in /proc",
    ),
    "rlimits": (
        "network access (TCP/UDP to any address, 127.0.0.1 included)",
        "host unix sockets (any world-connectable socket file, abstract sockets)",
        "writes anywhere this user may write (the program runs as this user)",
        "reading this user's files and other processes' command lines in /proc",
        "signals to this user's processes; orphans that leave the subreaper before the final sweep",
        "as root: the process limit (the kernel ignores RLIMIT_NPROC for root)",
    ),
}


class SandboxError(RuntimeError):
    """The sandbox itself could not start or set up the program, or refused a weak level
    (not the program's fault)."""


class SandboxWeakLevelWarning(UserWarning):
    """Programs run at a level below ``namespaces``; the message names what is not blocked."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program run.

    cpu_seconds: CPU time of the program's main process (RLIMIT_CPU; SIGKILL 1 s later).
    wall_seconds: wall-clock time of the whole run, startup included; then everything is killed.
    memory_bytes: address space per process (RLIMIT_AS), and, where a memory cgroup is usable
        (``sandbox_capabilities().memory_cap``), all memory the run pins together: every
        process, tmpfs files, shared memory. At most 2 GiB by default.
    file_size_bytes: largest file the program may write (RLIMIT_FSIZE).
    output_bytes: stdout + stderr bytes kept; more kills the run (status ``output_limit``).
    max_processes: processes + threads the run's uid may own (RLIMIT_NPROC, see module doc).
    scratch_bytes: size of each private tmpfs (``/tmp``, ``/dev/shm``: the only writable places).
    open_files: RLIMIT_NOFILE.
    python: interpreter that runs the program; default: the first one an unprivileged uid can run.
    """

    cpu_seconds: float = 5.0
    wall_seconds: float = 10.0
    memory_bytes: int = 2 * GiB
    file_size_bytes: int = 16 * MiB
    output_bytes: int = 1 * MiB
    max_processes: int = 32
    scratch_bytes: int = 64 * MiB
    open_files: int = 256
    python: str | None = None

    def __post_init__(self) -> None:
        for name in ("cpu_seconds", "wall_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value > 0):
                raise ValueError(f"SandboxLimits.{name} must be a positive number of seconds, got {value!r}")
        for name in ("memory_bytes", "file_size_bytes", "output_bytes", "max_processes", "scratch_bytes",
                     "open_files"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value > 0):
                raise ValueError(f"SandboxLimits.{name} must be a positive integer, got {value!r}")
        if self.memory_bytes < 64 * MiB:
            raise ValueError(f"SandboxLimits.memory_bytes={self.memory_bytes} is below 64 MiB, too small for "
                             "the Python interpreter to start; use at least 64 * 1024**2")


@dataclass(frozen=True)
class SandboxCapabilities:
    """What isolation holds on this host (detected at runtime, cached)."""

    level: str  # one of LEVELS
    is_root: bool
    pid_namespace: bool  # no orphans, host processes invisible
    network_isolated: bool  # empty network namespace (no interface but a down loopback)
    filesystem_isolated: bool  # minimal read-only root: no host directory or socket reachable
    uid_drop: bool  # program runs as a fresh unprivileged uid
    process_limit: bool  # RLIMIT_NPROC is in force for the program
    python: str  # interpreter running the programs
    memory_cap: str | None = None  # "cgroup v1" | "cgroup v2": memory_bytes caps the whole run
    seccomp: bool = False  # memfd / SysV shm / namespaces / mounts refused
    notes: tuple[str, ...] = ()


@dataclass
class RunResult:
    """Outcome of one program run."""

    status: str  # one of STATUSES
    stdout: str
    stderr: str
    returncode: int | None  # exit code; -signal when killed by a signal; None when we killed it
    wall_time: float  # seconds, startup included
    cpu_time: float = 0.0  # seconds of the program's main process (user + system)
    signal: int | None = None
    level: str = ""  # isolation level it ran under
    uid: int | None = None  # uid it ran as (when dropped)
    truncated: bool = False  # output cut at limits.output_bytes

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ---------------------------------------------------------------------------------------
# Levels: choosing, refusing, warning
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
    level = _choose_level(caps, level)
    _refuse_below(level, resolve_min_level(min_level), caps)
    _warn_if_weak(level, caps)
    return _run(source, stdin, limits, dict(files or {}), level, caps)


def _choose_level(caps: SandboxCapabilities, level: str | None) -> str:
    level = level or os.environ.get("GDPO_SANDBOX_LEVEL") or caps.level
    _check_level_name(level, "sandbox level")
    if LEVELS.index(level) < LEVELS.index(caps.level):
        raise ValueError(f"sandbox level {level!r} is not available on this host (best: {caps.level!r}); "
                         "see sandbox_capabilities().notes")
    if level == "uid" and not caps.is_root:
        raise ValueError("sandbox level 'uid' needs root; use 'rlimits'")
    return level


def _check_level_name(level: str, what: str) -> None:
    if level not in LEVELS:
        raise ValueError(f"{what} {level!r} is unknown; choose one of {LEVELS} (strongest first)")


def resolve_min_level(min_level: str | None, default: str = "rlimits") -> str:
    """``min_level``, else ``GDPO_SANDBOX_MIN_LEVEL``, else ``default``; validated."""
    value = min_level or os.environ.get("GDPO_SANDBOX_MIN_LEVEL") or default
    _check_level_name(value, "min_level (GDPO_SANDBOX_MIN_LEVEL)")
    return value


def _refuse_below(level: str, min_level: str, caps: SandboxCapabilities) -> None:
    if LEVELS.index(level) <= LEVELS.index(min_level):
        return
    why = "; ".join(caps.notes) if level == caps.level else f"forced with level={level!r} or GDPO_SANDBOX_LEVEL"
    raise SandboxError(
        f"sandbox level {level!r} is below the required min_level {min_level!r} ({why}); at {level!r} "
        f"programs are not blocked from: {'; '.join(UNBLOCKED[level])}. Fix: run where `unshare` works "
        "(root, or unprivileged user namespaces), or accept the weaker level explicitly with "
        f"GDPO_SANDBOX_MIN_LEVEL={level} (code rewards: gdpo.rewards.code.configure(min_level={level!r}))")


def require_level(min_level: str) -> SandboxCapabilities:
    """Refuse (SandboxError, before any program runs) when this host's level is below ``min_level``."""
    caps = sandbox_capabilities()
    _refuse_below(_choose_level(caps, None), resolve_min_level(min_level), caps)
    return caps


_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()


def _warn_if_weak(level: str, caps: SandboxCapabilities) -> None:
    """Once per process and level: say what a level below ``namespaces`` no longer blocks."""
    if not UNBLOCKED[level]:
        return
    with _WARN_LOCK:
        if level in _WARNED:
            return
        _WARNED.add(level)
    why = "; ".join(caps.notes) if level == caps.level else f"forced with level={level!r} or GDPO_SANDBOX_LEVEL"
    warnings.warn(f"gdpo sandbox runs programs at level {level!r}, not 'namespaces' ({why}); programs are NOT "
                  f"blocked from: {'; '.join(UNBLOCKED[level])}. Refuse this with min_level='namespaces' "
                  "(GDPO_SANDBOX_MIN_LEVEL=namespaces).", SandboxWeakLevelWarning, stacklevel=3)


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
    _sweep_stale_once()
    host_dir = tempfile.mkdtemp(prefix=_DIR_PREFIX)
    lock_fd = _hold_lock(host_dir)
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
    return _memory_cgroup_parent() if caps.memory_cap else None


@lru_cache(maxsize=1)
def _memory_cgroup_parent():
    return sandbox_cgroup.find_parent()


def _own_pidfd() -> int:
    """A pidfd of this process for the launcher to watch (-1 where the kernel has none)."""
    try:
        return os.pidfd_open(os.getpid())
    except (AttributeError, OSError):
        return -1


def _hold_lock(host_dir: str) -> int:
    """An exclusive flock on ``host_dir/lock`` while the run lasts (the stale sweep skips held ones)."""
    fd = os.open(os.path.join(host_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


_SWEPT: set[int] = set()  # pids that swept already (a forked child sweeps again)


def _sweep_stale_once() -> None:
    if os.getpid() in _SWEPT:
        return
    _SWEPT.add(os.getpid())
    sweep_stale()


def sweep_stale(min_age_s: float = 60.0) -> list[str]:
    """Delete run directories (and their empty cgroups) that no live run holds; return them.

    A run's directory is held by its parent's flock; one whose lock can be taken belongs to a
    run whose parent and launcher both died before cleaning up (e.g. SIGKILLed together).
    """
    removed = []
    root = tempfile.gettempdir()
    try:
        names = [n for n in os.listdir(root) if n.startswith(_DIR_PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        if _is_stale(path, min_age_s):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    parent = _memory_cgroup_parent() if os.geteuid() == 0 else None
    if parent is not None:
        for name in os.listdir(parent.path):
            path = os.path.join(parent.path, name)
            if name.startswith(_DIR_PREFIX) and time.time() - os.stat(path).st_mtime > min_age_s \
                    and not sandbox_cgroup._members(path):
                if sandbox_cgroup.remove(path, budget_seconds=0.1):
                    removed.append(path)
    return removed


def _is_stale(path: str, min_age_s: float) -> bool:
    try:
        info = os.lstat(path)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            return False
        fd = os.open(os.path.join(path, "lock"), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return time.time() - info.st_mtime > min_age_s  # no lock file: an old-format or half-made dir
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return time.time() - info.st_mtime > 2.0  # not a run that is just taking its lock
    except OSError:
        return False  # a live run holds it
    finally:
        os.close(fd)


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
    parent = _memory_cgroup_parent()
    if parent is None:
        notes.append("no writable memory cgroup: memory_bytes bounds each process (RLIMIT_AS), not the run")
        return None
    try:
        sandbox_cgroup.remove(sandbox_cgroup.create(parent, f"{_DIR_PREFIX}probe-{secrets.token_hex(4)}", 64 * MiB))
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
