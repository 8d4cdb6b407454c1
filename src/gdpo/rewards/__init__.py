"""Rewards as plain callables: ``fn(completions, **columns) -> list[float | None]``."""

from gdpo.rewards.registry import (
    RewardEntry,
    entry,
    get,
    names,
    register_reward,
    register_reward_factory,
    unregister,
)

__all__ = ["RewardEntry", "entry", "get", "names", "register_reward", "register_reward_factory", "unregister"]
