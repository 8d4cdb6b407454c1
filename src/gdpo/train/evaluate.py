"""In-training evaluation: greedy completions (multi-turn rows: greedy episodes) on test rows, per-reward means."""

from __future__ import annotations

from typing import Any

import numpy as np

from gdpo.rewards.reward_set import RewardSet
from gdpo.rollout.hf import generate
from gdpo.train.scoring import reward_columns


def evaluate_rows(model, tokenizer, rewards: RewardSet, rows: list[dict[str, Any]], cfg) -> dict[str, float]:
    """``eval/<reward>/mean`` and ``eval/length_mean`` over ``rows`` (one greedy completion each)."""
    values, lengths = [], []
    for start in range(0, len(rows), cfg.eval.batch_size):
        chunk = rows[start:start + cfg.eval.batch_size]
        sample = generate
        if chunk and all(row.get("env") for row in chunk):  # multi-turn rows: greedy episodes
            from gdpo.rollout.multi_turn import generate_multi_turn as sample
        out = sample(model, tokenizer, chunk, num_generations=1, max_new_tokens=cfg.rollout.max_new_tokens,
                     max_prompt_tokens=cfg.rollout.max_prompt_tokens, greedy=True)
        values.append(rewards.score(out.completions, **reward_columns(out.rows)).values)
        lengths.append(out.lengths.numpy())
    matrix = np.concatenate(values)  # [num_rows, K]
    result = {f"eval/{name}/mean": float(np.nanmean(matrix[:, k])) if np.any(~np.isnan(matrix[:, k]))
              else float("nan") for k, name in enumerate(rewards.names)}
    result["eval/length_mean"] = float(np.concatenate(lengths).mean())
    result["eval/num_prompts"] = float(len(rows))
    return result
