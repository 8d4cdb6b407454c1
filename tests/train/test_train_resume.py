"""Kill a real training process with SIGKILL mid-run, resume it, and match an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
STEPS = 8
ARGS = ["--config", str(SMOKE), "--set", f"steps={STEPS}", "--set", "checkpoint.every=1",
        "--set", "checkpoint.keep_last=2", "--set", "checkpoint.save_final_model=true",
        "--set", "rollout.prompts_per_step=4", "--set", "rollout.num_generations=4",
        "--set", "logging.samples_every=1"]
VOLATILE = ("time/", "tokens_per_s")  # wall-clock figures differ between runs


def _command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "gdpo", "train", *ARGS, "--output-dir", str(out), *extra]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def _metrics(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(VOLATILE)} for r in rows]


def _kill_after(out: Path, lines: int) -> int:
    """Start a run, SIGKILL it once metrics.jsonl has ``lines`` lines; return its exit code."""
    proc = subprocess.Popen(_command(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= lines:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    return proc.wait()


@pytest.mark.slow
def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path):
    full, broken = tmp_path / "full", tmp_path / "broken"
    subprocess.run(_command(full), env=_env(), check=True, capture_output=True)
    code = _kill_after(broken, lines=3)
    assert code == -signal.SIGKILL, "the run finished before it could be killed; make steps slower"
    assert not (broken / "final").exists()
    resumed = subprocess.run(_command(broken, "--resume"), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    # metrics.jsonl: one complete line per step, no duplicates, same figures as the uninterrupted run
    a, b = _metrics(full), _metrics(broken)
    assert [r["step"] for r in b] == list(range(1, STEPS + 1))
    assert a == b
    samples = [json.loads(x)["step"] for x in (broken / "samples.jsonl").read_text().splitlines()]
    assert samples == sorted(samples) and len(samples) == len(set(samples)) * 4
    wa = load_file(full / "final" / "model.safetensors")
    wb = load_file(broken / "final" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # keep_last: 2 and no temporary folders left behind
    names = sorted(p.name for p in (broken / "checkpoints").iterdir())
    assert names == [f"step-{STEPS - 1:06d}", f"step-{STEPS:06d}"]


def test_pruning_never_leaves_a_half_deleted_checkpoint(tmp_path):
    """Old checkpoints are renamed to .trash- before deletion; a leftover .trash- goes at the next save."""
    from gdpo.train.checkpoint import list_checkpoints, prune_checkpoints

    root = tmp_path / "checkpoints"
    for step in range(1, 5):
        folder = root / f"step-{step:06d}"
        folder.mkdir(parents=True)
        (folder / "weights.pt").write_bytes(b"w" * 100)
        (folder / "state.json").write_text(json.dumps({"step": step}))
    # what a kill between the rename and the deletion leaves (no state.json: not a checkpoint)
    (root / ".trash-step-000000").mkdir()
    (root / ".trash-step-000000" / "weights.pt").write_bytes(b"w")
    prune_checkpoints(tmp_path, keep_last=2)
    assert sorted(p.name for p in root.iterdir()) == ["step-000003", "step-000004"]
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-000003", "step-000004"]
    prune_checkpoints(tmp_path, keep_last=2)  # nothing more to do
    assert sorted(p.name for p in root.iterdir()) == ["step-000003", "step-000004"]
