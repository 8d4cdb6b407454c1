"""The trainer: multi-reward RL (GDPO, GRPO, ...) for Hugging Face causal LMs.

>>> from gdpo.train import train                                  # doctest: +SKIP
>>> result = train("configs/smoke.yaml", overrides=["steps=5"])   # doctest: +SKIP
>>> result.history[-1]["rewards/total/mean"]                      # doctest: +SKIP
"""

from gdpo.train.config import ConfigError, TrainConfig, config_from_dict, load_config
from gdpo.train.loop import TrainResult, train

__all__ = ["ConfigError", "TrainConfig", "TrainResult", "config_from_dict", "load_config", "train"]
