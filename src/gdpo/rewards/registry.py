"""The reward registry: names -> reward callables.

A reward is a plain callable ``fn(completions: list[str], **columns) -> list[float | None]``
returning one value per completion (``None`` = "not applicable", NaN for the estimators).
``columns`` are the dataset's columns aligned with the completions, the same convention as
TRL's ``reward_funcs``, so every reward here plugs into TRL unchanged.

Two kinds of entries:

* a plain reward, registered with :func:`register_reward`; ``get(name)`` returns it;
* a configurable reward, registered with :func:`register_reward_factory`; the factory takes
  keyword parameters (``max_tokens=4000``, ``tokenizer=...``) and returns the callable;
  ``get(name, **params)`` builds it.

Each entry records its *floor*: the score a sample gets when the reward raises on it
(see :class:`gdpo.rewards.reward_set.RewardSet`), and the dataset columns it reads.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

from gdpo.errors import ParameterError, UnknownNameError
from gdpo.signature import check_params


class RewardFn(Protocol):
    def __call__(self, completions: list[str], **columns: Any) -> list[float | None]: ...


@dataclass(frozen=True)
class RewardEntry:
    """One registered reward."""

    name: str
    builder: Callable[..., Any]  # the reward itself, or a factory of rewards
    is_factory: bool
    floor: float  # score given to a sample on which the reward raised
    columns: tuple[str, ...] = ()  # dataset columns the reward reads
    description: str = ""


_REGISTRY: dict[str, RewardEntry] = {}
_BUILTINS_LOADED = False


def _add(entry: RewardEntry) -> None:
    if entry.name in _REGISTRY:
        raise ValueError(
            f"reward {entry.name!r} is already registered (by {_REGISTRY[entry.name].builder!r}); "
            "pick another name or unregister the old one first"
        )
    _REGISTRY[entry.name] = entry


def register_reward(name: str, *, floor: float = 0.0, columns: tuple[str, ...] = (),
                    description: str = "") -> Callable:
    """Decorator: register ``fn(completions, **columns) -> list[float | None]`` under ``name``."""

    def decorate(fn: Callable) -> Callable:
        _add(RewardEntry(name, fn, False, float(floor), tuple(columns), description or (fn.__doc__ or "").strip().split("\n")[0]))
        fn.reward_name = name  # type: ignore[attr-defined]
        fn.floor = float(floor)  # type: ignore[attr-defined]
        return fn

    return decorate


def register_reward_factory(name: str, *, floor: float = 0.0, columns: tuple[str, ...] = (),
                            description: str = "") -> Callable:
    """Decorator: register a factory ``make(**params) -> reward callable`` under ``name``."""

    def decorate(factory: Callable) -> Callable:
        _add(RewardEntry(name, factory, True, float(floor), tuple(columns), description or (factory.__doc__ or "").strip().split("\n")[0]))
        return factory

    return decorate


def unregister(name: str) -> None:
    """Remove a reward (mainly for tests and for replacing a built-in)."""
    _REGISTRY.pop(name, None)


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if _BUILTINS_LOADED:
        return
    _BUILTINS_LOADED = True
    # Importing the modules registers their rewards.
    from gdpo.rewards import builtin  # noqa: F401


def names() -> list[str]:
    """All registered reward names, sorted."""
    _load_builtins()
    return sorted(_REGISTRY)


def entry(name: str) -> RewardEntry:
    """The registry entry of ``name`` (a registered name or a dotted import path)."""
    _load_builtins()
    if name in _REGISTRY:
        return _REGISTRY[name]
    if "." in name or ":" in name:
        fn = _import_dotted(name)
        return RewardEntry(name, fn, False, float(getattr(fn, "floor", 0.0)), (), "")
    close = difflib.get_close_matches(name, _REGISTRY, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise UnknownNameError(
        f"unknown reward {name!r}.{hint} Valid names: {', '.join(sorted(_REGISTRY))}; "
        "or give a dotted import path such as 'mypackage.rewards:my_reward'."
    )


def get(name: str, **params: Any) -> Callable:
    """Return the reward callable named ``name``, building it with ``params`` if configurable."""
    e = entry(name)
    if e.is_factory:
        check_params(f"reward {name!r}", e.builder, params, f"{name}.params.{{}}")  # names, required, types
        fn = e.builder(**params)
        if not hasattr(fn, "floor"):
            try:
                fn.floor = e.floor  # type: ignore[attr-defined]
                fn.reward_name = name  # type: ignore[attr-defined]
            except AttributeError:
                pass
        return fn
    if params:
        raise ParameterError(
            f"reward {name!r} takes no parameters, got {sorted(params)}; "
            "remove them from the reward's config"
        )
    return e.builder


def _import_dotted(path: str) -> Callable:
    module_name, _, attr = path.partition(":") if ":" in path else path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
        fn = getattr(module, attr)
    except (ImportError, AttributeError, ValueError) as exc:  # ValueError: ':fn' (no module)
        raise UnknownNameError(
            f"cannot import reward {path!r}: {exc}. Use 'module.path:function' with the module on "
            "PYTHONPATH, or a registered name (see `gdpo.rewards.names()`)."
        ) from exc
    if not callable(fn):
        raise ParameterError(f"reward {path!r} resolved to {fn!r}, which is not callable; "
                             "give a function fn(completions, **columns) -> list[float | None]")
    return fn
