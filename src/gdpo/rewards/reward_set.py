"""A run's reward set: names, weights and conditions, scored into the [N, K] matrix.

>>> from gdpo.rewards.reward_set import RewardSet, RewardSpec
>>> def shout(completions, **_): return [1.0 if c.isupper() else 0.0 for c in completions]
>>> def short(completions, **_): return [1.0 if len(c) < 4 else 0.0 for c in completions]
>>> rs = RewardSet([RewardSpec("shout", fn=shout), RewardSpec("short", fn=short, weight=0.5,
...                 condition=("shout", 1.0))])
>>> rs.score(["HI", "hi", "HELLO"]).values.tolist()
[[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from gdpo.advantages import condition_reward
from gdpo.errors import InputError, UserError, one_line
from gdpo.rewards import registry


@dataclass
class RewardSpec:
    """One reward of a run.

    name: registered name, or dotted import path ``module:function``.
    weight: non-negative weight of this reward in the estimator's sum.
    params: keyword parameters for a configurable reward (``max_tokens=4000``).
    condition: ``(other_name, threshold)``: this reward counts only where reward
        ``other_name`` >= ``threshold``, else it scores ``floor`` (the paper's Eq. 8).
    floor: score for a sample on which the reward raised, and for an unmet condition;
        default: the floor the reward registered with.
    fn: the callable itself (overrides the registry lookup by ``name``).
    """

    name: str
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)
    condition: tuple[str, float] | None = None
    floor: float | None = None
    fn: Callable | None = None


@dataclass
class RewardErrors:
    """How often a reward raised during scoring, with the first message."""

    count: int = 0
    first_message: str = ""


@dataclass
class RewardScores:
    """The scored batch: ``values`` [N, K] float64 (NaN = not applicable)."""

    values: np.ndarray  # [N, K]
    names: list[str]
    weights: np.ndarray  # [K]
    errors: dict[str, RewardErrors]

    def column(self, name: str) -> np.ndarray:
        return self.values[:, self.names.index(name)]

    def error_summary(self) -> dict[str, Any]:
        return {n: {"count": e.count, "first": e.first_message} for n, e in self.errors.items() if e.count}


class RewardSet:
    """Scores completions with several rewards into the matrix the estimators take."""

    def __init__(self, specs: Sequence[RewardSpec], *, extra_params: Mapping[str, Any] | None = None):
        if not specs:
            raise InputError("a reward set needs at least one reward; give e.g. rewards: [{name: math_correctness}]")
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise InputError(f"reward(s) {dupes} listed twice; each reward may appear once")
        self.specs = list(specs)
        self.names = names
        self.fns: list[Callable] = []
        self.floors: list[float] = []
        self.required_columns: list[tuple[str, ...]] = []
        for spec in self.specs:
            fn, floor, cols = self._resolve(spec, extra_params or {})
            self.fns.append(fn)
            self.floors.append(floor)
            self.required_columns.append(cols)
        self.weights = np.array([_check_weight(s) for s in self.specs], dtype=np.float64)
        self._conditions = [self._resolve_condition(i, s) for i, s in enumerate(self.specs)]

    @classmethod
    def from_config(cls, items: Sequence[Mapping[str, Any] | str], **kwargs) -> "RewardSet":
        """From config entries: a name, or ``{name, weight, params, condition: {on, min}, floor}``."""
        from gdpo.schema import check_reward_entries, condition_mapping

        check_reward_entries(list(items))  # keys, names, params, weights, conditions: one line each
        specs = []
        for item in items:
            if isinstance(item, str):
                specs.append(RewardSpec(item))
                continue
            cond = condition_mapping(item.get("condition"))  # YAML 1.1 reads a bare `on:` as True
            if cond is not None:
                cond = (str(cond["on"]), float(cond.get("min", 1.0)))
            specs.append(RewardSpec(
                name=str(item["name"]),
                weight=item.get("weight", 1.0),
                params=dict(item.get("params") or {}),
                condition=cond,
                floor=item.get("floor"),
            ))
        return cls(specs, **kwargs)

    # -- construction helpers -------------------------------------------------------
    @staticmethod
    def _resolve(spec: RewardSpec, extra_params: Mapping[str, Any]) -> tuple[Callable, float, tuple[str, ...]]:
        cols: tuple[str, ...] = ()
        if spec.fn is not None:
            fn = spec.fn
            default_floor = float(getattr(fn, "floor", 0.0))
        else:
            entry = registry.entry(spec.name)
            params = dict(spec.params)
            if entry.is_factory:
                # Run-wide parameters (e.g. the tokenizer) go to factories that accept them.
                import inspect

                accepted = inspect.signature(entry.builder).parameters
                for key, value in extra_params.items():
                    if key in accepted and key not in params:
                        params[key] = value
            try:
                fn = registry.get(spec.name, **params)
            except UserError:
                raise
            except (ValueError, FileNotFoundError) as exc:  # the factory's own check of a value
                raise InputError(f"reward {spec.name!r}: {one_line(str(exc))}") from exc
            default_floor = entry.floor
            cols = entry.columns
        floor = default_floor if spec.floor is None else float(spec.floor)
        return fn, floor, tuple(cols)

    def _resolve_condition(self, i: int, spec: RewardSpec) -> tuple[int, float] | None:
        if spec.condition is None:
            return None
        other, threshold = spec.condition
        if other not in self.names:
            raise InputError(
                f"reward {spec.name!r} is conditioned on {other!r}, which is not in this reward set {self.names}; "
                "add it (weight 0 if it should not count by itself) or fix the name"
            )
        if other == spec.name:
            raise InputError(f"reward {spec.name!r} cannot be conditioned on itself")
        return self.names.index(other), float(threshold)

    # -- scoring --------------------------------------------------------------------
    def score(self, completions: Sequence[str], **columns: Any) -> RewardScores:
        """Score ``completions`` with every reward; ``columns`` aligned with them.

        A reward that raises on the batch is retried sample by sample; samples on which it
        still raises get the reward's floor, and the error is counted (first message kept).
        """
        n = len(completions)
        for key, col in columns.items():
            if len(col) != n:
                raise ValueError(f"column {key!r} has {len(col)} values for {n} completions; align it with them")
        for name, cols in zip(self.names, self.required_columns):
            missing = [c for c in cols if c not in columns]
            if missing:
                raise MissingColumnError(
                    f"reward {name!r} needs column(s) {missing}, which the data does not have; "
                    f"columns present: {sorted(columns)}. Rename the data's column or choose another reward."
                )
        values = np.full((n, len(self.fns)), np.nan, dtype=np.float64)
        errors: dict[str, RewardErrors] = {}
        for k, (name, fn, floor) in enumerate(zip(self.names, self.fns, self.floors)):
            errors[name] = RewardErrors()
            values[:, k] = self._score_one(name, fn, floor, list(completions), columns, errors[name])
        for k, cond in enumerate(self._conditions):
            if cond is not None:
                on, threshold = cond
                values = condition_reward(values, target=k, on=on, threshold=threshold, floor=self.floors[k])
        return RewardScores(values, list(self.names), self.weights.copy(), errors)

    @staticmethod
    def _score_one(name, fn, floor, completions, columns, err: RewardErrors) -> np.ndarray:
        n = len(completions)
        try:
            raw = fn(completions, **columns)
            return _to_column(name, raw, n)
        except MissingColumnError:
            raise
        except Exception as exc:  # noqa: BLE001 - isolate per sample below
            _check_missing_column(name, exc, columns)
            if n == 1:
                err.count += 1
                err.first_message = err.first_message or f"{type(exc).__name__}: {exc}"
                return np.array([floor], dtype=np.float64)
        out = np.empty(n, dtype=np.float64)
        for i in range(n):
            row_cols = {key: [col[i]] for key, col in columns.items()}
            try:
                out[i] = _to_column(name, fn([completions[i]], **row_cols), 1)[0]
            except Exception as exc:  # noqa: BLE001 - a bad sample must not kill the run
                err.count += 1
                err.first_message = err.first_message or f"{type(exc).__name__}: {exc}"
                out[i] = floor
        return out


class MissingColumnError(InputError, KeyError):
    """A reward needs a dataset column the batch does not have (the data or the reward choice is wrong)."""


def _check_missing_column(name: str, exc: Exception, columns: Mapping[str, Any]) -> None:
    if isinstance(exc, TypeError) and "required keyword-only argument" in str(exc):
        raise MissingColumnError(
            f"reward {name!r} needs a column the data does not have ({exc}); columns present: {sorted(columns)}"
        ) from exc


def _to_column(name: str, raw: Any, n: int) -> np.ndarray:
    if raw is None or len(raw) != n:
        got = "None" if raw is None else f"{len(raw)} values"
        raise ValueError(f"reward {name!r} returned {got} for {n} completions; return one value per completion")
    out = np.empty(n, dtype=np.float64)
    for i, v in enumerate(raw):
        if v is None:
            out[i] = np.nan
            continue
        f = float(v)
        if math.isinf(f):
            raise ValueError(f"reward {name!r} returned {f} for completion {i}; rewards must be finite (None = n/a)")
        out[i] = f  # a NaN from the reward also means "not applicable"
    return out


def _check_weight(spec: RewardSpec) -> float:
    try:
        w = float(spec.weight)
    except (TypeError, ValueError):
        raise InputError(f"reward {spec.name!r}: weight {spec.weight!r} is not a number") from None
    if not math.isfinite(w) or w < 0:
        raise InputError(f"reward {spec.name!r}: weight must be a finite number >= 0, got {spec.weight!r}")
    return w
