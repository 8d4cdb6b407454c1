"""The task protocol and registry.

A :class:`Task` bundles train and test rows, the reward set that scores them, and a short
description. Rows are plain dicts: ``prompt`` (chat messages) plus reward columns. Columns
holding nested, row-varying structures (tool calls, test cases) are stored as JSON strings
so that they survive a round trip through Hugging Face ``datasets`` (Arrow would merge the
dict keys of different rows); rewards accept either the JSON string or the parsed value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from gdpo.errors import InputError, MissingFileError, UserError, one_line
from gdpo.signature import check_params, unknown

Row = dict[str, Any]


@dataclass
class Task:
    """A training task: rows, its default rewards, and how to read it."""

    name: str
    train: list[Row]
    test: list[Row]
    rewards: list[dict[str, Any]]  # reward-set config entries, see RewardSet.from_config
    description: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # e.g. source path, seed, sizes

    def columns(self) -> list[str]:
        """Reward columns of the rows (everything but the prompt)."""
        rows = self.train or self.test
        return sorted(k for k in (rows[0] if rows else {}) if k != "prompt")


_TASKS: dict[str, Callable[..., Task]] = {}
_BUILTINS_LOADED = False


def register_task(name: str) -> Callable:
    """Decorator: register ``build(**params) -> Task`` under ``name``; twice is an error."""

    def decorate(builder: Callable[..., Task]) -> Callable[..., Task]:
        if name in _TASKS:
            raise ValueError(f"task {name!r} is already registered; pick another name")
        _TASKS[name] = builder
        return builder

    return decorate


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    import importlib

    for module in ("toolcall", "math", "code", "toy", "bfcl_multi_turn"):
        try:
            importlib.import_module(f"gdpo.data.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gdpo.data.{module}":
                raise


def check_task_int(task: str, key: str, value: Any, minimum: int = 1) -> None:
    """A task builder's optional whole-number parameter: None (its default) or an int >= ``minimum``.

    >>> check_task_int("toy", "max_turns", 0)
    Traceback (most recent call last):
    ...
    ValueError: task toy: max_turns=0; give a whole number >= 1 (or leave it out for the default)
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < minimum):
        raise ValueError(f"task {task}: {key}={value!r}; give a whole number >= {minimum} "
                         "(or leave it out for the default)")


def task_names() -> list[str]:
    _load_builtins()
    return sorted(_TASKS)


def get_task(name: str, **params: Any) -> Task:
    """Build the task ``name`` with ``params`` (e.g. ``path=...``, ``num_train=...``, ``seed=...``).

    The name and the parameter names (and simple types) are checked against the builder's
    signature first (:func:`gdpo.signature.check_params`); a builder's ValueError or
    FileNotFoundError (a bad value, a missing file) comes back as a :class:`gdpo.errors.UserError`
    naming the task.
    """
    _load_builtins()
    if name not in _TASKS:
        raise unknown("task", name, "not a registered task", name, sorted(_TASKS))
    check_params(f"task {name!r}", _TASKS[name], params, "task param {}", provided=())
    try:
        return _TASKS[name](**params)
    except UserError:
        raise
    except FileNotFoundError as exc:
        raise MissingFileError(_about(name, exc)) from exc
    except ValueError as exc:
        raise InputError(_about(name, exc)) from exc


def _about(name: str, exc: Exception) -> str:
    message = one_line(str(exc))
    return message if name in message else f"task {name!r}: {message}"
