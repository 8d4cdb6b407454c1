"""A memory cgroup per sandbox run: one cap on everything the run can pin.

``RLIMIT_AS`` bounds each process's address space, but not memory that outlives a mapping
(a ``memfd``, SysV shm, tmpfs files) nor the sum over processes. A memory cgroup charges all
of it -- anonymous pages, shmem/tmpfs pages, page cache -- to the run, so ``memory_bytes``
becomes the run's total. Parent side (this process, root):

* :func:`find_parent` finds a writable place: the memory cgroup this process is in, on
  cgroup v2 (``memory`` in ``cgroup.controllers``) or the v1 ``memory`` hierarchy. Runs nest
  under it, so whatever limit the host put on us still applies.
* :func:`create` makes ``<parent>/<name>`` and writes the limit (v2: ``memory.max``,
  ``memory.swap.max`` = 0; v1: ``memory.limit_in_bytes``, ``memory.memsw.limit_in_bytes``
  where present). The launcher moves the program's process in (writing ``0`` to
  ``cgroup.procs`` through a descriptor it opened before leaving the host's file system);
  children follow.
* :func:`remove` deletes it after the run (killing whatever is still inside first);
  :func:`oom_kills` reads how many processes the kernel OOM-killed in it.

Nothing here is needed for correctness of a run: without a usable cgroup (no root, a
read-only ``/sys/fs/cgroup``, v2 without delegation) the sandbox falls back to closing the
routes (seccomp, see ``sandbox_seccomp``) and says so in ``sandbox_capabilities()``.
"""

from __future__ import annotations

import os
import signal
import time
from functools import lru_cache
from typing import NamedTuple

_ROOT = "/sys/fs/cgroup"


class CgroupParent(NamedTuple):
    """Where run cgroups go: ``path`` (a directory) and the hierarchy ``version`` (1 or 2)."""

    path: str
    version: int


def _own_cgroup_paths() -> dict[str, str]:
    """This process's cgroup per controller list ("" = the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    with open("/proc/self/cgroup", encoding="utf-8") as handle:
        for line in handle:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                paths[name] = path
    return paths


def find_parent() -> CgroupParent | None:
    """A memory cgroup directory this process may create children in, or None."""
    if os.geteuid() != 0:
        return None
    try:
        own = _own_cgroup_paths()
    except OSError:
        return None
    candidates = []
    if "memory" in own:  # v1 memory hierarchy
        candidates.append((os.path.join(_ROOT, "memory") + own["memory"], 1))
    if "" in own:  # v2: /sys/fs/cgroup itself or a hybrid's /sys/fs/cgroup/unified
        for mount in (_ROOT, os.path.join(_ROOT, "unified")):
            candidates.append((mount.rstrip("/") + own[""], 2))
    for path, version in candidates:
        path = os.path.normpath(path)
        if version == 2 and not _v2_memory_enabled(path):
            continue
        if os.path.isdir(path) and os.access(path, os.W_OK) and os.path.exists(
                os.path.join(path, "cgroup.procs")):
            return CgroupParent(path, version)
    return None


@lru_cache(maxsize=1)
def cached_parent() -> CgroupParent | None:
    """:func:`find_parent`, looked up once per process."""
    return find_parent()


def _v2_memory_enabled(path: str) -> bool:
    """v2: children of ``path`` get a memory controller (enabling it here if we may)."""
    try:
        with open(os.path.join(path, "cgroup.subtree_control"), encoding="utf-8") as handle:
            if "memory" in handle.read().split():
                return True
        with open(os.path.join(path, "cgroup.controllers"), encoding="utf-8") as handle:
            if "memory" not in handle.read().split():
                return False
        with open(os.path.join(path, "cgroup.subtree_control"), "w", encoding="utf-8") as handle:
            handle.write("+memory")  # EBUSY when processes live in path itself (v2's no-internal-process rule)
        return True
    except OSError:
        return False


def create(parent: CgroupParent, name: str, memory_bytes: int) -> str:
    """Make the run's cgroup with its memory cap; return its path. Raises OSError."""
    path = os.path.join(parent.path, name)
    os.mkdir(path, 0o755)
    try:
        if parent.version == 2:
            _write(path, "memory.max", memory_bytes)
            _write(path, "memory.swap.max", 0, optional=True)
        else:
            _write(path, "memory.limit_in_bytes", memory_bytes)
            _write(path, "memory.memsw.limit_in_bytes", memory_bytes, optional=True)
    except OSError:
        remove(path)
        raise
    return path


def _write(path: str, name: str, value: int, optional: bool = False) -> None:
    target = os.path.join(path, name)
    if optional and not os.path.exists(target):
        return
    with open(target, "w", encoding="utf-8") as handle:
        handle.write(str(value))


def oom_kills(path: str) -> int:
    """Processes the kernel OOM-killed in the cgroup (v2 ``memory.events``, v1 ``memory.oom_control``)."""
    for name in ("memory.events", "memory.oom_control"):
        try:
            with open(os.path.join(path, name), encoding="utf-8") as handle:
                return parse_oom_kills(handle.read())
        except OSError:
            continue
    return 0


def parse_oom_kills(text: str) -> int:
    """The ``oom_kill N`` line of a ``memory.events`` / ``memory.oom_control`` text (0 if absent)."""
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key == "oom_kill" and value.strip().isdigit():
            return int(value)
    return 0


def remove(path: str, budget_seconds: float = 2.0) -> bool:
    """Kill what is left in the cgroup and delete it; True when it is gone."""
    deadline = time.monotonic() + budget_seconds
    while True:
        try:
            os.rmdir(path)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
        for pid in _members(path):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.01)


def _members(path: str) -> list[int]:
    try:
        with open(os.path.join(path, "cgroup.procs"), encoding="utf-8") as handle:
            return [int(line) for line in handle if line.strip()]
    except OSError:
        return []
