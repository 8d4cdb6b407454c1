"""Multi-turn training end to end through ``gdpo.train.train``: the user-tool toy task, BFCL's
environments, and a tiny policy that learns to call a tool and use its result across two turns."""

from __future__ import annotations

import json

import pytest

from gdpo.data import get_task
from gdpo.rollout.multi_turn import generate_multi_turn
from gdpo.train import train

STEPS, LR = 120, 3e-3  # the peek game: 7 s on a quiet 2-core machine, ~3 min with a load average of 12
BASE = {"seed": 0, "method": "gdpo", "steps": 2,
        "rollout": {"prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 12, "max_prompt_tokens": 256},
        "optim": {"lr": 1e-3, "warmup_steps": 0, "lr_schedule": "constant"}, "update": {"micro_batch_size": 8},
        "checkpoint": {"every": 0, "save_final_model": False}, "eval": {"every": 0},
        "logging": {"tensorboard": False, "samples_every": 1, "num_samples": 2, "progress": "lines"}}


def _config(tmp_path, **over):
    cfg = json.loads(json.dumps(BASE))
    cfg["output_dir"] = str(tmp_path / "run")
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key].update(value)
        else:
            cfg[key] = value
    return cfg


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_trains_on_a_user_tool_environment(tmp_path):
    cfg = _config(tmp_path, model={"name": "tiny", "tiny": {"max_positions": 512}},
                  task={"name": "multi_turn_toy", "params": {"brief": True, "num_train": 4, "num_test": 2,
                                                              "max_turns": 2, "max_trajectory_tokens": 64}},
                  eval={"every": 2, "num_prompts": 2, "batch_size": 2})
    result = train(cfg)
    assert [h["step"] for h in result.history] == [1, 2]
    assert {"rewards/final_answer/mean", "rewards/turn_format/mean", "rewards/call_efficiency/mean",
            "rewards/env_no_errors/mean"} <= set(result.history[0])
    for h in result.history:  # the episode figures reach metrics.jsonl
        assert 1.0 <= h["episode/turns"] <= 2.0 and h["episode/env_errors"] >= 0.0
        assert h["episode/end_answer"] + h["episode/end_max_turns"] + h["episode/end_budget"] + h["episode/end_env"] == \
            pytest.approx(1.0)
    evals = _read(tmp_path / "run" / "eval.jsonl")  # greedy episodes on the test rows
    assert [e["step"] for e in evals] == [2] and 0.0 <= evals[0]["eval/turn_format/mean"] <= 1.0
    samples = _read(tmp_path / "run" / "samples.jsonl")
    assert len(samples) == 4 and set(samples[0]["rewards"]) == {"final_answer", "turn_format", "call_efficiency",
                                                                "env_no_errors"}


def test_trains_on_bfcl_environments(tmp_path):
    pytest.importorskip("bfcl_eval", reason="could not import bfcl_eval (scripts/setup.sh installs bfcl-eval)")
    cfg = _config(tmp_path, model={"name": "tiny", "tiny": {"max_positions": 1024}},
                  task={"name": "bfcl_multi_turn", "params": {"docs": "brief", "num_train": 2, "num_test": 1,
                                                               "max_turns": 2, "max_trajectory_tokens": 160}})
    result = train(cfg)
    assert [h["step"] for h in result.history] == [1, 2]
    for h in result.history:
        assert h["rewards/final_state_match/mean"] == 0.0  # a random model does not solve BFCL
        assert 0.0 <= h["rewards/turn_format/mean"] <= 1.0
    samples = _read(tmp_path / "run" / "samples.jsonl")
    # a random model answers without calls: BFCL's next user turn follows as environment tokens
    assert any("<|user|>" in s["completion"] for s in samples)


# -- learning: peek at a secret, then answer it ------------------------------------------------

def _by_secret(model, tok):
    """Greedy episodes on 64 held-out rows -> {secret digit: share of its rows solved}, episodes."""
    rows = get_task("multi_turn_peek", num_train=0, num_test=64, seed=7).test
    out = generate_multi_turn(model, tok, rows, num_generations=1, max_new_tokens=1, max_prompt_tokens=32, greedy=True)
    solved: dict[str, list[float]] = {}
    for r in out.rows:
        solved.setdefault(r["secret"], []).append(r["episode"].env.success())
    return {d: sum(v) / len(v) for d, v in sorted(solved.items())}, out


def test_tiny_policy_learns_to_call_a_tool_and_use_its_result(tmp_path):
    from transformers import LlamaForCausalLM

    from gdpo.envs.toy import build_peek_model, save_peek_model

    model, tok = build_peek_model()
    before, _ = _by_secret(model, tok)
    save_peek_model(tmp_path / "peek")
    cfg = _config(tmp_path, steps=STEPS, model={"name": str(tmp_path / "peek")},
                  task={"name": "multi_turn_peek", "params": {"num_train": 32}},
                  rollout={"prompts_per_step": 16, "num_generations": 8, "max_new_tokens": 1, "max_prompt_tokens": 32},
                  optim={"lr": LR}, update={"micro_batch_size": 128},
                  checkpoint={"every": 0, "save_final_model": True}, logging={"samples_every": 0})
    result = train(cfg)
    after, out = _by_secret(LlamaForCausalLM.from_pretrained(result.final_model_dir), tok)
    assert set(before) == set("0123") and max(before.values()) == 0.0  # untrained: never peeks and answers
    assert all(r["episode"].turns[0] == "?" for r in out.rows)  # trained: turn 1 is the call, every episode
    # Turn 2 uses the result: an answer that ignores it is one constant digit, right for one secret
    # at most; the trained policy answers right for at least 3 of the 4 secrets.
    assert sum(v >= 0.9 for v in after.values()) >= 3, (after, out.completions[:4])
