"""Slow, obviously-correct reference estimators: plain Python, one sample at a time.

This is how several frameworks compute GRPO (a dict from prompt id to its list of scores,
then a loop over samples). It exists to check the vectorized estimators in
:mod:`gdpo.advantages` (tests) and to time them against (``benchmarks/``). It follows the
same conventions: unbiased std, ``(x - mean) / (std + eps)``, NaN = not applicable, groups
with < 2 applicable values or no spread contribute 0.
"""

from __future__ import annotations

import math
from collections import defaultdict

DEFAULT_EPS = 1e-6


def _group_stats(values: list[float], ids: list) -> dict:
    """id -> (count, mean, unbiased std, has_spread) over non-NaN values."""
    by_id: dict = defaultdict(list)
    for v, g in zip(values, ids):
        if not math.isnan(v):
            by_id[g].append(v)
    stats = {}
    for g, vs in by_id.items():
        n = len(vs)
        mean = sum(vs) / n
        var = sum((v - mean) ** 2 for v in vs) / (n - 1) if n > 1 else 0.0
        stats[g] = (n, mean, math.sqrt(var), n >= 2 and max(vs) > min(vs))
    return stats


def _normalize(values: list[float], ids: list, scale: bool, eps: float) -> list[float]:
    stats = _group_stats(values, ids)
    out = []
    for v, g in zip(values, ids):
        if math.isnan(v) or not stats[g][3]:
            out.append(0.0)
            continue
        _, mean, std, _ = stats[g]
        out.append((v - mean) / (std + eps) if scale else v - mean)
    return out


def reference_advantages(rewards: list[list[float]], ids: list, method: str = "gdpo",
                         weights: list[float] | None = None, eps: float = DEFAULT_EPS) -> list[float]:
    """rewards: N rows of K floats; returns N advantages. Methods: grpo, grpo_no_std, gdpo, gdpo_no_bn."""
    k = len(rewards[0]) if rewards else 0
    w = list(weights) if weights is not None else [1.0] * k
    active = [not all(math.isnan(x) for x in row) for row in rewards]
    if method in ("grpo", "grpo_no_std"):
        sums = [sum(wk * x for wk, x in zip(w, row) if not math.isnan(x)) if a else math.nan
                for row, a in zip(rewards, active)]
        return _normalize(sums, ids, scale=(method == "grpo"), eps=eps)
    if method not in ("gdpo", "gdpo_no_bn"):
        raise ValueError(f"reference has no method {method!r}")
    per_reward = [_normalize([row[j] for row in rewards], ids, True, eps) for j in range(k)]
    summed = [sum(w[j] * per_reward[j][i] for j in range(k)) for i in range(len(rewards))]
    if method == "gdpo_no_bn":
        return [s if a else 0.0 for s, a in zip(summed, active)]
    xs = [s for s, a in zip(summed, active) if a]
    if not xs or max(xs) == min(xs):
        return [0.0] * len(rewards)
    mean = sum(xs) / len(xs)
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / max(len(xs) - 1, 1))
    return [(s - mean) / (std + eps) if a else 0.0 for s, a in zip(summed, active)]
