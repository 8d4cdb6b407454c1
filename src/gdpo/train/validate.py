"""Cross-field checks of a :class:`~gdpo.train.config.TrainConfig` (each states the rule)."""

from __future__ import annotations

from typing import Any

from gdpo.train.config_io import ConfigError, check_numbers


def validate(cfg: Any) -> None:
    """Raise :class:`ConfigError` for values that type checks cannot catch.

    First every number against its field's range (NaN and inf are never valid), then the rules
    that span fields. Runs before anything is written or loaded.
    """
    check_numbers(cfg)  # each int / float field inside the Range declared in gdpo.train.config
    _check_option_values(dict(cfg.method_options))
    _check_names(cfg)  # method and options, task and params, rewards (gdpo.schema): before anything loads
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


def _check_option_values(options: dict[str, Any]) -> None:
    """NaN / inf in any estimator option, and a negative eps, named by their config key. The
    method's name, its option names and the estimator's own value checks are
    :func:`gdpo.schema.check_estimator_options` (run next, by :func:`_check_names`)."""
    import math

    for key, value in options.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"method_options.{key} = {value!r} is not a finite number; give a finite value")
    eps = options.get("eps")
    if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0):
        raise ConfigError(f"method_options.eps = {eps!r} is out of range; it must be >= 0 (added to the std; "
                          f"default 1e-6)")


def _check_names(cfg: Any) -> None:
    """User-supplied names against their registries and signatures (:func:`gdpo.schema.check_train_config`)."""
    from gdpo import schema

    try:
        schema.check_train_config(cfg)
    except schema.SchemaError as exc:
        raise ConfigError(str(exc)) from None
