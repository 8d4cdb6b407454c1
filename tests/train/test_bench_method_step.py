"""The paired GDPO/GRPO step benchmark runs in --quick mode: identical tokens, ratios printed."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bench_method_step_quick_pairs_identical_work(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_method_step.py"), "--quick",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "identical tokens in every pair: True" in proc.stdout
    assert "GDPO / GRPO step, wall clock: median of paired ratios" in proc.stdout
    data = json.loads(out.read_text())
    assert data["identical_tokens"] is True
    trials = data["trials"]
    assert sorted({t["method"] for t in trials}) == ["gdpo", "grpo"] and len(trials) == 2 * 4
    assert all(t["step_s"] > 0 and t["cpu_s"] > 0 and t["completion_tokens"] == 2 * 4 * 6 for t in trials)
    ratios = data["summary"]["ratio_cpu_s"]
    assert len(ratios["all"]) == 4 and ratios["ci95"][0] <= ratios["median"] <= ratios["ci95"][1]


def test_bench_method_step_rejects_one_round():
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_method_step.py"), "--rounds", "1"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--rounds 1" in proc.stderr
