"""The report from run folders: verdict rule on hand-made scores, score sources, renderers, Welch test.

Run folders are written here in the trainer's format (metrics.jsonl / eval.jsonl lines), with
values chosen so that the expected verdicts can be worked out by hand; `test_compare.py`
builds reports from real trainer runs.
"""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gdpo.reports.report import write_report
from gdpo.reports.data import ReportError, band, load_runs, moving_average
from gdpo.reports.stats import student_t_sf2, welch_test

STEPS = 10


def _write_run(root: Path, method: str, seed: int, letter: list[float], short: list[float],
               evals: dict[int, tuple[float, float]] | None = None) -> None:
    """One run folder: per-step training means of two rewards, optional eval records."""
    run = root / method / f"seed{seed}"
    run.mkdir(parents=True)
    lines = []
    for step, (a, b) in enumerate(zip(letter, short), start=1):
        lines.append({"step": step, "rewards/letter/mean": a, "rewards/short/mean": b, "rewards/total/mean": a + b,
                      "rewards/letter/zero_std_frac": 0.5, "rewards/short/zero_std_frac": 0.25,
                      "advantages/distinct_per_group": 2.0 if method == "grpo" else 3.0, "time/step_s": 1.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    if evals:
        (run / "eval.jsonl").write_text("".join(
            json.dumps({"step": s, "eval/letter/mean": a, "eval/short/mean": b}) + "\n" for s, (a, b) in evals.items()))
    (run / "config.yaml").write_text(f"steps: {STEPS}\nmethod: {method}\nseed: {seed}\n"
                                     "rollout: {num_generations: 4}\ntask: {name: toy}\n")


def _two_methods(root: Path, with_eval: bool) -> None:
    """gdpo learns `letter` far better than grpo on every seed; on `short` gdpo is 0.01 ahead, noise 0.1."""
    for seed in range(4):
        jitter, sign = 0.01 * seed, (-1) ** seed
        for method, level in (("grpo", 0.2), ("gdpo", 0.8)):
            letter = [level + jitter] * STEPS
            short = [0.5 + 0.1 * sign] * STEPS if method == "grpo" else [0.51 - 0.1 * sign] * STEPS
            evals = {5: (0.0, 0.0), 10: (level + jitter, 0.5 + (0.1 if seed % 2 else -0.1))} if with_eval else None
            _write_run(root, method, seed, letter, short, evals)


def _verdicts(summary: dict) -> dict[str, str]:
    return {v["reward"]: v["outcome"] for v in summary["verdicts"]}


def test_training_means_give_a_clear_gap_and_a_level_reward(tmp_path):
    _two_methods(tmp_path, with_eval=False)
    write_report(tmp_path, tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["score_source"] == "train" and summary["baseline"] == "grpo"
    assert _verdicts(summary) == {"letter": "ahead", "short": "level"}
    letter = summary["scores"]["letter"]
    # last_k = 10% of 10 steps = 1: final = last step; seeds add 0, .01, .02, .03 -> mean 0.815
    assert letter["gdpo"]["final_mean"] == pytest.approx(0.815)
    assert letter["grpo"]["final_std"] == pytest.approx(np.std([0.2, 0.21, 0.22, 0.23], ddof=1))
    # short: grpo .6/.4/.6/.4, gdpo .41/.61/.41/.61 -> gap 0.01, s^2 = 4 x 0.01 / 3 on both sides
    short = next(v for v in summary["verdicts"] if v["reward"] == "short")
    assert short["welch"]["t"] == pytest.approx(0.01 / math.sqrt(2 * (0.04 / 3) / 4))
    assert short["welch"]["p"] > 0.05
    assert summary["collapse"]["gdpo"]["advantages/distinct_per_group"][0] == pytest.approx(3.0)
    # learning speed = mean over all steps; constant curves -> the same outcomes as the final scores
    assert {v["reward"]: v["outcome"] for v in summary["learning_speed_verdicts"]} == {
        "letter": "ahead", "short": "level"}
    md = (tmp_path / "report" / "report.md").read_text()
    assert "**training** reward means" in md and "**gdpo ahead**" in md and "within seed-to-seed spread" in md


def test_eval_records_take_precedence_and_best_is_the_best_evaluation(tmp_path):
    _two_methods(tmp_path, with_eval=True)
    write_report(tmp_path, tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert summary["score_source"] == "eval"
    # eval short at step 10 alternates 0.4 / 0.6 over seeds for both methods: equal means, level
    assert _verdicts(summary) == {"letter": "ahead", "short": "level"}
    assert summary["scores"]["short"]["gdpo"]["final"] == pytest.approx([0.4, 0.6, 0.4, 0.6])
    assert summary["scores"]["short"]["gdpo"]["best"] == pytest.approx([0.4, 0.6, 0.4, 0.6])
    assert (tmp_path / "report" / "eval_rewards.png").is_file()
    md = (tmp_path / "report" / "report.md").read_text()
    assert "Test-split scores" in md and "**level**, identical mean scores" in md


def test_the_paper_direction_is_flagged_when_grpo_wins(tmp_path):
    for seed in range(3):
        _write_run(tmp_path, "grpo", seed, [0.9 + 0.01 * seed] * STEPS, [0.5] * STEPS)
        _write_run(tmp_path, "gdpo", seed, [0.1 + 0.01 * seed] * STEPS, [0.5] * STEPS)
    write_report(tmp_path, tmp_path / "report")
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert _verdicts(summary) == {"letter": "behind", "short": "level"}
    md = (tmp_path / "report" / "report.md").read_text()
    assert "`letter`: final score **disagrees**" in md and "**grpo ahead**" in md


def test_one_seed_is_reported_untested_and_unfinished_runs_are_flagged(tmp_path):
    _write_run(tmp_path, "grpo", 0, [0.1] * 4, [0.2] * 4)  # 4 of 10 steps
    _write_run(tmp_path, "gdpo", 0, [0.3] * STEPS, [0.2] * STEPS)
    write_report(tmp_path, tmp_path / "report")
    md = (tmp_path / "report" / "report.md").read_text()
    assert "not tested, fewer than 2 seeds" in md
    assert "1 run(s) unfinished" in md and "grpo/seed0 (4/10)" in md


def test_no_runs_is_an_error_that_says_what_to_do(tmp_path):
    with pytest.raises(ReportError, match="run `gdpo compare` first"):
        load_runs(tmp_path)
    with pytest.raises(ReportError, match="does not exist"):
        load_runs(tmp_path / "nowhere")


def test_bands_use_shared_steps_and_trailing_means(tmp_path):
    _write_run(tmp_path, "grpo", 0, [0.0, 1.0, 0.0, 1.0], [0.0] * 4)
    _write_run(tmp_path, "grpo", 1, [1.0, 1.0], [0.0] * 2)  # stopped after step 2
    runs = load_runs(tmp_path)
    b = band(runs, "rewards/letter/mean", window=2)
    assert list(b.steps) == [1, 2]
    # seed 0 smoothed: [0, .5]; seed 1: [1, 1]
    assert b.mean == pytest.approx([0.5, 0.75]) and b.low == pytest.approx([0.0, 0.5])
    assert moving_average(np.array([1.0, np.nan, 3.0]), 2) == pytest.approx([1.0, 1.0, 3.0])


def test_welch_hand_case_and_t_tail():
    # a = (1, 2, 3): mean 2, var 1; b = (4, 6): mean 5, var 2. se^2 = 1/3 + 1 = 4/3
    w = welch_test([1, 2, 3], [4, 6])
    assert w.t == pytest.approx(-3 / math.sqrt(4 / 3))
    assert w.df == pytest.approx((4 / 3) ** 2 / ((1 / 3) ** 2 / 2 + 1 ** 2 / 1))
    # Cauchy (df = 1): P(|T| >= 1) = 1/2; df = 2: P(|T| >= t) = 1 - t / sqrt(2 + t^2)
    assert student_t_sf2(1.0, 1) == pytest.approx(0.5, abs=1e-9)
    assert student_t_sf2(2.0, 2) == pytest.approx(1 - 2 / math.sqrt(6), abs=1e-6)
    assert welch_test([1, 1], [1, 1]).p == 1.0 and welch_test([2, 2], [1, 1]).p == 0.0
    with pytest.raises(ValueError, match="at least 2 values"):
        welch_test([1], [1, 2])
