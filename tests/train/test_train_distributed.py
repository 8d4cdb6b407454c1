"""Two CPU processes (gloo) give the same advantages, loss and updated weights as one process."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from gdpo.data.base import get_task
from gdpo.models import build_tiny
from gdpo.rewards.reward_set import RewardSet
from gdpo.train import dist
from gdpo.train.build import lr_multiplier
from gdpo.train.rollout import generate
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


def _update(data, info: dist.DistInfo):
    """Score, normalize and update on this process's share of the fixed batch."""
    r = data["rollout"]
    share = dist.rank_slice(B, info)
    rows = slice(share.start * G, share.stop * G)
    model = build_tiny(seed=0).model
    wrapped = torch.nn.parallel.DistributedDataParallel(model) if info.enabled else model
    import gdpo.data.toy  # noqa: F401 - registers the toy_* rewards in a fresh process

    rewards = RewardSet.from_config(data["rewards"])
    scored = score_and_normalize(rewards, r.completions[rows], r.rows[rows], r.lengths[rows].numpy(), G,
                                 method="gdpo", method_options={}, token_weighted=False,
                                 dynamic_sampling=False, info=info)
    batch = UpdateBatch(r.prompt_ids[rows], r.prompt_mask[rows], r.completion_ids[rows],
                        r.completion_mask[rows], torch.as_tensor(scored.advantages[scored.local]).float())
    batch.old_logp = batched_logprobs(wrapped, batch, 2, 1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(0, 4, "cosine", 0.0))
    figures = update_policy(wrapped, optimizer, scheduler, batch, SETTINGS, info)
    weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"advantages": scored.advantages, "values": scored.values, "figures": figures, "weights": weights}


def _worker(rank: int, world: int, port: int, data_path: str, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    info = dist.setup()
    try:
        torch.save(_update(torch.load(data_path, weights_only=False), info), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.teardown(info)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
    data = _fixed_rollout()
    torch.save(data, tmp_path / "data.pt")
    torch.set_num_threads(1)
    single = _update(data, dist.DistInfo())
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "data.pt"), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for res in ranks:
        # every process sees the global rewards and computes the global advantages
        np.testing.assert_array_equal(res["values"], single["values"])
        np.testing.assert_allclose(res["advantages"], single["advantages"], atol=1e-12)
        for key in ("loss", "loss/pg_loss", "loss/clip_frac", "loss/entropy"):
            assert res["figures"][key] == pytest.approx(single["figures"][key], abs=1e-5), key
        for name, w in single["weights"].items():
            assert torch.allclose(res["weights"][name], w, atol=1e-5), name
    assert any(not torch.equal(w, build_tiny(seed=0).model.state_dict()[k]) for k, w in single["weights"].items())
    assert np.abs(single["advantages"]).sum() > 0  # the batch carried a learning signal
