"""Hand-computed cases for the pure loss functions in gdpo.train.loss."""

import math

import pytest
import torch

from gdpo.train.loss import (
    aggregate,
    clipped_surrogate,
    kl_penalty,
    loss_denominator,
    policy_loss,
    token_entropy,
    token_logprobs,
)


def test_token_logprobs_and_entropy_by_hand():
    # logits [0, log 3] -> probabilities [1/4, 3/4]
    logits = torch.tensor([[[0.0, math.log(3.0)]]])  # [1, 1, 2]
    assert token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(0.75))
    assert token_logprobs(logits, torch.tensor([[0]])).item() == pytest.approx(math.log(0.25))
    # entropy = -(1/4 log 1/4 + 3/4 log 3/4) = 0.5623
    expected = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert token_entropy(logits).item() == pytest.approx(expected)
    # uniform over 4 symbols: log 4
    assert token_entropy(torch.zeros(1, 1, 4)).item() == pytest.approx(math.log(4))


def test_clipped_surrogate_four_cases():
    # ratios 1.5, 1.5, 0.5, 0.5 with advantages +1, -1, -1, +1; eps_low = eps_high = 0.2
    logp = torch.log(torch.tensor([[1.5], [1.5], [0.5], [0.5]]))  # old_logp = 0
    adv = torch.tensor([1.0, -1.0, -1.0, 1.0])
    out = clipped_surrogate(logp, torch.zeros_like(logp), adv, 0.2, 0.2)
    # +1: min(1.5, 1.2) = 1.2 -> loss -1.2, clipped
    # -1: min(-1.5, -1.2) = -1.5 -> loss 1.5, not clipped (pessimistic side)
    # -1 at 0.5: min(-0.5, -0.8) = -0.8 -> loss 0.8, clipped
    # +1 at 0.5: min(0.5, 0.8) = 0.5 -> loss -0.5, not clipped
    assert out.loss[:, 0].tolist() == pytest.approx([-1.2, 1.5, 0.8, -0.5])
    assert out.clipped[:, 0].tolist() == [True, False, True, False]


def test_separate_low_and_high_clip():
    # ratio 1.25, A=+1: eps_high=0.28 leaves it unclipped (1.25 < 1.28); eps_high=0.2 clips to 1.2
    logp = torch.log(torch.tensor([[1.25]]))
    adv = torch.tensor([1.0])
    assert clipped_surrogate(logp, torch.zeros(1, 1), adv, 0.2, 0.28).loss.item() == pytest.approx(-1.25)
    assert clipped_surrogate(logp, torch.zeros(1, 1), adv, 0.2, 0.2).loss.item() == pytest.approx(-1.2)
    # ratio 0.7, A=-1: eps_low=0.2 clips at 0.8 -> loss 0.8; eps_low=0.4 -> 0.7 unclipped
    logp = torch.log(torch.tensor([[0.7]]))
    adv = torch.tensor([-1.0])
    assert clipped_surrogate(logp, torch.zeros(1, 1), adv, 0.2, 0.2).loss.item() == pytest.approx(0.8)
    assert clipped_surrogate(logp, torch.zeros(1, 1), adv, 0.4, 0.2).loss.item() == pytest.approx(0.7)


def test_kl_estimators_by_hand():
    logp, ref = torch.tensor([[0.0]]), torch.tensor([[math.log(0.5)]])
    # k1 = logp - ref = 0.6931
    assert kl_penalty(logp, ref, "k1").item() == pytest.approx(math.log(2))
    # k3: d = ref - logp = -0.6931; exp(d) - d - 1 = 0.5 + 0.6931 - 1 = 0.1931
    assert kl_penalty(logp, ref, "k3").item() == pytest.approx(0.5 + math.log(2) - 1)
    assert kl_penalty(ref, ref, "k3").item() == 0.0
    with pytest.raises(ValueError, match="k2"):
        kl_penalty(logp, ref, "k2")


VALUES = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
MASK = torch.tensor([[1, 1, 1], [1, 0, 0]])


def test_aggregation_modes_by_hand():
    # token_mean: (1 + 2 + 3 + 4) / 4 tokens = 2.5
    assert aggregate(VALUES, MASK, "token_mean").item() == pytest.approx(2.5)
    # seq_mean: sequence means 2 and 4 -> (2 + 4) / 2 = 3
    assert aggregate(VALUES, MASK, "seq_mean").item() == pytest.approx(3.0)
    # constant: token sum 10 / (2 sequences x 4) = 1.25
    assert aggregate(VALUES, MASK, "constant", constant=4).item() == pytest.approx(1.25)
    with pytest.raises(ValueError, match="token_men"):
        aggregate(VALUES, MASK, "token_men")


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean", "constant"])
def test_micro_batches_with_the_minibatch_denominator_add_up(mode):
    whole = aggregate(VALUES, MASK, mode, constant=4)
    denom = loss_denominator(MASK, mode, constant=4)
    parts = [aggregate(VALUES[i:i + 1], MASK[i:i + 1], mode, denom, constant=4) for i in range(2)]
    assert (parts[0] + parts[1]).item() == pytest.approx(whole.item())
    # ...while averaging per-micro-batch means would not (token_mean: (2 + 4) / 2 = 3 != 2.5)
    if mode == "token_mean":
        naive = sum(aggregate(VALUES[i:i + 1], MASK[i:i + 1], mode) for i in range(2)) / 2
        assert naive.item() == pytest.approx(3.0)


def test_policy_loss_gradient_at_ratio_one():
    # At ratio 1 and token_mean, d loss / d logp_t = -A_i / (number of tokens) on unmasked tokens.
    logp = torch.zeros(2, 3, requires_grad=True)
    adv = torch.tensor([2.0, -1.0])
    out = policy_loss(logp, logp.detach(), adv, MASK, eps_low=0.2, eps_high=0.2)
    out.loss.backward()
    expected = torch.tensor([[-2.0, -2.0, -2.0], [1.0, 0.0, 0.0]]) / 4
    assert torch.allclose(logp.grad, expected)
    # loss value = -(2 * 3 - 1 * 1) / 4 = -1.25; no clipping at ratio 1
    assert out.loss.item() == pytest.approx(-1.25)
    assert out.clip_frac.item() == 0.0


def test_policy_loss_adds_kl_and_entropy_terms():
    logp = torch.zeros(1, 2)
    ref = torch.full((1, 2), math.log(0.5))
    ent = torch.tensor([[1.0, 3.0]])
    mask = torch.ones(1, 2)
    out = policy_loss(logp, logp, torch.tensor([0.0]), mask, eps_low=0.2, eps_high=0.2, ref_logp=ref,
                      beta=0.1, kl_estimator="k1", entropy=ent, entropy_coef=0.01)
    # surrogate 0 (A = 0); KL k1 = log 2 per token; entropy mean 2
    # loss = 0.1 * log 2 - 0.01 * 2 = 0.04931
    assert out.kl.item() == pytest.approx(math.log(2))
    assert out.entropy.item() == pytest.approx(2.0)
    assert out.loss.item() == pytest.approx(0.1 * math.log(2) - 0.02)
    with pytest.raises(ValueError, match="entropy"):
        policy_loss(logp, logp, torch.tensor([0.0]), mask, eps_low=0.2, eps_high=0.2, entropy_coef=0.1)
