"""Tests of the advantage estimators: hand arithmetic, reference equivalence, properties."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdpo import compute_advantages, condition_reward, estimator_names, register_estimator
from gdpo.reference import reference_advantages

S = 1 / math.sqrt(2)  # 0.7071...


# ---------------------------------------------------------------- hand-computed cases
def test_paper_two_rollout_example_grpo_collapses_gdpo_does_not():
    # Two binary rewards, two rollouts per prompt.
    # Prompt A: totals (0, 1); prompt B: totals (0, 2).
    rewards = np.array([[0.0, 0.0], [1.0, 0.0],   # A: (0,0) -> 0, (1,0) -> 1
                        [0.0, 0.0], [1.0, 1.0]])  # B: (0,0) -> 0, (1,1) -> 2
    ids = [0, 0, 1, 1]
    # GRPO: A: mean 0.5, unbiased std sqrt(0.5) = 0.7071 -> (-0.5/0.7071, +) = (-0.7071, 0.7071)
    #       B: mean 1,   std sqrt(2) = 1.4142 -> (-1/1.4142, +) = (-0.7071, 0.7071): same as A.
    grpo = compute_advantages(rewards, ids, "grpo", eps=0.0)
    np.testing.assert_allclose(grpo, [-S, S, -S, S], atol=1e-12)
    # GDPO group step: A: reward 1 gives (-0.7071, 0.7071), reward 2 has no spread -> 0.
    #                  B: both rewards give (-0.7071, 0.7071) -> sum (-1.4142, 1.4142).
    no_bn = compute_advantages(rewards, ids, "gdpo_no_bn", eps=0.0)
    np.testing.assert_allclose(no_bn, [-S, S, -2 * S, 2 * S], atol=1e-12)
    # Batch step: values (-a, a, -2a, 2a), a = 0.7071: mean 0, unbiased var = (a²+a²+4a²+4a²)/3
    # = 10a²/3 = 5/3, std = 1.2910 -> (-0.5477, 0.5477, -1.0954, 1.0954).
    gdpo = compute_advantages(rewards, ids, "gdpo", eps=0.0)
    np.testing.assert_allclose(gdpo, np.array([-S, S, -2 * S, 2 * S]) / math.sqrt(5 / 3), atol=1e-12)


def test_grpo_no_std_is_centering_only():
    # totals (1, 3, 5) in one group: mean 3 -> (-2, 0, 2)
    rewards = np.array([[1.0, 0.0], [1.0, 2.0], [2.0, 3.0]])
    np.testing.assert_allclose(compute_advantages(rewards, [7, 7, 7], "grpo_no_std"), [-2, 0, 2])


def test_weights_go_on_the_normalized_terms_in_gdpo():
    # One group of 2. Reward 1 = (0, 1), reward 2 = (0, 10): each normalizes to (-a, a).
    # Weights (1, 3): sum = (-4a, 4a); without batch norm that is the result.
    rewards = np.array([[0.0, 0.0], [1.0, 10.0]])
    out = compute_advantages(rewards, [0, 0], "gdpo_no_bn", weights=[1, 3], eps=0.0)
    np.testing.assert_allclose(out, [-4 * S, 4 * S], atol=1e-12)
    # GRPO weights the raw rewards: totals (0, 31) -> (-a, a) regardless of weights.
    out = compute_advantages(rewards, [0, 0], "grpo", weights=[1, 3], eps=0.0)
    np.testing.assert_allclose(out, [-S, S], atol=1e-12)


def test_eps_is_added_to_the_std():
    # (0, 1): mean .5, std .7071; eps = .2929 makes the divisor exactly 1 -> (-.5, .5)
    out = compute_advantages(np.array([[0.0], [1.0]]), [0, 0], "grpo", eps=1 - S)
    np.testing.assert_allclose(out, [-0.5, 0.5], atol=1e-12)


def test_three_rollout_complementary_rewards():
    # r1 = (1,1,0), r2 = (0,0,1): sums (1,1,1) -> GRPO all zeros.
    # Under GDPO r2 = 1 - r1, so its normalized column is exactly minus r1's: the sum is 0
    # too (PAPER.md's claim that GDPO differs here does not hold for complementary rewards).
    rewards = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    assert np.all(compute_advantages(rewards, [0, 0, 0], "grpo") == 0)
    np.testing.assert_allclose(compute_advantages(rewards, [0, 0, 0], "gdpo"), 0, atol=1e-12)
    # With r2 = (0,1,1) instead the rewards are not complementary and GDPO separates rollouts.
    rewards[:, 1] = [0.0, 1.0, 1.0]  # sums (1,2,1): GRPO ranks rollout 2 first, ties 1 and 3
    gdpo = compute_advantages(rewards, [0, 0, 0], "gdpo_no_bn", eps=0.0)
    # r1 -> (a, a, -2a), r2 -> (-2a, a, a), a = 1/sqrt(3): sum (-a, 2a, -a)
    a = 1 / math.sqrt(3)
    np.testing.assert_allclose(gdpo, [-a, 2 * a, -a], atol=1e-12)


def test_groups_may_be_uneven_and_not_contiguous_with_string_ids():
    rewards = np.array([[0.0], [5.0], [1.0], [3.0], [2.0]])
    ids = ["b", "a", "b", "a", "c"]  # a: (5, 3) b: (0, 1) c: single sample
    out = compute_advantages(rewards, ids, "grpo", eps=0.0)
    np.testing.assert_allclose(out, [-S, S, S, -S, 0.0], atol=1e-12)


def test_single_sample_and_zero_spread_groups_give_zero():
    rewards = np.array([[1.0, 2.0], [1.0, 2.0], [4.0, 4.0]])
    for method in estimator_names():
        out = compute_advantages(rewards, [0, 0, 1], method)
        assert np.all(out == 0.0), method


def test_nan_means_not_applicable():
    # Reward 2 applies only to samples 0 and 1. Group of 3.
    rewards = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, np.nan]])
    # GDPO group step: r1 (0,1,2): mean 1, std 1 -> (-1, 0, 1); r2 over (1, 0): (a, -a), n/a -> 0
    out = compute_advantages(rewards, [0, 0, 0], "gdpo_no_bn", eps=0.0)
    np.testing.assert_allclose(out, [-1 + S, -S, 1.0], atol=1e-12)
    # GRPO: sums (1, 1, 2): mean 4/3, std sqrt(1/3) -> (-1/3, -1/3, 2/3) / 0.57735
    out = compute_advantages(rewards, [0, 0, 0], "grpo", eps=0.0)
    np.testing.assert_allclose(out, np.array([-1, -1, 2]) / 3 / math.sqrt(1 / 3), atol=1e-12)


def test_sample_with_no_applicable_reward_gets_zero_and_is_left_out_of_batch_stats():
    rewards = np.array([[0.0], [1.0], [np.nan], [0.0], [1.0]])
    ids = [0, 0, 0, 1, 1]
    out = compute_advantages(rewards, ids, "gdpo", eps=0.0)
    assert out[2] == 0.0
    # the four active samples are (-a, a, -a, a) -> batch mean 0, std sqrt(4a²/3)=sqrt(2/3)
    np.testing.assert_allclose(out[[0, 1, 3, 4]], np.array([-S, S, -S, S]) / math.sqrt(2 / 3), atol=1e-12)


def test_leave_one_out_baseline():
    # grpo_no_std with leave-one-out: x - mean(others). (1, 2, 6): 1-4, 2-3.5, 6-1.5
    out = compute_advantages(np.array([[1.0], [2.0], [6.0]]), [0, 0, 0], "grpo_no_std", leave_one_out=True)
    np.testing.assert_allclose(out, [-3.0, -1.5, 4.5])


def test_length_weighted_batch_step():
    # Group step (no-bn) gives (-a, a) and (-a, a); lengths (1, 3, 1, 1) weight the mean:
    # mean = (-a + 3a - a + a) / 6 = a/3.
    rewards = np.array([[0.0], [1.0], [0.0], [1.0]])
    lengths = np.array([1, 3, 1, 1])
    out = compute_advantages(rewards, [0, 0, 1, 1], "gdpo", lengths=lengths, eps=0.0)
    x = np.array([-S, S, -S, S])
    mean = (lengths * x).sum() / 6
    std = math.sqrt((lengths * (x - mean) ** 2).sum() / 5)
    np.testing.assert_allclose(out, (x - mean) / std, atol=1e-12)


def test_conditioned_reward_zeroes_length_where_incorrect():
    rewards = np.array([[1.0, 1.0], [0.0, 1.0], [np.nan, 1.0], [1.0, 0.0]])
    out = condition_reward(rewards, target=1, on=0, threshold=1.0)
    np.testing.assert_array_equal(out[:, 1], [1.0, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(rewards[:, 1], [1.0, 1.0, 1.0, 0.0])  # input untouched
    t = condition_reward(torch.tensor(rewards, dtype=torch.float32), target=1, on=0, threshold=0.5)
    assert t.dtype == torch.float32 and t[:, 1].tolist() == [1.0, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="target"):
        condition_reward(rewards, target=5, on=0, threshold=1.0)


# ---------------------------------------------------------------- types and devices
def test_output_type_dtype_follow_input():
    r = np.array([[0.0, 1.0], [1.0, 0.0]], dtype=np.float32)
    out = compute_advantages(r, [0, 0])
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (2,)
    out = compute_advantages(r.astype(np.int64), [0, 0])
    assert out.dtype == np.float64
    t = compute_advantages(torch.tensor(r, dtype=torch.bfloat16), torch.tensor([0, 0]))
    assert isinstance(t, torch.Tensor) and t.dtype == torch.bfloat16 and t.device.type == "cpu"
    t = compute_advantages(torch.tensor([[1, 0], [0, 1]]), [0, 0])
    assert t.dtype == torch.get_default_dtype()


# ---------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(rewards=np.zeros(4), group_ids=[0, 0, 1, 1]), ValueError, r"shape \[N, K\].*reshape"),
        (dict(rewards=np.zeros((4, 2)), group_ids=[0, 0, 1]), ValueError, r"group_ids must have shape \[N\] = \[4\]"),
        (dict(rewards=np.zeros((4, 2)), group_ids=[0] * 4, weights=[1.0]), ValueError, "1 weights"),
        (dict(rewards=np.zeros((4, 2)), group_ids=[0] * 4, weights=[1.0, -1.0]), ValueError, "non-negative"),
        (dict(rewards=np.zeros((4, 2)), group_ids=[0] * 4, weights=[1.0, np.nan]), ValueError, "finite"),
        (dict(rewards=np.zeros((4, 2)), group_ids=[0] * 4, weights=[0.0, 0.0]), ValueError, "all weights are zero"),
        (dict(rewards=np.array([[0.0], [np.inf]]), group_ids=[0, 0]), ValueError, r"inf.*row 1, column 0"),
        (dict(rewards=np.zeros((2, 1)), group_ids=[0, 0], method="gdpoo"), ValueError, "Did you mean 'gdpo'"),
        (dict(rewards=np.zeros((2, 1)), group_ids=[0, 0], method="grpo", batch_norm=False), TypeError,
         r"unknown option.*batch_norm.*valid options"),
        (dict(rewards=np.zeros((2, 1)), group_ids=[0, 0], eps=-1.0), ValueError, "eps must be"),
        (dict(rewards=np.zeros((2, 1)), group_ids=[0, 0], lengths=[1]), ValueError, "lengths must have one entry"),
        (dict(rewards="high", group_ids=[0]), TypeError, "rewards must be"),
    ],
)
def test_bad_input_names_the_problem(kwargs, error, match):
    with pytest.raises(error, match=match):
        compute_advantages(**kwargs)


def test_registering_a_name_twice_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_estimator("gdpo", options={})(lambda r, g, w: r[:, 0])


# ---------------------------------------------------------------- property tests
def _batches():
    """Random batches: rewards [N, K] with some NaN, ids from a few groups, weights."""
    return st.integers(1, 4).flatmap(
        lambda k: st.tuples(
            st.lists(
                st.tuples(
                    st.integers(0, 4),
                    st.lists(st.one_of(st.sampled_from([0.0, 1.0, 0.5, -3.0, np.nan]),
                                       # quarter steps: real spreads, no 1e-300 ties that a
                                       # float shift would legitimately erase
                                       st.integers(-400, 400).map(lambda i: i / 4)), min_size=k, max_size=k),
                ),
                min_size=1, max_size=24,
            ),
            st.lists(st.floats(0.0, 5.0), min_size=k, max_size=k).filter(lambda w: sum(w) > 0),
        )
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches(), st.sampled_from(["grpo", "grpo_no_std", "gdpo", "gdpo_no_bn"]))
def test_vectorized_equals_slow_reference(batch, method):
    rows, weights = batch
    ids = [g for g, _ in rows]
    rewards = [r for _, r in rows]
    fast = compute_advantages(np.array(rewards), ids, method, weights=weights)
    slow = reference_advantages(rewards, ids, method, weights=weights)
    assert np.all(np.isfinite(fast))
    np.testing.assert_allclose(fast, slow, rtol=1e-7, atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(_batches(), st.floats(0.1, 50.0), st.floats(-20.0, 20.0), st.data())
def test_gdpo_invariant_to_positive_affine_change_of_one_reward(batch, scale, shift, data):
    rows, weights = batch
    rewards = np.array([r for _, r in rows])
    ids = [g for g, _ in rows]
    k = data.draw(st.integers(0, rewards.shape[1] - 1))
    changed = rewards.copy()
    changed[:, k] = changed[:, k] * scale + shift
    base = compute_advantages(rewards, ids, "gdpo", weights=weights, eps=0.0)
    moved = compute_advantages(changed, ids, "gdpo", weights=weights, eps=0.0)
    np.testing.assert_allclose(base, moved, rtol=1e-6, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(_batches(), st.randoms(use_true_random=False), st.sampled_from(["grpo", "grpo_no_std", "gdpo", "gdpo_no_std"]))
def test_permuting_rows_permutes_the_output(batch, rnd, method):
    rows, weights = batch
    rewards = np.array([r for _, r in rows])
    ids = np.array([g for g, _ in rows])
    perm = np.array(rnd.sample(range(len(ids)), len(ids)))
    out = compute_advantages(rewards, ids, method, weights=weights)
    out_perm = compute_advantages(rewards[perm], ids[perm], method, weights=weights)
    np.testing.assert_allclose(out_perm, out[perm], rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(_batches(), st.sampled_from(estimator_names()))
def test_numpy_and_torch_agree(batch, method):
    rows, weights = batch
    rewards = np.array([r for _, r in rows])
    ids = [g for g, _ in rows]
    out_np = compute_advantages(rewards, ids, method, weights=weights)
    out_t = compute_advantages(torch.tensor(rewards), torch.tensor(ids), method, weights=torch.tensor(weights, dtype=torch.float64))
    assert out_t.dtype == torch.float64
    np.testing.assert_allclose(out_t.numpy(), out_np, rtol=0, atol=0)


def test_large_rewards_stay_finite():
    rng = np.random.default_rng(0)
    rewards = rng.normal(size=(1000, 3)) * 1e150
    for method in estimator_names():
        out = compute_advantages(rewards, np.repeat(np.arange(250), 4), method)
        assert np.all(np.isfinite(out)), method


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.floats(-1e6, 1e6)), min_size=1, max_size=20),
       st.sampled_from(["grpo", "grpo_no_std", "gdpo"]))
def test_arbitrary_floats_match_reference_and_stay_finite(rows, method):
    ids = [g for g, _ in rows]
    rewards = [[x, -x] for _, x in rows]  # two complementary rewards: worst case for cancellation
    fast = compute_advantages(np.array(rewards), ids, method)
    assert np.all(np.isfinite(fast))
    if method != "gdpo":  # GDPO's cancellation guard may zero what the reference leaves as noise
        np.testing.assert_allclose(fast, reference_advantages(rewards, ids, method), rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(fast, 0.0)  # r2 = -r1 cancels exactly under GDPO
