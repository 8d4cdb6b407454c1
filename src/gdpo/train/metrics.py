"""Per-step figures of the rewards and advantages (numpy in, flat dict of floats out).

The collapse is measured live: ``advantages/distinct_per_group`` is the mean number of
distinct advantage values (rounded to 4 decimals) per group, and each reward's
``zero_std_frac`` is the share of groups in which that reward has no spread.
"""

from __future__ import annotations

import numpy as np

from gdpo.analysis import distinct_values_per_group, multi_reward_signal_fraction, zero_spread_fraction


TOTAL = "total"  # rewards/total/* is the weighted sum, not a reward component


def reward_components(keys) -> list[str]:
    """The reward names in a metrics row's keys (``rewards/<name>/mean``), in logged order,
    without the weighted ``total``: the one reader of the key format :func:`reward_metrics` writes.

    >>> reward_components(["rewards/fmt/mean", "rewards/fmt/std", "rewards/total/mean", "rewards/a/b/mean", "kl"])
    ['fmt', 'a/b']
    """
    names = [k[len("rewards/"):-len("/mean")] for k in keys if k.startswith("rewards/") and k.endswith("/mean")]
    return [n for n in names if n != TOTAL]


def reward_metrics(values: np.ndarray, names: list[str], weights: np.ndarray, group_ids: np.ndarray,
                   errors: dict[str, int] | None = None) -> dict[str, float]:
    """``rewards/<name>/{mean,std,zero_std_frac,errors}``, ``rewards/total/*`` and
    ``rewards/multi_signal_frac`` (groups where >= 2 rewards vary) from values [N, K]."""
    out: dict[str, float] = {}
    zero = zero_spread_fraction(values, group_ids)  # [K]
    for k, name in enumerate(names):
        col = values[:, k]
        ok = col[~np.isnan(col)]
        out[f"rewards/{name}/mean"] = float(ok.mean()) if ok.size else float("nan")
        out[f"rewards/{name}/std"] = float(ok.std()) if ok.size else float("nan")
        out[f"rewards/{name}/zero_std_frac"] = float(zero[k])
        out[f"rewards/{name}/errors"] = float((errors or {}).get(name, 0))
    total = np.where(np.isnan(values), 0.0, values) @ weights  # [N]
    out[f"rewards/{TOTAL}/mean"] = float(total.mean())
    out[f"rewards/{TOTAL}/std"] = float(total.std())
    out[f"rewards/{TOTAL}/zero_std_frac"] = float(zero_spread_fraction(total[:, None], group_ids)[0])
    out["rewards/multi_signal_frac"] = multi_reward_signal_fraction(values, group_ids)  # >= 2 rewards vary
    return out


def advantage_metrics(advantages: np.ndarray, group_ids: np.ndarray, decimals: int = 4) -> dict[str, float]:
    """Mean/std/min/max of the advantages [N] and the mean number of distinct values per group."""
    adv = np.asarray(advantages, dtype=np.float64)
    distinct = distinct_values_per_group(adv, group_ids, decimals=decimals)
    return {
        "advantages/mean": float(adv.mean()),
        "advantages/std": float(adv.std()),
        "advantages/min": float(adv.min()),
        "advantages/max": float(adv.max()),
        "advantages/distinct_per_group": float(np.mean(distinct)),
    }


def length_metrics(lengths: np.ndarray, truncated: np.ndarray) -> dict[str, float]:
    """Response length mean/max (tokens, EOS included) and the share that hit max_new_tokens."""
    lengths = np.asarray(lengths, dtype=np.float64)
    return {
        "completions/length_mean": float(lengths.mean()),
        "completions/length_max": float(lengths.max()),
        "completions/truncated_frac": float(np.mean(truncated)),
    }

