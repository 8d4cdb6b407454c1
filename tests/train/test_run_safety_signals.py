"""Issue 11, item 5: SIGTERM / SIGINT finish the step, write a checkpoint and exit 128 + signal.

A real `gdpo train` process gets a real SIGTERM; in-process runs raise the signal from inside a
reward (so the moment is exact); two gloo processes where only one is signalled stop together.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from multiproc import run_ranks

from gdpo.rewards import register_reward
from gdpo.train.loop import load_and_train, train

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml"
TINY = ["rollout.prompts_per_step=2", "rollout.num_generations=4", "rollout.max_new_tokens=4",
        "logging.samples_every=0", "logging.progress=lines", "logging.tensorboard=false", "optim.warmup_steps=0"]
PROBE = "rewards=[{name: toy_letter}, {name: toy_short}, {name: test_run_safety_signal}]"
PLAN = {"signal": 0, "at_calls": (), "rank": None, "repeat": 1, "calls": 0}  # when the probe reward signals


@register_reward("test_run_safety_signal")
def _signal_probe(completions, **columns):
    """Always 0; on its ``at_calls``-th calls (on ``rank``, or every process) it signals its own process."""
    PLAN["calls"] += 1
    if PLAN["calls"] in PLAN["at_calls"] and PLAN["rank"] in (None, int(os.environ.get("RANK", "0"))):
        for _ in range(PLAN["repeat"]):
            signal.raise_signal(PLAN["signal"])
    return [0.0] * len(completions)


def _plan(sig: int, at_calls: tuple[int, ...], rank: int | None = None, repeat: int = 1) -> None:
    PLAN.update(signal=sig, at_calls=at_calls, rank=rank, repeat=repeat, calls=0)


def _steps(out: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _checkpoints(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir())


def test_sigterm_to_a_training_process_checkpoints_the_step_and_exits_143(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "gdpo", "train", "--config", str(SMOKE), "--output-dir", str(out),
           *[x for s in [*TINY, "steps=400", "checkpoint.every=0"] for x in ("--set", s)]]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics, deadline = out / "metrics.jsonl", time.time() + 120
    while proc.poll() is None and time.time() < deadline and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # after step 1 is in metrics.jsonl; no checkpoint is due before step 400
    _, err = proc.communicate(timeout=120)
    # Before: no handler, so the process died at once (exit -15) and every step since the last checkpoint was lost.
    assert proc.returncode == 143, err[-2000:]
    steps = _steps(out)
    n = steps[-1]
    assert steps == list(range(1, n + 1)) and n < 400
    assert _checkpoints(out) == [f"step-{n:06d}"]
    assert err.strip().splitlines()[-1] == (f"stopped at step {n} by SIGTERM; checkpoint saved; "
                                            f"resume with: gdpo train -o {out} --resume")
    result = load_and_train(None, [f"steps={n + 2}"], str(out), resume=True)  # continues at step n + 1
    assert result.steps_done == n + 2 and _steps(out) == list(range(1, n + 3))


def test_sigint_in_process_stops_after_the_step_and_restores_the_handler(tmp_path):
    out = tmp_path / "run"
    before = signal.getsignal(signal.SIGINT)
    _plan(signal.SIGINT, at_calls=(2,), repeat=2)  # during step 2's scoring, twice at once (as torchrun + Ctrl-C)
    result = load_and_train(str(SMOKE), [*TINY, PROBE, "steps=6", "checkpoint.every=0"], str(out), resume=False)
    assert (result.stopped_by, result.steps_done) == (signal.SIGINT, 2)
    assert _steps(out) == [1, 2] and _checkpoints(out) == ["step-000002"]
    assert not (out / "final").exists()
    assert signal.getsignal(signal.SIGINT) is before


def test_a_second_signal_stops_at_once_and_leaves_complete_checkpoints(tmp_path, monkeypatch):
    from gdpo.train import stop

    monkeypatch.setattr(stop, "ECHO_S", 0.0)  # no grace: the second signal is a new request
    out = tmp_path / "run"
    _plan(signal.SIGTERM, at_calls=(2,), repeat=2)  # twice during step 2: the second raises KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        load_and_train(str(SMOKE), [*TINY, PROBE, "steps=6", "checkpoint.every=1"], str(out), resume=False)
    assert _checkpoints(out) == ["step-000001"] and _steps(out) == [1]  # step 2 was abandoned
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the run's handler is gone


def _signal_rank_1(rank: int, workdir: str) -> None:
    from gdpo.train.config import config_from_dict

    _plan(signal.SIGTERM, at_calls=(2,), rank=1)  # only process 1 is signalled, during step 2
    cfg = yaml.safe_load(SMOKE.read_text())
    out = Path(workdir) / "run"
    result = train(config_from_dict(cfg, [*TINY, PROBE, "steps=6", "checkpoint.every=0", f"output_dir={out}"]))
    Path(workdir, f"rank{rank}.json").write_text(json.dumps([result.stopped_by, result.steps_done]))


def test_distributed_processes_stop_after_the_same_step(tmp_path):
    run_ranks(_signal_rank_1, 2, tmp_path, str(tmp_path), timeout_s=180)
    outcomes = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert outcomes == [[signal.SIGTERM, 2], [signal.SIGTERM, 2]]
    out = tmp_path / "run"
    assert _checkpoints(out) == ["step-000002"] and _steps(out) == [1, 2]
    assert sorted(p.name for p in (out / "checkpoints" / "step-000002").glob("rng-rank*")) == \
        ["rng-rank0.pt", "rng-rank1.pt"]
