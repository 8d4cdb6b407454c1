"""The sandbox's public types: limits, capabilities, results, errors (no behaviour here).

Re-exported by :mod:`gdpo.rewards.sandbox`; import them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

GiB = 1024**3
MiB = 1024**2

STATUSES = ("ok", "runtime_error", "compile_error", "timeout", "memory", "output_limit", "killed")
LEVELS = ("namespaces", "uid", "rlimits")  # strongest first


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
