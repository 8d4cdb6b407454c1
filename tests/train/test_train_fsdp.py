"""FSDP end to end: 2 gloo processes train, evaluate, checkpoint, resume and save an HF folder.

A run stopped after step 2 and resumed to step 4 matches the uninterrupted 4-step run: same
metrics, same evaluation, same final weights (the checkpoint holds the full weights and the
full AdamW state, scattered back into the shards on resume). And FSDP with gradient
checkpointing trains exactly as DDP does on the same processes.
"""

import json
from pathlib import Path

import pytest
import torch
from multiproc import run_ranks
from safetensors.torch import load_file

from gdpo.train.config import ConfigError, config_from_dict

VOLATILE = ("time/", "tokens_per_s")  # wall-clock figures differ between runs


def _config(output_dir: Path, steps: int) -> dict:
    return {
        "seed": 3, "steps": steps, "output_dir": str(output_dir), "method": "gdpo",
        "model": {"name": "tiny", "tiny": {"hidden_size": 32, "num_layers": 2, "num_heads": 4,
                                           "intermediate_size": 64}},
        "task": {"name": "toy", "params": {"num_rewards": 2, "letters": "abcd", "max_len": 3}},
        "rollout": {"prompts_per_step": 4, "num_generations": 4, "max_new_tokens": 6},
        "optim": {"lr": 3e-3, "lr_schedule": "constant"},
        "loss": {"beta": 0.02},  # a (replicated) reference model too
        "update": {"num_minibatches": 2, "micro_batch_size": 4},
        "checkpoint": {"every": 2, "keep_last": 2, "save_final_model": True},
        "logging": {"tensorboard": False, "samples_every": 0, "progress": "lines"},
        "eval": {"every": 2, "num_prompts": 4, "batch_size": 2},
        "distributed": {"strategy": "fsdp"},
    }


def _train_three_runs(rank: int, workdir: str) -> None:
    """Uninterrupted 4 steps; then 2 steps and a resume to 4, each run with its own process group."""
    import os

    from gdpo.train.dist import INIT_METHOD_ENV
    from gdpo.train.loop import train

    work = Path(workdir)
    runs = [("full", 4, False), ("broken", 2, False), ("broken", 4, True)]
    for i, (name, steps, resume) in enumerate(runs):
        os.environ[INIT_METHOD_ENV] = f"file://{work.resolve()}/rendezvous-run{i}"  # a fresh group per run
        train(_config(work / name, steps), resume=resume)


def _jsonl(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


@pytest.mark.slow
def test_fsdp_run_checkpoints_resumes_and_saves_an_hf_folder(tmp_path):
    run_ranks(_train_three_runs, 2, tmp_path, str(tmp_path))
    full, broken = tmp_path / "full", tmp_path / "broken"
    a, b = _jsonl(full / "metrics.jsonl"), _jsonl(broken / "metrics.jsonl")
    assert [r["step"] for r in b] == [1, 2, 3, 4]
    assert a == b
    assert _jsonl(full / "eval.jsonl") == _jsonl(broken / "eval.jsonl")
    assert [r["step"] for r in _jsonl(full / "eval.jsonl")] == [2, 4]
    state = json.loads((broken / "checkpoints" / "step-000004" / "state.json").read_text())
    assert state["fsdp"] is True and state["world_size"] == 2
    wa, wb = load_file(full / "final" / "model.safetensors"), load_file(broken / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(full / "final")  # a normal HF folder, full weights
    assert model.model.layers[0].mlp.up_proj.weight.shape == (64, 32)
    assert any(r["kl"] > 0 for r in a[1:])  # the reference model took part


def test_fsdp_with_lora_fails_early_with_the_fix():
    with pytest.raises(ConfigError, match="distributed.strategy=ddp"):
        config_from_dict({"distributed": {"strategy": "fsdp"}, "model": {"lora": {"r": 4}}})


def test_fsdp_with_vllm_rollouts_fails_at_config_time_with_the_fix():
    with pytest.raises(ConfigError, match="does not gather FSDP-sharded weights.*rollout.backend=hf"):
        config_from_dict({"distributed": {"strategy": "fsdp"}, "rollout": {"backend": "vllm"}})


def test_unknown_strategy_suggests_the_nearest():
    with pytest.raises(ConfigError, match="Did you mean 'fsdp'"):
        config_from_dict({"distributed": {"strategy": "fdsp"}})


def _train_ddp_then_fsdp(rank: int, workdir: str) -> None:
    """The same 3-step run twice on 2 processes: DDP, then FSDP with gradient checkpointing."""
    import os

    from gdpo.train.dist import INIT_METHOD_ENV
    from gdpo.train.loop import train

    work = Path(workdir)
    for strategy, checkpointing in [("ddp", False), ("fsdp", True)]:
        os.environ[INIT_METHOD_ENV] = f"file://{work.resolve()}/rendezvous-{strategy}"
        cfg = _config(work / strategy, 3)
        cfg["model"]["gradient_checkpointing"] = checkpointing
        cfg["distributed"]["strategy"] = strategy
        cfg["eval"]["every"] = 0
        train(cfg)


@pytest.mark.slow
def test_fsdp_with_gradient_checkpointing_matches_ddp(tmp_path):
    run_ranks(_train_ddp_then_fsdp, 2, tmp_path, str(tmp_path))
    ddp, fsdp = _jsonl(tmp_path / "ddp" / "metrics.jsonl"), _jsonl(tmp_path / "fsdp" / "metrics.jsonl")
    assert [r["step"] for r in fsdp] == [1, 2, 3]
    for a, b in zip(ddp, fsdp):  # same processes, same seeds: the same samples, the same updates
        assert a.keys() == b.keys()
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key
