"""The trainer: multi-reward RL (GDPO, GRPO, ...) for Hugging Face causal LMs.

>>> from gdpo.train import train                                  # doctest: +SKIP
>>> result = train("configs/smoke.yaml", overrides=["steps=5"])   # doctest: +SKIP
>>> result.history[-1]["rewards/total/mean"]                      # doctest: +SKIP
"""

from gdpo.train.config import ConfigError, TrainConfig, config_from_dict, load_config


def __getattr__(name: str):
    # The loop is imported on first use, so that modules the loop itself imports (the rollout
    # backends, gdpo.train.fsdp, ...) can be imported without pulling the whole trainer in.
    if name in ("TrainResult", "train"):
        from gdpo.train import loop

        return getattr(loop, name)
    raise AttributeError(f"module 'gdpo.train' has no attribute {name!r}")


__all__ = ["ConfigError", "TrainConfig", "TrainResult", "config_from_dict", "load_config", "train"]
