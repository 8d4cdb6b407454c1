"""verl adapter: its math against gdpo.compute_advantages (plain torch), compute_score, and a real verl check.

The last test needs verl, which does not install beside gdpo's stack (it pins transformers
< 5.11): it runs in a separate virtual environment (``$GDPO_VERL_VENV``, default
``/tmp/verl-venv``), created with ``pip install verl`` when missing, and skips saying why
when that cannot be done.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import gdpo.data.toy  # noqa: F401  (registers the toy_* rewards)
from gdpo import compute_advantages
from gdpo.integrations import verl as gv

REPO = Path(__file__).resolve().parents[2]


def verl_batch(seed=0, groups=3, size=4, length=6):
    """What verl hands an advantage function: per-reward components in non_tensor_batch."""
    rng = np.random.default_rng(seed)
    n = groups * size
    r1 = rng.integers(0, 2, n).astype(float)
    r2 = rng.integers(0, 2, n).astype(float)
    lengths = rng.integers(1, length + 1, n)
    mask = torch.tensor([[1] * k + [0] * (length - k) for k in lengths])  # [N, L]
    token_rewards = torch.zeros(n, length)
    token_rewards[torch.arange(n), torch.as_tensor(lengths - 1)] = torch.as_tensor(r1 + r2, dtype=torch.float32)
    uid = np.array([f"p{i // size}" for i in range(n)], dtype=object)
    return dict(r1=r1, r2=r2, lengths=lengths, mask=mask, token_rewards=token_rewards, uid=uid)


def test_adapter_equals_compute_advantages_token_weighted():
    b = verl_batch()
    config = {"gdpo_reward_keys": ["fmt", "acc"], "gdpo_reward_weights": [1.0, 0.5]}
    est = gv.VerlEstimator("gdpo")
    adv, ret = est(b["token_rewards"], b["mask"], b["uid"], config=config,
                   non_tensor_batch={"fmt": b["r1"], "acc": b["r2"]})
    assert adv.shape == b["mask"].shape and torch.equal(adv, ret)
    expected = compute_advantages(np.stack([b["r1"], b["r2"]], 1), b["uid"].astype(str), "gdpo", [1.0, 0.5],
                                  lengths=b["lengths"])
    # Constant over each response, zero outside it.
    np.testing.assert_allclose(adv[:, 0].numpy(), expected, rtol=1e-5, atol=1e-6)
    assert torch.all(adv[b["mask"] == 0] == 0)
    per_row_max = adv.max(dim=1).values.numpy()
    per_row_min = torch.where(b["mask"].bool(), adv, torch.inf).min(dim=1).values.numpy()
    np.testing.assert_allclose(per_row_max[expected > 0], per_row_min[expected > 0])


def test_adapter_without_components_uses_the_summed_reward():
    b = verl_batch(seed=1)
    adv, _ = gv.VerlEstimator("grpo")(b["token_rewards"], b["mask"], b["uid"])
    expected = compute_advantages((b["r1"] + b["r2"])[:, None], b["uid"].astype(str), "grpo")
    np.testing.assert_allclose(adv[:, 0].numpy(), expected, rtol=1e-5, atol=1e-6)


def test_adapter_errors_say_how_to_fix():
    b = verl_batch()
    config = {"gdpo_reward_keys": ["fmt", "acc"]}
    with pytest.raises(ValueError, match="named 'gdpo'"):
        gv.VerlEstimator("gdpo")(b["token_rewards"], b["mask"], b["uid"], config=config)
    with pytest.raises(KeyError, match="acc"):
        gv.VerlEstimator("gdpo")(b["token_rewards"], b["mask"], b["uid"], config=config,
                                 non_tensor_batch={"fmt": b["r1"]})
    with pytest.raises(ValueError, match="batch step"):
        gv.VerlEstimator("grpo", token_weighted=True)
    with pytest.raises(ValueError, match="leave_one_ot"):
        gv.VerlEstimator("gdpo", {"leave_one_ot": True})


def test_compute_score_returns_components_and_weighted_score():
    rewards = [{"name": "toy_letter", "weight": 2.0},
               {"name": "toy_short", "weight": 1.0, "condition": {"on": "toy_letter", "min": 1.0}}]
    hit = gv.compute_score("toy", "q", "q", {"max_len": 3}, rewards=rewards, ground_truth_column="target")
    assert hit == {"toy_letter": 1.0, "toy_short": 1.0, "score": 3.0}
    # Short but wrong: the condition zeroes toy_short.
    miss = gv.compute_score("toy", "x", "q", {"max_len": 3}, rewards=rewards, ground_truth_column="target")
    assert miss == {"toy_letter": 0.0, "toy_short": 0.0, "score": 0.0}
    with pytest.raises(ValueError, match="reward_kwargs.rewards"):
        gv.compute_score("toy", "q", "q")


def test_importing_gdpo_and_the_adapter_does_not_import_verl_or_trl():
    code = "import gdpo, gdpo.integrations.verl, sys; print('verl' in sys.modules, 'trl' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------
# Real verl, in its own virtual environment
# --------------------------------------------------------------------------------------
VERL_CHECK = textwrap.dedent("""
    import json, sys
    import numpy as np, torch
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos
    from verl.trainer.config import AlgoConfig
    from verl.trainer.ppo.reward import get_custom_reward_fn
    import gdpo.data.toy
    from gdpo.integrations import verl as gv

    builtin = core_algos.get_adv_estimator_fn("gdpo")
    ours = gv.register_with_verl("gdpo")
    assert core_algos.get_adv_estimator_fn("gdpo") is ours

    rng = np.random.default_rng(0)
    n, L, P = 12, 6, 3
    r1, r2 = rng.integers(0, 2, n).astype(float), rng.integers(0, 2, n).astype(float)
    lengths = rng.integers(1, L + 1, n)
    mask = torch.tensor([[1] * k + [0] * (L - k) for k in lengths])
    attention = torch.cat([torch.ones(n, P, dtype=torch.long), mask], 1)
    uid = np.array([f"p{i // 4}" for i in range(n)], dtype=object)
    config = AlgoConfig(adv_estimator="gdpo", gdpo_reward_keys=["fmt", "acc"], gdpo_reward_weights=[1.0, 0.5])
    kwargs = dict(token_level_rewards=torch.zeros(n, L), response_mask=mask, index=uid, config=config,
                  non_tensor_batch={"fmt": r1, "acc": r2, "uid": uid},
                  batch={"prompts": torch.zeros(n, P, dtype=torch.long), "attention_mask": attention})
    a_verl, _ = builtin(**kwargs)
    a_ours, _ = ours(**kwargs)
    diff = float((a_verl - a_ours).abs().max())

    cfg = OmegaConf.create({"reward": {"custom_reward_function": {
        "path": "pkg://gdpo.integrations.verl", "name": "compute_score",
        "reward_kwargs": {"rewards": ["toy_letter", "toy_short"], "ground_truth_column": "target"}}}})
    score = get_custom_reward_fn(cfg)(data_source="toy", solution_str="q", ground_truth="q",
                                      extra_info={"max_len": 3})
    print(json.dumps({"max_diff": diff, "max_abs": float(a_verl.abs().max()), "score": score}))
""")


def verl_python() -> Path:
    """The venv's python with verl importable; creates the venv once. Skips, saying why, if it cannot."""
    venv = Path(os.environ.get("GDPO_VERL_VENV", "/tmp/verl-venv"))
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([python, "-c", "import verl"], capture_output=True).returncode == 0:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        pip = subprocess.run([python, "-m", "pip", "install", "-q", "verl"], capture_output=True, text=True,
                             timeout=1800)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot build a verl virtual environment at {venv}: {exc}")
    if pip.returncode != 0:
        pytest.skip(f"`pip install verl` failed in {venv} (verl cannot be installed here): {pip.stderr[-600:]}")
    return python


@pytest.mark.verl
@pytest.mark.slow
def test_registered_in_real_verl_matches_verl_gdpo_and_loads_compute_score():
    python = verl_python()
    out = subprocess.run([python, "-c", VERL_CHECK], capture_output=True, text=True, timeout=600,
                         env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["max_abs"] > 0.1  # a non-trivial batch
    # verl: std + 1e-6 per group, rsqrt(var + 1e-8) in the batch step; ours: std + 1e-6 in both.
    assert result["max_diff"] < 1e-4, result
    assert result["score"] == {"toy_letter": 1.0, "toy_short": 1.0, "score": 2.0}
