"""Smoke test of benchmarks/bench_reward_scaling.py --quick: real estimators, a real tiny training run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_reward_scaling.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_reward_scaling", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_mode_prints_tables_and_json(bench, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    result = bench.main(["--quick", "--json", str(tmp_path / "out.json")])
    out = capsys.readouterr().out
    assert "## (a) Advantage resolution" in out and "## (b) compute_advantages" in out and "## (c) Training step" in out
    assert (tmp_path / "out.json").exists()
    res = {r["K"]: r for r in result["resolution"]}
    # GDPO keeps per-reward information that GRPO's sum loses: strictly finer at K = 2 and 4.
    for k in (2, 4):
        assert res[k]["gdpo_distinct_per_group"] > res[k]["grpo_distinct_per_group"]
        assert res[k]["gdpo_vector_share"] > res[k]["grpo_vector_share"]
        assert 0 < res[k]["grpo_vector_share"] <= 1 and 0 < res[k]["gdpo_vector_share"] <= 1
        assert 1 <= res[k]["grpo_distinct_per_group"] <= 8
    for row in result["estimator_cost"]:
        assert row["grpo_s"] > 0 and row["gdpo_s"] > 0 and row["memory_ratio"] > 0
    (step,) = result["train_step"]
    assert step["K"] == 4 and step["grpo_step_s"] > 0 and step["gdpo_step_s"] > 0


def test_resolution_by_hand_for_two_rollouts(bench):
    # G = 2, K = 2: the 10 multisets of two of the rows (0,0),(0,1),(1,0),(1,1) all appear among
    # 4,000 random groups. GRPO vectors: (0,0) and (-0.7071, 0.7071) -> 2; GDPO adds
    # (-1.4142, 1.4142) for totals differing in both rewards -> 3 (PAPER.md, "Why GRPO collapses").
    from gdpo.analysis import distinct_advantage_groups

    (row,) = bench.resolution([2], g=2, num_groups=4000)
    assert row["distinct_reward_sets"] == 10  # C(4 + 2 - 1, 2)
    assert row["grpo_vector_share"] == pytest.approx(2 / 10)
    assert row["gdpo_vector_share"] == pytest.approx(3 / 10)
    # Same counts as the exhaustive enumeration in gdpo.analysis.
    assert distinct_advantage_groups("grpo", 2, 2) == 2 and distinct_advantage_groups("gdpo", 2, 2) == 3


def test_reward_list_bounds(bench):
    assert bench.reward_list(3) == ["toy_letter", "toy_short", "toy_starts_lower"]
    assert len(set(bench.reward_list(10))) == 10
    with pytest.raises(ValueError, match="K=12 must be between 1 and 11"):
        bench.reward_list(12)
