"""rollout.backend: vllm on a real GPU: rollouts, weight sync against the HF policy, 2 training steps.

Skipped unless vllm imports and CUDA is available. Never run on this project's dev machines
or CI (no GPU there): the first GPU run of this file is the first test of the vLLM backend.
"""

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

HAVE_VLLM = importlib.util.find_spec("vllm") is not None
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not HAVE_VLLM, reason="vllm is not installed (pip install vllm on a CUDA machine)"),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: the vLLM backend needs a GPU"),
]

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
TINY = {"hidden_size": 128, "num_layers": 2, "num_heads": 2, "intermediate_size": 256, "max_positions": 256}


def _config(tmp_path, **extra):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg.update(output_dir=str(tmp_path / "run"), steps=2)
    cfg["model"].update(tiny=TINY, dtype="float32")  # head_dim 64: every vLLM attention backend takes it
    cfg["rollout"].update(prompts_per_step=4, num_generations=4, max_new_tokens=8, backend="vllm",
                          vllm_gpu_memory_utilization=0.2, **extra)
    cfg["checkpoint"] = {"every": 0, "save_final_model": False}
    return cfg


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A policy on the GPU and its vLLM generator (one engine for the module: they are slow to build)."""
    from gdpo.train import dist
    from gdpo.train.build import load_policy
    from gdpo.train.config import config_from_dict
    from gdpo.rollout.vllm_engine import VLLMGenerator

    cfg = config_from_dict(_config(tmp_path_factory.mktemp("engine")))
    device = torch.device("cuda:0")
    policy = load_policy(cfg, dist.DistInfo(), device)
    return cfg, policy, VLLMGenerator(cfg, dist.DistInfo(), policy, device)


def _rows(n=4):
    from gdpo.data.base import get_task

    return get_task("toy", num_rewards=3, letters="abcdef", max_len=3).train[:n]


def test_rollout_tensors_are_consistent_and_scored_by_the_hf_policy(engine):
    from gdpo.rollout.hf import sequence_logprobs

    cfg, policy, gen = engine
    rollout = gen.generate(_rows(), step=1)
    n, g = len(rollout), cfg.rollout.num_generations
    assert n == 4 * g and rollout.completion_ids.shape == rollout.completion_mask.shape
    assert rollout.completion_ids.device.type == "cuda"
    mask, ids, lengths = rollout.completion_mask, rollout.completion_ids, rollout.lengths
    eos, pad = policy.tokenizer.eos_token_id, policy.tokenizer.pad_token_id
    assert ((lengths >= 1) & (lengths <= cfg.rollout.max_new_tokens)).all()
    positions = torch.arange(mask.shape[1], device=mask.device)[None]
    assert torch.equal(mask.bool(), positions < lengths[:, None])  # a prefix of ones per sample
    assert (ids[~mask.bool()] == pad).all()
    for i in range(n):  # a sample shorter than the limit ended at EOS, and only there
        k = int(lengths[i])
        hits = (ids[i, :k] == eos).nonzero().flatten().tolist()
        assert hits in ([], [k - 1]) and (k == cfg.rollout.max_new_tokens or hits == [k - 1])
    assert rollout.completions == policy.tokenizer.batch_decode(ids, skip_special_tokens=True)
    logp, _ = sequence_logprobs(policy.core, rollout.prompt_ids, rollout.prompt_mask, ids, mask)
    assert torch.isfinite(logp[mask.bool()]).all() and (logp[mask.bool()] <= 0).all()


def test_pushed_weights_match_the_hf_policy(engine):
    """After changing the policy, vLLM's logprobs of its own samples equal the HF policy's."""
    from vllm import SamplingParams

    from gdpo.rollout.hf import render_prompts, sequence_logprobs
    from gdpo.rollout.vllm_engine import push_weights
    from gdpo.rollout.vllm_io import policy_weights, rollout_from_samples

    cfg, policy, gen = engine
    with torch.no_grad():
        for p in policy.core.parameters():
            p.add_(0.05 * torch.randn_like(p))  # far from the folder the engine was built from
    gen.wake()
    push_weights(gen.llm, policy_weights(policy.core))
    rows = _rows()
    prompt_ids, prompt_mask = render_prompts(policy.tokenizer, rows, cfg.rollout.max_prompt_tokens)
    prompts = [{"prompt_token_ids": i[m.bool()].tolist()} for i, m in zip(prompt_ids, prompt_mask)]
    params = SamplingParams(n=2, temperature=1.0, max_tokens=6, seed=0, logprobs=0,
                            stop_token_ids=[policy.tokenizer.eos_token_id])
    outs = gen.llm.generate(prompts, params, use_tqdm=False)
    samples = [list(c.token_ids) for o in outs for c in sorted(o.outputs, key=lambda c: c.index)]
    vllm_logp = [[lp[t].logprob for t, lp in zip(c.token_ids, c.logprobs)]
                 for o in outs for c in sorted(o.outputs, key=lambda c: c.index)]
    r = rollout_from_samples(prompt_ids.cuda(), prompt_mask.cuda(), samples, rows, 2, policy.tokenizer)
    hf_logp, _ = sequence_logprobs(policy.core, r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask)
    for i, ours in enumerate(vllm_logp):
        k = int(r.lengths[i])
        theirs = hf_logp[i, :k].float().cpu()
        assert torch.allclose(torch.tensor(ours[:k]), theirs, atol=2e-2), (i, ours[:k], theirs.tolist())


def _train_in_a_fresh_process(tmp_path, cfg: dict) -> list[dict]:
    """`gdpo train` on ``cfg`` in its own process (its own engine and process group) -> metrics rows."""
    config = tmp_path / "vllm.yaml"
    config.write_text(yaml.safe_dump(cfg))
    launcher = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")  # set by the fixture's engine
    env = {k: v for k, v in os.environ.items() if k not in launcher}
    done = subprocess.run([sys.executable, "-m", "gdpo", "train", "--config", str(config)],
                          check=False, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    return [json.loads(line) for line in (Path(cfg["output_dir"]) / "metrics.jsonl").read_text().splitlines()]


def test_two_training_steps_with_the_vllm_backend(tmp_path):
    """Two steps with the engine asleep during the updates."""
    rows = _train_in_a_fresh_process(tmp_path, _config(tmp_path, vllm_sleep=True))
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        rewards = {k: v for k, v in row.items() if k.startswith("rewards/") and k.endswith("/mean")}
        assert "rewards/total/mean" in rewards and all(math.isfinite(v) for v in rewards.values())
        assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])
        assert 1 <= row["completions/length_mean"] <= 8


# --------------------------------------------------------------------------- multi-turn on the engine
def _peek_rows(n=4):
    from gdpo.data.base import get_task

    return get_task("multi_turn_peek", num_train=n, num_test=0, max_turns=2).train


def test_multi_turn_episodes_on_the_engine_mask_the_environment_and_fit_its_context(engine):
    cfg, policy, gen = engine
    tok = policy.tokenizer
    rollout = gen.generate(_peek_rows(), step=1)
    assert len(rollout) == 4 * cfg.rollout.num_generations and rollout.completion_ids.device.type == "cuda"
    assert 1 <= rollout.metrics["episode/turns"] <= 2
    ids, mask = rollout.completion_ids, rollout.completion_mask
    for i, row in enumerate(rollout.rows):
        ep = row["episode"]
        assert ep.end in ("answer", "max_turns", "budget", "env") and 1 <= len(ep.turns) <= 2
        real = ids[i] != tok.pad_token_id  # the trajectory (tiny's pad is not its EOS)
        # mask 1: the model's sampled tokens, which decode to its turns; mask 0: the environment's tokens
        assert int(mask[i].sum()) == ep.model_tokens
        assert int((real & ~mask[i].bool()).sum()) == ep.env_tokens
        assert tok.decode(ids[i][mask[i].bool()], skip_special_tokens=True) == "".join(ep.turns)
        assert int(rollout.prompt_mask[i].sum()) + int(real.sum()) <= gen.max_model_len
    again = gen.generate(_peek_rows(), step=1)  # the same weights and seeds: the same trajectories
    assert torch.equal(again.completion_ids, ids) and again.completions == rollout.completions
    other = gen.generate(_peek_rows(), step=2)
    assert not torch.equal(other.completion_ids, ids) or other.completions != rollout.completions


def test_multi_turn_training_with_the_vllm_backend(tmp_path):
    """`gdpo train` on the multi-turn smoke task with the engine sampling every turn, 2 steps."""
    cfg = yaml.safe_load((SMOKE.parent / "multi_turn_smoke.yaml").read_text())
    cfg.update(output_dir=str(tmp_path / "run"), steps=2)
    cfg["model"].update(tiny={**TINY, "max_positions": 1024}, dtype="float32")
    cfg["rollout"].update(backend="vllm", vllm_gpu_memory_utilization=0.2, vllm_sleep=True)
    rows = _train_in_a_fresh_process(tmp_path, cfg)
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["episode/turns"] >= 1 and math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"])
