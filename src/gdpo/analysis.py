"""The collapse analysis: how many distinct advantage vectors each method can produce.

The paper's argument (Sec. 3): with several binary rewards, GRPO sums them before normalizing,
so different reward combinations map to the same advantages. We count, over every assignment
of K binary rewards to the G rollouts of one group, how many *distinct advantage groups* the
group-level step of a method produces (vectors compared as sorted tuples rounded to 4
decimals). Batch-wide normalization is one affine map for the whole batch and is left out.

How the count stays cheap: the sorted advantage tuple of a group does not depend on the
order of its rollouts, so it suffices to enumerate *multisets* of G rollout types instead of
all 2^(K*G) assignments. A rollout's type is its reward vector in {0,1}^K; for methods that
only see the (equally weighted) sum of rewards, the sum 0..K is enough. Every multiset becomes
one group of one big batch, and the real estimator (:func:`gdpo.compute_advantages`) scores
them all in a single vectorized call, with the estimator's ``group_level`` options (those
that leave out its batch-wide parts).

What is counted for GDPO's successors: ``gd2po`` without its batch step (so its conflict
filter and group consensus, both functions of one group, are in); ``saw_gdpo`` / ``saw_grpo``
without their batch-level parts, i.e. with SAW's adaptive weights held at the given (equal)
weights and, for ``saw_gdpo``, without the batch step: per group they are then GDPO's and
GRPO's group steps, and count the same.

Also here: live diagnostics for training logs (distinct advantage values per group, share of
groups where a reward has zero spread).
"""

from __future__ import annotations

from itertools import combinations_with_replacement, product
from math import comb
from typing import NamedTuple

import numpy as np

from gdpo.advantages import GroupIndex, compute_advantages, get_estimator, group_spread

# See only the sum of (equal-weight) rewards in their group-level step (saw_grpo: with its
# adaptive weights held at the equal weights, as group_level does).
SUM_ONLY_METHODS = frozenset({"grpo", "grpo_no_std", "saw_grpo"})
MAX_MULTISETS = 5_000_000  # guard: beyond this the enumeration would take minutes


def rollout_types(method: str, num_rewards: int) -> np.ndarray:
    """The distinct per-rollout reward vectors the method can tell apart, [T, K] float."""
    if method in SUM_ONLY_METHODS:
        # Reward vectors with equal sums are indistinguishable: one representative per sum.
        return np.tril(np.ones((num_rewards + 1, num_rewards)), k=-1)  # row s has s ones
    return np.array(list(product((0.0, 1.0), repeat=num_rewards)))  # [2^K, K]


def count_multisets(num_types: int, num_rollouts: int) -> int:
    """Multisets of size G from T types: C(G + T - 1, G)."""
    return comb(num_rollouts + num_types - 1, num_rollouts)


def distinct_advantage_groups(method: str, num_rewards: int, num_rollouts: int, decimals: int = 4,
                              options: dict | None = None) -> int:
    """Distinct group advantage vectors of ``method`` over all binary reward assignments.

    Args:
        method: a registered estimator (its group-level step is used).
        num_rewards: K >= 1 binary rewards.
        num_rollouts: G >= 1 rollouts per group.
        decimals: rounding before comparing (the paper's convention: 4).
        options: further estimator options (e.g. ``{"variant": "snr", "tau": 0.5}`` for
            gd2po); the ``group_level`` ones cannot be overridden.

    >>> distinct_advantage_groups("grpo", 2, 2), distinct_advantage_groups("gdpo", 2, 2)
    (2, 3)
    """
    for label, value in (("num_rewards", num_rewards), ("num_rollouts", num_rollouts)):
        if not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{label} must be a positive integer, got {value!r}")
    estimator = get_estimator(method)
    fixed = sorted(set(options or {}) & set(estimator.group_level))
    if fixed:
        raise ValueError(f"option(s) {fixed} of {method!r} are fixed to {estimator.group_level} in the collapse "
                         "analysis (it counts the group-level step); leave them out")
    run_options = {**(options or {}), **estimator.group_level}
    types = rollout_types(method, num_rewards)  # [T, K]
    total = count_multisets(len(types), num_rollouts)
    if total > MAX_MULTISETS:
        raise ValueError(
            f"{method} with K={num_rewards}, G={num_rollouts} needs {total:,} multisets "
            f"(limit {MAX_MULTISETS:,}); use fewer rewards or rollouts"
        )
    members = _multisets(len(types), num_rollouts)  # [M, G] type indices
    rewards = types[members.reshape(-1)]  # [M*G, K]
    group_ids = np.repeat(np.arange(members.shape[0]), num_rollouts)  # [M*G]
    adv = compute_advantages(rewards, group_ids, method=method, **run_options)  # [M*G]
    vectors = np.sort(np.round(adv.reshape(-1, num_rollouts), decimals) + 0.0, axis=1)  # +0.0: -0 -> 0
    return int(np.unique(vectors, axis=0).shape[0])


def _multisets(num_types: int, size: int) -> np.ndarray:
    """All multisets of ``size`` items from ``num_types`` types, as sorted index rows [M, size]."""
    rows = np.fromiter(
        (i for combo in combinations_with_replacement(range(num_types), size) for i in combo),
        dtype=np.int64,
        count=count_multisets(num_types, size) * size,
    )
    return rows.reshape(-1, size)


class CollapseTable(NamedTuple):
    """Counts per method: ``by_rollouts[method][i]`` for G = rollouts[i] (K fixed), etc."""

    methods: list[str]
    rollouts: list[int]  # the G axis (K = rewards_fixed)
    rewards_fixed: int
    by_rollouts: dict[str, list[int]]
    rewards: list[int]  # the K axis (G = rollouts_fixed)
    rollouts_fixed: int
    by_rewards: dict[str, list[int | None]]  # None: skipped (too many multisets)


def collapse_table(
    methods: list[str] = ("grpo", "grpo_no_std", "gdpo"),
    rollouts: list[int] = tuple(range(2, 17)),
    rewards_fixed: int = 2,
    rewards: list[int] = tuple(range(1, 9)),
    rollouts_fixed: int = 4,
) -> CollapseTable:
    """The paper's two sweeps: counts against G (K fixed) and against K (G fixed)."""
    by_g = {m: [distinct_advantage_groups(m, rewards_fixed, g) for g in rollouts] for m in methods}
    by_k: dict[str, list[int | None]] = {}
    for m in methods:
        by_k[m] = []
        for k in rewards:
            too_big = count_multisets(len(rollout_types(m, k)), rollouts_fixed) > MAX_MULTISETS
            by_k[m].append(None if too_big else distinct_advantage_groups(m, k, rollouts_fixed))
    return CollapseTable(list(methods), list(rollouts), rewards_fixed, by_g, list(rewards), rollouts_fixed, by_k)


# --------------------------------------------------------------------------------------
# Live diagnostics (used by the trainer's metrics)
# --------------------------------------------------------------------------------------
def distinct_values_per_group(advantages, group_ids, decimals: int = 4) -> np.ndarray:
    """Number of distinct advantage values in each group, [num_groups] (groups in id order)."""
    adv = np.round(np.asarray(advantages, dtype=np.float64).reshape(-1), decimals) + 0.0
    groups = GroupIndex.from_ids(np.asarray(group_ids))
    if adv.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    # Sort by (group, value); a new distinct value starts where either changes.
    order = np.lexsort((adv, groups.inverse))
    g_sorted, a_sorted = groups.inverse[order], adv[order]
    new_value = np.ones_like(a_sorted, dtype=bool)
    new_value[1:] = (g_sorted[1:] != g_sorted[:-1]) | (a_sorted[1:] != a_sorted[:-1])
    return np.bincount(g_sorted, weights=new_value, minlength=groups.num_groups).astype(np.int64)


def has_spread(rewards, group_ids) -> np.ndarray:
    """[num_groups, K] bool: the reward varies within the group (>= 2 applicable, not all equal)."""
    values = np.asarray(rewards, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"rewards must be [N, K], got shape {values.shape}")
    groups = GroupIndex.from_ids(np.asarray(group_ids))
    if groups.num_groups == 0:
        return np.zeros((0, values.shape[1]), dtype=bool)
    return group_spread(values, groups)


def zero_spread_fraction(rewards, group_ids) -> np.ndarray:
    """Per reward, the share of groups whose applicable values are all equal (or < 2 of them), [K]."""
    spread = has_spread(rewards, group_ids)
    return (~spread).mean(axis=0) if spread.shape[0] else np.zeros(spread.shape[1])


def multi_reward_signal_fraction(rewards, group_ids) -> float:
    """Share of groups in which two or more rewards vary.

    Only there can GDPO's advantages differ from GRPO's beyond a per-group scale: with at most
    one varying reward, the group's sum is an affine image of that reward.
    """
    spread = has_spread(rewards, group_ids)
    return float((spread.sum(axis=1) >= 2).mean()) if spread.shape[0] else 0.0
