"""The trainer benchmark runs in --quick mode (tiny model, all three systems) and prints its table."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_trainer_quick_prints_the_table(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_trainer.py"), "--quick",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = proc.stdout
    assert "| system | completion tokens/s | step s |" in text
    for label in ("gdpo trainer, GDPO", "gdpo trainer, GRPO", "TRL GRPOTrainer, GRPO"):
        assert f"| {label} |" in text
    assert "ours (GDPO) / TRL completion tokens per second" in text
    assert "ours / TRL peak RSS" in text
    assert "GDPO / GRPO step time" in text
    assert out.is_file()
