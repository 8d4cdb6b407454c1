"""A multi-turn batch (model turns + masked tool results) updated by two CPU processes (DDP or
FSDP) gives the same loss, gradients and weights as one process, as the single-turn path does."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from multiproc import run_ranks  # noqa: E402

from gdpo.data import get_task  # noqa: E402
from gdpo.envs.toy import reference_calls  # noqa: E402
from gdpo.models import build_tiny  # noqa: E402
from gdpo.rewards.reward_set import RewardSet  # noqa: E402
from gdpo.rewards.toolcall import render_tool_calls  # noqa: E402
from gdpo.rollout.multi_turn import ScriptedTurns, generate_multi_turn  # noqa: E402
from gdpo.train import dist  # noqa: E402
from gdpo.train.build import lr_multiplier  # noqa: E402
from gdpo.train.fsdp import full_model_state_all, shard_policy  # noqa: E402
from gdpo.train.scoring import score_and_normalize  # noqa: E402
from gdpo.train.update import UpdateBatch, UpdateSettings, batched_logprobs, update_policy  # noqa: E402

B, G = 2, 2
SETTINGS = UpdateSettings(eps_low=0.2, eps_high=0.28, aggregation="token_mean", constant_normalizer=None,
                          beta=0.0, kl_estimator="k3", entropy_coef=0.0, ppo_epochs=2, num_minibatches=2,
                          micro_batch_size=1, max_grad_norm=1.0, temperature=1.0)


def _fixed_rollout():
    """Two rows x two samples: one solves it in three turns, one answers at once (wrong)."""
    _, tok, _ = build_tiny(max_positions=512)
    rows = get_task("multi_turn_toy", brief=True, num_train=B, num_test=0).train

    def good(row):
        calls = reference_calls(row)
        return lambda ep: render_tool_calls(calls[len(ep.turns)]) if len(ep.turns) < 2 else row["answer"]

    replies = [good(rows[0]), lambda ep: "no idea", lambda ep: "7", good(rows[1])]
    out = generate_multi_turn(None, tok, rows, num_generations=G, max_new_tokens=120, max_prompt_tokens=256,
                              turns=ScriptedTurns(tok, replies))
    keep = ["id", "prompt", "answer", "needed_calls", "episode"]
    return out, [{k: r[k] for k in keep} for r in out.rows]


def _update(data, info: dist.DistInfo, strategy: str = "ddp"):
    out, rows = data["rollout"], data["rows"]
    share = dist.rank_slice(B, info)
    mine = slice(share.start * G, share.stop * G)
    model = build_tiny(max_positions=512, seed=0).model
    wrapped = model if not info.enabled else (shard_policy(model) if strategy == "fsdp"
                                              else torch.nn.parallel.DistributedDataParallel(model))
    rewards = RewardSet.from_config(["final_answer", "turn_format", "call_efficiency"])
    scored = score_and_normalize(rewards, out.completions[mine], rows[mine], out.lengths[mine].numpy(), G,
                                 method="gdpo", method_options={}, token_weighted=False, dynamic_sampling=False,
                                 info=info)
    batch = UpdateBatch(out.prompt_ids[mine], out.prompt_mask[mine], out.completion_ids[mine],
                        out.completion_mask[mine], torch.as_tensor(scored.advantages[scored.local]).float())
    batch.old_logp = batched_logprobs(wrapped, batch, 1, 1.0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_multiplier(0, 4, "constant", 0.0))
    figures = update_policy(wrapped, optimizer, scheduler, batch, SETTINGS, info)
    weights = (full_model_state_all(model) if info.enabled and strategy == "fsdp"
               else {k: v.detach().clone() for k, v in model.state_dict().items()})
    return {"advantages": scored.advantages, "figures": figures, "weights": weights}


def _worker(rank: int, strategy: str, data_path: str, out_dir: str) -> None:
    info = dist.setup()
    try:
        import gdpo.rewards.trajectory  # noqa: F401  (a fresh process)

        torch.save(_update(torch.load(data_path, weights_only=False), info, strategy), f"{out_dir}/rank{rank}.pt")
    finally:
        dist.teardown(info)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_two_processes_match_one_on_a_multi_turn_batch(tmp_path, strategy):
    out, rows = _fixed_rollout()
    assert (out.completion_mask == 0).any()  # the batch holds tool results
    data = {"rollout": out, "rows": rows}
    torch.save(data, tmp_path / "data.pt")
    torch.set_num_threads(1)
    single = _update(data, dist.DistInfo())
    assert np.abs(single["advantages"]).sum() > 0
    run_ranks(_worker, 2, tmp_path, strategy, str(tmp_path / "data.pt"), str(tmp_path))
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for res in ranks[:1] if strategy == "fsdp" else ranks:
        np.testing.assert_allclose(res["advantages"], single["advantages"], atol=1e-12)
        for key in ("loss", "loss/pg_loss", "grad_norm"):
            assert res["figures"][key] == pytest.approx(single["figures"][key], abs=1e-5), key
        for name, w in single["weights"].items():
            assert torch.allclose(res["weights"][name], w, atol=1e-5), name
