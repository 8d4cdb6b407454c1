"""Run untrusted Python programs in an isolated, resource-limited child process.

Generated code is hostile until proven otherwise. :func:`run_program` runs one program with
its stdin and returns a :class:`RunResult`; :func:`sandbox_capabilities` says which isolation
holds on this host. How it works (details and the per-host table in ``docs/sandbox.md``):

* The parent writes the program into a private (0700) host directory and starts a small
  *launcher* (this file run as a script, stdlib only) in a new session, under
  ``unshare --mount --net --pid --ipc --uts --fork --kill-child --mount-proc`` where the host
  allows it (root, or unprivileged user namespaces with ``--map-root-user``).
* Inside the namespaces the launcher mounts small private tmpfs over ``/tmp``, ``/var/tmp``,
  ``/dev/shm`` and ``/run/lock`` (the world-writable places), remounts ``/`` read-only, copies
  the program into ``/tmp/work``, then forks the program's process.
* The program's process sets its rlimits (CPU, address space, file size, core, open files,
  processes), drops to a fresh unprivileged uid when the host runs as root (so that
  ``RLIMIT_NPROC`` applies: the kernel ignores it for uid 0), and execs a clean interpreter
  (``python -I``, empty environment but PATH/HOME/LANG).
* The launcher stays as PID 1 of the PID namespace: when the program ends, the launcher
  exits and the kernel kills everything left in the namespace -- no orphans, even for
  processes that called ``setsid``. It reports the program's wait status and CPU time to
  the parent on a separate pipe.
* The parent reads stdout/stderr with a byte cap and a wall-clock deadline; on either it
  kills the whole process group (and so the namespace).

Without namespaces the same launcher still applies the rlimits, the uid drop (when root)
and kills every process of the run's uid at the end; see :class:`SandboxCapabilities`.
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
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

GiB = 1024**3
MiB = 1024**2

STATUSES = ("ok", "runtime_error", "compile_error", "timeout", "memory", "output_limit", "killed")
LEVELS = ("namespaces", "uid", "rlimits")  # strongest first
_LAUNCH_FLAG = "--gdpo-sandbox-launch"
_UNSHARE_FLAGS = ["--mount", "--net", "--pid", "--ipc", "--uts", "--fork", "--kill-child", "--mount-proc"]
_SANDBOX_UID_RANGE = (200_000, 1_200_000)  # fresh uid per run; no passwd entry needed
_PRIVATE_TMPFS = ("/tmp", "/var/tmp", "/dev/shm", "/run/lock")
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


class SandboxError(RuntimeError):
    """The sandbox itself could not start or set up the program (not the program's fault)."""


@dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one program run.

    cpu_seconds: CPU time of the program's main process (RLIMIT_CPU; SIGKILL 1 s later).
    wall_seconds: wall-clock time of the whole run, startup included; then everything is killed.
    memory_bytes: address space per process (RLIMIT_AS); at most 2 GiB by default.
    file_size_bytes: largest file the program may write (RLIMIT_FSIZE).
    output_bytes: stdout + stderr bytes kept; more kills the run (status ``output_limit``).
    max_processes: processes + threads the run's uid may own (RLIMIT_NPROC, see module doc).
    scratch_bytes: size of each private tmpfs (the program's only writable places).
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
    filesystem_isolated: bool  # private tmpfs over world-writable dirs, / read-only
    uid_drop: bool  # program runs as a fresh unprivileged uid
    process_limit: bool  # RLIMIT_NPROC is in force for the program
    python: str  # interpreter running the programs
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
# Parent side
# ---------------------------------------------------------------------------------------

def run_program(source: str, stdin: str = "", *, limits: SandboxLimits | None = None,
                files: dict[str, str] | None = None, level: str | None = None) -> RunResult:
    """Run Python ``source`` as ``main.py`` with ``stdin``; extra ``files`` sit beside it.

    ``level`` forces a weaker isolation level than detected (tests, debugging); it may not
    ask for more than the host allows.
    """
    limits = limits or SandboxLimits()
    if not isinstance(source, str) or not isinstance(stdin, str):
        raise TypeError(f"source and stdin must be str, got {type(source).__name__} and {type(stdin).__name__}")
    caps = sandbox_capabilities()
    level = _choose_level(caps, level)
    return _run(source, stdin, limits, dict(files or {}), level, caps.python if limits.python is None
                else limits.python)


def _choose_level(caps: SandboxCapabilities, level: str | None) -> str:
    level = level or os.environ.get("GDPO_SANDBOX_LEVEL") or caps.level
    if level not in LEVELS:
        raise ValueError(f"sandbox level {level!r} is unknown; choose one of {LEVELS}")
    if LEVELS.index(level) < LEVELS.index(caps.level):
        raise ValueError(f"sandbox level {level!r} is not available on this host (best: {caps.level!r}); "
                         "see sandbox_capabilities().notes")
    if level == "uid" and not caps.is_root:
        raise ValueError("sandbox level 'uid' needs root; use 'rlimits'")
    return level


def _run(source: str, stdin: str, limits: SandboxLimits, files: dict[str, str], level: str,
         python: str) -> RunResult:
    host_dir = tempfile.mkdtemp(prefix="gdpo-sbx-")
    uid = _fresh_uid() if os.geteuid() == 0 and level != "rlimits" else None
    status_read, status_write = os.pipe()
    try:
        config = _write_inputs(host_dir, source, stdin, files, limits, level, python, uid, status_write)
        cmd = _launch_command(level, config)
        start = time.monotonic()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={"PATH": _SAFE_PATH, "LANG": "C.UTF-8"}, start_new_session=True,
                                pass_fds=(status_write,), close_fds=True)
        os.close(status_write)
        status_write = -1
        outcome = _collect(proc, status_read, limits, start)
    finally:
        if status_write >= 0:
            os.close(status_write)
        os.close(status_read)
        if uid is not None:
            _kill_uid(uid)
        shutil.rmtree(host_dir, ignore_errors=True)
    return _classify(outcome, limits, level, uid)


def _write_inputs(host_dir: str, source: str, stdin: str, files: dict[str, str], limits: SandboxLimits,
                  level: str, python: str, uid: int | None, status_fd: int) -> str:
    """Write program, stdin and launcher config into ``host_dir``; return the config path."""
    for name in files:
        if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", name) or name == "main.py":
            raise ValueError(f"extra file name {name!r} must be a plain file name other than main.py")
    all_files = {"main.py": source, **files}
    with open(os.path.join(host_dir, "stdin.txt"), "w", encoding="utf-8") as handle:
        handle.write(stdin)
    config = {
        "files": all_files, "stdin": os.path.join(host_dir, "stdin.txt"), "mounts": level == "namespaces",
        "workdir": os.path.join(host_dir, "work"), "uid": uid, "python": python,
        "status_fd": status_fd, "limits": asdict(limits), "nproc_base": _nproc_base(uid),
    }
    config_path = os.path.join(host_dir, "config.json")
    with open(config_path, "w", encoding="utf-8") as handle:
        json.dump(config, handle)
    if uid is not None and level != "namespaces":
        os.chmod(host_dir, 0o711)  # the uid traverses to its work dir, cannot list or read the rest
    return config_path


def _launch_command(level: str, config_path: str) -> list[str]:
    launcher = [sys.executable, "-I", "-S", os.path.abspath(__file__), _LAUNCH_FLAG, config_path]
    if level != "namespaces":
        return launcher
    user = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    return [shutil.which("unshare") or "unshare", *user, *_UNSHARE_FLAGS, *launcher]


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
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
        result.signal, result.returncode = sig, -sig
        cpu_spent = result.cpu_time >= limits.cpu_seconds - 0.05
        result.status = "timeout" if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_spent) else "killed"
        return result
    result.returncode = os.WEXITSTATUS(wait_status)
    result.status = "ok" if result.returncode == 0 else _classify_error(err)
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
                       env={"PATH": _SAFE_PATH}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, cwd="/", check=False)


# ---------------------------------------------------------------------------------------
# Capability detection
# ---------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def sandbox_capabilities() -> SandboxCapabilities:
    """Detect the strongest isolation level that works here by running a probe program."""
    is_root = os.geteuid() == 0
    notes: list[str] = []
    python = _program_python(is_root, notes)
    for level in LEVELS:
        if level == "uid" and not is_root:
            continue
        if level == "namespaces" and not shutil.which("unshare"):
            notes.append("util-linux `unshare` not found: no namespaces")
            continue
        problem = _probe(level, python)
        if problem is None:
            return _capabilities_for(level, is_root, python, notes)
        notes.append(f"level {level!r} unavailable: {problem}")
    raise SandboxError("no sandbox level works on this host: " + "; ".join(notes))


def _capabilities_for(level: str, is_root: bool, python: str, notes: list[str]) -> SandboxCapabilities:
    namespaces = level == "namespaces"
    uid_drop = is_root and level != "rlimits"
    if not uid_drop and is_root:
        notes.append("running as root without uid drop: RLIMIT_NPROC does not apply, no process limit")
    return SandboxCapabilities(level=level, is_root=is_root, pid_namespace=namespaces,
                               network_isolated=namespaces, filesystem_isolated=namespaces,
                               uid_drop=uid_drop, process_limit=not is_root or uid_drop,
                               python=python, notes=tuple(notes))


def _probe(level: str, python: str) -> str | None:
    limits = SandboxLimits(cpu_seconds=5, wall_seconds=15, python=python)
    try:
        result = _run("print('gdpo-probe-ok')", "", limits, {}, level, python)
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


# ---------------------------------------------------------------------------------------
# Launcher side (runs as a script: stdlib only, no gdpo imports)
# ---------------------------------------------------------------------------------------

def _launcher_main(config_path: str) -> None:
    with open(config_path, encoding="utf-8") as handle:
        config = json.load(handle)
    status_fd = int(config["status_fd"])
    try:
        workdir = _prepare_launch(config)
        if not config["mounts"]:
            _become_subreaper()
        pid = os.fork()
        if pid == 0:
            _exec_program(config, workdir, status_fd)
        _, wait_status, usage = os.wait4(pid, 0)
        report = {"wait_status": wait_status, "cpu_time": usage.ru_utime + usage.ru_stime}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a setup error
        report = {"setup_error": f"{type(exc).__name__}: {exc}"}
    os.write(status_fd, json.dumps(report).encode())
    if not config["mounts"]:
        _end_descendants(config["uid"])
    os._exit(0)  # as PID 1 of the namespace, this kills whatever the program left behind


def _become_subreaper() -> None:
    """Orphans of the program get re-parented to the launcher (not to the host's init)."""
    import ctypes

    pr_set_child_subreaper = 36
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_child_subreaper, 1, 0, 0, 0)


def _end_descendants(uid: int | None, budget_seconds: float = 3.0) -> None:
    """Without a PID namespace: kill and reap everything the program left (we are its subreaper)."""
    deadline = time.monotonic() + budget_seconds
    while time.monotonic() < deadline:
        if uid is not None:
            _kill_all_as(int(uid))
        for pid in _children_of(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return  # no children left
        time.sleep(0.01)


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
    """Launcher (root) without PID namespace: SIGKILL every process of ``uid``, even setsid ones."""
    pid = os.fork()
    if pid == 0:
        os.setresuid(uid, uid, uid)
        try:
            os.kill(-1, signal.SIGKILL)  # every process we may signal, except ourselves
        except ProcessLookupError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)


def _prepare_launch(config: dict) -> str:
    """Open stdin, set up the private file system, write the program files; return the work dir."""
    stdin_fd = os.open(config["stdin"], os.O_RDONLY)
    os.dup2(stdin_fd, 0)
    os.close(stdin_fd)
    workdir = config["workdir"]
    if config["mounts"]:
        _private_mounts(int(config["limits"]["scratch_bytes"]))
        workdir = "/tmp/work"
    os.makedirs(workdir, mode=0o700, exist_ok=True)
    for name, text in config["files"].items():
        with open(os.path.join(workdir, name), "w", encoding="utf-8") as handle:
            handle.write(text)
    uid = config["uid"]
    if uid is not None:
        for name in os.listdir(workdir):
            os.chown(os.path.join(workdir, name), uid, uid)
        os.chown(workdir, uid, uid)
    return workdir


def _private_mounts(scratch_bytes: int) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    ms_rdonly, ms_nosuid, ms_nodev, ms_remount, ms_bind = 1, 2, 4, 32, 4096

    def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
        rc = libc.mount(source.encode(), target.encode(), fstype.encode() if fstype else None, flags,
                        data.encode() if data else None)
        if rc != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"mount {target}: {os.strerror(errno)}")

    for target in _PRIVATE_TMPFS:
        if os.path.isdir(target):
            mount("tmpfs", target, "tmpfs", ms_nosuid | ms_nodev, f"size={scratch_bytes},mode=1777")
    mount("none", "/", None, ms_remount | ms_bind | ms_rdonly, None)


def _exec_program(config: dict, workdir: str, status_fd: int) -> None:
    """Child: limits, privilege drop, clean exec. Never returns."""
    try:
        os.set_inheritable(status_fd, False)  # the program never sees the status pipe
        _set_rlimits(config["limits"], int(config["nproc_base"]))
        uid = config["uid"]
        if uid is not None:
            os.setgroups([])
            os.setresgid(uid, uid, uid)
            os.setresuid(uid, uid, uid)
        os.chdir(workdir)
        os.umask(0o077)
        env = {"PATH": _SAFE_PATH, "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
        python = config["python"]
        os.execve(python, [python, "-I", "main.py"], env)
    except BaseException as exc:  # noqa: BLE001
        os.write(status_fd, json.dumps({"setup_error": f"{type(exc).__name__}: {exc}"}).encode())
        os._exit(127)


def _set_rlimits(limits: dict, nproc_base: int) -> None:
    import math
    import resource

    cpu = int(math.ceil(limits["cpu_seconds"]))
    nproc = nproc_base + int(limits["max_processes"])
    for which, soft, hard in (
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_AS, limits["memory_bytes"], limits["memory_bytes"]),
        (resource.RLIMIT_FSIZE, limits["file_size_bytes"], limits["file_size_bytes"]),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_NOFILE, limits["open_files"], limits["open_files"]),
    ):
        resource.setrlimit(which, (soft, hard))


if __name__ == "__main__" and len(sys.argv) == 3 and sys.argv[1] == _LAUNCH_FLAG:
    _launcher_main(sys.argv[2])
