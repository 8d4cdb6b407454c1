"""Two CPU processes (gloo; DDP or FSDP) give the same advantages, loss and updated weights as one.

Between two updates every process samples from the trained model, each for a different number
of tokens: with FSDP that only works because generation runs on gathered weights.
"""

import numpy as np
import pytest
import torch
from multiproc import run_ranks

from gdpo.data.base import get_task
from gdpo.models import build_tiny
from gdpo.rewards.reward_set import RewardSet
from gdpo.train import dist
from gdpo.train.build import lr_multiplier
from gdpo.train.fsdp import full_model_state_all, full_parameters, shard_policy
from gdpo.rollout.hf import generate
from gdpo.train.scoring import score_and_normalize
from gdpo.train.update import (
    UpdateBatch,
    UpdateSettings,
    batched_logprobs,
    update_policy,
)

B, G = 4, 3
SETTINGS = UpdateSettings(eps_low=0.2, eps_high=0.28, aggregation="token_mean", constant_normalizer=None,
                          beta=0.0, kl_estimator="k3", entropy_coef=0.0, ppo_epochs=2, num_minibatches=2,
                          micro_batch_size=2, max_grad_norm=1.0, temperature=1.0)


def _fixed_rollout():
    """One batch of B prompts x G completions from the tiny model, made once in the parent."""
    task = get_task("toy", num_train=B, num_test=1, seed=1)
    model, tok, _ = build_tiny(seed=0)
    torch.manual_seed(0)
    out = generate(model, tok, task.train, num_generations=G, max_new_tokens=6, max_prompt_tokens=64)
    return {"rollout": out, "rewards": task.rewards}


def _wrap(model, strategy: str, info: dist.DistInfo):
    if not info.enabled:
        return model
    if strategy == "fsdp":
        return shard_policy(model)  # in place
    return torch.nn.parallel.DistributedDataParallel(model)


def _weights(model, strategy: str, info: dist.DistInfo) -> dict[str, torch.Tensor]:
    if info.enabled and strategy == "fsdp":
        return full_model_state_all(model)  # every rank takes part in the gather
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _sample_between_updates(model, tok, info: dist.DistInfo) -> None:
    """Each rank samples a different number of prompts and tokens (more forward passes on rank 1)."""
    task = get_task("toy", num_train=B, num_test=1, seed=1)
    torch.manual_seed(info.rank)
    with full_parameters(model):
        generate(model, tok, task.train[:1 + info.rank], num_generations=G, max_new_tokens=3 + 5 * info.rank,
                 max_prompt_tokens=64)


def _update(data, info: dist.DistInfo, strategy: str = "ddp"):
    """Score, normalize and update on this process's share of the fixed batch; sample; update again."""
    r = data["rollout"]
    share = dist.rank_slice(B, info)
    rows = slice(share.start * G, share.stop * G)
    model, tok, _ = build_tiny(seed=0)
    wrapped = _wrap(model, strategy, info)
    import gdpo.data.toy  # noqa: F401 - registers the toy_* rewards in a fresh process

    rewards = RewardSet.from_config(data["rewards"])
    scored = score_and_normalize(rewards, r.completions[rows], r.rows[rows], r.lengths[rows].numpy(), G,
                                 method="gdpo", method_options={}, token_weighted=False,
                                 dynamic_sampling=False, info=info)
    batch = UpdateBatch(r.prompt_ids[rows], r.prompt_mask[rows], r.completion_ids[rows],
                        r.completion_mask[rows], torch.as_tensor(scored.advantages[scored.local]).float())
    batch.old_logp = batched_logprobs(wrapped, batch, 2, 1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)  # after sharding: FSDP's parameters
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(0, 8, "cosine", 0.0))
    figures = update_policy(wrapped, optimizer, scheduler, batch, SETTINGS, info)
    _sample_between_updates(model, tok, info)
    update_policy(wrapped, optimizer, scheduler, batch, SETTINGS, info)
    return {"advantages": scored.advantages, "values": scored.values, "figures": figures,
            "weights": _weights(model, strategy, info)}


def _worker(rank: int, strategy: str, data_path: str, out_dir: str) -> None:
    info = dist.setup()
    try:
        torch.save(_update(torch.load(data_path, weights_only=False), info, strategy), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.teardown(info)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one(tmp_path, strategy):
    data = _fixed_rollout()
    torch.save(data, tmp_path / "data.pt")
    torch.set_num_threads(1)
    single = _update(data, dist.DistInfo())
    run_ranks(_worker, 2, tmp_path, strategy, str(tmp_path / "data.pt"), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for res in ranks[:1] if strategy == "fsdp" else ranks:  # FSDP gathers full weights on rank 0
        # every process sees the global rewards and computes the global advantages
        np.testing.assert_array_equal(res["values"], single["values"])
        np.testing.assert_allclose(res["advantages"], single["advantages"], atol=1e-12)
        for key in ("loss", "loss/pg_loss", "loss/clip_frac", "loss/entropy", "grad_norm"):
            assert res["figures"][key] == pytest.approx(single["figures"][key], abs=1e-5), key
        assert res["weights"].keys() == single["weights"].keys()
        for name, w in single["weights"].items():
            assert torch.allclose(res["weights"][name], w, atol=1e-5), name
    assert any(not torch.equal(w, build_tiny(seed=0).model.state_dict()[k]) for k, w in single["weights"].items())
    assert np.abs(single["advantages"]).sum() > 0  # the batch carried a learning signal


def test_file_rendezvous_without_rank_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.setenv(dist.INIT_METHOD_ENV, f"file://{tmp_path}/rendezvous")
    with pytest.raises(ValueError, match="needs RANK"):
        dist.setup()
