"""The multi-signal regime in words and numbers (gdpo.reports.regime) and in the compare report."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gdpo.reports.regime import (
    RegimeFigures,
    min_detectable_d,
    regime_of,
    regime_sentence,
    t_quantile,
)
from gdpo.reports.report import write_report
from gdpo.reports.stats import welch_test


def test_t_quantiles_match_tables():
    # printed t tables: t_{0.975, 18} = 2.101, t_{0.8, 18} = 0.862, t_{0.975, 8} = 2.306
    assert t_quantile(0.975, 18) == pytest.approx(2.101, abs=2e-3)
    assert t_quantile(0.8, 18) == pytest.approx(0.862, abs=2e-3)
    assert t_quantile(0.975, 8) == pytest.approx(2.306, abs=2e-3)


def test_min_detectable_d_by_hand_and_by_simulation():
    # n = 10 vs 10: (2.101 + 0.862) * sqrt(1/10 + 1/10) = 2.963 * 0.4472 = 1.325
    assert min_detectable_d(10, 10) == pytest.approx(1.325, abs=0.01)
    assert min_detectable_d(3, 3) > min_detectable_d(5, 5) > min_detectable_d(10, 10) > min_detectable_d(20, 20)
    assert math.isinf(min_detectable_d(1, 5))
    # simulated power of Welch's test at that d: close to 0.8 (400 draws: std 0.02, tolerance 0.08)
    rng = np.random.default_rng(0)
    d = min_detectable_d(10, 10)
    hits = [welch_test(list(rng.normal(d, 1, 10)), list(rng.normal(0, 1, 10))).p < 0.05 for _ in range(400)]
    assert abs(np.mean(hits) - 0.8) < 0.08


def _figs(first, whole):
    return [RegimeFigures("grpo", [first] * 3, [whole] * 3), RegimeFigures("gdpo", [first] * 3, [whole] * 3)]


def test_regime_words_at_the_thresholds():
    assert regime_of(_figs(0.05, 0.09)) == "must_coincide"
    assert regime_of(_figs(0.9, 0.05)) == "multi_signal"  # diverged at the start: not "must coincide"
    assert "fell to 5%" in regime_sentence(_figs(0.9, 0.05))
    assert "must coincide" in regime_sentence(_figs(0.05, 0.09)) and "9%" in regime_sentence(_figs(0.05, 0.09))
    assert regime_of(_figs(0.5, 0.3)) == "multi_signal"
    assert "Multi-signal regime at the start" in regime_sentence(_figs(0.5, 0.3))
    assert regime_of(_figs(0.3, 0.2)) == "partial"


def _write_run(root: Path, method: str, seed: int, multi: float, level: float) -> None:
    run = root / method / f"seed{seed}"
    run.mkdir(parents=True)
    rows = [{"step": s, "rewards/a/mean": level + 0.01 * seed, "rewards/b/mean": 0.5, "rewards/total/mean": 1.0,
             "rewards/a/zero_std_frac": 0.5, "rewards/b/zero_std_frac": 0.5, "advantages/distinct_per_group": 2.0,
             "rewards/multi_signal_frac": multi if s <= 10 else multi / 2, "time/step_s": 1.0}
            for s in range(1, 21)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (run / "config.yaml").write_text(f"steps: 20\nmethod: {method}\nseed: {seed}\n"
                                     "rollout: {num_generations: 4}\ntask: {name: toy}\n")


@pytest.mark.parametrize("multi, words, kind", [(0.08, "must coincide", "must_coincide"),
                                                 (0.8, "Multi-signal regime at the start", "multi_signal")])
def test_report_states_the_regime_and_power(tmp_path, multi, words, kind):
    for seed in range(3):
        _write_run(tmp_path, "grpo", seed, multi, 0.2)
        _write_run(tmp_path, "gdpo", seed, multi, 0.3)
    write_report(tmp_path, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text()
    summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert words in text and "**Power**" in text
    assert summary["regime"] == kind
    # steps 1-10 at `multi`, steps 11-20 at multi / 2: whole run = 0.75 * multi
    got = summary["multi_signal_frac"]["gdpo"]
    assert got["first_10_steps"]["mean"] == pytest.approx(multi)
    assert got["whole_run"]["mean"] == pytest.approx(0.75 * multi)
    power = {c["reward"]: c for c in summary["power"]["comparisons"]}
    assert power["a"]["min_detectable_d"] == pytest.approx(min_detectable_d(3, 3))
    # reward a: per-seed finals 0.2/0.21/0.22 under both (shifted): pooled std 0.01
    assert power["a"]["min_detectable_gap_final"] == pytest.approx(min_detectable_d(3, 3) * 0.01, rel=1e-6)


def test_one_run_gets_the_regime_in_words():
    from gdpo.reports.regime import run_regime_sentence

    # steps 1-10 at 0.9, steps 11-40 at 0.0: start 90%, whole run 0.9 * 10 / 40 = 22.5%
    rows = [{"step": s, "rewards/multi_signal_frac": 0.9 if s <= 10 else 0.0} for s in range(1, 41)]
    text = run_regime_sentence(rows, "gdpo")
    assert "90% of groups over the first 10 steps" in text and "(22% over the whole run)" in text
    assert "comparisons of this setup" in text  # words for a run, not for a report
    assert run_regime_sentence([{"step": 1, "loss": 0.1}]) is None  # older runs: nothing to say
