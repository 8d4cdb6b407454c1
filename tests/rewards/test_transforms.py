"""Reward transforms (noisy, negated/anti) and the extra toy rewards: hand values, seeds, errors."""

from __future__ import annotations

import doctest
import subprocess
import sys

import numpy as np
import pytest

import gdpo.data.toy_extra as toy_extra
import gdpo.rewards.transforms as transforms
from gdpo.advantages import compute_advantages
from gdpo.rewards import registry
from gdpo.rewards.reward_set import RewardSet

REPLIES = ["q", "a long reply", "", "Qx"]
COLS = {"max_len": [3, 3, 3, 3], "target": ["q", "q", "q", "q"]}
# toy_short on REPLIES: "q" -> 1, "a long reply" -> 0 (12 chars), "" -> 0 (empty), "Qx" -> 1
SHORT = [1.0, 0.0, 0.0, 1.0]


def test_doctests_pass():
    for module in (transforms, toy_extra):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


@pytest.mark.parametrize("name", ["negated", "anti"])
def test_negated_is_one_minus_binary_reward(name):
    fn = registry.get(name, reward="toy_short")
    assert fn(REPLIES, **COLS) == [1.0 - v for v in SHORT]  # [0, 1, 1, 0]


def test_negated_custom_range_and_none_passthrough():
    def three_way(completions, **_):
        return [{"a": -3.0, "b": 3.0}.get(c) for c in completions]  # "c" -> None

    registry.register_reward("_test_three_way")(three_way)
    try:
        fn = registry.get("negated", reward="_test_three_way", low=-3, high=3)
        assert fn(["a", "b", "c"]) == [3.0, -3.0, None]  # -3 + 3 - r
        with pytest.raises(ValueError, match=r"outside \[low, high\] = \[0.0, 1.0\]"):
            registry.get("negated", reward="_test_three_way")(["a"])
    finally:
        registry.unregister("_test_three_way")


def test_noisy_without_noise_is_the_reward_and_full_flip_inverts_it():
    assert registry.get("noisy", reward="toy_short")(REPLIES, **COLS) == SHORT
    assert registry.get("noisy", reward="toy_short", flip=1.0)(REPLIES, **COLS) == [0.0, 1.0, 1.0, 0.0]


def test_noisy_gaussian_matches_numpy_stream_and_is_reproducible():
    a = registry.get("noisy", reward="toy_short", std=0.5, seed=7)
    b = registry.get("noisy", reward="toy_short", std=0.5, seed=7)
    first, second = a(REPLIES, **COLS), a(REPLIES, **COLS)
    assert b(REPLIES, **COLS) == first and b(REPLIES, **COLS) == second  # same seed, same calls
    assert first != second  # the stream advances between calls
    # Hand check: the noise is the seed's generator's normal draws added to the clean values.
    expected = np.array(SHORT) + np.random.default_rng(7).normal(0.0, 0.5, 4)
    np.testing.assert_allclose(first, expected, rtol=0, atol=1e-12)
    other = registry.get("noisy", reward="toy_short", std=0.5, seed=8)(REPLIES, **COLS)
    assert other != first


def test_noisy_flip_rate_is_close_to_requested():
    fn = registry.get("noisy", reward="toy_nonempty", flip=0.25, seed=0)
    values = np.array(fn(["x"] * 20_000))  # clean value 1 everywhere
    assert set(np.unique(values)) == {0.0, 1.0}
    assert abs((values == 0).mean() - 0.25) < 0.015  # binomial sd ~0.003


def test_noisy_wraps_a_factory_with_its_params():
    inner = registry.get("anti", reward="toy_short")
    fn = registry.get("noisy", reward="anti", params={"reward": "toy_short"}, flip=1.0)
    assert fn(REPLIES, **COLS) == [1.0 - v for v in inner(REPLIES, **COLS)] == SHORT


def test_errors_say_what_is_wrong():
    with pytest.raises(ValueError, match="std=-1.0 must be a finite number >= 0"):
        registry.get("noisy", reward="toy_short", std=-1)
    with pytest.raises(ValueError, match="flip=1.5 must be a probability"):
        registry.get("noisy", reward="toy_short", flip=1.5)
    with pytest.raises(KeyError, match="unknown reward 'toy_shrot'.*toy_short"):
        registry.get("noisy", reward="toy_shrot")
    with pytest.raises(ValueError, match="needs a binary"):
        registry.get("noisy", reward="negated", params={"reward": "toy_short", "high": 2.0}, flip=0.5)(["long reply"], max_len=[3])  # 0 + 2 - 0 = 2
    with pytest.raises(ValueError, match="low < high"):
        registry.get("anti", reward="toy_short", low=1, high=1)


def test_missing_column_of_the_wrapped_reward_is_reported_not_floored():
    from gdpo.rewards.reward_set import MissingColumnError

    rs = RewardSet.from_config([{"name": "noisy", "params": {"reward": "toy_letter", "std": 0.1}}])
    with pytest.raises(MissingColumnError, match=r"needs column\(s\) \['target'\]"):
        rs.score(["q"], max_len=[3])


def test_reward_set_config_with_transforms_and_conflict_cancels_under_gdpo():
    rs = RewardSet.from_config([
        {"name": "toy_letter"},
        {"name": "toy_short"},
        {"name": "anti", "params": {"reward": "toy_short"}},
    ])
    scores = rs.score(REPLIES, **COLS)
    assert scores.names == ["toy_letter", "toy_short", "anti"]
    np.testing.assert_array_equal(scores.values[:, 1] + scores.values[:, 2], 1.0)
    # One group of 4: toy_short and its negation normalize to exact opposites, so GDPO's
    # advantage is the batch-normalized toy_letter advantage alone; letter = [1, 0, 0, 0].
    ids = np.zeros(4, dtype=int)
    adv = compute_advantages(scores.values, ids, "gdpo", weights=scores.weights)
    only_letter = compute_advantages(scores.values[:, :1], ids, "gdpo")
    np.testing.assert_allclose(adv, only_letter, atol=1e-9)
    assert adv[0] > 0 and np.allclose(adv[1:], adv[1])


def test_extra_toy_rewards_hand_values():
    replies = ["q", " q ", "Q1", "a b", "x!", ""]
    target = ["q"] * 6
    assert toy_extra.toy_exact(replies, target=target) == [1, 1, 0, 0, 0, 0]
    assert toy_extra.toy_no_upper(replies) == [1, 1, 0, 1, 1, 1]
    assert toy_extra.toy_no_digit(replies) == [1, 1, 0, 1, 1, 1]
    assert toy_extra.toy_no_space(replies) == [1, 1, 1, 0, 1, 1]
    assert toy_extra.toy_no_punct(replies) == [1, 1, 1, 1, 0, 1]
    assert toy_extra.toy_ends_lower(replies) == [1, 1, 0, 1, 0, 0]
    assert toy_extra.toy_one_char(replies) == [1, 1, 0, 0, 0, 0]
    assert toy_extra.toy_nonempty(replies) == [1, 1, 1, 1, 1, 0]
    assert toy_extra.toy_zero(replies) == [0.0] * 6


def test_pure_noise_reward_has_the_requested_spread():
    values = np.array(registry.get("noisy", reward="toy_zero", std=0.05, seed=3)(["x"] * 4000))
    assert abs(values.mean()) < 0.005 and abs(values.std() - 0.05) < 0.003


def test_dotted_path_loads_the_module_in_a_fresh_process():
    # What the noisy/conflict configs rely on until gdpo.rewards.builtin imports toy_extra:
    # naming a toy_extra reward by import path first registers the transforms.
    code = (
        "from gdpo.rewards.reward_set import RewardSet\n"
        "rs = RewardSet.from_config([{'name': 'gdpo.data.toy_extra:toy_exact', 'weight': 0},\n"
        "    {'name': 'toy_short'}, {'name': 'noisy', 'params': {'reward': 'toy_short', 'flip': 1.0}}])\n"
        "print(rs.score(['q', 'long'], max_len=[3, 3], target=['q', 'q']).values.tolist())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]]"
