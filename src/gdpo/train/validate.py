"""Cross-field checks of a :class:`~gdpo.train.config.TrainConfig` (each states the rule)."""

from __future__ import annotations

import difflib
from typing import Any

from gdpo.train.config_io import ConfigError, check_numbers


def validate(cfg: Any) -> None:
    """Raise :class:`ConfigError` for values that type checks cannot catch.

    First every number against its field's range (NaN and inf are never valid), then the rules
    that span fields. Runs before anything is written or loaded.
    """
    check_numbers(cfg)  # each int / float field inside the Range declared in gdpo.train.config
    _check_method(cfg)
    _check_names(cfg)  # task, task.params, rewards (gdpo.schema): before anything loads
    _check_batch(cfg)
    _check_optim(cfg)
    _check_tiny(cfg)
    _check_distributed(cfg)


def _check_batch(cfg: Any) -> None:
    n = cfg.rollout.prompts_per_step * cfg.rollout.num_generations
    if n % cfg.update.num_minibatches:
        raise ConfigError(
            f"update.num_minibatches = {cfg.update.num_minibatches} must divide the batch of "
            f"prompts_per_step x num_generations = {n} samples; try a divisor of {n}"
        )


def _check_optim(cfg: Any) -> None:
    if len(cfg.optim.betas) != 2:
        raise ConfigError(f"optim.betas = {cfg.optim.betas!r} must be two numbers in [0, 1), e.g. [0.9, 0.999]")


def _check_tiny(cfg: Any) -> None:
    t = cfg.model.tiny
    if cfg.model.name == "tiny" and (t.hidden_size % t.num_heads or (t.hidden_size // t.num_heads) % 2):
        raise ConfigError(f"model.tiny.hidden_size = {t.hidden_size} must be num_heads ({t.num_heads}) x an even "
                          f"head size (rotary embeddings); e.g. hidden_size = {t.num_heads * 16}")


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
    _check_option_values(cfg.method, dict(cfg.method_options))
    if cfg.token_weighted_batch_norm and "lengths" not in options:
        raise ConfigError(f"token_weighted_batch_norm = true needs a method with a batch step "
                          f"(gdpo, gdpo_no_std); {cfg.method!r} has none. Set it to false.")


def _check_option_values(method: str, options: dict[str, Any]) -> None:
    """NaN / inf / negative eps refused here; the estimator's own checks (when it has them) too."""
    import math

    from gdpo.advantages import check_options

    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"method_options.{key} = {value!r} is not a finite number; give a finite value")
    eps = options.get("eps")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0):
        raise ConfigError(f"method_options.eps = {eps!r} is out of range; it must be >= 0 (added to the std; "
                          f"default 1e-6)")
    try:
        check_options(method, options)  # the estimator's own checks of its option values
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method_options for {method!r}: {exc}") from None


def _check_names(cfg: Any) -> None:
    """User-supplied names against their registries and signatures (:func:`gdpo.schema.check_train_config`)."""
    from gdpo import schema

    try:
        schema.check_train_config(cfg)
    except schema.SchemaError as exc:
        raise ConfigError(str(exc)) from None
