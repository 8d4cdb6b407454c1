"""verl integration: our estimators in verl's advantage registry, our rewards as ``compute_score``.

Importable without verl (verl pins transformers < 5.11 and does not install beside gdpo's
stack); only :func:`register_with_verl` imports it. Checked against verl 0.9.1.

How the pieces meet in verl (0.9.x):

* ``compute_score(data_source, solution_str, ground_truth, extra_info, **reward_kwargs)``
  is called per response by the reward manager. Returning a dict puts every key into
  ``non_tensor_batch`` (``reward_extra_info``); ``"score"`` becomes the token-level reward.
  :func:`compute_score` returns ``"score"`` (the weighted, conditioned sum) plus one key per
  reward.
* verl's trainer hands the advantage function ``token_level_rewards`` [N, L],
  ``response_mask`` [N, L], ``index`` [N] (the prompt uid), ``config`` (the ``algorithm``
  section) and, only for the estimator named ``"gdpo"``, ``non_tensor_batch`` and ``batch``.
  The reward components are read from ``non_tensor_batch[key]`` for the keys in
  ``algorithm.gdpo_reward_keys``, weighted by ``algorithm.gdpo_reward_weights`` — verl's own
  GDPO settings, so configs written for verl's GDPO work unchanged.
* The function returns ``(advantages, returns)``, both [N, L], zero outside the mask.

Because verl passes the components only to the name ``"gdpo"``, :func:`register_with_verl`
by default installs our estimator under that name (replacing verl's built-in GDPO in this
process). Advantages are computed in verl's driver process (a Ray actor): register there,
e.g. through Ray's ``worker_process_setup_hook`` pointing at :func:`setup_ray_worker` (see
``docs/integrations.md``).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from gdpo.advantages import compute_advantages, get_estimator
from gdpo.rewards.reward_set import RewardSet

TESTED_VERL_VERSIONS = ("0.9",)
ENV_METHOD = "GDPO_VERL_METHOD"  # estimator for setup_ray_worker (default gdpo)
ENV_OPTIONS = "GDPO_VERL_OPTIONS"  # its options as JSON, e.g. {"eps": 1e-4}


# --------------------------------------------------------------------------------------
# The advantage adapter (plain torch; no verl needed)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VerlEstimator:
    """A gdpo estimator with verl's advantage-function signature.

    method: a registered gdpo estimator. options: its options. token_weighted: pass the
    response lengths so the batch step is token-weighted over the response mask, as verl's
    ``masked_whiten`` does (default True where the estimator has a batch step).
    """

    method: str = "gdpo"
    options: Mapping[str, Any] = field(default_factory=dict)
    token_weighted: bool | None = None

    def __post_init__(self) -> None:
        known = get_estimator(self.method).options  # raises for an unknown method, naming the valid ones
        bad = [k for k in self.options if k not in known or k == "lengths"]
        if bad:
            valid = sorted(k for k in known if k != "lengths")
            raise ValueError(f"option(s) {bad} are not options of {self.method!r}; valid: {valid or 'none'}")
        if self.token_weighted and "lengths" not in known:
            raise ValueError(f"token_weighted=True needs an estimator with a batch step; {self.method!r} has none")

    @property
    def uses_lengths(self) -> bool:
        if self.token_weighted is None:
            return "lengths" in get_estimator(self.method).options
        return self.token_weighted

    def __call__(self, token_level_rewards, response_mask, index=None, config=None, non_tensor_batch=None,
                 batch=None, **_: Any):
        """verl's call: -> (advantages [N, L], returns [N, L])."""
        import torch

        mask = response_mask.to(torch.float32)  # [N, L]
        n = mask.shape[0]
        rewards, weights = reward_components(token_level_rewards, config, non_tensor_batch)  # [N, K], [K]
        group_ids = _group_ids(index, n)
        options = dict(self.options)
        if self.uses_lengths:
            options["lengths"] = mask.sum(dim=1).cpu().numpy()  # [N]
        adv = compute_advantages(rewards, group_ids, self.method, weights, **options)  # [N]
        adv_t = torch.as_tensor(np.asarray(adv), dtype=torch.float32, device=mask.device)
        advantages = adv_t.unsqueeze(1) * mask  # [N, L]
        return advantages, advantages


def reward_components(token_level_rewards, config: Any = None,
                      non_tensor_batch: Mapping[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The reward matrix [N, K] and weights [K] verl's batch carries.

    With ``config.gdpo_reward_keys`` the components are read from ``non_tensor_batch``;
    otherwise the single reward is the sequence sum of ``token_level_rewards`` [N, L].
    """
    keys = _config_get(config, "gdpo_reward_keys")
    if not keys:
        total = token_level_rewards.sum(dim=-1).detach().to("cpu").double().numpy()  # [N]
        return total[:, None], np.ones(1)
    if non_tensor_batch is None:
        raise ValueError(
            f"algorithm.gdpo_reward_keys = {list(keys)} is set, but verl passed no non_tensor_batch: verl passes "
            "the reward components only to the estimator named 'gdpo'. Register with "
            "register_with_verl(name='gdpo') and set algorithm.adv_estimator=gdpo."
        )
    missing = [k for k in keys if k not in non_tensor_batch]
    if missing:
        raise KeyError(
            f"reward component(s) {missing} are not in verl's non_tensor_batch (keys: {sorted(non_tensor_batch)}); "
            "make compute_score return them (gdpo.integrations.verl.compute_score returns one key per reward)"
        )
    matrix = np.stack([np.asarray(non_tensor_batch[k], dtype=np.float64) for k in keys], axis=1)  # [N, K]
    weights = _config_get(config, "gdpo_reward_weights")
    w = np.ones(len(keys)) if weights is None else np.asarray(list(weights), dtype=np.float64)
    if w.shape[0] != len(keys):
        raise ValueError(f"algorithm.gdpo_reward_weights has {w.shape[0]} values for {len(keys)} gdpo_reward_keys")
    return matrix, w


def _config_get(config: Any, key: str) -> Any:
    if config is None:
        return None
    if isinstance(config, Mapping):
        return config.get(key)
    getter = getattr(config, "get", None)
    return getter(key, None) if callable(getter) else getattr(config, key, None)


def _group_ids(index: Any, n: int) -> np.ndarray:
    if index is None:
        raise ValueError("verl passed no index (prompt uid): GRPO-style estimators need the groups; "
                         "keep verl's default uid column")
    ids = np.asarray(index)
    if ids.dtype == object:
        ids = ids.astype(str)
    if ids.shape != (n,):
        raise ValueError(f"index has shape {ids.shape}, expected ({n},) (one uid per response)")
    return ids


# --------------------------------------------------------------------------------------
# Registration (needs verl)
# --------------------------------------------------------------------------------------
def verl_version() -> str | None:
    """The installed verl version, or None when verl is not installed."""
    from importlib import metadata

    try:
        return metadata.version("verl")
    except metadata.PackageNotFoundError:
        return None


def register_with_verl(method: str = "gdpo", *, name: str = "gdpo", replace_builtin: bool = True,
                       options: Mapping[str, Any] | None = None, token_weighted: bool | None = None) -> VerlEstimator:
    """Put a gdpo estimator into verl's advantage-estimator registry under ``name``.

    ``name="gdpo"`` replaces verl's built-in GDPO (``replace_builtin`` must stay True), so
    that verl passes the reward components; another name registers alongside verl's
    estimators (it then sees only the summed reward). Returns the registered callable.
    """
    version = verl_version()
    if version is None:
        raise ImportError("register_with_verl needs verl (`pip install verl`, in an environment with "
                          "transformers < 5.11); the adapter itself (VerlEstimator) works without it")
    major_minor = ".".join(version.split(".")[:2])
    if major_minor not in TESTED_VERL_VERSIONS:
        import warnings

        warnings.warn(f"verl {version} is not a tested version ({', '.join(TESTED_VERL_VERSIONS)})", stacklevel=2)
    from verl.trainer.ppo import core_algos

    estimator = VerlEstimator(method, dict(options or {}), token_weighted)
    registry = core_algos.ADV_ESTIMATOR_REGISTRY
    if name in registry and registry[name] is not estimator:
        if not replace_builtin:
            raise ValueError(f"verl already has an advantage estimator {name!r}; pass replace_builtin=True "
                             "or pick another name")
        del registry[name]
    core_algos.register_adv_est(name)(estimator)
    return estimator


def setup_ray_worker() -> None:
    """Ray ``worker_process_setup_hook``: register the estimator named by the environment.

    ``GDPO_VERL_METHOD`` (default ``gdpo``) and ``GDPO_VERL_OPTIONS`` (JSON) choose it; it is
    installed as verl's ``gdpo``. Processes without verl are left alone.
    """
    if verl_version() is None:
        return
    options = json.loads(os.environ.get(ENV_OPTIONS) or "{}")
    register_with_verl(os.environ.get(ENV_METHOD) or "gdpo", options=options)


# --------------------------------------------------------------------------------------
# compute_score: per-reward components for verl's reward manager
# --------------------------------------------------------------------------------------
_REWARD_SETS: dict[str, RewardSet] = {}


def reward_set_for(rewards: Sequence[Mapping[str, Any] | str]) -> RewardSet:
    """A cached :class:`RewardSet` for reward config entries (verl calls per response)."""
    key = json.dumps(list(rewards), sort_keys=True, default=str)
    if key not in _REWARD_SETS:
        _REWARD_SETS[key] = RewardSet.from_config(list(rewards))
    return _REWARD_SETS[key]


def compute_score(data_source: Any = None, solution_str: str = "", ground_truth: Any = None,
                  extra_info: Mapping[str, Any] | None = None, *, rewards: Sequence[Any] | None = None,
                  ground_truth_column: str = "answer", **_: Any) -> dict[str, float]:
    """verl's ``compute_score``: ``{"score": weighted sum, <reward>: value, ...}``.

    ``rewards`` (from ``reward.custom_reward_function.reward_kwargs.rewards``) are reward
    config entries, conditions included. The row's columns are ``extra_info`` plus
    ``ground_truth`` under ``ground_truth_column``. A reward that does not apply scores 0 in
    the dict (verl's batch cannot hold None) and adds nothing to the score.
    """
    if not rewards:
        raise ValueError("compute_score needs rewards=[...] (set reward.custom_reward_function.reward_kwargs.rewards "
                         "to reward names or {name, weight, params, condition} entries)")
    reward_set = reward_set_for(rewards)
    columns = {key: [value] for key, value in dict(extra_info or {}).items()}
    columns[ground_truth_column] = [ground_truth]
    columns = {k: v for k, v in columns.items() if not k.startswith("_")}
    scores = reward_set.score([solution_str], **columns)
    row = scores.values[0]  # [K]
    result = {name: (0.0 if math.isnan(v) else float(v)) for name, v in zip(scores.names, row)}
    result["score"] = float(np.nansum(row * scores.weights)) if not np.all(np.isnan(row)) else 0.0
    return result


__all__ = ["VerlEstimator", "reward_components", "register_with_verl", "setup_ray_worker", "compute_score",
           "reward_set_for", "verl_version"]
