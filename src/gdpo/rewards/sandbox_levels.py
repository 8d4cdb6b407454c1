"""Sandbox levels: choosing one, refusing one below ``min_level``, warning about a weak one.

``LEVELS`` are ordered strongest first. :data:`UNBLOCKED` lists, per level, what it no longer
blocks compared with ``namespaces``; the warning (:class:`SandboxWeakLevelWarning`, once per
process and level) and the refusal (:class:`SandboxError`) both name these.
"""

from __future__ import annotations

import os
import threading
import warnings

from gdpo.rewards.sandbox_types import LEVELS, SandboxCapabilities, SandboxError, SandboxWeakLevelWarning

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


def choose_level(caps: SandboxCapabilities, level: str | None) -> str:
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


def refuse_below(level: str, min_level: str, caps: SandboxCapabilities) -> None:
    if LEVELS.index(level) <= LEVELS.index(min_level):
        return
    why = "; ".join(caps.notes) if level == caps.level else f"forced with level={level!r} or GDPO_SANDBOX_LEVEL"
    raise SandboxError(
        f"sandbox level {level!r} is below the required min_level {min_level!r} ({why}); at {level!r} "
        f"programs are not blocked from: {'; '.join(UNBLOCKED[level])}. Fix: run where `unshare` works "
        "(root, or unprivileged user namespaces), or accept the weaker level explicitly with "
        f"GDPO_SANDBOX_MIN_LEVEL={level} (code rewards: gdpo.rewards.code.configure(min_level={level!r}))")


_WARNED: set[str] = set()
_WARN_LOCK = threading.Lock()


def warn_if_weak(level: str, caps: SandboxCapabilities) -> None:
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
