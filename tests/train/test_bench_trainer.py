"""The trainer benchmark in --quick mode (tiny model, our trainer under GDPO and GRPO, and TRL):
the figures it measures are consistent with the work it was given, not only printed."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SYSTEMS = ("ours-gdpo", "ours-grpo", "trl")


def test_bench_trainer_quick_measures_every_system(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_trainer.py"), "--quick",
                           "--json", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    data = json.loads(out.read_text())
    args, results, runs = data["args"], data["results"], data["runs"]
    assert set(results) == set(SYSTEMS)
    # --quick: B = 2 prompts x G = 4 completions of at most 6 new tokens per step
    n, most_tokens = args["prompts"] * args["generations"], args["prompts"] * args["generations"] * args["max_new_tokens"]
    assert (n, most_tokens) == (8, 48)
    params = {results[s]["params"] for s in SYSTEMS}
    assert len(params) == 1, f"every system must train the same model, got {params}"
    for system in SYSTEMS:
        r = results[system]
        # every run's steps but its first are measured
        assert r["steps"] == sum(len(run["steps"]) - 1 for run in runs[system]) > 0
        assert 0 < r["completion_tokens"] <= most_tokens and r["prompt_tokens"] > 0
        assert r["step_s"] > 0 and r["tokens_per_s"] > 0
        # tokens/s is the median of per-step completion tokens / step time: bounded by the extremes
        per_step = [s["completion_tokens"] / s["step_s"] for run in runs[system] for s in run["steps"][1:]]
        assert min(per_step) <= r["tokens_per_s"] <= max(per_step)
        assert r["peak_rss_mib"] >= r["rss_before_mib"] > 0
        assert r["floor_s"] > 0 and abs(r["over_floor"] - r["step_s"] / r["floor_s"]) < 1e-9 * r["over_floor"]
    # the printed ratios are the ratios of those figures
    ratio = results["ours-gdpo"]["tokens_per_s"] / results["trl"]["tokens_per_s"]
    assert f"ours (GDPO) / TRL completion tokens per second: **{ratio:.2f}x**" in proc.stdout
