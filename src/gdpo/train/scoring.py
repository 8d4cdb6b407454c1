"""From completions to advantages: score locally, gather globally, normalize, take our slice.

Every process scores its own completions, then the reward matrices and group ids of all
processes are gathered (in rank order) so that group and batch statistics are those of the
global batch; every process computes the same advantages and keeps its own block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gdpo.advantages import compute_advantages
from gdpo.rewards.reward_set import RewardSet
from gdpo.train import dist


@dataclass
class ScoredBatch:
    """The global batch's rewards and advantages, plus where this process's block sits."""

    values: np.ndarray  # [N, K] rewards of all processes (NaN = not applicable)
    names: list[str]
    weights: np.ndarray  # [K]
    group_ids: np.ndarray  # [N] global prompt index
    lengths: np.ndarray  # [N] response tokens
    advantages: np.ndarray  # [N] float64
    keep: np.ndarray  # [N] bool: group kept (dynamic sampling)
    errors: dict[str, int]  # reward name -> samples on which it raised (all processes)
    local: slice  # this process's block of the N samples


def reward_columns(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Dataset columns aligned with the completions (TRL convention), ``prompts`` included."""
    keys = sorted({k for row in rows for k in row if k != "prompt"})
    columns = {k: [row.get(k) for row in rows] for k in keys}
    columns["prompts"] = [row.get("prompt") for row in rows]
    return columns


def groups_with_spread(values: np.ndarray, weights: np.ndarray, group_ids: np.ndarray) -> np.ndarray:
    """[N] bool: the sample's group has a spread in its weighted total reward (DAPO's filter)."""
    total = np.where(np.isnan(values), 0.0, values) @ weights  # [N]
    keep = np.zeros(len(total), dtype=bool)
    for g in np.unique(group_ids):
        members = group_ids == g
        keep[members] = total[members].max() > total[members].min()
    return keep


def score_and_normalize(reward_set: RewardSet, completions: list[str], rows: list[dict[str, Any]],
                        lengths: np.ndarray, num_generations: int, *, method: str,
                        method_options: dict[str, Any], token_weighted: bool, dynamic_sampling: bool,
                        info: dist.DistInfo = dist.DistInfo()) -> ScoredBatch:
    """Score this process's completions, gather all processes', compute global advantages."""
    scores = reward_set.score(completions, **reward_columns(rows))
    errors = {name: e.count for name, e in scores.errors.items()}
    gathered = dist.all_gather_objects((scores.values, np.asarray(lengths), errors), info)
    values = np.concatenate([g[0] for g in gathered])  # [N, K]
    all_lengths = np.concatenate([g[1] for g in gathered])  # [N]
    total_errors = {name: sum(g[2].get(name, 0) for g in gathered) for name in scores.names}
    n = values.shape[0]
    group_ids = np.arange(n) // num_generations  # [N]: samples of a prompt are contiguous
    keep = groups_with_spread(values, scores.weights, group_ids) if dynamic_sampling else np.ones(n, bool)
    # Dropped groups leave the batch before normalizing (they must not shift batch statistics).
    options = dict(method_options)
    if token_weighted:
        options["lengths"] = all_lengths[keep].astype(np.float64)
    advantages = np.zeros(n, dtype=np.float64)
    if keep.any():
        advantages[keep] = compute_advantages(values[keep], group_ids[keep], method=method,
                                              weights=scores.weights, **options)
    local_n = len(completions)
    start = sum(len(g[1]) for g in gathered[:info.rank])
    return ScoredBatch(values, scores.names, scores.weights, group_ids, all_lengths, advantages, keep,
                       total_errors, slice(start, start + local_n))
