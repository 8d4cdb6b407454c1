"""Tests of GDPO's successors (gd2po, saw_gdpo, saw_grpo): hand arithmetic, reference, properties."""

import math

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gdpo import compute_advantages, get_estimator
from gdpo.advantages import GroupIndex, check_options
from gdpo.advantages_successors import gd2po_parts, saw_weights
from gdpo.reference import reference_advantages

B = 1 / math.sqrt(3)  # z-scores of (1, 0, 0) in a group of 3: (2B, -B, -B), unbiased std
S = 1 / math.sqrt(2)  # z-scores of (1, 0): (S, -S)
SUCCESSORS = ["gd2po", "saw_gdpo", "saw_grpo"]


def batch_step(x, eps=0.0):
    """(x - mean) / (std + eps) with the unbiased std: the batch step written out."""
    x = np.asarray(x, dtype=float)
    return (x - x.mean()) / (x.std(ddof=1) + eps)


# ---------------------------------------------------------------- GD²PO by hand
# Two groups of 3, K = 2, eps = 0.
#   group 0: r1 = (1, 0, 0) -> A1 = (2B, -B, -B);  r2 = (0, 1, 0) -> A2 = (-B, 2B, -B)
#            sample 0: a = (2B, -B) conflicts; sample 1: a = (-B, 2B) conflicts;
#            sample 2: a = (-B, -B) does not.
#   group 1: r1 = r2 = (1, 1, 0) -> A1 = A2 = (B, B, -2B): no conflict anywhere.
TWO_GROUPS = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0],
                       [1.0, 1.0], [1.0, 1.0], [0.0, 0.0]])
TWO_IDS = [0, 0, 0, 1, 1, 1]


def test_gd2po_hard_drops_conflicts_and_scales_by_group_consensus():
    parts = gd2po_parts(TWO_GROUPS, GroupIndex.from_ids(np.array(TWO_IDS)), np.ones(2), eps=0.0)
    np.testing.assert_array_equal(parts.conflict, [True, True, False, False, False, False])
    np.testing.assert_array_equal(parts.keep, [False, False, True, True, True, True])
    # c_0 = 1 kept of 3 = 1/3; c_1 = 3/3 = 1.
    np.testing.assert_allclose(parts.consensus, [1 / 3] * 3 + [1.0] * 3)
    # pre: group 0 keeps only sample 2: (-B - B) * 1/3 = -2B/3; group 1: (2B, 2B, -4B) * 1.
    pre = [0.0, 0.0, -2 * B / 3, 2 * B, 2 * B, -4 * B]
    np.testing.assert_allclose(compute_advantages(TWO_GROUPS, TWO_IDS, "gd2po", eps=0.0, batch_norm=False), pre,
                               atol=1e-12)
    # Batch step over the 4 kept samples only: x = (-2/3, 2, 2, -4) B, mean -B/6,
    # unbiased std over those 4; the dropped samples stay exactly 0.
    out = compute_advantages(TWO_GROUPS, TWO_IDS, "gd2po", eps=0.0)
    assert out[0] == 0.0 and out[1] == 0.0
    np.testing.assert_allclose(out[2:], batch_step(pre[2:]), atol=1e-12)
    assert out[2:].mean() == pytest.approx(0.0, abs=1e-12)


def test_gd2po_snr_keeps_conflicts_with_a_clear_net_sign():
    # Samples 0 and 1: rho = (2B - B) / (3B + 1e-8) = 1/3 (less a hair).
    # tau = 0.8 (default): |rho| < 0.8 -> dropped, as hard.
    hard = compute_advantages(TWO_GROUPS, TWO_IDS, "gd2po", eps=0.0)
    snr = compute_advantages(TWO_GROUPS, TWO_IDS, "gd2po", variant="snr", eps=0.0)
    np.testing.assert_allclose(snr, hard, atol=1e-12)
    # tau = 0.3: 1/3 >= 0.3 -> kept; every sample is kept, c_0 = c_1 = 1 and
    # pre = (2B - B, -B + 2B, -2B, 2B, 2B, -4B) = (B, B, -2B, 2B, 2B, -4B): that is GDPO's sum.
    pre = np.array([B, B, -2 * B, 2 * B, 2 * B, -4 * B])
    out = compute_advantages(TWO_GROUPS, TWO_IDS, "gd2po", variant="snr", tau=0.3, eps=0.0, batch_norm=False)
    np.testing.assert_allclose(out, pre, atol=1e-12)
    out = compute_advantages(TWO_GROUPS, TWO_IDS, "gd2po", variant="snr", tau=0.3, eps=0.0)
    np.testing.assert_allclose(out, batch_step(pre), atol=1e-12)


def test_gd2po_fewer_than_two_kept_samples_gives_all_zero():
    # Group 0 of TWO_GROUPS alone keeps one sample (sample 2): nothing to rank.
    assert np.all(compute_advantages(TWO_GROUPS[:3], [0, 0, 0], "gd2po") == 0.0)
    # r1 = (1, 0), r2 = (0, 1): a = (S, -S) and (-S, S): both conflict, none kept.
    assert np.all(compute_advantages(np.array([[1.0, 0.0], [0.0, 1.0]]), [0, 0], "gd2po") == 0.0)


def test_gd2po_sign_threshold_is_on_the_weighted_terms():
    # One group of 2, r1 = (1, 0), r2 = (0, 1): A1 = (S, -S), A2 = (-S, S).
    rewards = np.array([[1.0, 0.0], [0.0, 1.0]])
    # w2 = 1e-9: a2 = -+7.1e-10, inside the 1e-8 dead band: no conflict; pre = S (1 - 1e-9), -S (1 - 1e-9).
    out = compute_advantages(rewards, [0, 0], "gd2po", weights=[1.0, 1e-9], eps=0.0, batch_norm=False)
    np.testing.assert_allclose(out, [S * (1 - 1e-9), -S * (1 - 1e-9)], rtol=1e-12)
    # w2 = 1e-7: |a2| = 7.1e-8 > 1e-8: both samples conflict and are dropped.
    out = compute_advantages(rewards, [0, 0], "gd2po", weights=[1.0, 1e-7], eps=0.0, batch_norm=False)
    assert np.all(out == 0.0)


def test_gd2po_samples_without_applicable_reward_are_out_of_the_consensus():
    # Group 0: (1, 1), (0, 0), (NaN, NaN): A1 = A2 = (S, -S, n/a), no conflict; the NaN
    # sample counts neither as kept nor in the group size: c_0 = 2/2 = 1, not 2/3.
    # Group 1: (1, 0), (0, 1): both conflict -> c_1 = 0.
    rewards = np.array([[1.0, 1.0], [0.0, 0.0], [np.nan, np.nan], [1.0, 0.0], [0.0, 1.0]])
    ids = np.array([0, 0, 0, 1, 1])
    parts = gd2po_parts(rewards, GroupIndex.from_ids(ids), np.ones(2), eps=0.0)
    np.testing.assert_array_equal(parts.keep, [True, True, False, False, False])
    np.testing.assert_allclose(parts.consensus, [1.0, 1.0, 1.0, 0.0, 0.0])
    # pre = (2S, -2S, 0, 0, 0); batch step over the two kept samples: (+-2S) / std, std = 2S * sqrt(2).
    out = compute_advantages(rewards, ids, "gd2po", eps=0.0)
    np.testing.assert_allclose(out, [S, -S, 0.0, 0.0, 0.0], atol=1e-12)


def test_gd2po_token_weighted_batch_step():
    # As test_gd2po_hard..., with lengths: the 4 kept samples weigh 2, 1, 1, 4 tokens;
    # the dropped samples' lengths (100) must not matter.
    lengths = np.array([100, 100, 2, 1, 1, 4])
    out = compute_advantages(TWO_GROUPS, TWO_IDS, "gd2po", eps=0.0, lengths=lengths)
    x = np.array([-2 * B / 3, 2 * B, 2 * B, -4 * B])
    w = lengths[2:].astype(float)
    mean = (w * x).sum() / w.sum()  # (-4/3 + 2 + 2 - 16) B / 8
    std = math.sqrt((w * (x - mean) ** 2).sum() / (w.sum() - 1))  # Bessel by 8 tokens
    np.testing.assert_allclose(out, np.r_[0.0, 0.0, (x - mean) / std], atol=1e-12)


# ---------------------------------------------------------------- SAW by hand
# Six samples, two groups of 3, K = 2.
#   r1 = (1, 0, 0, 1, 1, 0): mean .5, squares 6 * .25 = 1.5, var 1.5/5 = .3, std .547723,
#        CV1 = .547723 / .5 = 1.095445
#   r2 = (0, 1, 0, 2, 0, 0): mean .5, squares 5 * .25 + 2.25 = 3.5, var .7, std .836660,
#        CV2 = 1.673320
#   w^ = 2 CV / (CV1 + CV2) = (2.190890, 3.346640) / 2.768765 = (.791288, 1.208712)
SAW_REWARDS = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [1.0, 2.0], [1.0, 0.0], [0.0, 0.0]])
SAW_IDS = [0, 0, 0, 1, 1, 1]
W_HAT = (0.791288, 1.208712)


def test_saw_weights_from_batch_coefficients_of_variation():
    cv = np.array([math.sqrt(0.3) / (0.5 + 1e-8), math.sqrt(0.7) / (0.5 + 1e-8)])
    np.testing.assert_allclose(saw_weights(SAW_REWARDS, np.ones(2)), 2 * cv / (cv.sum() + 1e-8), rtol=1e-12)
    np.testing.assert_allclose(saw_weights(SAW_REWARDS, np.ones(2)), W_HAT, atol=1e-6)
    # offsets = (3, 0): x1 = r1 + 3 = (4, 3, 3, 4, 4, 3): mean 3.5, same std -> CV1 = .547723 / 3.5
    # = .156492; w^ = 2 (.156492, 1.673320) / 1.829812 = (.171047, 1.828953).
    np.testing.assert_allclose(saw_weights(SAW_REWARDS, np.ones(2), [3.0, 0.0]), [0.171047, 1.828953], atol=1e-6)
    # The user's weights multiply: w = (2, 1) -> (2 * .791288, 1.208712).
    np.testing.assert_allclose(saw_weights(SAW_REWARDS, np.array([2.0, 1.0])), [2 * W_HAT[0], W_HAT[1]], atol=1e-6)
    # No spread in the batch -> CV 0 -> weight 0; NaN left out of the statistics: r2 over
    # (0, 1) has mean .5, std S, CV2 = S / .5 = 1.414214 and w^2 = 2 CV2 / (CV2 + 1e-8).
    flat = np.array([[1.0, 0.0], [1.0, 1.0], [1.0, np.nan]])
    cv2 = S / (0.5 + 1e-8)
    np.testing.assert_allclose(saw_weights(flat, np.ones(2)), [0.0, 2 * cv2 / (cv2 + 1e-8)], rtol=1e-12)


def test_saw_grpo_normalizes_the_adaptively_weighted_sum_per_group():
    # Group 0: r' = (w1, w2, 0) = (.791288, 1.208712, 0): mean 2/3 (w1 + w2 = 2), deviations
    # (.124621, .542045, -.666667), squares sum .753787, var .376894, std .613917
    # -> (.202997, .882931, -1.085928).
    out = compute_advantages(SAW_REWARDS, SAW_IDS, "saw_grpo", eps=0.0)
    np.testing.assert_allclose(out[:3], [0.202997, 0.882931, -1.085928], atol=1e-5)
    # Group 1: r' = (w1 + 2 w2, w1, 0) = (3.208712, .791288, 0); GRPO with weights w^ by hand:
    x = np.array([W_HAT[0] + 2 * W_HAT[1], W_HAT[0], 0.0])
    np.testing.assert_allclose(out[3:], (x - x.mean()) / x.std(ddof=1), atol=1e-5)
    # Plain GRPO (w = 1) gives other values in group 0: sums (1, 1, 0) -> (B, B, -2B).
    np.testing.assert_allclose(compute_advantages(SAW_REWARDS, SAW_IDS, "grpo", eps=0.0)[:3], [B, B, -2 * B])


def test_saw_gdpo_is_gdpo_with_the_adaptive_weights():
    # Group 0: A1 = (2B, -B, -B), A2 = (-B, 2B, -B); sum w^_k A_k = (2 w1 - w2, 2 w2 - w1, -2) B
    # = (.373864, 1.626136, -2) B; group 1: r1 = (1, 1, 0) -> (B, B, -2B), r2 = (2, 0, 0) -> (2B, -B, -B):
    # (w1 + 2 w2, w1 - w2, -2 w1 - w2) B = (3.208712, -.417424, -2.791288) B. Then the batch step.
    w1, w2 = W_HAT
    pre = np.array([2 * w1 - w2, 2 * w2 - w1, -2.0, w1 + 2 * w2, w1 - w2, -2 * w1 - w2]) * B
    np.testing.assert_allclose(compute_advantages(SAW_REWARDS, SAW_IDS, "saw_gdpo", eps=0.0, batch_norm=False),
                               pre, atol=1e-5)
    np.testing.assert_allclose(compute_advantages(SAW_REWARDS, SAW_IDS, "saw_gdpo", eps=0.0), batch_step(pre),
                               atol=1e-5)


def test_saw_without_adaptation_is_gdpo_and_grpo():
    w = [1.0, 2.0]
    for saw, base in (("saw_gdpo", "gdpo"), ("saw_grpo", "grpo")):
        np.testing.assert_array_equal(compute_advantages(SAW_REWARDS, SAW_IDS, saw, w, adaptive=False),
                                      compute_advantages(SAW_REWARDS, SAW_IDS, base, w))


# ---------------------------------------------------------------- options and bad input
def test_gd2po_tau_is_clamped_to_the_unit_interval():
    rng = np.random.default_rng(3)
    rewards = rng.integers(0, 3, size=(40, 3)).astype(float)
    ids = np.repeat(np.arange(10), 4)
    hard = compute_advantages(rewards, ids, "gd2po")
    np.testing.assert_array_equal(compute_advantages(rewards, ids, "gd2po", variant="snr", tau=7.0), hard)
    np.testing.assert_array_equal(compute_advantages(rewards, ids, "gd2po", variant="snr", tau=1.0), hard)
    np.testing.assert_array_equal(compute_advantages(rewards, ids, "gd2po", variant="snr", tau=-2.0),
                                  compute_advantages(rewards, ids, "gd2po", variant="snr", tau=0.0))
    assert not np.array_equal(hard, compute_advantages(rewards, ids, "gdpo"))  # the check is not vacuous


@pytest.mark.parametrize(
    "method, options, match",
    [
        ("gd2po", {"variant": "soft"}, r"variant='soft'.*'hard', 'snr'"),
        ("gd2po", {"tau": "high"}, r"tau='high' must be a number"),
        ("gd2po", {"tau": float("nan")}, r"tau=nan"),
        ("gd2po", {"batch_norm": "no"}, r"batch_norm='no' must be true or false"),
        ("gd2po", {"offsets": [3, 0]}, r"unknown option.*offsets"),
        ("saw_gdpo", {"offsets": [3, 0, 1]}, r"3 values .* for 2 reward columns.*offsets=\[3, 0\]"),
        ("saw_grpo", {"offsets": "3"}, r"offsets='3' is not numeric"),
        ("saw_grpo", {"offsets": [1.0, np.inf]}, r"must be finite"),
        ("saw_gdpo", {"adaptive": 1}, r"adaptive=1 must be true or false"),
        ("saw_gdpo", {"eps": -1.0}, r"eps must be"),
    ],
)
def test_bad_options_name_key_value_and_fix(method, options, match):
    error = TypeError if "unknown" in match else ValueError
    with pytest.raises(error, match=match):
        compute_advantages(SAW_REWARDS, SAW_IDS, method, **options)
    with pytest.raises(error, match=match):  # the same check, before any data (config validation)
        check_options(method, options, num_rewards=2)


def test_options_and_defaults_are_registered():
    assert get_estimator("gd2po").options == {"variant": "hard", "tau": 0.8, "eps": 1e-6, "batch_norm": True,
                                              "lengths": None}
    assert set(get_estimator("saw_gdpo").options) == {"eps", "offsets", "adaptive", "batch_norm", "lengths"}
    assert set(get_estimator("saw_grpo").options) == {"eps", "offsets", "adaptive"}
    check_options("saw_gdpo", {"offsets": 3.0})  # one number for every reward; K unknown is fine
    check_options("saw_gdpo", {"offsets": torch.tensor([3.0, 0.0])}, num_rewards=2)


def test_torch_in_torch_out_with_tensor_options():
    rewards = torch.tensor(TWO_GROUPS, dtype=torch.float32)
    out = compute_advantages(rewards, torch.tensor(TWO_IDS), "gd2po", lengths=torch.tensor([1, 2, 3, 4, 5, 6]))
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), compute_advantages(TWO_GROUPS, TWO_IDS, "gd2po",
                                                               lengths=np.arange(1, 7)), rtol=1e-6)
    out = compute_advantages(torch.tensor(SAW_REWARDS), SAW_IDS, "saw_grpo", offsets=torch.tensor([3.0, 0.0]))
    np.testing.assert_allclose(out.numpy(), compute_advantages(SAW_REWARDS, SAW_IDS, "saw_grpo", offsets=[3, 0]))


# ---------------------------------------------------------------- property tests
def _batches(min_k=1):
    """Random batches: rewards [N, K] with some NaN, ids from a few groups, weights."""
    return st.integers(min_k, 4).flatmap(
        lambda k: st.tuples(
            st.lists(
                st.tuples(
                    st.integers(0, 4),
                    st.lists(st.one_of(st.sampled_from([0.0, 1.0, 0.5, -3.0, np.nan]),
                                       st.integers(-400, 400).map(lambda i: i / 4)), min_size=k, max_size=k),
                ),
                min_size=1, max_size=24,
            ),
            st.lists(st.floats(0.0, 5.0), min_size=k, max_size=k).filter(lambda w: sum(w) > 0),
        )
    )


def _unpack(batch):
    rows, weights = batch
    return np.array([r for _, r in rows]), np.array([g for g, _ in rows]), weights


_OPTIONS = st.one_of(
    st.tuples(st.just("gd2po"), st.fixed_dictionaries({"variant": st.sampled_from(["hard", "snr"]),
                                                       "tau": st.sampled_from([0.0, 0.3, 0.8, 1.0])})),
    st.tuples(st.just("saw_gdpo"), st.fixed_dictionaries({"offsets": st.sampled_from([0.0, 3.0, -1.5])})),
    st.tuples(st.just("saw_grpo"), st.fixed_dictionaries({"offsets": st.sampled_from([0.0, 3.0, -1.5])})),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_batches(), _OPTIONS, st.booleans())
def test_vectorized_equals_slow_reference(batch, method_options, with_lengths):
    rewards, ids, weights = _unpack(batch)
    method, options = method_options
    if with_lengths and "lengths" in get_estimator(method).options:  # token-weighted batch step
        options = dict(options, lengths=(np.arange(len(ids)) % 5 + 1).astype(float))
    fast = compute_advantages(rewards, ids, method, weights=weights, **options)
    slow = reference_advantages(rewards.tolist(), ids.tolist(), method, weights=weights, **options)
    assert np.all(np.isfinite(fast))
    np.testing.assert_allclose(fast, slow, rtol=1e-7, atol=1e-7)


@settings(max_examples=100, deadline=None)
@given(_batches(), st.sampled_from([False, True]))
def test_gd2po_snr_spans_gdpo_to_hard(batch, batch_norm):
    # tau = 0 drops nothing: c_g = 1 and GD²PO is GDPO. tau = 1 drops every conflict, since
    # a conflicting sample has |sum a| < sum |a| (mixed signs): GD²PO snr is GD²PO hard.
    rewards, ids, weights = _unpack(batch)
    opts = {"weights": weights, "batch_norm": batch_norm}
    np.testing.assert_allclose(compute_advantages(rewards, ids, "gd2po", variant="snr", tau=0.0, **opts),
                               compute_advantages(rewards, ids, "gdpo", **opts), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(compute_advantages(rewards, ids, "gd2po", variant="snr", tau=1.0, **opts),
                                  compute_advantages(rewards, ids, "gd2po", **opts))


@settings(max_examples=100, deadline=None)
@given(_batches(), st.sampled_from(["hard", "snr"]))
def test_gd2po_structure(batch, variant):
    rewards, ids, weights = _unpack(batch)
    parts = gd2po_parts(rewards, GroupIndex.from_ids(ids), np.array(weights), variant=variant)
    out = compute_advantages(rewards, ids, "gd2po", weights=weights, variant=variant)
    assert np.all(out[~parts.keep] == 0.0)  # dropped samples get exactly 0
    assert np.all(parts.combined[~parts.keep] == 0.0)
    assert np.all((parts.consensus >= 0) & (parts.consensus <= 1))
    if variant == "hard":
        np.testing.assert_array_equal(parts.keep, ~parts.conflict & ~np.all(np.isnan(rewards), axis=1))
    # consensus is the kept share of the group's scored samples
    for g in np.unique(ids):
        scored = (ids == g) & ~np.all(np.isnan(rewards), axis=1)
        if scored.any():
            np.testing.assert_allclose(parts.consensus[ids == g], parts.keep[scored].mean())


@settings(max_examples=60, deadline=None)
@given(_batches())
def test_gd2po_with_one_reward_is_gdpo(batch):
    rewards, ids, weights = _unpack(batch)
    rewards, weights = rewards[:, :1], [1.0]  # one reward: no sample can conflict
    np.testing.assert_array_equal(compute_advantages(rewards, ids, "gd2po", weights=weights),
                                  compute_advantages(rewards, ids, "gdpo", weights=weights))


@settings(max_examples=100, deadline=None)
@given(_batches(), st.floats(0.1, 50.0), st.floats(-20.0, 20.0), st.data())
def test_gd2po_invariant_to_positive_affine_change_of_one_reward(batch, scale, shift, data):
    rewards, ids, weights = _unpack(batch)
    k = data.draw(st.integers(0, rewards.shape[1] - 1))
    changed = rewards.copy()
    changed[:, k] = changed[:, k] * scale + shift
    for variant in ("hard", "snr"):
        base = compute_advantages(rewards, ids, "gd2po", weights=weights, variant=variant, eps=0.0)
        moved = compute_advantages(changed, ids, "gd2po", weights=weights, variant=variant, eps=0.0)
        np.testing.assert_allclose(base, moved, rtol=1e-6, atol=1e-6)


@settings(max_examples=100, deadline=None)
@given(_batches(), st.randoms(use_true_random=False), _OPTIONS)
def test_permuting_rows_permutes_the_output(batch, rnd, method_options):
    # Also compares the fast path (sorted, equal groups) with the general one (shuffled).
    rewards, ids, weights = _unpack(batch)
    method, options = method_options
    perm = np.array(rnd.sample(range(len(ids)), len(ids)))
    out = compute_advantages(rewards, ids, method, weights=weights, **options)
    out_perm = compute_advantages(rewards[perm], ids[perm], method, weights=weights, **options)
    np.testing.assert_allclose(out_perm, out[perm], rtol=1e-9, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(_batches(), st.sampled_from([0.0, 3.0]))
def test_saw_is_the_base_method_with_saw_weights(batch, offset):
    rewards, ids, weights = _unpack(batch)
    w_hat = saw_weights(rewards, np.array(weights), offset)
    k = rewards.shape[1]
    assert np.all(w_hat >= 0) and w_hat.sum() <= k * max(weights) + 1e-9  # sum_k CV_k / (sum_j CV_j + 1e-8) <= 1
    if not w_hat.any():  # no reward varies over the batch: nothing varies in any group either
        assert np.all(compute_advantages(rewards, ids, "saw_gdpo", weights=weights, offsets=offset) == 0)
        return
    for saw, base in (("saw_gdpo", "gdpo"), ("saw_grpo", "grpo")):
        np.testing.assert_allclose(compute_advantages(rewards, ids, saw, weights=weights, offsets=offset),
                                   compute_advantages(rewards, ids, base, weights=w_hat), rtol=1e-12, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(_batches(), st.floats(0.01, 100.0))
def test_saw_weights_ignore_the_scale_of_a_reward_and_sum_to_k(batch, scale):
    # CV is scale-free (up to the 1e-8 beside |mean|): rescaling every reward by one positive
    # factor leaves w^ unchanged when no reward's mean is near 0; with w = 1 they sum to ~K.
    rewards, ids, _ = _unpack(batch)
    k = rewards.shape[1]
    means = np.array([np.nanmean(c) if np.isfinite(c).any() else 1.0 for c in rewards.T])
    if np.any(np.abs(means) < 1e-3):
        return
    base = saw_weights(rewards, np.ones(k))
    np.testing.assert_allclose(saw_weights(rewards * scale, np.ones(k)), base, rtol=1e-4, atol=1e-9)
    if base.any():
        assert base.sum() == pytest.approx(k, rel=1e-6)


def test_large_and_tiny_rewards_stay_finite():
    # At 1e-200 the eps = 1e-6 beside a group std of ~1e-200 makes every z-score ~1e-194, and
    # SAW's 1e-8 beside |mean| makes every CV ~1e-192: outputs that round to 0 are the formula's
    # answer there; what must hold is that nothing overflows into inf or NaN.
    rng = np.random.default_rng(0)
    ids = np.repeat(np.arange(250), 4)
    for magnitude in (1e150, 1e-200):
        rewards = rng.normal(size=(1000, 3)) * magnitude
        for method in SUCCESSORS:
            out = compute_advantages(rewards, ids, method)
            assert np.all(np.isfinite(out)), (method, magnitude)
            if magnitude > 1:
                assert np.abs(out).max() > 0.1, method  # still ranks, not all 0
    # Tiny z-scores sit inside GD²PO's 1e-8 sign band: no sample conflicts, GD²PO is GDPO.
    tiny = rng.normal(size=(1000, 3)) * 1e-200
    np.testing.assert_array_equal(compute_advantages(tiny, ids, "gd2po"), compute_advantages(tiny, ids, "gdpo"))


def test_empty_batch_gives_empty_output():
    for method in SUCCESSORS:
        out = compute_advantages(np.zeros((0, 2)), np.zeros(0, dtype=int), method)
        assert out.shape == (0,), method
