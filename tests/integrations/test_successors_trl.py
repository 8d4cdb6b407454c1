"""GDPO's successors (gd2po, saw_gdpo, saw_grpo) reached by name from TRL's GDPOTrainer.

A real GDPOTrainer run on the tiny random-init model per method, with the advantages it
trained on recomputed independently; and the pure batch step the trainer runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

import gdpo.data.toy  # noqa: F401  (registers the toy_* rewards)
from gdpo import compute_advantages
from gdpo.integrations import trl as gt
from gdpo.models import build_tiny
from gdpo.rewards.reward_set import RewardSet, RewardSpec

G = 4  # completions per prompt


def lowercase_share(completions, **_):
    """A dense reward, so that a random-init model gets non-zero advantages."""
    return [sum(ch.islower() for ch in c) / max(len(c), 1) for c in completions]


def vowel_share(completions, **_):
    """A second dense reward that often disagrees with the first (so GD²PO finds conflicts)."""
    return [sum(ch in "aeiouAEIOU" for ch in c) / max(len(c), 1) for c in completions]


def toy_rows(n=8):
    rows = []
    for i in range(n):
        target = "abcd"[i % 4]
        rows.append({"prompt": [{"role": "user", "content": f"Say the letter {target}."}], "target": target,
                     "max_len": 3})
    return datasets.Dataset.from_list(rows)


class RecordingTrainer(gt.GDPOTrainer):
    """Keeps every generation batch's tensors, to recompute the advantages independently."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.batches = getattr(self, "batches", [])
        self.batches.append((list(inputs), {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}))
        return out


@pytest.mark.parametrize("method, options", [("gd2po", {"variant": "snr", "tau": 0.5}),
                                             ("saw_gdpo", {"offsets": [3.0, 0.0, 0.0]})])
def test_gdpo_trainer_trains_with_a_successor_by_name(tmp_path, method, options):
    reward_set = RewardSet([
        RewardSpec("toy_letter", weight=1.0),
        RewardSpec("lowercase_share", fn=lowercase_share, weight=1.0),
        RewardSpec("vowel_share", fn=vowel_share, weight=0.5),
    ])
    rewards = gt.trl_rewards(reward_set)
    tiny = build_tiny(seed=0)
    args = gt.GRPOConfig(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2 * G, num_generations=G,
        max_completion_length=8, learning_rate=1e-2, logging_steps=1, report_to=[], save_strategy="no",
        bf16=False, gradient_checkpointing=False, seed=0, temperature=1.0, disable_dropout=True,
        dataloader_num_workers=0, reward_weights=rewards.weights)
    trainer = RecordingTrainer(model=tiny.model, reward_funcs=rewards.funcs, args=args, train_dataset=toy_rows(),
                               processing_class=tiny.tokenizer, advantage_method=method,
                               advantage_options={"eps": 1e-4, **options}, token_weighted_batch_norm=True)
    out = trainer.train()
    assert math.isfinite(out.training_loss)
    assert trainer.advantage_settings.method == method
    for rows, tensors in trainer.batches:
        texts = tiny.tokenizer.batch_decode(tensors["completion_ids"], skip_special_tokens=True)
        columns = {"target": [r["target"] for r in rows], "max_len": [r["max_len"] for r in rows]}
        values = reward_set.score(texts, **columns).values  # [N, K]
        lengths = tensors["completion_mask"].sum(1).numpy()
        expected = compute_advantages(values, np.arange(len(texts)) // G, method, reward_set.weights,
                                      eps=1e-4, lengths=lengths, **options)
        np.testing.assert_allclose(tensors["advantages"].numpy(), expected, rtol=1e-5, atol=1e-6)
        assert np.abs(expected).max() > 0  # the check is not vacuous
        # and the method is not silently GDPO
        gdpo = compute_advantages(values, np.arange(len(texts)) // G, "gdpo", reward_set.weights, eps=1e-4,
                                  lengths=lengths)
        assert not np.allclose(expected, gdpo)
    logged = trainer.state.log_history[0]
    assert 1.0 <= logged["gdpo/distinct_advantages_per_group"] <= G


@pytest.mark.parametrize("method", ["gd2po", "saw_gdpo", "saw_grpo"])
def test_batch_advantages_runs_each_successor(method):
    # Two groups of 3 (TRL keeps a prompt's completions together), K = 2.
    rewards = torch.tensor([[1, 0], [0, 1], [0, 0], [1, 2], [1, 0], [0, 0]], dtype=torch.float32)
    batch = gt.batch_advantages(rewards, 3, [1.0, 1.0], gt.AdvantageSettings(method))
    expected = compute_advantages(rewards.double().numpy(), [0, 0, 0, 1, 1, 1], method)
    np.testing.assert_allclose(batch.advantages, expected, rtol=1e-12)
    assert batch.distinct_per_group.shape == (2,)


def test_settings_check_successor_options_by_name():
    gt.AdvantageSettings("gd2po", {"variant": "snr", "tau": 0.8}, token_weighted_batch_norm=True)
    with pytest.raises(ValueError, match="offsets"):
        gt.AdvantageSettings("gd2po", {"offsets": 3.0})  # a SAW option, not GD²PO's
    with pytest.raises(ValueError, match="batch step"):
        gt.AdvantageSettings("saw_grpo", token_weighted_batch_norm=True)  # SAW on GRPO has none
    with pytest.raises(ValueError, match="Did you mean 'gd2po'"):
        gt.AdvantageSettings("gd2p0")
