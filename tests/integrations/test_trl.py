"""TRL integration: real GRPOTrainer / GDPOTrainer runs on the tiny random-init model, config round trip."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

pytest.importorskip("trl")
datasets = pytest.importorskip("datasets")

import gdpo.rewards
from gdpo import compute_advantages
import gdpo.data.toy  # noqa: F401  (registers the toy_* rewards)
from gdpo.integrations import trl as gt
from gdpo.models import build_tiny
from gdpo.rewards.reward_set import RewardSet, RewardSpec
from gdpo.train.config import TrainConfig, config_from_dict

G = 4  # completions per prompt


def lowercase_share(completions, **_):
    """A dense reward, so that a random-init model gets non-zero advantages."""
    return [sum(ch.islower() for ch in c) / max(len(c), 1) for c in completions]


def tiny_args(tmp_path, **overrides):
    values = dict(
        output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2 * G, num_generations=G,
        max_completion_length=8, learning_rate=1e-2, logging_steps=1, report_to=[], save_strategy="no",
        bf16=False, gradient_checkpointing=False, seed=0, temperature=1.0, disable_dropout=True,
        dataloader_num_workers=0,
    )
    values.update(overrides)
    return gt.GRPOConfig(**values)


def toy_rows(n=8, conversational=True):
    rows = []
    for i in range(n):
        target = "abcd"[i % 4]
        text = f"Say the letter {target}."
        prompt = [{"role": "user", "content": text}] if conversational else text
        rows.append({"prompt": prompt, "target": target, "max_len": 3})
    return datasets.Dataset.from_list(rows)


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def changed(before, model):
    return any(not torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_our_rewards_work_as_trl_reward_funcs_unchanged(tmp_path):
    # Plain-text prompts: TRL hands reward functions strings, as ours expect.
    tiny = build_tiny(seed=0)
    funcs = [gdpo.rewards.get("toy_letter"), gdpo.rewards.get("toy_short"), gdpo.rewards.get("math_format"),
             lowercase_share]
    trainer = gt.GRPOTrainer(model=tiny.model, reward_funcs=funcs, args=tiny_args(tmp_path),
                             train_dataset=toy_rows(conversational=False), processing_class=tiny.tokenizer)
    before = snapshot(trainer.model)
    out = trainer.train()
    assert math.isfinite(out.training_loss)
    assert changed(before, trainer.model)
    logged = trainer.state.log_history[0]
    assert "rewards/toy_letter/mean" in logged and "rewards/toy_short/mean" in logged
    assert 0.0 <= logged["rewards/toy_letter/mean"] <= 1.0


class RecordingTrainer(gt.GDPOTrainer):
    """Keeps what the loss saw, to compare with an independent recomputation."""

    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        self.batches = getattr(self, "batches", [])
        self.batches.append((list(inputs), {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}))
        return out

    def _compute_loss(self, model, inputs):
        self.loss_advantages = getattr(self, "loss_advantages", [])
        self.loss_advantages.append(inputs["advantages"].detach().clone())
        return super()._compute_loss(model, inputs)


def test_gdpo_trainer_trains_with_our_advantages(tmp_path):
    reward_set = RewardSet([
        RewardSpec("toy_letter", weight=1.0),
        RewardSpec("toy_short", weight=0.5, condition=("toy_letter", 1.0)),
        RewardSpec("lowercase_share", fn=lowercase_share, weight=2.0),
    ])
    rewards = gt.trl_rewards(reward_set)
    assert rewards.names == ["toy_letter", "toy_short", "lowercase_share"]
    assert rewards.conditions == [gt.RewardCondition("toy_short", "toy_letter", 1.0, 0.0)]
    tiny = build_tiny(seed=0)
    trainer = RecordingTrainer(
        model=tiny.model, reward_funcs=rewards.funcs, args=tiny_args(tmp_path, max_steps=2, reward_weights=rewards.weights),
        train_dataset=toy_rows(), processing_class=tiny.tokenizer, advantage_method="gdpo",
        advantage_options={"eps": 1e-4}, conditions=rewards.conditions, token_weighted_batch_norm=True)
    before = snapshot(trainer.model)
    out = trainer.train()
    assert math.isfinite(out.training_loss)
    assert changed(before, trainer.model)

    # Recompute every batch from scratch: decode, score with the reward set, estimate.
    assert len(trainer.batches) == 2
    for rows, tensors in trainer.batches:
        texts = tiny.tokenizer.batch_decode(tensors["completion_ids"], skip_special_tokens=True)
        columns = {"target": [r["target"] for r in rows], "max_len": [r["max_len"] for r in rows]}
        values = reward_set.score(texts, **columns).values  # [N, K], conditioned
        lengths = tensors["completion_mask"].sum(1).numpy()
        expected = compute_advantages(values, np.arange(len(texts)) // G, "gdpo", reward_set.weights,
                                      eps=1e-4, lengths=lengths)
        np.testing.assert_allclose(tensors["advantages"].numpy(), expected, rtol=1e-5, atol=1e-6)
        assert np.abs(expected).max() > 0  # the check is not vacuous
    # The loss used exactly these advantages (TRL shuffles the batch before the loss).
    used = np.sort(torch.cat(trainer.loss_advantages).numpy())
    produced = np.sort(torch.cat([t["advantages"] for _, t in trainer.batches]).numpy())
    np.testing.assert_allclose(used, produced)
    logged = trainer.state.log_history[0]
    assert 1.0 <= logged["gdpo/distinct_advantages_per_group"] <= G
    assert 0.0 <= logged["gdpo/toy_short/zero_spread_frac"] <= 1.0
    # The condition reached TRL's own reward logging: toy_short <= toy_letter on every sample.
    batch = trainer.last_advantage_batch
    assert np.all(batch.rewards[:, 1] <= batch.rewards[:, 0])


def test_batch_advantages_differs_from_trl_native_grpo_where_gdpo_should():
    # Paper's collapse example: totals (0,1) and (0,2) look the same to GRPO, not to GDPO.
    rewards = torch.tensor([[0, 0], [1, 0], [0, 0], [1, 1]], dtype=torch.float32)
    grpo = gt.batch_advantages(rewards, 2, [1, 1], gt.AdvantageSettings("grpo"))
    gdpo = gt.batch_advantages(rewards, 2, [1, 1], gt.AdvantageSettings("gdpo_no_bn"))
    np.testing.assert_allclose(grpo.advantages, [-0.7071, 0.7071, -0.7071, 0.7071], atol=1e-4)
    np.testing.assert_allclose(gdpo.advantages, [-0.7071, 0.7071, -1.4142, 1.4142], atol=1e-4)
    np.testing.assert_array_equal(gdpo.zero_spread, [0.0, 0.5])  # reward 2 is flat in group 0


def test_bad_trainer_arguments_are_named():
    with pytest.raises(ValueError, match="gdpo_no_sdt"):
        gt.AdvantageSettings("gdpo_no_sdt")
    with pytest.raises(ValueError, match="batch_norm"):
        gt.AdvantageSettings("grpo", {"batch_norm": False})
    with pytest.raises(ValueError, match="token_weighted_batch_norm"):
        gt.AdvantageSettings("grpo", {}, True)
    with pytest.raises(ValueError, match="'nope'"):
        gt.check_conditions([gt.RewardCondition("a", "nope")], ["a", "b"])


def test_version_check_names_supported_versions():
    with pytest.raises(gt.UnsupportedTRLVersion, match=r">= 1\.16"):
        gt.check_trl_version("0.19.0")
    with pytest.warns(UserWarning, match="newer"):
        gt.check_trl_version("9.0.0")


def round_trip_config() -> TrainConfig:
    return config_from_dict({
        "seed": 3, "steps": 7, "output_dir": "runs/x", "method": "gdpo_no_std", "method_options": {"eps": 1e-4},
        "model": {"dtype": "float32", "gradient_checkpointing": True},
        "rollout": {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 32, "temperature": 0.7,
                    "top_p": 0.9, "top_k": 20},
        "loss": {"eps_low": 0.2, "eps_high": 0.28, "beta": 0.001, "aggregation": "seq_mean", "entropy_coef": 0.01,
                 "kl_estimator": "k1"},
        "optim": {"lr": 3e-6, "min_lr_ratio": 0.1, "betas": [0.9, 0.99], "max_grad_norm": None, "warmup_steps": 2,
                  "weight_decay": 0.01},
        "update": {"micro_batch_size": 4, "num_minibatches": 2, "ppo_epochs": 2},
        "checkpoint": {"every": 0, "keep_last": 3}, "eval": {"every": 5, "batch_size": 8},
        "logging": {"tensorboard": False, "wandb": True},
        "rewards": [{"name": "toy_letter", "weight": 2.0},
                    {"name": "toy_short", "weight": 0.5, "condition": {"on": "toy_letter", "min": 1.0}}],
    })


def test_config_round_trip(tmp_path):
    cfg = round_trip_config()
    converted = gt.to_grpo_config(cfg)
    c = converted.config
    assert (c.num_generations, c.max_completion_length, c.temperature, c.top_p, c.top_k) == (4, 32, 0.7, 0.9, 20)
    assert (c.epsilon, c.epsilon_high, c.beta, c.learning_rate, c.num_iterations) == (0.2, 0.28, 0.001, 3e-6, 2)
    assert (c.per_device_train_batch_size, c.steps_per_generation, c.gradient_accumulation_steps) == (4, 4, 2)
    assert c.generation_batch_size == 16 and c.loss_type == "grpo" and c.reward_weights == [2.0, 0.5]
    assert c.lr_scheduler_kwargs == {"min_lr_rate": 0.1} and c.max_grad_norm == 0.0 and c.report_to == ["wandb"]
    assert converted.needs_gdpo_trainer
    assert converted.trainer_kwargs["advantage_method"] == "gdpo_no_std"
    assert [d.name for d in converted.dropped] == ["loss.kl_estimator"]
    back = gt.from_grpo_config(c, base=cfg)
    assert back.config == cfg
    assert back.dropped == []
    # Without a base, TRL's side alone: the nearest native method, TRL's eps, default rewards.
    alone = gt.from_grpo_config(c).config
    assert alone.method == "gdpo" and alone.method_options == {"eps": 1e-4}
    assert dataclasses.asdict(alone.rollout) == dataclasses.asdict(cfg.rollout)
    assert alone.update == cfg.update and alone.optim == cfg.optim


def test_config_conversion_errors_and_dropped_trl_fields(tmp_path):
    cfg = config_from_dict({"rollout": {"prompts_per_step": 3, "num_generations": 2},
                            "update": {"micro_batch_size": 4}})
    with pytest.raises(ValueError, match="micro_batch_size"):
        gt.to_grpo_config(cfg)
    args = tiny_args(tmp_path, scale_rewards="batch", mask_truncated_completions=True, loss_type="cispo")
    dropped = {d.name for d in gt.from_grpo_config(args).dropped}
    assert {"scale_rewards", "mask_truncated_completions", "loss_type"} <= dropped
