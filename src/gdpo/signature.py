"""Names and keyword parameters: the nearest valid name, and parameters against a signature.

The bottom layer of the input checks (imports only :mod:`gdpo.errors`), shared by the
registries (:mod:`gdpo.data.base`, :mod:`gdpo.rewards.registry`) and :mod:`gdpo.schema`.
Every failure is an :class:`~gdpo.errors.InputError` with one line: the key, the value,
what is wrong, the nearest valid choice and the valid ones.

Values are checked against simple annotations only (``int``, ``float``, ``str``, ``bool``,
``Path``, ``Literal``, ``X | None``, lists, mappings); any other annotation is left to the
callee. A callable with ``**kwargs`` accepts any parameter name.

>>> nearest("num_trian", ["num_train", "num_test", "seed"])
'num_train'
"""

from __future__ import annotations

import difflib
import inspect
import numbers
import os
import types
import typing
from pathlib import PurePath
from typing import Any, Callable, Iterable, Literal, Mapping, NamedTuple, Sequence, Union

from gdpo.errors import InputError, UnknownNameError

# Parameters the trainer / evaluator fill in for factories that accept them (never the user).
RUN_WIDE_PARAMS = ("tokenizer",)


# -- names ---------------------------------------------------------------------------
def nearest(name: Any, choices: Iterable[Any]) -> str | None:
    """The valid choice closest to ``name`` (difflib ratio >= 0.6, then case-insensitive), or None."""
    options = [str(c) for c in choices]
    text = str(name)
    if text in options:
        return text
    close = difflib.get_close_matches(text, options, n=1, cutoff=0.6)
    if close:
        return close[0]
    lowered = {c.lower(): c for c in options}
    return lowered.get(text.lower())


def unknown(key: str, value: Any, what: str, name: Any, choices: Iterable[Any], tail: str = "") -> UnknownNameError:
    """``key = value: what. Did you mean 'x'? Valid: a, b, c<tail>`` as an error to raise."""
    options = [str(c) for c in choices]
    near = nearest(name, options)
    hint = f" Did you mean {near!r}?" if near else ""
    return UnknownNameError(f"{key} = {value!r}: {what}.{hint} Valid: {', '.join(options) or 'none'}{tail}")


# -- signatures and parameters -----------------------------------------------------------
class Signature(NamedTuple):
    """The keyword parameters a callable accepts."""

    accepted: tuple[str, ...]  # in declaration order
    required: tuple[str, ...]  # no default
    defaults: dict[str, Any]
    any_keyword: bool  # has **kwargs
    hints: dict[str, Any]  # resolved annotations ({} when they cannot be resolved)


def signature_of(fn: Callable) -> Signature:
    """The keyword parameters of ``fn`` (positional-only and ``*args`` ones cannot be given by name)."""
    sig = inspect.signature(fn)
    accepted, required, defaults, any_keyword = [], [], {}, False
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            any_keyword = True
        elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            accepted.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
            else:
                defaults[p.name] = p.default
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # noqa: BLE001 - an annotation that does not resolve: no type checks
        hints = {}
    return Signature(tuple(accepted), tuple(required), defaults, any_keyword, hints)


def check_params(owner: str, fn: Callable, params: Any, key_format: str,
                 provided: Sequence[str] = RUN_WIDE_PARAMS) -> None:
    """``params`` (a mapping) against ``fn``'s signature: names, required ones, simple types.

    ``owner`` names the thing in messages ("task 'toy'"); ``provided`` are parameters the
    caller fills in itself (not required from the user, not listed as choices).
    """
    if params is None:
        params = {}
    if not isinstance(params, Mapping):
        raise InputError(f"{key_format.format('').rstrip('. ')} = {params!r}: must be a mapping of "
                         f"parameter names to values, e.g. {{key: value}}")
    sig = signature_of(fn)
    visible = [a for a in sig.accepted if a not in provided]
    for name, value in params.items():
        if name not in sig.accepted and not sig.any_keyword:
            raise unknown(key_format.format(name), value, f"not a parameter of {owner}", name, visible)
    for name in sig.required:
        if name not in params and name not in provided:
            raise InputError(f"{key_format.format(name)} is missing: {owner} needs it (it has no default). "
                             f"Parameters: {', '.join(visible)}")
    for name, value in params.items():
        tp = sig.hints.get(name)
        if tp is None or (value is None and sig.defaults.get(name, 0) is None):
            continue
        if not fits(tp, value):
            raise InputError(f"{key_format.format(name)} = {value!r}: must be {describe(tp)} "
                             f"(a parameter of {owner})")


def fits(tp: Any, value: Any) -> bool:
    """Whether ``value`` can be passed for annotation ``tp`` (True for annotations this does not know)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or isinstance(tp, typing.TypeVar):
        return True
    if origin in (Union, types.UnionType):
        return any(fits(a, value) for a in args)
    if origin is Literal:
        return value in args
    if tp is type(None) or tp is None:
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, numbers.Real) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    if isinstance(tp, type) and issubclass(tp, (PurePath, os.PathLike)):
        return isinstance(value, (str, os.PathLike))
    if origin in (list, tuple) or tp in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping) or tp is dict:
        return isinstance(value, Mapping)
    return True


def describe(tp: Any) -> str:
    """A short reading of an annotation for messages: ``an integer``, ``one of 'a', 'b'``, ..."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    names = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
             type(None): "null", list: "a list", tuple: "a list", dict: "a mapping"}
    if tp in names:
        return names[tp]
    if origin in names:
        return names[origin]
    if isinstance(tp, type) and issubclass(tp, (PurePath, os.PathLike)):
        return "a path"
    return getattr(tp, "__name__", str(tp))
