"""GDPO's successors through the verl adapter (plain torch; verl itself is not needed here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gdpo import compute_advantages
from gdpo.integrations import verl as gv


def verl_batch(seed=0, groups=4, size=4, length=6):
    """What verl hands an advantage function: per-reward components in non_tensor_batch."""
    rng = np.random.default_rng(seed)
    n = groups * size
    r1 = rng.integers(0, 2, n).astype(float)
    r2 = rng.integers(0, 3, n).astype(float)
    lengths = rng.integers(1, length + 1, n)
    mask = torch.tensor([[1] * k + [0] * (length - k) for k in lengths])  # [N, L]
    token_rewards = torch.zeros(n, length)
    uid = np.array([f"p{i // size}" for i in range(n)], dtype=object)
    return dict(r1=r1, r2=r2, lengths=lengths, mask=mask, token_rewards=token_rewards, uid=uid)


@pytest.mark.parametrize("method, options, token_weighted", [
    ("gd2po", {}, True),  # a batch step: token-weighted by default, as the public code's masked_whiten
    ("gd2po", {"variant": "snr", "tau": 0.5}, True),
    ("saw_gdpo", {"offsets": [3.0, 0.0]}, True),
    ("saw_grpo", {}, False),  # no batch step: no lengths
])
def test_adapter_equals_compute_advantages(method, options, token_weighted):
    b = verl_batch()
    config = {"gdpo_reward_keys": ["acc", "fmt"], "gdpo_reward_weights": [1.0, 0.5]}
    est = gv.VerlEstimator(method, options)
    assert est.uses_lengths is token_weighted
    adv, ret = est(b["token_rewards"], b["mask"], b["uid"], config=config,
                   non_tensor_batch={"acc": b["r1"], "fmt": b["r2"]})
    assert torch.equal(adv, ret)
    extra = {"lengths": b["lengths"]} if token_weighted else {}
    expected = compute_advantages(np.stack([b["r1"], b["r2"]], 1), b["uid"].astype(str), method, [1.0, 0.5],
                                  **options, **extra)
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(adv[:, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.all(adv[b["mask"] == 0] == 0)


def test_adapter_refuses_options_of_another_method():
    with pytest.raises(ValueError, match="tau"):
        gv.VerlEstimator("saw_gdpo", {"tau": 0.5})
