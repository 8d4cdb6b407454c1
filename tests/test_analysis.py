"""Tests of the collapse analysis and the live diagnostics."""

import json
from itertools import product

import numpy as np
import pytest

from gdpo import compute_advantages
from gdpo.analysis import (
    collapse_table,
    count_multisets,
    distinct_advantage_groups,
    distinct_values_per_group,
    zero_spread_fraction,
)
from gdpo.cli import main


def brute_force_count(method: str, k: int, g: int) -> int:
    """Enumerate all 2^(K*G) assignments directly (only for tiny K, G)."""
    options = {"batch_norm": False} if method.startswith("gdpo") else {}
    seen = set()
    for bits in product((0.0, 1.0), repeat=k * g):
        rewards = np.array(bits).reshape(g, k)
        adv = compute_advantages(rewards, [0] * g, method, **options)
        seen.add(tuple(sorted(np.round(adv, 4) + 0.0)))
    return len(seen)


@pytest.mark.parametrize("method", ["grpo", "grpo_no_std", "gdpo"])
@pytest.mark.parametrize("k, g", [(1, 3), (2, 2), (2, 3), (2, 4), (3, 3)])
def test_multiset_enumeration_equals_brute_force(method, k, g):
    assert distinct_advantage_groups(method, k, g) == brute_force_count(method, k, g)


def test_paper_two_rollout_example_counts():
    # K=2, G=2: GRPO sees totals {0,1,2} per rollout: vectors 0 or (-a, a) -> 2 groups.
    # GDPO also has (-2a, 2a) (both rewards move together) -> 3 groups.
    assert distinct_advantage_groups("grpo", 2, 2) == 2
    assert distinct_advantage_groups("gdpo", 2, 2) == 3


def test_gdpo_resolves_more_than_grpo_as_g_and_k_grow():
    for g in (4, 8, 16):
        assert distinct_advantage_groups("gdpo", 2, g) > distinct_advantage_groups("grpo_no_std", 2, g) \
            > distinct_advantage_groups("grpo", 2, g)
    counts = [distinct_advantage_groups("gdpo", k, 4) for k in range(1, 5)]
    assert counts == sorted(counts) and counts[0] == distinct_advantage_groups("grpo", 1, 4)


def test_issue_ranges_answer_quickly():
    # K = 2 with G up to 16, and G = 4 with K up to 8 (GRPO) / 6 (GDPO).
    assert distinct_advantage_groups("grpo", 2, 16) == 121
    assert distinct_advantage_groups("grpo", 8, 4) == 119
    assert distinct_advantage_groups("gdpo", 6, 4) == 722


def test_too_large_and_bad_arguments_are_errors():
    with pytest.raises(ValueError, match="multisets"):
        distinct_advantage_groups("gdpo", 10, 8)
    with pytest.raises(ValueError, match="num_rollouts must be a positive integer"):
        distinct_advantage_groups("gdpo", 2, 0)
    with pytest.raises(ValueError, match="unknown advantage method"):
        distinct_advantage_groups("nope", 2, 2)
    assert count_multisets(4, 2) == 10  # C(5, 2)


def test_collapse_command_prints_table_and_writes_plot(tmp_path, capsys):
    assert main(["collapse", "--max-rollouts", "5", "--max-rewards", "3", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| gdpo | 3 | 6 | 14 | 26 |" in out
    png = (tmp_path / "collapse.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    data = json.loads((tmp_path / "collapse.json").read_text())
    assert data["by_rollouts"]["grpo"] == [2, 4, 7, 11]


def test_distinct_values_per_group():
    adv = np.array([0.1, 0.1, -0.2, 0.0, 0.00001, 5.0, 0.3])
    ids = [3, 3, 3, 1, 1, 2, 3]  # group 1: 0.0 and 0.00001 round to one value
    np.testing.assert_array_equal(distinct_values_per_group(adv, ids), [1, 1, 3])


def test_zero_spread_fraction():
    rewards = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, np.nan], [1.0, 2.0]])
    # groups: a = rows 0,1 -> r1 no spread, r2 spread; b = rows 2,3 -> r1 spread, r2 one value
    np.testing.assert_allclose(zero_spread_fraction(rewards, ["a", "a", "b", "b"]), [0.5, 0.5])


def test_multi_reward_signal_fraction():
    from gdpo.analysis import has_spread, multi_reward_signal_fraction

    rewards = np.array([[1.0, 0.0], [0.0, 1.0],    # group a: both rewards vary
                        [1.0, 0.0], [0.0, 0.0],    # group b: only reward 1 varies
                        [1.0, 1.0], [1.0, 1.0]])   # group c: nothing varies
    ids = ["a", "a", "b", "b", "c", "c"]
    np.testing.assert_array_equal(has_spread(rewards, ids), [[True, True], [True, False], [False, False]])
    assert multi_reward_signal_fraction(rewards, ids) == pytest.approx(1 / 3)
