"""Tests of the collapse analysis and the live diagnostics."""

import json
from itertools import product

import numpy as np
import pytest

from gdpo import compute_advantages, get_estimator
from gdpo.analysis import (
    collapse_table,
    count_multisets,
    distinct_advantage_groups,
    distinct_values_per_group,
    zero_spread_fraction,
)
from gdpo.cli import main


def brute_force_count(method: str, k: int, g: int, **extra) -> int:
    """Enumerate all 2^(K*G) assignments directly (only for tiny K, G), one group at a time."""
    options = {**extra, **get_estimator(method).group_level}  # e.g. gdpo: batch_norm=False
    seen = set()
    for bits in product((0.0, 1.0), repeat=k * g):
        rewards = np.array(bits).reshape(g, k)
        adv = compute_advantages(rewards, [0] * g, method, **options)
        seen.add(tuple(sorted(np.round(adv, 4) + 0.0)))
    return len(seen)


@pytest.mark.parametrize("method", ["grpo", "grpo_no_std", "gdpo", "gd2po", "saw_gdpo", "saw_grpo"])
@pytest.mark.parametrize("k, g", [(1, 3), (2, 2), (2, 3), (2, 4), (3, 3)])
def test_multiset_enumeration_equals_brute_force(method, k, g):
    assert distinct_advantage_groups(method, k, g) == brute_force_count(method, k, g)


@pytest.mark.parametrize("tau", [0.3, 0.8])
def test_gd2po_snr_counts_equal_brute_force(tau):
    options = {"variant": "snr", "tau": tau}
    for k, g in [(2, 3), (3, 3)]:
        assert distinct_advantage_groups("gd2po", k, g, options=options) == brute_force_count("gd2po", k, g, **options)


def test_successor_counts_by_hand():
    # K = 2, G = 2: rollout pairs with reward vectors u, v. GD²PO's group step (no batch step):
    #   a reward differs in one pair -> (-S, S)       e.g. ((0,0), (1,0))
    #   both rewards differ the same way -> (-2S, 2S)   ((0,0), (1,1))
    #   both differ oppositely -> conflict, both dropped -> (0, 0), as no difference at all
    # -> 3 vectors, GDPO's too (GDPO sums the opposite case to 0).
    assert distinct_advantage_groups("gd2po", 2, 2) == 3
    # K = 2, G = 3: GDPO has 6; GD²PO 8: a conflict drops samples and the consensus c_g
    # rescales what is left, e.g. ((1,0), (0,1), (0,0)): the last sample alone is kept with
    # a = (-B, -B), c = 1/3 -> (0, 0, -2B/3), a vector GDPO never produces.
    assert distinct_advantage_groups("gdpo", 2, 3) == 6
    assert distinct_advantage_groups("gd2po", 2, 3) == 8
    b = 1 / np.sqrt(3)
    group = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    out = compute_advantages(group, [0, 0, 0], "gd2po", batch_norm=False, eps=0.0)
    np.testing.assert_allclose(out, [0.0, 0.0, -2 * b / 3], atol=1e-12)
    gdpo_vectors = {tuple(sorted(np.round(compute_advantages(np.array(bits).reshape(3, 2), [0, 0, 0], "gdpo_no_bn"),
                                          4) + 0.0)) for bits in product((0.0, 1.0), repeat=6)}
    assert len(gdpo_vectors) == 6 and tuple(sorted(np.round(out, 4) + 0.0)) not in gdpo_vectors
    # SAW's group-level step holds its adaptive weights at the equal weights: GDPO / GRPO.
    for g in (2, 4, 8):
        assert distinct_advantage_groups("saw_gdpo", 2, g) == distinct_advantage_groups("gdpo", 2, g)
        assert distinct_advantage_groups("saw_grpo", 2, g) == distinct_advantage_groups("grpo", 2, g)


def test_group_level_options_cannot_be_overridden():
    with pytest.raises(ValueError, match="fixed.*group-level"):
        distinct_advantage_groups("saw_grpo", 2, 3, options={"adaptive": True})


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
