"""GDPO's 2026 successors: GD²PO (conflict filtering + group consensus) and SAW (CV weights).

Registered into :mod:`gdpo.advantages`' one registry, so ``compute_advantages(...,
method="gd2po" | "saw_gdpo" | "saw_grpo")``, ``gdpo compare``, TRL's ``GDPOTrainer`` and the
verl adapter reach them by name. Same signature and conventions as GDPO (see
:mod:`gdpo.advantages`): unbiased std, ``eps`` added to the std, a reward with no spread or
fewer than two usable samples in a group contributes 0, NaN = not applicable, weights w_k,
the batch step sample-weighted or token-weighted with ``lengths``. ``A_k`` below is reward
k's per-group z-score exactly as GDPO computes it before summing
(:func:`gdpo.advantage_core.per_reward_scores`).

GD²PO (arXiv 2606.16771; public code Qwen-Applications/GD2PO,
``tool-calling/verl/trainer/ppo/ray_trainer.py``), method ``gd2po``:

1. a_k = w_k A_k per sample. A sample *conflicts* when some a_k > 1e-8 and some a_k < -1e-8.
2. ``variant="hard"``: drop every conflicting sample. ``variant="snr"``: with
   rho = sum_k a_k / (sum_k |a_k| + 1e-8), drop a conflicting sample when |rho| < ``tau``
   (clamped to [0, 1]; default 0.8, the value the public scripts run).
3. Consensus c_g = kept samples of group g / samples of g (samples with no applicable reward
   are left out of both counts).
4. pre = (sum_k a_k) c_g keep; the batch step (mean, std) runs over kept samples only;
   dropped samples get exactly 0; fewer than two kept samples (or no spread) -> all 0.

SAW (arXiv 2606.07705; public code Zhaolutuan/SAW, ``verl/trainer/ppo/ray_trainer.py``):
per-reward weights from the coefficient of variation over the whole batch (not per group),
x_k = r_k + offset_k, CV_k = std_N(x_k) / (|mean_N(x_k)| + 1e-8) (unbiased std over the
applicable samples; 0 when x_k has no spread or < 2 applicable samples),
w^_k = w_k K CV_k / (sum_j CV_j + 1e-8). Methods ``saw_gdpo`` (GDPO with weights w^: batch
step of sum_k w^_k A_k) and ``saw_grpo`` (GRPO's per-group normalization of
r' = sum_k w^_k r_k, no batch step).

Options beyond the papers', for ablations and for the collapse analysis (which counts only
group-level steps): ``batch_norm=False`` drops the batch step of ``gd2po`` / ``saw_gdpo``;
``adaptive=False`` holds SAW's weights at w_k (SAW then is GDPO / GRPO).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from gdpo.advantage_core import (
    DEFAULT_EPS,
    GroupIndex,
    _any_applicable,
    batch_normalize,
    gdpo,
    grpo,
    per_reward_scores,
    register_estimator,
)

CONFLICT_TOL = 1e-8  # |a_k| above this counts as a sign (GD²PO's public code)
RHO_EPS = 1e-8  # in rho's denominator (GD²PO's public code)
CV_EPS = 1e-8  # in CV's denominator and in the CV sum (SAW's public code)
GD2PO_VARIANTS = ("hard", "snr")
DEFAULT_TAU = 0.8
_ULPS = 64 * np.finfo(np.float64).eps  # rounding-noise tolerance, as GDPO's sum


# --------------------------------------------------------------------------------------
# GD²PO
# --------------------------------------------------------------------------------------
class Gd2poParts(NamedTuple):
    """GD²PO's group-level quantities, every one [N] in sample order."""

    conflict: np.ndarray  # bool: some a_k > 1e-8 and some a_k < -1e-8
    keep: np.ndarray  # bool: not dropped (and some reward applies)
    consensus: np.ndarray  # float: c_g of the sample's group
    combined: np.ndarray  # float: (sum_k a_k) c_g keep, before the batch step (0 where dropped)


def gd2po_parts(rewards: np.ndarray, groups: GroupIndex, weights: np.ndarray, *, variant: str = "hard",
                tau: float = DEFAULT_TAU, eps: float = DEFAULT_EPS) -> Gd2poParts:
    """Steps 1-3 of GD²PO and pre = (sum_k a_k) c_g keep, for ``rewards`` [N, K] (see module doc)."""
    scores = per_reward_scores(rewards, groups, eps=eps)
    terms = scores.values  # [K, *S], scratch: scaled in place to a_k = w_k A_k
    shape = terms.shape[1:]  # S = [G, B] (fast) or [N]
    positive, negative = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    summed = np.zeros(shape)
    # sum_k |a_k|: rho's denominator, and the noise tolerance where no bound is known
    magnitude = np.zeros(shape) if variant == "snr" or scores.bound is None else None
    for k, w in enumerate(weights):  # a loop over K, each a whole-batch operation
        if w == 0:
            continue  # a_k = 0: no sign, adds nothing
        a = terms[k]
        a *= w
        positive |= a > CONFLICT_TOL
        negative |= a < -CONFLICT_TOL
        summed += a
        if magnitude is not None:
            magnitude += np.abs(a)
    conflict = positive & negative
    if variant == "snr":
        rho = summed / (magnitude + RHO_EPS)
        drop = conflict & (np.abs(rho) < _clamp_tau(tau))
    else:
        drop = conflict
    # A sum that cancels to rounding noise is the 0 it is (as in GDPO's sum).
    tolerance = _ULPS * scores.bound * float(weights.sum()) if scores.bound is not None else _ULPS * magnitude
    summed[np.abs(summed) <= tolerance] = 0.0
    conflict, drop, summed = scores.to_samples(conflict), scores.to_samples(drop), scores.to_samples(summed)
    active = _any_applicable(rewards)  # [N]
    keep = ~drop & active
    consensus = _group_share(keep, active, groups)  # [N]
    combined = np.where(keep, summed * consensus, 0.0)
    return Gd2poParts(conflict, keep, consensus, combined)


def _group_share(mask: np.ndarray, among: np.ndarray, groups: GroupIndex) -> np.ndarray:
    """[N]: per sample, the share of ``among`` samples of its group that are in ``mask`` (0 if none)."""
    if groups.num_groups == 0:
        return np.zeros(0)
    inverse = groups.inverse  # [N]
    hits = np.bincount(inverse, weights=mask.astype(np.float64), minlength=groups.num_groups)
    total = np.bincount(inverse, weights=among.astype(np.float64), minlength=groups.num_groups)
    return (hits / np.maximum(total, 1.0))[inverse]


def _clamp_tau(tau: float) -> float:
    return min(max(float(tau), 0.0), 1.0)


def _check_gd2po(options: dict[str, Any], num_rewards: int | None) -> None:
    variant = options.get("variant", "hard")
    if variant not in GD2PO_VARIANTS:
        raise ValueError(f"gd2po variant={variant!r} is not a variant; valid: {', '.join(map(repr, GD2PO_VARIANTS))}")
    tau = options.get("tau", DEFAULT_TAU)
    if isinstance(tau, bool) or not isinstance(tau, (int, float, np.integer, np.floating)) or math.isnan(tau):
        raise ValueError(f"gd2po tau={tau!r} must be a number (it is clamped to [0, 1]; the public scripts use 0.8)")
    _check_bool("gd2po", "batch_norm", options.get("batch_norm", True))


_GD2PO_OPTIONS = {"variant": "hard", "tau": DEFAULT_TAU, "eps": DEFAULT_EPS, "batch_norm": True, "lengths": None}


@register_estimator("gd2po", options=_GD2PO_OPTIONS, group_level={"batch_norm": False}, check=_check_gd2po)
def gd2po(rewards, groups, weights, *, variant="hard", tau=DEFAULT_TAU, eps=DEFAULT_EPS, batch_norm=True,
          lengths=None):
    """GD²PO: drop reward-conflicting samples (hard or by |rho| < tau), scale by group consensus, batch step.

    Options: ``variant`` ("hard" | "snr"), ``tau`` (snr threshold, clamped to [0, 1]),
    ``batch_norm=False`` drops the batch step (ablation), ``lengths`` [N] makes it
    token-weighted (as the public code's masked_whiten over kept responses).
    """
    parts = gd2po_parts(rewards, groups, weights, variant=variant, tau=tau, eps=eps)
    if not batch_norm:
        return parts.combined
    return batch_normalize(parts.combined, parts.keep, eps=eps, lengths=lengths)


# --------------------------------------------------------------------------------------
# SAW
# --------------------------------------------------------------------------------------
def saw_weights(rewards: np.ndarray, weights: np.ndarray, offsets: Any = 0.0) -> np.ndarray:
    """SAW's adaptive weights [K] for ``rewards`` [N, K] (NaN = not applicable), ``weights`` [K].

    w^_k = w_k K CV_k / (sum_j CV_j + 1e-8), CV_k = std(x_k) / (|mean(x_k)| + 1e-8) over the
    batch, x_k = r_k + offset_k, unbiased std; CV_k = 0 without spread or with < 2 values.
    Works on one contiguous [K, N] copy: numpy reduces contiguous rows fast, while a
    reduction over the sample axis of [N, K] (or a strided column) is slow.
    """
    n, k = rewards.shape
    shift = _offsets(offsets, k)  # [K]
    x = np.empty((k, n))
    x[...] = rewards.T  # [K, N], the working copy
    if shift.any():
        x += shift[:, None]  # NaN stays NaN
    applies = None if not np.isnan(x).any() else ~np.isnan(x)  # [K, N] or None (all apply)
    if applies is None:
        count = np.full(k, float(n))
        hi = x.max(axis=1, initial=-np.inf)
        lo = x.min(axis=1, initial=np.inf)
    else:
        count = applies.sum(axis=1).astype(np.float64)
        x[~applies] = 0.0  # NaN out of the way; the mask keeps them out of every statistic
        hi = np.where(applies, x, -np.inf).max(axis=1, initial=-np.inf)
        lo = np.where(applies, x, np.inf).min(axis=1, initial=np.inf)
    spread = (count >= 2) & (hi > lo)  # [K]
    # Work on x / max|x| per reward so squares neither overflow nor underflow; CV is
    # scale-free but for the 1e-8, which scales along.
    size = np.where(spread, np.maximum(np.abs(hi), np.abs(lo)), 1.0)  # [K]
    x /= size[:, None]
    mean = x.sum(axis=1) / np.maximum(count, 1.0)  # [K]
    x -= mean[:, None]
    if applies is not None:
        x[~applies] = 0.0
    std = np.sqrt(np.einsum("kn,kn->k", x, x) / np.maximum(count - 1.0, 1.0))  # unbiased, [K]
    with np.errstate(over="ignore"):  # 1e-8 / size may overflow to inf: that CV is then 0
        cv = np.where(spread, std / (np.abs(mean) + CV_EPS / size), 0.0)
    return weights * k * cv / (cv.sum() + CV_EPS)


def _offsets(offsets: Any, k: int | None) -> np.ndarray | None:
    """SAW's ``offsets`` as [K] floats (one number applies to every reward); ValueError if bad."""
    try:
        import torch

        if isinstance(offsets, torch.Tensor):
            offsets = offsets.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    how = ("give one number or one per reward column, e.g. offsets=[3, 0] shifts reward 0 by +3 "
           "before its CV, as SAW's public code does for ToolRL's correctness")
    if isinstance(offsets, (bool, str, bytes)) or offsets is None:
        raise ValueError(f"saw offsets={offsets!r} is not numeric; {how}")
    try:
        arr = np.asarray(offsets, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"saw offsets={offsets!r} is not numeric; {how}") from None
    if arr.ndim > 1 or not np.all(np.isfinite(arr)):
        raise ValueError(f"saw offsets={offsets!r} must be finite numbers, one or one per reward; {how}")
    if arr.ndim == 0:
        return None if k is None else np.full(k, float(arr))
    if k is not None and arr.shape[0] != k:
        raise ValueError(f"saw offsets has {arr.shape[0]} values {arr.tolist()} for {k} reward columns; {how}")
    return arr


def _check_saw(options: dict[str, Any], num_rewards: int | None) -> None:
    _offsets(options.get("offsets", 0.0), num_rewards)
    for key in ("adaptive", "batch_norm"):
        _check_bool("saw", key, options.get(key, True))


def _check_bool(method: str, key: str, value: Any) -> None:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{method} {key}={value!r} must be true or false")


def _adaptive_weights(rewards, weights, offsets, adaptive: bool) -> np.ndarray:
    return saw_weights(rewards, weights, offsets) if adaptive else weights


@register_estimator("saw_gdpo", options={"eps": DEFAULT_EPS, "offsets": 0.0, "adaptive": True, "batch_norm": True,
                                         "lengths": None},
                    group_level={"adaptive": False, "batch_norm": False}, check=_check_saw)
def saw_gdpo(rewards, groups, weights, *, eps=DEFAULT_EPS, offsets=0.0, adaptive=True, batch_norm=True,
             lengths=None):
    """SAW on GDPO: batch step of sum_k w^_k A_k, w^ from each reward's batch CV (detached).

    Options: ``offsets`` (shift before the CV), ``adaptive=False`` holds w^ = w (ablation),
    ``batch_norm=False`` drops the batch step, ``lengths`` [N] token-weights it.
    """
    w_hat = _adaptive_weights(rewards, weights, offsets, adaptive)
    return gdpo(rewards, groups, w_hat, eps=eps, batch_norm=batch_norm, lengths=lengths)


@register_estimator("saw_grpo", options={"eps": DEFAULT_EPS, "offsets": 0.0, "adaptive": True},
                    group_level={"adaptive": False}, check=_check_saw)
def saw_grpo(rewards, groups, weights, *, eps=DEFAULT_EPS, offsets=0.0, adaptive=True):
    """SAW on GRPO: per group (r' - mean) / (std + eps) of r' = sum_k w^_k r_k, w^ from batch CVs.

    Options: ``offsets`` (shift before the CV), ``adaptive=False`` holds w^ = w (= GRPO).
    """
    w_hat = _adaptive_weights(rewards, weights, offsets, adaptive)
    return grpo(rewards, groups, w_hat, eps=eps)
