"""gdpo: multi-reward RL fine-tuning of language models (GDPO, GRPO and their ablations)."""

from gdpo.advantages import (
    compute_advantages,
    condition_reward,
    estimator_names,
    get_estimator,
    register_estimator,
)

__version__ = "0.1.0"

__all__ = [
    "compute_advantages",
    "condition_reward",
    "estimator_names",
    "get_estimator",
    "register_estimator",
    "__version__",
]
