"""Generic dict <-> dataclass conversion with type checks and helpful errors.

Supported field types: bool, int, float, str, ``Literal[...]``, ``X | None``, ``list[X]``,
``dict[str, X]``, ``Any`` and nested dataclasses.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, Literal, NamedTuple, Union

import yaml

from gdpo.errors import UserError


class ConfigError(UserError, ValueError):
    """A config key or value is wrong; the message names it and says how to fix it."""


class Range(NamedTuple):
    """The valid values of a numeric config field: finite numbers between ``low`` and ``high``.

    NaN and inf are never inside (``high=inf`` means "no upper bound", not "inf allowed").

    >>> str(Range(0, low_open=True)), str(Range(2)), str(Range(0, 1, high_open=True))
    ('> 0', '>= 2', 'in [0, 1)')
    >>> Range(0, 1).contains(1.0), Range(0).contains(float("nan")), Range(0).contains(float("inf"))
    (True, False, False)
    """

    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    fix: str = ""  # a hint added to the error, e.g. "null = no clipping"

    def contains(self, x: float) -> bool:
        if not math.isfinite(x):
            return False
        above = x > self.low if self.low_open else x >= self.low
        below = x < self.high if self.high_open else x <= self.high
        return above and below

    def __str__(self) -> str:
        lo, hi = _num(self.low), _num(self.high)
        if math.isinf(self.high):
            return f"{'>' if self.low_open else '>='} {lo}"
        if math.isinf(self.low):
            return f"{'<' if self.high_open else '<='} {hi}"
        return f"in {'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"

    def error(self, key: str, value: Any) -> ConfigError:
        """The error for ``key = value`` outside the range (names the field and the valid values)."""
        what = "is not a finite number" if not math.isfinite(value) else "is out of range"
        hint = f" ({self.fix})" if self.fix else ""
        return ConfigError(f"{key} = {value!r} {what}; it must be {self}{hint}")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


POSITIVE = Range(0, low_open=True)  # > 0
AT_LEAST_0 = Range(0)  # >= 0
AT_LEAST_1 = Range(1)  # >= 1


def _suggest(word: str, choices: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def build_dataclass(cls: type, data: Any, path: str) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``data``; ``path`` names it in errors."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path or 'config'} must be a mapping of fields, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in data:
        if key not in fields:
            where = f"in section {path!r}" if path else "at the top level"
            raise ConfigError(
                f"unknown config key {_join(path, key)!r} {where}.{_suggest(key, fields)} "
                f"Valid keys: {', '.join(fields)}"
            )
    kwargs = {key: _convert(hints[key], value, _join(path, key)) for key, value in data.items()}
    return cls(**kwargs)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else str(key)


def _convert(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, path)
        for candidate in inner:
            try:
                return _convert(candidate, value, path)
            except ConfigError:
                continue
        raise ConfigError(f"{path} = {value!r} matches none of {inner}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(
                f"{path} = {value!r} is not allowed.{_suggest(str(value), map(str, args))} "
                f"Choose one of: {', '.join(map(repr, args))}"
            )
        return value
    if dataclasses.is_dataclass(tp):
        return build_dataclass(tp, value, path)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path} must be a list, got {value!r}")
        return [_convert(args[0] if args else Any, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path} must be a mapping, got {value!r}")
        return {str(k): _convert(args[1] if args else Any, v, f"{path}.{k}") for k, v in value.items()}
    return _scalar(tp, value, path)


def _scalar(tp: type, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path} = {value!r} must be true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path} = {value!r} must be an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML reads 1e-6 (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{path} = {value!r} must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path} = {value!r} must be a string (quote it in YAML)")
    raise ConfigError(f"{path}: unsupported field type {tp!r}")  # pragma: no cover - a bug in the schema


def check_numbers(cfg: Any, path: str = "") -> None:
    """Every number of the dataclass tree ``cfg`` inside its field's :class:`Range` (NaN/inf never).

    Walks int and float fields (also ``X | None`` and ``list[float]``) and nested dataclasses; a
    numeric field without a range is a schema bug (tests require one on every field).
    """
    hints = typing.get_type_hints(type(cfg))
    for f in dataclasses.fields(cfg):
        key, value = _join(path, f.name), getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            check_numbers(value, key)
            continue
        valid = f.metadata.get("valid")
        if valid is None or value is None:
            continue
        is_list = typing.get_origin(hints[f.name]) is list
        for i, x in enumerate(value if is_list else [value]):
            if isinstance(x, (int, float)) and not isinstance(x, bool) and not valid.contains(x):
                raise valid.error(f"{key}[{i}]" if is_list else key, x)


def numeric_fields(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, Range or None) of every int / float / list[float] field, nested sections included."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key, tp = _join(prefix, f.name), hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        nested = next((a for a in inner if dataclasses.is_dataclass(a)), None)
        if nested is not None:
            rows.extend(numeric_fields(nested, key))
        elif any(a in (int, float) or typing.get_args(a) in ((int,), (float,)) for a in inner):
            rows.append((key, f.metadata.get("valid")))
    return rows


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings (value parsed as YAML) to a nested dict; returns a new dict."""
    import copy

    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} must look like key.sub=value, e.g. --set optim.lr=1e-5")
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part!r} is a value, not a section")
            node = child
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return out


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """A plain dict (YAML-safe) of a dataclass config."""
    return dataclasses.asdict(cfg)


def describe_fields(cls: type, prefix: str = "") -> list[tuple[str, str, Any, str]]:
    """(dotted key, type, default, help) for every field, nested sections flattened."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = _join(prefix, f.name)
        tp = hints[f.name]
        inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
        nested = next((a for a in inner if dataclasses.is_dataclass(a)), None)
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if nested is not None and default is not None:
            rows.extend(describe_fields(nested, key))
            continue
        type_name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
        rows.append((key, type_name, default, f.metadata.get("help", "")))
    return rows
