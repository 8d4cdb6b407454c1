"""The task protocol and registry.

A :class:`Task` bundles train and test rows, the reward set that scores them, and a short
description. Rows are plain dicts: ``prompt`` (chat messages) plus reward columns. Columns
holding nested, row-varying structures (tool calls, test cases) are stored as JSON strings
so that they survive a round trip through Hugging Face ``datasets`` (Arrow would merge the
dict keys of different rows); rewards accept either the JSON string or the parsed value.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable

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

    for module in ("toolcall", "math", "code", "toy"):
        try:
            importlib.import_module(f"gdpo.data.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"gdpo.data.{module}":
                raise


def task_names() -> list[str]:
    _load_builtins()
    return sorted(_TASKS)


def get_task(name: str, **params: Any) -> Task:
    """Build the task ``name`` with ``params`` (e.g. ``path=...``, ``num_train=...``, ``seed=...``)."""
    _load_builtins()
    if name not in _TASKS:
        close = difflib.get_close_matches(name, _TASKS, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise KeyError(f"unknown task {name!r}.{hint} Valid tasks: {', '.join(sorted(_TASKS))}")
    return _TASKS[name](**params)
