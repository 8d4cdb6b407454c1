"""The run summary: table arithmetic, torn lines, the PNG, and the CLI printing it."""

import json

import pytest

from gdpo.train.summary import summarize_run


def write_metrics(path, values_a, values_b):
    lines = [json.dumps({"step": i + 1, "rewards/a/mean": a, "rewards/a/std": 0.0, "rewards/b/mean": b})
             for i, (a, b) in enumerate(zip(values_a, values_b))]
    path.write_text("\n".join(lines) + '\n{"step": 99, "rewa')  # a torn last line, as after SIGKILL


def test_table_compares_first_and_last_five_steps(tmp_path):
    # a: steps 1-5 mean (0+0+0+0+1)/5 = 0.2; steps 8-12 mean (1+1+1+1+0)/5 = 0.8
    a = [0, 0, 0, 0, 1, 0.5, 0.5, 1, 1, 1, 1, 0]
    b = [2] * 12
    write_metrics(tmp_path / "metrics.jsonl", a, b)
    (tmp_path / "eval.jsonl").write_text(json.dumps({"step": 12, "eval/a/mean": 0.75, "eval/b/mean": 2.0}) + "\n")
    summary = summarize_run(tmp_path)
    assert "| a | 0.200 | 0.800 | +0.600 | 0.750 |" in summary.table
    assert "| b | 2.000 | 2.000 | +0.000 | 2.000 |" in summary.table
    assert "first 5 vs last 5 of 12 steps; test split at step 12" in summary.table
    assert summary.curves_png.read_bytes()[:4] == b"\x89PNG"
    assert "curves.png" in summary.markdown_path.read_text()


def test_empty_run_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="has no steps"):
        summarize_run(tmp_path)


def test_the_weighted_total_is_not_a_reward_row(tmp_path):
    # the trainer logs rewards/total/* beside the components; the table lists components only,
    # the same names the compare report uses (one reader: gdpo.train.metrics.reward_components)
    from gdpo.reports.data import RunData, reward_names as report_reward_names

    rows = [{"step": s, "rewards/a/mean": 0.5, "rewards/total/mean": 1.5, "rewards/multi_signal_frac": 0.0}
            for s in (1, 2)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    summary = summarize_run(tmp_path)
    assert "| a |" in summary.table and "| total |" not in summary.table
    run = RunData(method="gdpo", seed=0, path=tmp_path, metrics=rows, evals=[])
    assert report_reward_names([run]) == ["a"]


def test_a_run_where_one_reward_varies_at_most_says_the_methods_must_coincide(tmp_path):
    # multi_signal_frac = 0 on every step: GDPO's advantages are GRPO's times one number per step
    rows = [{"step": s, "rewards/a/mean": 0.5, "rewards/multi_signal_frac": 0.0} for s in range(1, 13)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (tmp_path / "config.yaml").write_text("method: gdpo\n")
    table = summarize_run(tmp_path).table
    assert "**The methods must coincide here.**" in table
    # and a run in the multi-signal regime does not say so
    rows = [{**r, "rewards/multi_signal_frac": 0.8} for r in rows]
    (tmp_path / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert "must coincide" not in summarize_run(tmp_path).table
