"""TRL integration: our rewards, estimators and config inside TRL's ``GRPOTrainer``.

Three pieces, each usable alone:

* **Rewards.** Every gdpo reward already follows TRL's ``reward_funcs`` convention
  (``fn(completions, **columns) -> list[float | None]``) and can be passed as is for
  plain-text datasets. :func:`trl_rewards` wraps a reward set for TRL: one callable per
  reward, named after it (TRL logs ``rewards/<name>/mean``), reading conversational
  completions, and giving a sample on which the reward raises the reward's floor instead of
  stopping the run. Conditions (the paper's Eq. 8) need the whole reward matrix, so they
  are applied by :class:`GDPOTrainer`, not by the callables.
* **Estimators.** :class:`GDPOTrainer` is TRL's ``GRPOTrainer`` with the advantage step
  replaced by :func:`gdpo.compute_advantages` on the gathered per-reward matrix. That adds
  what TRL lacks: any registered estimator (``gdpo_no_std``, ``gdpo_no_bn``, leave-one-out,
  custom ones), conditioned rewards, the token-weighted batch step (verl's), and per-reward
  collapse diagnostics in the logs (``gdpo/distinct_advantages_per_group``,
  ``gdpo/<reward>/zero_spread_frac``).
* **Config.** :func:`to_grpo_config` / :func:`from_grpo_config` convert between our
  :class:`~gdpo.train.config.TrainConfig` and TRL's ``GRPOConfig`` for the fields both have;
  :data:`UNMAPPED_TRAIN_FIELDS` and :data:`UNMAPPED_TRL_FIELDS` say what does not map.

Where the override sits (TRL 1.16): ``GRPOTrainer._calculate_rewards`` returns the reward
matrix [N, K] gathered over processes; ``_generate_and_score_completions`` turns it into
advantages inline and returns them in its output dict. We condition and keep the matrix in
the first hook, and replace ``output["advantages"]`` (this process's slice) after the second
one returns. TRL's own advantage arithmetic still runs (it is cheap) but is discarded.

Importing this module imports ``trl`` and checks its version (:func:`check_trl_version`).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from gdpo.advantages import compute_advantages, condition_reward, get_estimator
from gdpo.analysis import distinct_values_per_group, zero_spread_fraction
from gdpo.rewards.reward_set import RewardSet, RewardSpec
from gdpo.rewards.text import completion_text
from gdpo.train.config import TrainConfig

MIN_TRL_VERSION = "1.16"
TESTED_TRL_VERSIONS = ("1.16",)

# Private GRPOTrainer methods we hook, with the parameters we rely on (after ``self``).
TRL_HOOKS = {
    "_calculate_rewards": ("inputs", "prompts", "completions", "completion_ids_list"),
    "_generate_and_score_completions": ("inputs",),
}


class UnsupportedTRLVersion(ImportError):
    """The installed TRL is one this adapter cannot hook into."""


def check_trl_version(version: str) -> None:
    """Raise :class:`UnsupportedTRLVersion` below :data:`MIN_TRL_VERSION`; warn past the tested ones."""
    from packaging.version import Version

    parsed = Version(version)
    if parsed < Version(MIN_TRL_VERSION):
        raise UnsupportedTRLVersion(
            f"gdpo.integrations.trl needs trl >= {MIN_TRL_VERSION} (tested: {', '.join(TESTED_TRL_VERSIONS)}), "
            f"found trl {version}; upgrade with `pip install -U 'trl>={MIN_TRL_VERSION}'`"
        )
    if f"{parsed.major}.{parsed.minor}" not in TESTED_TRL_VERSIONS:
        warnings.warn(
            f"trl {version} is newer than the versions gdpo.integrations.trl was tested with "
            f"({', '.join(TESTED_TRL_VERSIONS)}); the hooks are checked, but run tests/integrations first",
            stacklevel=2,
        )


def check_trl_hooks(trainer_cls: type) -> None:
    """Raise :class:`UnsupportedTRLVersion` if ``trainer_cls`` lacks a hook we override."""
    for name, expected in TRL_HOOKS.items():
        method = getattr(trainer_cls, name, None)
        if method is None:
            raise UnsupportedTRLVersion(
                f"{trainer_cls.__name__} has no method {name!r}, which GDPOTrainer overrides; this TRL "
                f"version is not supported (tested: {', '.join(TESTED_TRL_VERSIONS)})"
            )
        params = tuple(inspect.signature(method).parameters)[1:]
        if params != expected:
            raise UnsupportedTRLVersion(
                f"{trainer_cls.__name__}.{name} takes {params}, GDPOTrainer expects {expected}; this TRL version "
                f"is not supported (tested: {', '.join(TESTED_TRL_VERSIONS)})"
            )


import torch  # noqa: E402
import trl  # noqa: E402

check_trl_version(trl.__version__)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

check_trl_hooks(GRPOTrainer)


# --------------------------------------------------------------------------------------
# Rewards as TRL reward_funcs
# --------------------------------------------------------------------------------------
# Keyword arguments TRL passes to reward functions that are not dataset columns.
TRL_CONTROL_KWARGS = frozenset({"trainer_state", "log_extra", "log_metric", "environments", "completion_ids"})


def dataset_columns(kwargs: Mapping[str, Any], n: int) -> dict[str, list[Any]]:
    """The keyword arguments TRL passed that are dataset columns aligned with ``n`` completions."""
    return {
        key: value for key, value in kwargs.items()
        if key not in TRL_CONTROL_KWARGS and isinstance(value, list) and len(value) == n
    }


class TRLReward:
    """One gdpo reward as a TRL reward function (``__name__`` = the reward's name).

    A sample on which the reward raises gets the reward's floor (the error is counted in
    :attr:`errors`); ``None`` comes back where the reward does not apply.
    """

    def __init__(self, spec: RewardSpec, extra_params: Mapping[str, Any] | None = None):
        unconditioned = dataclasses.replace(spec, condition=None, weight=1.0)
        self._reward_set = RewardSet([unconditioned], extra_params=extra_params)
        self.__name__ = spec.name
        self.reward_name = spec.name
        self.errors = 0

    def __call__(self, completions: list[Any], **kwargs: Any) -> list[float | None]:
        texts = [completion_text(c) for c in completions]
        scores = self._reward_set.score(texts, **dataset_columns(kwargs, len(texts)))
        self.errors += scores.errors[self.reward_name].count
        return [None if math.isnan(v) else float(v) for v in scores.values[:, 0]]

    def __repr__(self) -> str:
        return f"TRLReward({self.reward_name!r})"


@dataclass(frozen=True)
class RewardCondition:
    """Reward ``target`` counts only where reward ``on`` >= ``threshold``; elsewhere ``floor``."""

    target: str
    on: str
    threshold: float = 1.0
    floor: float = 0.0


@dataclass
class TRLRewards:
    """What a reward set becomes in TRL: ``reward_funcs``, ``reward_weights`` and conditions."""

    funcs: list[TRLReward]
    weights: list[float]
    conditions: list[RewardCondition]

    @property
    def names(self) -> list[str]:
        return [f.reward_name for f in self.funcs]


def trl_rewards(rewards: RewardSet | Sequence[Mapping[str, Any] | str], *, tokenizer: Any = None) -> TRLRewards:
    """Turn a reward set (or its config entries) into TRL reward functions, weights and conditions.

    ``tokenizer`` reaches configurable rewards that count tokens (``math_length``, ...).
    Pass ``funcs`` as ``reward_funcs``, ``weights`` as ``GRPOConfig.reward_weights`` and
    ``conditions`` to :class:`GDPOTrainer` (a plain ``GRPOTrainer`` cannot apply them).
    """
    reward_set = rewards if isinstance(rewards, RewardSet) else RewardSet.from_config(list(rewards))
    extra = {"tokenizer": tokenizer} if tokenizer is not None else {}
    funcs = [TRLReward(spec, extra) for spec in reward_set.specs]
    conditions = []
    for spec, floor in zip(reward_set.specs, reward_set.floors):
        if spec.condition is not None:
            on, threshold = spec.condition
            conditions.append(RewardCondition(spec.name, on, float(threshold), float(floor)))
    return TRLRewards(funcs, [float(w) for w in reward_set.weights], conditions)


# --------------------------------------------------------------------------------------
# Advantages: the pure step GDPOTrainer runs on each generation batch
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AdvantageSettings:
    """Which estimator replaces TRL's advantage step, and how."""

    method: str = "gdpo"
    options: Mapping[str, Any] = field(default_factory=dict)
    token_weighted_batch_norm: bool = False  # pass response lengths (verl-style batch step)

    def __post_init__(self) -> None:
        known = get_estimator(self.method).options  # raises for an unknown method, naming the valid ones
        for key in self.options:
            if key not in known or key == "lengths":
                valid = sorted(k for k in known if k != "lengths")
                extra = " (use token_weighted_batch_norm=True for lengths)" if key == "lengths" else ""
                raise ValueError(
                    f"advantage option {key!r} is not an option of {self.method!r}{extra}; valid: {valid or 'none'}"
                )
        if self.token_weighted_batch_norm and "lengths" not in known:
            raise ValueError(
                f"token_weighted_batch_norm=True needs an estimator with a batch step "
                f"({', '.join(_methods_with_lengths())}); {self.method!r} has none. Set it to False or pick another method."
            )


def _methods_with_lengths() -> list[str]:
    """Registered estimators that take ``lengths`` (those with a batch step)."""
    from gdpo.advantages import estimator_names, get_estimator

    return [name for name in estimator_names() if "lengths" in get_estimator(name).options]


@dataclass
class AdvantageBatch:
    """One generation batch as the estimator saw it, with the collapse diagnostics."""

    rewards: np.ndarray  # [N, K] after conditions, NaN = not applicable
    group_ids: np.ndarray  # [N]
    weights: np.ndarray  # [K]
    lengths: np.ndarray | None  # [N] response tokens, when the batch step is token-weighted
    advantages: np.ndarray  # [N] float64
    distinct_per_group: np.ndarray  # [num_groups] distinct advantage values in each group
    zero_spread: np.ndarray  # [K] share of groups in which a reward has no spread

    @property
    def frac_groups_zero_advantage(self) -> float:
        """Share of groups in which every advantage is 0 (no learning signal)."""
        zero = np.isclose(self.advantages, 0.0, atol=1e-12)
        per_group = [zero[self.group_ids == g].all() for g in np.unique(self.group_ids)]
        return float(np.mean(per_group)) if per_group else 0.0


def batch_advantages(rewards: Any, num_generations: int, weights: Any, settings: AdvantageSettings,
                     lengths: Any = None) -> AdvantageBatch:
    """Advantages of a TRL generation batch: groups of ``num_generations`` contiguous samples.

    ``rewards`` [N, K] (tensor or array, NaN = not applicable), ``weights`` [K], ``lengths``
    [N] (only used with ``settings.token_weighted_batch_norm``).
    """
    values = _numpy(rewards).astype(np.float64)  # [N, K]
    n = values.shape[0]
    if num_generations < 1 or n % num_generations:
        raise ValueError(
            f"a batch of {n} samples cannot be split into groups of num_generations={num_generations}; "
            "TRL keeps whole groups, so this is a bug in the caller"
        )
    group_ids = np.arange(n) // num_generations  # [N]: TRL keeps a prompt's completions together
    w = _numpy(weights).astype(np.float64).reshape(-1)  # [K]
    options = dict(settings.options)
    token_lengths = None
    if settings.token_weighted_batch_norm:
        token_lengths = _numpy(lengths).astype(np.float64).reshape(-1)  # [N]
        options["lengths"] = token_lengths
    advantages = np.asarray(compute_advantages(values, group_ids, settings.method, w, **options))  # [N]
    return AdvantageBatch(
        rewards=values, group_ids=group_ids, weights=w, lengths=token_lengths, advantages=advantages,
        distinct_per_group=distinct_values_per_group(advantages, group_ids),
        zero_spread=zero_spread_fraction(values, group_ids),
    )


def apply_conditions(rewards: torch.Tensor, names: Sequence[str], conditions: Sequence[RewardCondition]) -> torch.Tensor:
    """Apply each condition to the reward matrix [N, K] (columns named by ``names``), in order."""
    for cond in conditions:
        rewards = condition_reward(rewards, target=names.index(cond.target), on=names.index(cond.on),
                                   threshold=cond.threshold, floor=cond.floor)
    return rewards


def check_conditions(conditions: Sequence[RewardCondition], names: Sequence[str]) -> list[RewardCondition]:
    """Validate conditions against the trainer's reward names; returns them as a list."""
    checked = []
    for cond in conditions:
        if not isinstance(cond, RewardCondition):
            raise TypeError(f"conditions must be RewardCondition objects, got {cond!r}; see trl_rewards(...).conditions")
        for role, name in (("target", cond.target), ("on", cond.on)):
            if name not in names:
                raise ValueError(
                    f"condition {role} {name!r} is not one of the trainer's reward functions {list(names)}; "
                    "name the reward function as TRL does (its __name__)"
                )
        if cond.target == cond.on:
            raise ValueError(f"reward {cond.target!r} cannot be conditioned on itself")
        checked.append(cond)
    return checked


def _numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x)


# --------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------
class GDPOTrainer(GRPOTrainer):
    """TRL's ``GRPOTrainer`` with gdpo's advantage estimators, reward conditions and diagnostics.

    Takes every ``GRPOTrainer`` argument, plus:

    advantage_method: a registered estimator (``gdpo``, ``grpo``, ``grpo_no_std``,
        ``gdpo_no_bn``, ``gdpo_no_std``, or one you registered).
    advantage_options: its options, e.g. ``{"eps": 1e-4, "leave_one_out": True}``.
    conditions: :class:`RewardCondition` list (from :func:`trl_rewards`), applied to the
        gathered reward matrix before the estimator, and seen by TRL's reward logging.
    token_weighted_batch_norm: token-weighted batch step over the loss mask (verl's).

    ``GRPOConfig.multi_objective_aggregation`` and ``scale_rewards`` are ignored (the
    estimator decides). ``last_advantage_batch`` holds the last batch's
    :class:`AdvantageBatch`.
    """

    def __init__(self, *args: Any, advantage_method: str = "gdpo", advantage_options: Mapping[str, Any] | None = None,
                 conditions: Sequence[RewardCondition] = (), token_weighted_batch_norm: bool = False, **kwargs: Any):
        # Validate our arguments before GRPOTrainer's (slow) construction.
        self.advantage_settings = AdvantageSettings(advantage_method, dict(advantage_options or {}),
                                                    token_weighted_batch_norm)
        super().__init__(*args, **kwargs)
        self.reward_conditions = check_conditions(conditions, self.reward_func_names)
        self.last_advantage_batch: AdvantageBatch | None = None
        self._gathered_rewards: torch.Tensor | None = None

    def _calculate_rewards(self, inputs, prompts, completions, completion_ids_list):
        rewards = super()._calculate_rewards(inputs, prompts, completions, completion_ids_list)  # [N_all, K]
        rewards = apply_conditions(rewards, self.reward_func_names, self.reward_conditions)
        self._gathered_rewards = rewards
        return rewards

    def _generate_and_score_completions(self, inputs):
        output = super()._generate_and_score_completions(inputs)
        rewards, self._gathered_rewards = self._gathered_rewards, None
        mode = "train" if self.model.training else "eval"
        num_generations = self.num_generations if mode == "train" else self.num_generations_eval
        lengths = self._gathered_lengths(output) if self.advantage_settings.token_weighted_batch_norm else None
        batch = batch_advantages(rewards, num_generations, self.reward_weights, self.advantage_settings, lengths)
        local_n = output["completion_ids"].shape[0]
        start = self.accelerator.process_index * local_n
        old = output["advantages"]
        output["advantages"] = torch.as_tensor(batch.advantages[start:start + local_n], dtype=old.dtype,
                                               device=old.device)
        self._replace_logged_advantages(batch.advantages)
        self._log_diagnostics(mode, batch)
        self.last_advantage_batch = batch
        return output

    def _gathered_lengths(self, output: Mapping[str, Any]) -> torch.Tensor:
        """Loss-mask tokens per completion [N_all], gathered over processes."""
        mask = output["completion_mask"]
        if output.get("tool_mask") is not None:
            mask = mask * output["tool_mask"]
        return self.accelerator.gather(mask.sum(dim=1))

    def _replace_logged_advantages(self, advantages: np.ndarray) -> None:
        """TRL's completion table logged its own advantages; show ours instead."""
        logged = self._logs["advantages"]
        n = len(advantages)
        if len(logged) >= n:
            for _ in range(n):
                logged.pop()
            logged.extend(float(a) for a in advantages)

    def _log_diagnostics(self, mode: str, batch: AdvantageBatch) -> None:
        metrics = self._metrics[mode]
        metrics["gdpo/distinct_advantages_per_group"].append(float(np.mean(batch.distinct_per_group)))
        metrics["gdpo/frac_groups_zero_advantage"].append(batch.frac_groups_zero_advantage)
        for name, share in zip(self.reward_func_names, batch.zero_spread):
            metrics[f"gdpo/{name}/zero_spread_frac"].append(float(share))


# --------------------------------------------------------------------------------------
# TrainConfig <-> GRPOConfig
# --------------------------------------------------------------------------------------
# Our fields with no GRPOConfig counterpart, and where that setting goes instead.
UNMAPPED_TRAIN_FIELDS: dict[str, str] = {
    "model.name": "the model goes to GRPOTrainer(model=...); load it with gdpo.models.load_model_and_tokenizer",
    "model.init_seed": "only for the 'tiny' model, built before the trainer",
    "model.tiny": "only for the 'tiny' model, built before the trainer",
    "model.lora": "goes to trainer_kwargs['peft_config'] (a peft.LoraConfig)",
    "task.name": "the data goes to GRPOTrainer(train_dataset=...); build it with gdpo.data.get_task",
    "task.params": "the data goes to GRPOTrainer(train_dataset=...)",
    "method_options": "goes to trainer_kwargs['advantage_options'] (GDPOTrainer)",
    "token_weighted_batch_norm": "goes to trainer_kwargs['token_weighted_batch_norm'] (GDPOTrainer)",
    "rewards": "names and params become reward_funcs (trl_rewards), conditions go to GDPOTrainer; only the "
               "weights map (reward_weights)",
    "rollout.max_prompt_tokens": "TRL 1.16 has no prompt truncation option; truncate the data",
    "loss.kl_estimator": "TRL's KL term is always k3",
    "loss.constant_normalizer": "TRL's dr_grpo always divides by max_completion_length",
    "update.dynamic_sampling": "TRL 1.16 has no group filter",
    "logging.project": "set the WANDB_PROJECT / MLFLOW_EXPERIMENT_NAME environment variables",
    "logging.samples_every": "TRL logs completions every logging step (log_completions)",
    "logging.num_samples": "TRL: num_completions_to_print",
    "logging.progress": "TRL uses the transformers progress bar",
    "checkpoint.save_final_model": "call trainer.save_model() after train()",
    "eval.num_prompts": "pass eval_dataset=test_rows[:num_prompts]",
}

# GRPOConfig fields with no TrainConfig counterpart that change training when set.
UNMAPPED_TRL_FIELDS: dict[str, str] = {
    "scale_rewards": "'batch' has no counterpart (group -> grpo, none -> grpo_no_std)",
    "importance_sampling_level": "sequence-level ratios (GSPO) are not implemented",
    "delta": "two-sided clipping is not implemented",
    "top_entropy_quantile": "high-entropy token masking is not implemented",
    "mask_truncated_completions": "truncated completions always count",
    "use_vllm": "rollouts use HF generate",
    "sync_ref_model": "the reference model is frozen",
    "min_p": "no min-p sampling",
    "repetition_penalty": "no repetition penalty",
    "use_adaptive_entropy": "the entropy coefficient is fixed",
    "off_policy_mask_threshold": "no off-policy masking",
    "num_generations_eval": "evaluation is greedy, one completion per prompt",
    "generation_kwargs": "no extra generation arguments",
}

_TRL_LOSS_TYPES = {"token_mean": "dapo", "seq_mean": "grpo", "constant": "dr_grpo"}
_BACKENDS = ("tensorboard", "wandb", "mlflow")


@dataclass
class DroppedField:
    """A set field that the conversion could not carry over."""

    name: str
    value: Any
    reason: str


@dataclass
class ToTRL:
    """``to_grpo_config``'s result."""

    config: Any  # trl.GRPOConfig
    trainer_kwargs: dict[str, Any]  # for GDPOTrainer (and peft_config for GRPOTrainer)
    dropped: list[DroppedField]  # our non-default fields that did not map
    needs_gdpo_trainer: bool  # False when TRL's own advantage step computes the same method


@dataclass
class FromTRL:
    """``from_grpo_config``'s result."""

    config: TrainConfig
    dropped: list[DroppedField]  # non-default TRL fields that did not map


@dataclass(frozen=True)
class FieldMap:
    """One correspondence: our fields <-> TRL fields, with the conversion both ways."""

    to_trl: Callable[[TrainConfig], dict[str, Any]]  # our config -> {trl field: value}
    from_trl: Callable[[Any, TrainConfig], dict[str, Any]]  # (GRPOConfig, base) -> {our dotted path: value}


def _get(cfg: Any, path: str) -> Any:
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _set(cfg: Any, path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    setattr(cfg, last, value)


def _same(ours: str, theirs: str) -> FieldMap:
    return FieldMap(lambda c: {theirs: _get(c, ours)}, lambda a, base: {ours: getattr(a, theirs)})


def _batch_to_trl(c: TrainConfig, world_size: int) -> dict[str, Any]:
    """B x G samples per step, micro batches per process, optimizer steps per pass."""
    samples = c.rollout.prompts_per_step * c.rollout.num_generations
    per_step = c.update.micro_batch_size * world_size
    if samples % per_step:
        raise ValueError(
            f"TRL needs prompts_per_step x num_generations = {samples} to be a multiple of micro_batch_size x "
            f"world_size = {per_step}; choose update.micro_batch_size dividing {samples // world_size}"
        )
    steps_per_generation = samples // per_step
    if steps_per_generation % c.update.num_minibatches:
        raise ValueError(
            f"TRL needs update.num_minibatches = {c.update.num_minibatches} to divide the {steps_per_generation} "
            f"micro batches of a step; choose a divisor of {steps_per_generation}"
        )
    return {"per_device_train_batch_size": c.update.micro_batch_size, "steps_per_generation": steps_per_generation,
            "gradient_accumulation_steps": steps_per_generation // c.update.num_minibatches}


def _batch_from_trl(a: Any, world_size: int) -> dict[str, Any]:
    if a.steps_per_generation % a.gradient_accumulation_steps:
        raise ValueError(
            f"steps_per_generation = {a.steps_per_generation} is not a multiple of gradient_accumulation_steps = "
            f"{a.gradient_accumulation_steps}: TRL then trains on stale samples, which gdpo's trainer does not do. "
            "Make it a multiple."
        )
    return {"rollout.prompts_per_step": a.generation_batch_size // a.num_generations,
            "update.micro_batch_size": a.per_device_train_batch_size,
            "update.num_minibatches": a.steps_per_generation // a.gradient_accumulation_steps}


def _method_to_trl(c: TrainConfig) -> dict[str, Any]:
    if c.method == "grpo":
        return {"multi_objective_aggregation": "sum_then_normalize", "scale_rewards": "group"}
    if c.method == "grpo_no_std":
        return {"multi_objective_aggregation": "sum_then_normalize", "scale_rewards": "none"}
    return {"multi_objective_aggregation": "normalize_then_sum", "scale_rewards": "group"}  # nearest for GDPO kin


def _method_from_trl(a: Any, base: TrainConfig) -> dict[str, Any]:
    if a.multi_objective_aggregation == "normalize_then_sum":
        method = "gdpo"
    else:
        method = "grpo_no_std" if a.scale_rewards == "none" else "grpo"
    return {"method": method, "method_options": {"eps": 1e-4}}  # TRL adds 1e-4 to each std


def _schedule_to_trl(c: TrainConfig) -> dict[str, Any]:
    o = c.optim
    if o.lr_schedule == "constant":
        return {"lr_scheduler_type": "constant_with_warmup", "lr_scheduler_kwargs": {}}
    if o.min_lr_ratio > 0:
        return {"lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr_rate": o.min_lr_ratio}}
    return {"lr_scheduler_type": "cosine", "lr_scheduler_kwargs": {}}


def _schedule_from_trl(a: Any, base: TrainConfig) -> dict[str, Any]:
    kind = str(getattr(a.lr_scheduler_type, "value", a.lr_scheduler_type))
    if kind in ("constant", "constant_with_warmup"):
        return {"optim.lr_schedule": "constant", "optim.min_lr_ratio": 0.0}
    kwargs = a.lr_scheduler_kwargs or {}
    return {"optim.lr_schedule": "cosine", "optim.min_lr_ratio": float(kwargs.get("min_lr_rate", 0.0))}


def _aggregation_from_trl(a: Any, base: TrainConfig) -> dict[str, Any]:
    inverse = {v: k for k, v in _TRL_LOSS_TYPES.items()}
    return {"loss.aggregation": inverse.get(a.loss_type, "token_mean")}


def _every_to_trl(kind: str) -> Callable[[TrainConfig], dict[str, Any]]:
    def convert(c: TrainConfig) -> dict[str, Any]:
        every = c.checkpoint.every if kind == "save" else c.eval.every
        return {f"{kind}_strategy": "steps" if every else "no", f"{kind}_steps": every or 500}
    return convert


def _every_from_trl(kind: str, path: str) -> Callable[[Any, TrainConfig], dict[str, Any]]:
    def convert(a: Any, base: TrainConfig) -> dict[str, Any]:
        strategy = str(getattr(getattr(a, f"{kind}_strategy"), "value", getattr(a, f"{kind}_strategy")))
        return {path: int(getattr(a, f"{kind}_steps") or 0) if strategy == "steps" else 0}
    return convert


def _dtype_to_trl(c: TrainConfig) -> dict[str, Any]:
    if c.model.dtype == "auto":
        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    else:
        bf16 = c.model.dtype == "bfloat16"
    return {"bf16": bf16, "fp16": False}


def _weights_from_trl(a: Any, base: TrainConfig) -> dict[str, Any]:
    if a.reward_weights is None or base.rewards is None or len(base.rewards) != len(a.reward_weights):
        return {}  # dropped: see _dropped_trl_fields
    entries = [dict(e) if isinstance(e, Mapping) else {"name": e} for e in base.rewards]
    for entry, weight in zip(entries, a.reward_weights):
        entry["weight"] = float(weight)
    return {"rewards": entries}


def _reward_weights(c: TrainConfig) -> list[float] | None:
    if c.rewards is None:
        return None
    return [float(e.get("weight", 1.0)) if isinstance(e, Mapping) else 1.0 for e in c.rewards]


def field_maps(world_size: int = 1) -> list[FieldMap]:
    """Every TrainConfig <-> GRPOConfig correspondence (``world_size`` processes)."""
    return [
        _same("seed", "seed"), _same("steps", "max_steps"), _same("output_dir", "output_dir"),
        _same("rollout.num_generations", "num_generations"),
        _same("rollout.max_new_tokens", "max_completion_length"),
        _same("rollout.temperature", "temperature"), _same("rollout.top_p", "top_p"),
        _same("rollout.top_k", "top_k"),
        _same("loss.eps_low", "epsilon"), _same("loss.beta", "beta"),
        _same("loss.entropy_coef", "entropy_coef"),
        FieldMap(lambda c: {"epsilon_high": c.loss.eps_high},
                 lambda a, b: {"loss.eps_high": a.epsilon if a.epsilon_high is None else a.epsilon_high}),
        _same("optim.lr", "learning_rate"), _same("optim.weight_decay", "weight_decay"),
        _same("optim.warmup_steps", "warmup_steps"),
        _same("update.ppo_epochs", "num_iterations"),
        _same("model.gradient_checkpointing", "gradient_checkpointing"),
        FieldMap(lambda c: {"save_total_limit": c.checkpoint.keep_last},  # TRL's None = keep all: base's value
                 lambda a, b: {"checkpoint.keep_last": a.save_total_limit or b.checkpoint.keep_last}),
        _same("eval.batch_size", "per_device_eval_batch_size"),
        FieldMap(lambda c: {"adam_beta1": c.optim.betas[0], "adam_beta2": c.optim.betas[1]},
                 lambda a, b: {"optim.betas": [a.adam_beta1, a.adam_beta2]}),
        FieldMap(lambda c: {"max_grad_norm": c.optim.max_grad_norm or 0.0},
                 lambda a, b: {"optim.max_grad_norm": a.max_grad_norm or None}),
        FieldMap(lambda c: _batch_to_trl(c, world_size), lambda a, b: _batch_from_trl(a, world_size)),
        FieldMap(lambda c: {"loss_type": _TRL_LOSS_TYPES[c.loss.aggregation]}, _aggregation_from_trl),
        FieldMap(_method_to_trl, _method_from_trl),
        FieldMap(_schedule_to_trl, _schedule_from_trl),
        FieldMap(_every_to_trl("save"), _every_from_trl("save", "checkpoint.every")),
        FieldMap(_every_to_trl("eval"), _every_from_trl("eval", "eval.every")),
        FieldMap(lambda c: {"report_to": [b for b in _BACKENDS if getattr(c.logging, b)] or ["none"]},
                 lambda a, b: {f"logging.{k}": k in (a.report_to or []) for k in _BACKENDS}),
        FieldMap(_dtype_to_trl, lambda a, b: {"model.dtype": "bfloat16" if a.bf16 else "float32"}),
        FieldMap(lambda c: {"reward_weights": _reward_weights(c)}, _weights_from_trl),
    ]


def to_grpo_config(cfg: TrainConfig, *, world_size: int = 1, **overrides: Any) -> ToTRL:
    """Our :class:`TrainConfig` as a TRL ``GRPOConfig``, plus :class:`GDPOTrainer` keyword arguments.

    ``overrides`` are further ``GRPOConfig`` arguments (they win). Fields that do not map and
    differ from their defaults are listed in ``dropped`` (see :data:`UNMAPPED_TRAIN_FIELDS`).
    """
    values: dict[str, Any] = {}
    for mapping in field_maps(world_size):
        values.update(mapping.to_trl(cfg))
    if cfg.eval.every:
        values["num_generations_eval"] = 1  # ours: one (greedy) completion per test prompt
    values.update(overrides)
    trainer_kwargs: dict[str, Any] = {
        "advantage_method": cfg.method, "advantage_options": dict(cfg.method_options),
        "token_weighted_batch_norm": cfg.token_weighted_batch_norm,
    }
    if cfg.model.lora is not None:
        trainer_kwargs["peft_config"] = _peft_config(cfg.model.lora)
    native = cfg.method in ("grpo", "grpo_no_std", "gdpo") and not cfg.method_options \
        and not cfg.token_weighted_batch_norm and not _has_conditions(cfg)
    return ToTRL(GRPOConfig(**values), trainer_kwargs, _dropped_train_fields(cfg), needs_gdpo_trainer=not native)


def from_grpo_config(args: Any, base: TrainConfig | None = None, *, world_size: int = 1) -> FromTRL:
    """A TRL ``GRPOConfig`` as our :class:`TrainConfig`.

    Fields TRL lacks come from ``base`` (default: our defaults). Where a given ``base`` already
    holds a value that converts to the TRL value (``model.dtype: auto`` vs ``float32``,
    ``method: gdpo_no_std`` vs TRL's ``normalize_then_sum``), ``base``'s value is kept, so
    ``from_grpo_config(to_grpo_config(cfg).config, base=cfg)`` gives back ``cfg``.
    """
    from gdpo.train.validate import validate

    keep_base = base is not None
    base = base if base is not None else TrainConfig()
    out = copy.deepcopy(base)
    for mapping in field_maps(world_size):
        if keep_base and all(_equal(getattr(args, k), v) for k, v in mapping.to_trl(base).items()):
            continue  # base already says the same thing, possibly more precisely
        for path, value in mapping.from_trl(args, base).items():
            _set(out, path, value)
    validate(out)
    return FromTRL(out, _dropped_trl_fields(args, base))


def _equal(a: Any, b: Any) -> bool:
    a = getattr(a, "value", a)  # enums (IntervalStrategy, SchedulerType)
    b = getattr(b, "value", b)
    if isinstance(a, float) or isinstance(b, float):
        try:
            return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
        except (TypeError, ValueError):
            return False
    return a == b


def _has_conditions(cfg: TrainConfig) -> bool:
    return any(isinstance(e, Mapping) and e.get("condition") for e in (cfg.rewards or []))


def _peft_config(lora: Any) -> Any:
    import peft

    return peft.LoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                           target_modules=list(lora.target_modules), task_type="CAUSAL_LM")


# Unmapped fields that still reach TRL, through ToTRL.trainer_kwargs or trl_rewards().
_CARRIED = frozenset({"rewards", "method_options", "token_weighted_batch_norm", "model.lora"})


def _dropped_train_fields(cfg: TrainConfig) -> list[DroppedField]:
    defaults = TrainConfig()
    dropped = []
    for path, reason in UNMAPPED_TRAIN_FIELDS.items():
        value = _get(cfg, path)
        if path in _CARRIED or value == _get(defaults, path):
            continue
        if path == "loss.constant_normalizer" and value in (None, cfg.rollout.max_new_tokens):
            continue
        dropped.append(DroppedField(path, value, reason))
    return dropped


def _dropped_trl_fields(args: Any, base: TrainConfig) -> list[DroppedField]:
    defaults = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    dropped = []
    for name, reason in UNMAPPED_TRL_FIELDS.items():
        value = getattr(args, name, None)
        if name == "scale_rewards" and value != "batch":
            continue
        if name == "num_generations_eval" and value == 1:
            continue  # what to_grpo_config sets for our one-completion evaluation
        if name in defaults and value != defaults[name]:
            dropped.append(DroppedField(name, value, reason))
    if args.loss_type not in _TRL_LOSS_TYPES.values():
        dropped.append(DroppedField("loss_type", args.loss_type, "no counterpart; mapped to token_mean"))
    if args.reward_weights is not None and (base.rewards is None or len(base.rewards) != len(args.reward_weights)):
        dropped.append(DroppedField("reward_weights", args.reward_weights,
                                    "weights without reward names: give base= a config whose rewards list matches"))
    return dropped
