"""`gdpo eval --task bfcl_multi_turn`: episodes run through the task's own evaluator, each verdict
from BFCL's multi-turn checker; the reference (ground-truth calls replayed) scores 100%."""

import json
import os
import subprocess
import sys

from gdpo.eval.harness import EvalSettings, evaluate


def test_reference_scores_full_bfcl_multi_turn_accuracy_and_resumes(tmp_path):
    settings = EvalSettings(model="reference", task="bfcl_multi_turn", limit=6, batch_size=4)
    first = evaluate(settings, tmp_path, log=lambda msg: None)
    assert first.domain == "multi_turn" and first.num_prompts == 6 and first.num_new == 6
    assert first.metrics["accuracy"] == 1.0 and first.metrics["state_match"] == 1.0
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [line["id"] for line in lines] == [f"multi_turn_base_{k}" for k in (0, 5, 10, 15, 20, 25)]  # test ids
    # a rerun over more rows plays only the new ones
    more = evaluate(EvalSettings(model="reference", task="bfcl_multi_turn", limit=8), tmp_path, log=lambda m: None)
    assert more.num_new == 2 and more.metrics["accuracy"] == 1.0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["domain"] == "multi_turn" and summary["metrics"]["accuracy"] == 1.0
    assert "BFCL multi-turn accuracy % | 100.00" in (tmp_path / "summary.md").read_text()


def test_a_model_that_never_calls_fails_bfcls_checker_through_the_command_line(tmp_path):
    # the random-init tiny model answers without tool calls: BFCL's checker refuses every episode
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "gdpo", "eval", "--model", "tiny", "--task", "bfcl_multi_turn",
                           "--limit", "1", "--max-new-tokens", "4", "--output", str(tmp_path)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "| BFCL multi-turn accuracy % | 0.00 |" in proc.stdout
    (line,) = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert line["metrics"]["accuracy"] == [0.0] and line["error_type"].startswith("multi_turn:")
