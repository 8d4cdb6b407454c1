"""Run folders: the lock a live run holds, and the sweep of what dead runs left.

Each run's host folder ``<TMPDIR>/gdpo-sbx-*`` holds ``lock``, on which the parent keeps an
exclusive ``flock`` for the whole run (released by the kernel when the parent dies). The
launcher deletes the folder (and the run's cgroup) itself at the end, even when the parent
is gone; :func:`sweep_stale` handles the rest -- a parent and launcher killed together -- at
the first run of each process.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import tempfile
import time

from gdpo.rewards import sandbox_cgroup

DIR_PREFIX = "gdpo-sbx-"


def hold_lock(host_dir: str) -> int:
    """An exclusive flock on ``host_dir/lock`` while the run lasts (the stale sweep skips held ones)."""
    fd = os.open(os.path.join(host_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


_SWEPT: set[int] = set()  # pids that swept already (a forked child sweeps again)


def sweep_stale_once() -> None:
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
        names = [n for n in os.listdir(root) if n.startswith(DIR_PREFIX)]
    except OSError:
        return removed
    for name in names:
        path = os.path.join(root, name)
        if _is_stale(path, min_age_s):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    parent = sandbox_cgroup.cached_parent() if os.geteuid() == 0 else None
    if parent is not None:
        for name in os.listdir(parent.path):
            path = os.path.join(parent.path, name)
            if name.startswith(DIR_PREFIX) and time.time() - os.stat(path).st_mtime > min_age_s \
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
