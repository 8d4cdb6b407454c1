"""Multi-reward advantage estimators: GRPO, GRPO w/o std, GDPO, their ablations and GDPO's
2026 successors (GD²PO, SAW), behind one registry and :func:`compute_advantages`.

The estimators are defined in :mod:`gdpo.advantage_core` (GRPO/GDPO families and the registry)
and :mod:`gdpo.advantages_successors` (GD²PO, SAW); this module imports both, so the registry is
complete once it is imported, and re-exports their public names.

Pure math: plain arrays in, arrays out. No transformers, no distributed code, no IO.

Shape vocabulary: B prompts, G rollouts per prompt (a *group*), K reward components,
N = B*G samples. Groups may have different sizes and need not be contiguous.

Every estimator shares one signature::

    estimator(rewards[N, K] float64, groups: GroupIndex, weights[K] float64, **options) -> [N]

and is reached by name through :func:`compute_advantages` (numpy or torch in, same out).

Numeric conventions (named options, documented defaults):

* ``eps`` (default 1e-6, as verl): added to the std, ``(x - mean) / (std + eps)``.
* std is the unbiased one (``ddof=1``), as in the paper's code (TRL, verl).
* NaN reward = "this reward does not apply to this sample": left out of that reward's
  statistics and contributes nothing to the sample's sum. A sample with no applicable
  reward gets advantage 0 and is left out of the batch statistics.
* A group with fewer than two usable samples, or with zero spread in a reward (all its
  values exactly equal), contributes 0 for that reward. No NaN or inf comes out for
  finite input.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from gdpo import advantages_successors as _successors  # noqa: F401 - registers GD²PO and SAW
from gdpo.advantage_core import (  # noqa: F401 - re-exported: the registry and the estimators' helpers
    DEFAULT_EPS,
    Estimator,
    GroupIndex,
    PerRewardScores,
    _check_eps,
    batch_normalize,
    check_options,
    estimator_names,
    gdpo,
    get_estimator,
    group_normalize,
    group_spread,
    grpo,
    grpo_no_std,
    per_reward_scores,
    register_estimator,
)


# --------------------------------------------------------------------------------------
# Conditioned rewards (the paper's Eq. 8)
# --------------------------------------------------------------------------------------
def condition_reward(rewards, target: int, on: int, threshold: float, *, floor: float = 0.0):
    """Keep reward ``target`` only where reward ``on`` >= ``threshold``; elsewhere ``floor``.

    ``rewards`` [N, K] (numpy or torch); returns a copy of the same type. Apply it before
    normalization. Example, length-if-correct: ``condition_reward(r, target=1, on=0,
    threshold=1.0)``. Where reward ``on`` is NaN (not applicable) the target is set to
    ``floor`` too, since the condition is not met.
    """
    arr, restore = _to_numpy(rewards)
    k = arr.shape[1] if arr.ndim == 2 else -1
    if arr.ndim != 2:
        raise ValueError(f"rewards must be 2-D [N, K], got shape {tuple(arr.shape)}")
    for label, idx in (("target", target), ("on", on)):
        if not isinstance(idx, (int, np.integer)) or not 0 <= idx < k:
            raise ValueError(f"{label}={idx!r} is not a reward column index; valid: 0..{k - 1}")
    if target == on:
        raise ValueError(f"target and on are both {target}; a reward cannot condition itself")
    out = arr.astype(np.float64, copy=True)
    met = arr[:, on] >= threshold  # NaN compares False
    out[:, target] = np.where(met, arr[:, target], floor)
    return restore(out)


# --------------------------------------------------------------------------------------
# The public entry point
# --------------------------------------------------------------------------------------
def compute_advantages(rewards, group_ids, method: str = "gdpo", weights=None, **options):
    """Advantages [N] from rewards [N, K] and one group id per sample.

    Args:
        rewards: [N, K] numpy array or torch tensor; NaN = reward does not apply.
        group_ids: [N] ints or strings naming each sample's prompt (any order, any sizes).
        method: a registered estimator name (``estimator_names()``).
        weights: K non-negative numbers, default all 1.
        **options: the estimator's options (see its docstring); unknown ones are an error.

    Returns:
        [N] advantages with the input's type, float dtype and device.

    >>> import numpy as np
    >>> compute_advantages(np.array([[0., 0.], [1., 0.], [0., 0.], [1., 1.]]),
    ...                    [0, 0, 1, 1], method="grpo").round(4)
    array([-0.7071,  0.7071, -0.7071,  0.7071])
    """
    est = get_estimator(method)
    values, restore = _to_numpy(rewards)
    values = _check_rewards(values)
    n, k = values.shape
    check_options(method, options, k)
    groups = GroupIndex.from_ids(_check_group_ids(group_ids, n))
    w = _check_weights(weights, k)
    if "lengths" in options and options["lengths"] is not None:
        options = dict(options, lengths=_check_lengths(options["lengths"], n))
    out = est.fn(values, groups, w, **options)  # [N] float64
    return restore(out)


# --------------------------------------------------------------------------------------
# Input checks and numpy/torch round trip
# --------------------------------------------------------------------------------------
def _to_numpy(x) -> tuple[np.ndarray, Callable[[np.ndarray], Any]]:
    """Array-like -> (float64-able numpy array, function restoring the input's type)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is optional for the math core
        torch = None
    if torch is not None and isinstance(x, torch.Tensor):
        dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
        device = x.device
        arr = x.detach().to("cpu", torch.float64).numpy()
        return arr, lambda out: torch.as_tensor(out, dtype=dtype, device=device)
    if isinstance(x, np.ndarray):
        dtype = x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64
        return x, lambda out: np.asarray(out, dtype=dtype)
    if isinstance(x, (list, tuple)):
        return np.asarray(x, dtype=np.float64), lambda out: np.asarray(out, dtype=np.float64)
    raise TypeError(f"rewards must be a numpy array, torch tensor or nested list, got {type(x).__name__}")


def _check_rewards(values: np.ndarray) -> np.ndarray:
    if values.ndim != 2:
        raise ValueError(
            f"rewards must have shape [N, K] (samples x reward components), got shape {tuple(values.shape)}; "
            "for a single reward use rewards.reshape(-1, 1)"
        )
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == bool):
        raise TypeError(f"rewards must be numeric, got dtype {values.dtype}")
    values = values.astype(np.float64, copy=False)
    bad = np.isinf(values)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise ValueError(
            f"rewards contain inf (first at row {i}, column {j}: {values[i, j]}); "
            "clip the reward to a finite range, or use NaN to mark 'not applicable'"
        )
    return values


def _check_group_ids(group_ids, n: int) -> np.ndarray:
    try:
        import torch

        if isinstance(group_ids, torch.Tensor):
            group_ids = group_ids.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    ids = np.asarray(group_ids)
    if ids.ndim != 1 or ids.shape[0] != n:
        raise ValueError(
            f"group_ids must have shape [N] = [{n}] (one id per reward row), got shape {tuple(ids.shape)}"
        )
    if ids.dtype.kind == "f":
        if np.isnan(ids).any():
            raise ValueError("group_ids contain NaN; give every sample the id of its prompt")
    elif ids.dtype.kind not in "iubUSO":
        raise TypeError(f"group_ids must be ints or strings, got dtype {ids.dtype}")
    if ids.dtype.kind == "O":
        ids = ids.astype(str)
    return ids


def _check_weights(weights, k: int) -> np.ndarray:
    if weights is None:
        return np.ones(k, dtype=np.float64)
    try:
        import torch

        if isinstance(weights, torch.Tensor):
            weights = weights.detach().cpu().numpy()
    except ImportError:  # pragma: no cover
        pass
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.shape[0] != k:
        raise ValueError(f"got {w.shape[0]} weights {w.tolist()} for {k} reward columns; give exactly one weight per reward")
    if not np.all(np.isfinite(w)):
        raise ValueError(f"weights must be finite, got {w.tolist()}")
    if np.any(w < 0):
        raise ValueError(
            f"weights must be non-negative, got {w.tolist()}; to penalize something, make its reward negative instead"
        )
    if k > 0 and not np.any(w > 0):
        raise ValueError(f"all weights are zero ({w.tolist()}); at least one reward must count")
    return w


def _check_lengths(lengths, n: int) -> np.ndarray:
    arr, _ = _to_numpy(lengths)
    arr = np.asarray(arr, dtype=np.float64).reshape(-1)
    if arr.shape[0] != n:
        raise ValueError(f"lengths must have one entry per sample ({n}), got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError(f"lengths must be finite and non-negative token counts, got min {arr.min()}, max {arr.max()}")
    return arr
