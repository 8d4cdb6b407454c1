"""model.dtype: bfloat16 on CPU: a short run trains, and sampling and logprobs share one dtype."""

import math
from pathlib import Path

import pytest
import torch
import yaml

from gdpo.models import build_tiny, load_model_and_tokenizer
from gdpo.train import config_from_dict, train
from gdpo.train.build import autocast_for
from gdpo.rollout.backends import HFGenerator
from gdpo.train.update import UpdateBatch, batched_logprobs

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
ROWS = [{"prompt": "Say the letter a.", "target": "a"}, {"prompt": "Hi", "target": "b"}]


def test_bf16_run_on_cpu_trains(tmp_path):
    cfg = yaml.safe_load(SMOKE.read_text())
    cfg.update(output_dir=str(tmp_path), steps=2)
    cfg["model"]["dtype"] = "bfloat16"
    cfg["rollout"].update(prompts_per_step=2, num_generations=4, max_new_tokens=5)
    cfg["update"].update(ppo_epochs=2)  # old logprobs under autocast too
    cfg["checkpoint"] = {"every": 0, "save_final_model": True}
    result = train(cfg)
    assert [row["step"] for row in result.history] == [1, 2]
    for row in result.history:
        assert math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"]) and row["grad_norm"] > 0
    start = build_tiny(**cfg["model"]["tiny"], seed=0).model
    final = load_model_and_tokenizer(str(result.final_model_dir)).model
    assert all(p.dtype == torch.float32 for p in final.parameters())  # master weights stay fp32
    changed = [not torch.equal(a, b) for a, b in zip(start.parameters(), final.parameters())]
    assert any(changed)


@pytest.mark.parametrize("setting, expected", [("bfloat16", torch.bfloat16), ("float32", torch.float32),
                                               ("auto", torch.float32)])
def test_sampling_and_logprobs_compute_in_the_same_dtype(setting, expected):
    cfg = config_from_dict({"model": {"dtype": setting}, "rollout": {"num_generations": 2, "max_new_tokens": 4}})
    model, tok, _ = build_tiny(seed=0)
    seen = []
    model.lm_head.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    autocast = autocast_for(cfg, torch.device("cpu"))
    policy = type("P", (), {"core": model, "tokenizer": tok})()
    rollout = HFGenerator(cfg, policy, autocast).generate(ROWS, step=1)
    sampled, seen[:] = set(seen), []
    batch = UpdateBatch(rollout.prompt_ids, rollout.prompt_mask, rollout.completion_ids, rollout.completion_mask,
                        torch.zeros(len(rollout)))
    logp = batched_logprobs(model, batch, micro_batch_size=8, temperature=1.0, autocast=autocast)
    assert sampled == set(seen) == {expected}
    assert logp.dtype == torch.float32 and torch.isfinite(logp[rollout.completion_mask.bool()]).all()
