"""configs/accelerate/*.yaml: accelerate's own loader and launcher accept them, and a launch runs.

On a machine without CUDA, ``accelerate launch --config_file ddp.yaml --num_processes 2`` starts
2 CPU processes (torch elastic) and the trainer joins them with gloo. (``--cpu`` would instead
start a single process: accelerate's simple launcher.)
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs" / "accelerate"
FILES = ["ddp.yaml", "fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"]
EXPECTED_TYPE = {"ddp.yaml": "MULTI_GPU", "fsdp.yaml": "FSDP", "deepspeed_zero2.yaml": "DEEPSPEED",
                 "deepspeed_zero3.yaml": "DEEPSPEED"}


def test_every_shipped_file_is_listed():
    assert sorted(p.name for p in CONFIG_DIR.glob("*.yaml")) == sorted(FILES)


@pytest.mark.parametrize("name", FILES)
def test_accelerate_loads_the_file(name):
    config_args = pytest.importorskip("accelerate.commands.config.config_args")
    cfg = config_args.load_config_from_file(str(CONFIG_DIR / name))  # rejects unknown top-level keys
    assert str(cfg.distributed_type).split(".")[-1] == EXPECTED_TYPE[name]
    assert cfg.num_machines == 1 and not cfg.use_cpu


@pytest.mark.parametrize("name", FILES)
def test_nested_keys_are_accelerate_launch_options(name):
    """accelerate copies fsdp_config / deepspeed_config keys onto its launch arguments by name."""
    launch = pytest.importorskip("accelerate.commands.launch")
    known = {action.dest for action in launch.launch_command_parser()._actions}
    raw = yaml.safe_load((CONFIG_DIR / name).read_text())
    nested = {**raw.get("fsdp_config", {}), **raw.get("deepspeed_config", {})}
    assert set(nested) <= known, f"{name}: unknown to accelerate launch: {sorted(set(nested) - known)}"
    if name.startswith("deepspeed"):
        assert raw["deepspeed_config"]["zero_stage"] == int(name[-6])  # zero2 -> 2, zero3 -> 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: str, out: Path, *extra: str) -> subprocess.CompletedProcess:
    """accelerate launch of 2 processes on a 2-step smoke run; retried on a port taken meanwhile."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
    for _ in range(3):
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(CONFIG_DIR / config),
               "--num_processes", "2", "--main_process_port", str(_free_port()),
               "-m", "gdpo", "train", "--config", str(ROOT / "configs" / "smoke.yaml"), "--output-dir", str(out),
               "--set", "steps=2", "--set", "rollout.prompts_per_step=4", "--set", "rollout.num_generations=4",
               "--set", "logging.progress=lines", *extra]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=ROOT)
        if proc.returncode == 0 or "in use" not in (proc.stderr + proc.stdout).lower():
            return proc
    return proc


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU (gloo) launch; on GPUs it would use them")
@pytest.mark.parametrize("config,strategy", [("ddp.yaml", "ddp"), ("fsdp.yaml", "fsdp")])
def test_accelerate_launch_runs_two_processes(tmp_path, config, strategy):
    pytest.importorskip("accelerate")
    out = tmp_path / "run"
    proc = _launch(config, out, "--set", f"distributed.strategy={strategy}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    state = json.loads((out / "checkpoints" / "step-000002" / "state.json").read_text())
    assert state["world_size"] == 2  # really two processes, not one
    assert state["fsdp"] is (strategy == "fsdp")
