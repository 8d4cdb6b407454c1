"""The estimators' core: group bookkeeping, the registry, and GRPO, GRPO w/o std, GDPO and
their ablations. Layers: this module <- :mod:`gdpo.advantages_successors` (GD²PO, SAW, built on
the helpers here) <- :mod:`gdpo.advantages` (the public entry, which imports both so that the
registry is complete). Import :mod:`gdpo.advantages`, not this module, to use the registry.

Pure math: plain arrays in, arrays out. No transformers, no distributed code, no IO. The shape
vocabulary, the shared signature and the numeric conventions (eps, unbiased std, NaN = not
applicable, groups without spread) are stated once, in :mod:`gdpo.advantages`.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

import numpy as np

DEFAULT_EPS = 1e-6


# --------------------------------------------------------------------------------------
# Group bookkeeping
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GroupIndex:
    """Groups of a batch, as contiguous segments of a stable sort of the samples.

    ``order`` sorts samples by group; in that order group g occupies
    ``[starts[g], starts[g] + sizes[g])``. ``inverse[i]`` is sample i's group number.
    """

    starts: np.ndarray  # [num_groups] int64
    sizes: np.ndarray  # [num_groups] int64
    uniform_contiguous: bool = False  # samples already grouped, every group the same size
    _order: np.ndarray | None = None  # [N] samples sorted by group (stable); None = identity
    _inverse: np.ndarray | None = None  # [N] group number of each sample; None = derive

    @property
    def order(self) -> np.ndarray:
        """[N] int64: the samples sorted by group (stable)."""
        if self._order is None:
            return np.arange(int(self.sizes.sum()), dtype=np.int64)
        return self._order

    @property
    def inverse(self) -> np.ndarray:
        """[N] int64: each sample's group number."""
        if self._inverse is None:
            return np.repeat(np.arange(self.num_groups, dtype=np.int64), self.sizes)
        return self._inverse

    @property
    def num_groups(self) -> int:
        return int(self.sizes.shape[0])

    @classmethod
    def from_ids(cls, group_ids: np.ndarray) -> "GroupIndex":
        """Build from one id per sample (ints or strings, any order)."""
        ids = np.asarray(group_ids)
        if ids.shape[0] == 0:
            empty = np.zeros(0, dtype=np.int64)
            return cls(empty, empty)
        if _is_sorted_ints(ids):
            # Fast path: ids already grouped in ascending order (the usual layout).
            boundaries = np.flatnonzero(ids[1:] != ids[:-1]) + 1
            starts = np.concatenate(([0], boundaries)).astype(np.int64)
            sizes = np.diff(np.append(starts, ids.shape[0])).astype(np.int64)
            uniform = bool(sizes.shape[0] > 0 and np.all(sizes == sizes[0]))
            return cls(starts, sizes, uniform)
        _, inverse = np.unique(ids, return_inverse=True)
        inverse = inverse.reshape(-1).astype(np.int64)
        order = np.argsort(inverse, kind="stable").astype(np.int64)
        sizes = np.bincount(inverse).astype(np.int64)
        starts = np.concatenate(([0], np.cumsum(sizes)[:-1])).astype(np.int64)
        return cls(starts, sizes, False, order, inverse)

    def to_sorted(self, x: np.ndarray) -> np.ndarray:
        return x if self._order is None else x[self._order]

    def from_sorted(self, x_sorted: np.ndarray) -> np.ndarray:
        if self._order is None:
            return x_sorted
        out = np.empty_like(x_sorted)
        out[self.order] = x_sorted
        return out

    def broadcast(self, per_group: np.ndarray) -> np.ndarray:
        """[num_groups, ...] -> [N, ...] in sorted order."""
        return np.repeat(per_group, self.sizes, axis=0)


def _is_sorted_ints(ids: np.ndarray) -> bool:
    return ids.ndim == 1 and np.issubdtype(ids.dtype, np.integer) and bool(np.all(ids[1:] >= ids[:-1]))


# --------------------------------------------------------------------------------------
# Group-wise normalization (the one kernel every estimator uses)
# --------------------------------------------------------------------------------------
def group_normalize(
    values: np.ndarray,
    groups: GroupIndex,
    *,
    scale: bool = True,
    eps: float = DEFAULT_EPS,
    leave_one_out: bool = False,
) -> np.ndarray:
    """Normalize each column of ``values`` [N, K] within each group; NaN = not applicable.

    Returns [N, K] float64 with ``(x - baseline) / (std + eps)`` (or ``x - baseline`` when
    ``scale`` is False) where the sample's value applies and its group has at least two
    applicable values with non-zero spread; 0 elsewhere. The baseline is the group mean of
    the column, or with ``leave_one_out`` the mean of the *other* applicable samples.
    """
    if values.shape[0] == 0:
        return np.zeros_like(values, dtype=np.float64)
    if groups.uniform_contiguous and not leave_one_out and not np.isnan(values).any():
        return _group_normalize_uniform(values, int(groups.sizes[0]), scale=scale, eps=eps)
    v = groups.to_sorted(values)  # [N, K], grouped
    applies = ~np.isnan(v)  # [N, K]
    starts = groups.starts
    count, has_signal = _sorted_group_spread(v, applies, starts)  # [num_groups, K] each
    mean = np.add.reduceat(np.where(applies, v, 0.0), starts, axis=0) / np.maximum(count, 1.0)
    mean_n = groups.broadcast(mean)  # [N, K]
    if scale:
        sq = np.add.reduceat(np.where(applies, (v - mean_n) ** 2, 0.0), starts, axis=0)
        std = np.sqrt(sq / np.maximum(count - 1.0, 1.0))  # unbiased, [num_groups, K]
        has_signal &= (std + eps) > 0  # a spread so small that its square underflows counts as none
    centered = np.where(applies, v - mean_n, 0.0)
    if leave_one_out:
        count_n = groups.broadcast(count)
        # x - mean_of_others = (x - mean) * n / (n - 1)
        centered = centered * count_n / np.maximum(count_n - 1.0, 1.0)
    if scale:
        divisor = np.where(has_signal, std + eps, 1.0)  # groups without signal come out 0 below
        centered = centered / groups.broadcast(divisor)
    out = np.where(applies & groups.broadcast(has_signal), centered, 0.0)
    return groups.from_sorted(out)


def group_spread(values: np.ndarray, groups: GroupIndex) -> np.ndarray:
    """[num_groups, K] bool: the column varies within the group (>= 2 applicable values, not all
    exactly equal; NaN = not applicable). The zero-spread test every estimator uses."""
    v = groups.to_sorted(values)
    return _sorted_group_spread(v, ~np.isnan(v), groups.starts)[1]


def _sorted_group_spread(v: np.ndarray, applies: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Applicable counts and the exact spread test (max > min, NaN ignored) of grouped [N, K]."""
    count = np.add.reduceat(applies.astype(np.float64), starts, axis=0)  # [num_groups, K]
    hi = np.fmax.reduceat(np.where(applies, v, -np.inf), starts, axis=0)
    lo = np.fmin.reduceat(np.where(applies, v, np.inf), starts, axis=0)
    return count, (count >= 2) & (hi > lo)


def _group_normalize_uniform(values: np.ndarray, size: int, *, scale: bool, eps: float) -> np.ndarray:
    """Fast path of :func:`group_normalize`: contiguous groups of equal ``size``, no NaN."""
    n, k = values.shape
    return _normalize_kgb(_to_kgb(values, size), scale=scale, eps=eps).transpose(2, 1, 0).reshape(n, k)


def _to_kgb(values: np.ndarray, size: int) -> np.ndarray:
    """[N, K] grouped in order, groups of ``size`` -> a new contiguous [K, G, B] array."""
    n, k = values.shape
    out = np.empty((k, size, n // size))
    out[...] = values.reshape(n // size, size, k).transpose(2, 1, 0)
    return out


def _normalize_kgb(x: np.ndarray, *, scale: bool, eps: float) -> np.ndarray:
    """Group-normalize a [K, G, B] array over G (every group full, no NaN), IN PLACE.

    The usual trainer batch (B prompts x G rollouts, in order) takes this path. Same results
    as the general path; in this layout every reduction runs over the middle axis with the B
    groups contiguous (numpy is slow reducing a short last axis), and working in place
    avoids fresh allocations, whose page faults cost more than the arithmetic here.
    """
    size = x.shape[1]
    if size < 2:
        x[...] = 0.0
        return x
    has_signal = np.not_equal(x, x[:, :1]).any(axis=1, keepdims=True)  # [K, 1, B]: not all equal
    mean = x.sum(axis=1, keepdims=True)  # [K, 1, B]
    mean /= size
    np.subtract(x, mean, out=x)  # x is now centered, [K, G, B]
    if scale:
        std = np.sqrt(np.einsum("kgb,kgb->kb", x, x)[:, None, :] / (size - 1))  # [K, 1, B]
        has_signal &= (std + eps) > 0  # see group_normalize
        x /= np.where(has_signal, std + eps, np.inf)  # no signal: finite / inf = 0
    else:
        x *= has_signal
    return x


def batch_normalize(
    x: np.ndarray,
    active: np.ndarray,
    *,
    eps: float = DEFAULT_EPS,
    lengths: np.ndarray | None = None,
) -> np.ndarray:
    """Normalize ``x`` [N] over the whole batch: ``(x - mean) / (std + eps)``.

    Only ``active`` samples enter the statistics; inactive ones come out 0. With ``lengths``
    (response tokens per sample) the mean and variance are token-weighted, as verl's
    ``masked_whiten`` does over the response mask (Bessel correction by the token count).
    """
    zeros = np.zeros_like(x, dtype=np.float64)
    xa = x if active.all() else x[active]
    if xa.shape[0] == 0 or xa.max() == xa.min():
        return zeros  # nothing to rank
    weights = None if lengths is None else lengths[active].astype(np.float64)
    total = float(xa.shape[0]) if weights is None else float(weights.sum())
    if total <= 0:
        return zeros
    # Work on x / max|x| so that squares neither overflow nor underflow; eps scales along.
    size = float(max(xa.max(), -xa.min()))
    z = xa / size  # a new array, centered and scaled in place below
    z -= (z.sum() if weights is None else weights @ z) / total
    squares = np.einsum("i,i->", z, z) if weights is None else np.einsum("i,i,i->", weights, z, z)
    std = float(np.sqrt(squares / max(total - 1.0, 1.0)))  # Bessel correction by count or tokens
    with np.errstate(over="ignore"):
        z /= std + eps / size  # eps / size may overflow to inf: the result is then 0
    if z.shape[0] == x.shape[0]:
        return z  # every sample active
    zeros[active] = z
    return zeros


# --------------------------------------------------------------------------------------
# Estimators
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Estimator:
    fn: Callable[..., np.ndarray]
    options: dict[str, Any]  # option name -> default
    description: str
    group_level: dict[str, Any]  # options that leave out batch-wide steps (collapse analysis)
    check: Callable[[dict[str, Any], int], None] | None = None  # validates option values (see below)


_ESTIMATORS: dict[str, Estimator] = {}


def register_estimator(name: str, *, options: dict[str, Any], group_level: dict[str, Any] | None = None,
                       check: Callable[[dict[str, Any], int], None] | None = None):
    """Decorator: register ``fn(rewards[N,K], groups, weights[K], **options) -> [N]`` as ``name``.

    ``options`` maps every option the estimator accepts to its default; unknown options are
    rejected by :func:`compute_advantages`. ``group_level`` are the option values that drop
    batch-wide steps (used by :mod:`gdpo.analysis`). ``check(options, num_rewards)`` raises
    ValueError naming a bad option value (run by :func:`check_options`, which
    :func:`compute_advantages` calls). Registering a name twice is an error.
    """

    def decorate(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        if name in _ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered; pick another name")
        doc = (fn.__doc__ or "").strip().split("\n")[0]
        _ESTIMATORS[name] = Estimator(fn, dict(options), doc, dict(group_level or {}), check)
        return fn

    return decorate


def estimator_names() -> list[str]:
    return sorted(_ESTIMATORS)


def get_estimator(name: str) -> Estimator:
    if name not in _ESTIMATORS:
        close = difflib.get_close_matches(str(name), _ESTIMATORS, n=2)
        hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
        raise ValueError(f"unknown advantage method {name!r}.{hint} Valid methods: {', '.join(estimator_names())}")
    return _ESTIMATORS[name]


def check_options(method: str, options: dict[str, Any], num_rewards: int | None = None) -> None:
    """Refuse unknown option names and bad option values of ``method`` before any data exists.

    ``num_rewards`` (K) lets options sized by the reward count (SAW's ``offsets``) be checked
    too; None skips those checks. Raises TypeError (unknown name) or ValueError (bad value),
    each naming the option, the value and the fix. Config validation can call this early.
    """
    est = get_estimator(method)
    unknown = sorted(set(options) - set(est.options))
    if unknown:
        raise TypeError(
            f"unknown option(s) {unknown} for method {method!r}; valid options: {sorted(est.options) or 'none'}"
        )
    if "eps" in options:
        _check_eps(options["eps"])
    if est.check is not None:
        est.check(dict(options), num_rewards)


def _weighted_sum(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """[N, K] with NaN -> [N]: NaN entries contribute nothing.

    A loop over the K columns rather than ``values @ weights``: a BLAS matrix-vector product
    may start worker threads, which on a loaded machine cost far more than the arithmetic.
    """
    filled = np.where(np.isnan(values), 0.0, values) if np.isnan(values).any() else values
    total = np.zeros(values.shape[0])
    for k, w in enumerate(weights):
        if w:
            total += w * filled[:, k]
    return total


def _any_applicable(rewards: np.ndarray) -> np.ndarray:
    if not np.isnan(rewards).any():
        return np.ones(rewards.shape[0], dtype=bool)
    return ~np.all(np.isnan(rewards), axis=1)  # [N]


def _total_reward(rewards: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted sum [N] of applicable rewards; NaN where no reward applies (left out of stats)."""
    total = _weighted_sum(rewards, weights)
    if np.isnan(rewards).any():
        total[np.all(np.isnan(rewards), axis=1)] = np.nan
    return total


_SUM_OPTIONS = {"eps": DEFAULT_EPS, "leave_one_out": False}


@register_estimator("grpo", options=_SUM_OPTIONS)
def grpo(rewards, groups, weights, *, eps=DEFAULT_EPS, leave_one_out=False):
    """GRPO on several rewards: weighted sum, then per group (x - mean) / (std + eps)."""
    total = _total_reward(rewards, weights)  # [N]
    return group_normalize(total[:, None], groups, eps=eps, leave_one_out=leave_one_out)[:, 0]


@register_estimator("grpo_no_std", options=_SUM_OPTIONS)
def grpo_no_std(rewards, groups, weights, *, eps=DEFAULT_EPS, leave_one_out=False):
    """GRPO w/o std (Dr. GRPO style): weighted sum, then per group x - mean."""
    total = _total_reward(rewards, weights)  # [N]
    return group_normalize(total[:, None], groups, scale=False, eps=eps, leave_one_out=leave_one_out)[:, 0]


_GDPO_OPTIONS = {
    "eps": DEFAULT_EPS,
    "leave_one_out": False,
    "batch_norm": True,
    "per_reward_std": True,
    "lengths": None,
}


@register_estimator("gdpo", options=_GDPO_OPTIONS, group_level={"batch_norm": False})
def gdpo(rewards, groups, weights, *, eps=DEFAULT_EPS, leave_one_out=False, batch_norm=True,
         per_reward_std=True, lengths=None):
    """GDPO: per reward, per group normalize; weighted sum; batch-wise normalize.

    Options: ``batch_norm=False`` drops the batch step (ablation), ``per_reward_std=False``
    only centers each reward, ``lengths`` [N] makes the batch step token-weighted (verl).
    """
    scores = per_reward_scores(rewards, groups, eps=eps, scale=per_reward_std, leave_one_out=leave_one_out)
    summed = scores.to_samples(_cancel_rounding_noise(scores.values, weights, scores.bound))  # [N]
    active = _any_applicable(rewards)
    if not batch_norm:
        return np.where(active, summed, 0.0)
    return batch_normalize(summed, active, eps=eps, lengths=lengths)


class PerRewardScores(NamedTuple):
    """Each reward's per-group z-scores (GDPO's A_k before the sum), in the layout computed.

    ``values`` is [K, G, B] when ``fast`` (contiguous groups of equal size G, B groups, no
    NaN) and [K, N] in sample order otherwise; it is the caller's scratch. ``to_samples``
    turns one per-sample slice ([G, B] or [N]) into [N] sample order. ``bound`` is a bound on
    every |value| (sqrt of the largest group size) when the values are z-scores, else None.
    """

    values: np.ndarray  # [K, G, B] (fast) or [K, N]
    fast: bool
    bound: float | None

    def to_samples(self, x: np.ndarray) -> np.ndarray:
        """[G, B] (fast) or [N] -> [N] in sample order."""
        return x.T.reshape(-1) if self.fast else x


def per_reward_scores(rewards: np.ndarray, groups: GroupIndex, *, eps: float = DEFAULT_EPS, scale: bool = True,
                      leave_one_out: bool = False) -> PerRewardScores:
    """A_k of every reward column of ``rewards`` [N, K] exactly as GDPO computes them (see module doc)."""
    if groups.uniform_contiguous and not leave_one_out and not np.isnan(rewards).any():
        # Fast path: stay in the [K, G, B] layout (reductions over G run on contiguous B rows).
        size = int(groups.sizes[0])
        values = _normalize_kgb(_to_kgb(rewards, size), scale=scale, eps=eps)  # [K, G, B]
        return PerRewardScores(values, True, float(np.sqrt(size)) if scale else None)
    per_reward = group_normalize(rewards, groups, scale=scale, eps=eps, leave_one_out=leave_one_out)  # [N, K]
    bound = float(np.sqrt(groups.sizes.max())) if scale and groups.num_groups else None
    return PerRewardScores(per_reward.T, False, bound)


def _cancel_rounding_noise(per_reward: np.ndarray, weights: np.ndarray, bound: float | None) -> np.ndarray:
    """Weighted sum over the first (reward) axis of ``per_reward`` [K, ...] -> [...].

    ``per_reward`` is overwritten (it is the caller's scratch). Sums that cancel down to
    rounding noise become exactly 0. Complementary rewards
    (r2 = 1 - r1) normalize to exact opposites, but their float sum is ~1e-16, not 0; the
    batch step would blow that noise up into a ranking. A sum smaller than 64 ulps of the
    magnitude of the terms that went into it is treated as the 0 it is. ``bound`` is a known
    bound on every |term| (z-scores of a group of n: sqrt(n)), which saves computing the
    magnitudes sample by sample; None = compute them.
    """
    summed = np.zeros(per_reward.shape[1:])
    magnitude = None if bound is not None else np.zeros(per_reward.shape[1:])
    for k, w in enumerate(weights):  # a loop over the K rewards, each a whole-batch operation
        if w == 0:
            continue
        term = per_reward[k]  # scaled in place: per_reward is scratch (fresh buffers fault pages)
        term *= w
        summed += term
        if magnitude is not None:
            magnitude += np.abs(term, out=term)
    ulps = 64 * np.finfo(np.float64).eps
    tolerance = ulps * bound * weights.sum() if bound is not None else ulps * magnitude
    summed[np.abs(summed) <= tolerance] = 0.0
    return summed


def _gdpo_variant(name: str, doc: str, **fixed: Any) -> None:
    options = {k: v for k, v in _GDPO_OPTIONS.items() if k not in fixed}
    group_level = {} if "batch_norm" in fixed else {"batch_norm": False}

    def variant(rewards, groups, weights, **opts):
        return gdpo(rewards, groups, weights, **fixed, **opts)

    variant.__doc__ = doc
    register_estimator(name, options=options, group_level=group_level)(variant)


_gdpo_variant("gdpo_no_bn", "GDPO without the batch-wise normalization (ablation).", batch_norm=False)
_gdpo_variant("gdpo_no_std", "GDPO without the per-reward std (centering only) (ablation).", per_reward_std=False)


def _check_eps(eps) -> None:
    if not isinstance(eps, (int, float)) or not np.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
