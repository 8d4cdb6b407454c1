"""A built-in task that a tiny random-init model learns from scratch with RL alone.

Prompt: ``Say the letter q.`` The ideal reply is ``q`` and nothing else. Three binary rewards
of different difficulty for a random-init character-level model (base rates with the tiny
tokenizer's ~100 symbols and 8 new tokens, roughly):

* ``toy_starts_lower`` (easy, ~25%): the reply starts with a lowercase letter;
* ``toy_short`` (medium, ~5-10%): the reply has at most ``max_len`` characters (needs EOS);
* ``toy_letter`` (hard, ~8%, depends on the prompt): the reply contains the target letter.

``num_rewards=2`` uses ``toy_letter`` and ``toy_short``; ``num_rewards=3`` adds ``toy_starts_lower``.

>>> toy_letter(["xqz", "abc"], target=["q", "q"])
[1.0, 0.0]
"""

from __future__ import annotations

import random
import string
from typing import Any

from gdpo.data.base import Task, register_task
from gdpo.rewards.registry import register_reward
from gdpo.rewards.text import completion_texts


@register_reward("toy_letter", columns=("target",), description="1 if the reply contains the target letter")
def toy_letter(completions: list[str], target: list[str], **_: Any) -> list[float]:
    """1.0 where the completion contains its row's target letter, else 0.0."""
    completions = completion_texts(completions)
    return [1.0 if t in c else 0.0 for c, t in zip(completions, target)]


@register_reward("toy_short", columns=("max_len",), description="1 if the reply has at most max_len characters")
def toy_short(completions: list[str], max_len: list[int], **_: Any) -> list[float]:
    """1.0 where the stripped completion has at most ``max_len`` characters (and is non-empty)."""
    completions = completion_texts(completions)
    return [1.0 if 0 < len(c.strip()) <= int(m) else 0.0 for c, m in zip(completions, max_len)]


@register_reward("toy_starts_lower", description="1 if the reply starts with a lowercase letter")
def toy_starts_lower(completions: list[str], **_: Any) -> list[float]:
    """1.0 where the completion starts with a lowercase ASCII letter."""
    completions = completion_texts(completions)
    return [1.0 if c[:1] in string.ascii_lowercase and c[:1] else 0.0 for c in completions]


def _rows(n: int, letters: str, max_len: int, rng: random.Random) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        target = rng.choice(letters)
        rows.append({
            "prompt": [{"role": "user", "content": f"Say the letter {target}."}],
            "target": target,
            "max_len": max_len,
        })
    return rows


@register_task("toy")
def build_toy(num_train: int = 256, num_test: int = 64, seed: int = 0, letters: str = "abcdef",
              max_len: int = 3, num_rewards: int = 3) -> Task:
    """The toy task; ``letters`` are the possible targets, ``num_rewards`` is 2 or 3."""
    if num_rewards not in (2, 3):
        raise ValueError(f"toy task: num_rewards={num_rewards!r} must be 2 or 3")
    bad = [c for c in letters if c not in string.ascii_lowercase]
    if not letters or bad:
        raise ValueError(f"toy task: letters={letters!r} must be lowercase ASCII letters, e.g. 'abcdef'")
    if max_len < 1:
        raise ValueError(f"toy task: max_len={max_len!r} must be >= 1")
    rng = random.Random(seed)
    rewards = [{"name": "toy_letter"}, {"name": "toy_short"}]
    if num_rewards == 3:
        rewards.append({"name": "toy_starts_lower"})
    return Task(
        name="toy",
        train=_rows(num_train, letters, max_len, rng),
        test=_rows(num_test, letters, max_len, rng),
        rewards=rewards,
        description="Say one given letter, briefly; learnable from scratch by a tiny model.",
        info={"seed": seed, "letters": letters, "max_len": max_len, "num_rewards": num_rewards},
    )
