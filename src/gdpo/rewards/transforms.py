"""Reward transforms: build a new reward from a registered one, for robustness experiments.

* ``noisy``: the wrapped reward plus Gaussian noise (``std``) and/or, for a binary reward,
  flipped labels (``flip`` = probability that 0 <-> 1). Seeded, so a run is reproducible.
* ``negated`` (alias ``anti``): ``low + high - r``, i.e. ``1 - r`` for a binary reward, a reward
  anti-correlated with the one it wraps (a conflicting objective).

Both are factories, so a reward set says for example::

    rewards:
      - {name: toy_letter}
      - {name: toy_short}
      - {name: noisy, params: {reward: toy_short, std: 0.5, seed: 0}}
      - {name: anti, params: {reward: toy_starts_lower}}

``reward`` is any registered name (or dotted import path); ``params`` are that reward's own
parameters when it is configurable. ``None`` ("not applicable") passes through unchanged.

>>> from gdpo.rewards import registry
>>> anti = registry.get("anti", reward="toy_short")
>>> anti(["q", "a long reply"], max_len=[3, 3])
[0.0, 1.0]

Noise draws come from one ``numpy`` generator per built reward, advanced call by call: the
same seed and the same sequence of calls give the same values. A run resumed from a
checkpoint restarts the stream, so its noise differs from an uninterrupted run's.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable

import numpy as np

from gdpo.rewards import registry
from gdpo.rewards.registry import register_reward_factory
from gdpo.rewards.reward_set import MissingColumnError


def _inner(reward: str, params: dict[str, Any] | None, tokenizer: Any, who: str) -> Callable:
    """Build the wrapped reward ``reward`` with ``params`` (passing the run's tokenizer if it takes one).

    The returned callable raises :class:`MissingColumnError` when a dataset column the wrapped
    reward declares is absent, so a reward set reports it instead of scoring the floor.
    """
    if not isinstance(reward, str) or not reward:
        raise ValueError(f"{who}: params.reward must be a registered reward name such as 'toy_short', got {reward!r}")
    if reward in ("noisy", "negated", "anti") and not params:
        raise ValueError(f"{who}: params.reward={reward!r} is itself a transform; give its params in params.params")
    params = dict(params or {})
    entry = registry.entry(reward)
    if entry.is_factory and tokenizer is not None and "tokenizer" not in params:
        if "tokenizer" in inspect.signature(entry.builder).parameters:
            params["tokenizer"] = tokenizer
    fn = registry.get(reward, **params)
    needed = entry.columns

    def checked(completions: list[str], **columns: Any) -> list[float | None]:
        missing = [c for c in needed if c not in columns]
        if missing:
            raise MissingColumnError(
                f"{who}: the wrapped reward needs column(s) {missing}, which the data does not have; "
                f"columns present: {sorted(columns)}"
            )
        return fn(completions, **columns)

    checked.__wrapped__ = fn  # what it wraps (the trainer asks whether a reward runs sandboxed code)
    return checked


def _check_prob(name: str, value: float, who: str) -> float:
    v = float(value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{who}: {name}={value!r} must be a probability in [0, 1]")
    return v


@register_reward_factory("noisy", description="a registered reward plus seeded Gaussian noise / label flips")
def noisy(reward: str, std: float = 0.0, flip: float = 0.0, seed: int = 0,
          params: dict[str, Any] | None = None, tokenizer: Any = None) -> Callable:
    """``reward``'s values with N(0, std^2) noise added and, for 0/1 values, flipped with probability ``flip``.

    Flips happen first (on the clean binary value), then the Gaussian noise is added. ``flip``
    on a value that is not 0 or 1 raises: label flips only make sense for binary rewards.

    >>> from gdpo.rewards import registry
    >>> f = registry.get("noisy", reward="toy_short", flip=1.0)
    >>> f(["q", "a long reply"], max_len=[3, 3])
    [0.0, 1.0]
    """
    who = f"noisy reward (of {reward!r})"
    std = float(std)
    if not math.isfinite(std) or std < 0:
        raise ValueError(f"{who}: std={std!r} must be a finite number >= 0")
    flip = _check_prob("flip", flip, who)
    fn = _inner(reward, params, tokenizer, who)
    rng = np.random.default_rng(int(seed))

    def noisy_reward(completions: list[str], **columns: Any) -> list[float | None]:
        values = fn(completions, **columns)
        n = len(values)
        # Draw for every sample each call (also for None ones) so the stream does not depend on them.
        flips = rng.random(n) < flip if flip > 0 else np.zeros(n, dtype=bool)
        noise = rng.normal(0.0, std, n) if std > 0 else np.zeros(n)
        out: list[float | None] = []
        for i, v in enumerate(values):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                out.append(None)
                continue
            v = float(v)
            if flip > 0:
                if v not in (0.0, 1.0):
                    raise ValueError(f"{who}: flip={flip} needs a binary (0/1) reward, got the value {v}; "
                                     "use std for a continuous reward")
                if flips[i]:
                    v = 1.0 - v
            out.append(v + float(noise[i]))
        return out

    noisy_reward.__doc__ = f"{reward} with noise (std={std}, flip={flip}, seed={seed})"
    noisy_reward.__wrapped__ = fn
    return noisy_reward


def negated(reward: str, low: float = 0.0, high: float = 1.0, params: dict[str, Any] | None = None,
            tokenizer: Any = None) -> Callable:
    """``low + high - r`` for a reward with values in [low, high]: ``1 - r`` for a binary reward.

    A value outside [low, high] raises, so a wrong range cannot silently shift the reward.

    >>> from gdpo.rewards import registry
    >>> registry.get("negated", reward="toy_starts_lower")(["abc", "Abc"])
    [0.0, 1.0]
    """
    who = f"negated reward (of {reward!r})"
    low, high = float(low), float(high)
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ValueError(f"{who}: need finite low < high, got low={low!r}, high={high!r}")
    fn = _inner(reward, params, tokenizer, who)

    def negated_reward(completions: list[str], **columns: Any) -> list[float | None]:
        out: list[float | None] = []
        for v in fn(completions, **columns):
            if v is None or (isinstance(v, float) and math.isnan(v)):
                out.append(None)
                continue
            v = float(v)
            if not low <= v <= high:
                raise ValueError(f"{who}: value {v} is outside [low, high] = [{low}, {high}]; "
                                 "set params.low / params.high to the reward's range")
            out.append(low + high - v)
        return out

    negated_reward.__doc__ = f"{low} + {high} - {reward}"
    negated_reward.__wrapped__ = fn
    return negated_reward


register_reward_factory("negated", description="low + high - r (1 - r for a binary reward): a conflicting reward")(negated)
register_reward_factory("anti", description="alias of negated: 1 - r for a binary reward")(negated)
