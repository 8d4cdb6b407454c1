"""Cross-field checks of a :class:`~gdpo.train.config.TrainConfig` (each states the rule)."""

from __future__ import annotations

import difflib
from typing import Any

from gdpo.train.config_io import ConfigError


def _positive(key: str, value: Any, minimum: float = 1) -> None:
    if value is None or value < minimum:
        raise ConfigError(f"{key} = {value!r} must be >= {minimum}")


def validate(cfg: Any) -> None:
    """Raise :class:`ConfigError` for values that type checks cannot catch."""
    _check_method(cfg)
    r, lo, up = cfg.rollout, cfg.loss, cfg.update
    _positive("steps", cfg.steps, 0)
    _positive("rollout.prompts_per_step", r.prompts_per_step)
    _positive("rollout.num_generations", r.num_generations, 2)
    _positive("rollout.max_new_tokens", r.max_new_tokens)
    _positive("rollout.max_prompt_tokens", r.max_prompt_tokens)
    if not r.temperature > 0:
        raise ConfigError(f"rollout.temperature = {r.temperature!r} must be > 0 (use a small value like 0.01 for near-greedy)")
    if not 0 < r.top_p <= 1:
        raise ConfigError(f"rollout.top_p = {r.top_p!r} must be in (0, 1]; 1 = off")
    _positive("rollout.top_k", r.top_k, 0)
    if not 0 < r.vllm_gpu_memory_utilization <= 1:
        raise ConfigError(f"rollout.vllm_gpu_memory_utilization = {r.vllm_gpu_memory_utilization!r} must be in "
                          f"(0, 1], a share of the GPU's memory (e.g. 0.3 next to the policy)")
    for key in ("eps_low", "eps_high", "beta", "entropy_coef"):
        _positive(f"loss.{key}", getattr(lo, key), 0)
    if lo.constant_normalizer is not None:
        _positive("loss.constant_normalizer", lo.constant_normalizer)
    _positive("update.ppo_epochs", up.ppo_epochs)
    _positive("update.num_minibatches", up.num_minibatches)
    _positive("update.micro_batch_size", up.micro_batch_size)
    n = r.prompts_per_step * r.num_generations
    if n % up.num_minibatches:
        raise ConfigError(
            f"update.num_minibatches = {up.num_minibatches} must divide the batch of "
            f"prompts_per_step x num_generations = {n} samples; try a divisor of {n}"
        )
    o = cfg.optim
    if not o.lr > 0:
        raise ConfigError(f"optim.lr = {o.lr!r} must be > 0")
    if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
        raise ConfigError(f"optim.betas = {o.betas!r} must be two numbers in [0, 1)")
    _positive("optim.warmup_steps", o.warmup_steps, 0)
    if o.max_grad_norm is not None:
        _positive("optim.max_grad_norm", o.max_grad_norm, 1e-12)
    _positive("checkpoint.every", cfg.checkpoint.every, 0)
    _positive("checkpoint.keep_last", cfg.checkpoint.keep_last)
    _positive("eval.every", cfg.eval.every, 0)
    _positive("logging.samples_every", cfg.logging.samples_every, 0)
    _check_distributed(cfg)


def _check_distributed(cfg: Any) -> None:
    """FSDP combinations this trainer does not support fail here, before any process loads a model."""
    if cfg.distributed.strategy != "fsdp":
        return
    if cfg.model.lora is not None:
        raise ConfigError("distributed.strategy = 'fsdp' with model.lora is not supported (the adapters are "
                          "small; sharding them saves little): set distributed.strategy=ddp, or model.lora=null "
                          "to train all weights with FSDP")
    if cfg.rollout.backend == "vllm":
        raise ConfigError("rollout.backend = 'vllm' does not gather FSDP-sharded weights for the engine; "
                          "set distributed.strategy=ddp or rollout.backend=hf")


def _check_method(cfg: Any) -> None:
    from gdpo.advantages import estimator_names, get_estimator

    if cfg.method not in estimator_names():
        close = difflib.get_close_matches(cfg.method, estimator_names(), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"method = {cfg.method!r} is not an advantage estimator.{hint} "
                          f"Valid: {', '.join(estimator_names())}")
    options = get_estimator(cfg.method).options
    for key in cfg.method_options:
        if key not in options or key == "lengths":
            valid = [k for k in options if k != "lengths"]
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            extra = " (use token_weighted_batch_norm: true for lengths)" if key == "lengths" else ""
            raise ConfigError(f"method_options.{key} is not an option of {cfg.method!r}.{hint}{extra} "
                              f"Valid: {', '.join(valid) or 'none'}")
    if cfg.token_weighted_batch_norm and "lengths" not in options:
        raise ConfigError(f"token_weighted_batch_norm = true needs a method with a batch step "
                          f"(gdpo, gdpo_no_std); {cfg.method!r} has none. Set it to false.")
