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
                         weights: list[float] | None = None, eps: float = DEFAULT_EPS, *,
                         variant: str = "hard", tau: float = 0.8, offsets=0.0,
                         lengths: list[float] | None = None) -> list[float]:
    """rewards: N rows of K floats; returns N advantages.

    Methods: grpo, grpo_no_std, gdpo, gdpo_no_bn, gd2po (``variant``, ``tau``), saw_gdpo,
    saw_grpo (``offsets``). ``lengths`` token-weights the batch step (gdpo, gd2po, saw_gdpo).
    """
    k = len(rewards[0]) if rewards else 0
    w = list(weights) if weights is not None else [1.0] * k
    active = [not all(math.isnan(x) for x in row) for row in rewards]
    if method in ("saw_gdpo", "saw_grpo"):
        w = _saw_weights(rewards, w, offsets)
        method = method[4:]  # SAW is GDPO / GRPO with the adaptive weights
    if method in ("grpo", "grpo_no_std"):
        sums = [sum(wk * x for wk, x in zip(w, row) if not math.isnan(x)) if a else math.nan
                for row, a in zip(rewards, active)]
        return _normalize(sums, ids, scale=(method == "grpo"), eps=eps)
    if method not in ("gdpo", "gdpo_no_bn", "gd2po"):
        raise ValueError(f"reference has no method {method!r}")
    per_reward = [_normalize([row[j] for row in rewards], ids, True, eps) for j in range(k)]
    terms = [[w[j] * per_reward[j][i] for j in range(k)] for i in range(len(rewards))]  # a_k per sample
    summed = [sum(t) for t in terms]
    if method == "gdpo_no_bn":
        return [s if a else 0.0 for s, a in zip(summed, active)]
    if method == "gd2po":
        keep = [a and not _gd2po_drops(t, variant, tau) for t, a in zip(terms, active)]
        consensus = _share_per_group(keep, active, ids)
        summed = [s * c if kp else 0.0 for s, c, kp in zip(summed, consensus, keep)]
        active = keep
    return _batch_step(summed, active, eps, lengths)


def _gd2po_drops(a: list[float], variant: str, tau: float) -> bool:
    """A sample conflicts when some a_k > 1e-8 and some < -1e-8; snr drops it only if |rho| < tau."""
    conflict = any(x > 1e-8 for x in a) and any(x < -1e-8 for x in a)
    if variant == "hard" or not conflict:
        return conflict
    rho = sum(a) / (sum(abs(x) for x in a) + 1e-8)
    return abs(rho) < min(max(tau, 0.0), 1.0)


def _share_per_group(mask: list[bool], among: list[bool], ids: list) -> list[float]:
    """Per sample: kept samples of its group / samples of its group (both counted over ``among``)."""
    hits: dict = defaultdict(int)
    total: dict = defaultdict(int)
    for m, a, g in zip(mask, among, ids):
        hits[g] += int(m and a)
        total[g] += int(a)
    return [hits[g] / total[g] if total[g] else 0.0 for g in ids]


def _saw_weights(rewards: list[list[float]], w: list[float], offsets) -> list[float]:
    """w_k K CV_k / (sum_j CV_j + 1e-8), CV_k = std(r_k + offset_k) / (|mean| + 1e-8) over the batch."""
    k = len(w)
    shift = [float(offsets)] * k if isinstance(offsets, (int, float)) else [float(o) for o in offsets]
    cv = []
    for j in range(k):
        xs = [row[j] + shift[j] for row in rewards if not math.isnan(row[j])]
        if len(xs) < 2 or max(xs) == min(xs):
            cv.append(0.0)
            continue
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1))
        cv.append(std / (abs(mean) + 1e-8))
    total = sum(cv) + 1e-8
    return [w[j] * k * cv[j] / total for j in range(k)]


def _batch_step(xs_all: list[float], active: list[bool], eps: float, lengths: list[float] | None) -> list[float]:
    """(x - mean) / (std + eps) over active samples (token-weighted with ``lengths``); others 0."""
    idx = [i for i, a in enumerate(active) if a]
    xs = [xs_all[i] for i in idx]
    if not xs or max(xs) == min(xs):
        return [0.0] * len(xs_all)
    ws = [1.0] * len(idx) if lengths is None else [float(lengths[i]) for i in idx]
    total = sum(ws)
    if total <= 0:
        return [0.0] * len(xs_all)
    mean = sum(wi * x for wi, x in zip(ws, xs)) / total
    std = math.sqrt(sum(wi * (x - mean) ** 2 for wi, x in zip(ws, xs)) / max(total - 1, 1))
    return [(xs_all[i] - mean) / (std + eps) if a else 0.0 for i, a in enumerate(active)]
