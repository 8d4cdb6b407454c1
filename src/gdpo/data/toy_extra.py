"""Extra cheap rewards for the toy task (``Say the letter q.``), and the reward transforms.

Importing this module registers the rewards below and, through ``gdpo.rewards.transforms``,
the ``noisy`` / ``negated`` / ``anti`` factories; ``gdpo.rewards.builtin`` imports it. (The
robustness configs in ``configs/compare/`` predate that and load it by naming one of its
rewards by import path, ``{name: "gdpo.data.toy_extra:toy_exact", weight: 0}``: weight 0 =
tracked, not trained on.)

* ``toy_exact``: the reply is exactly the target letter (the ideal answer), a monitor;
* ``toy_no_upper`` / ``toy_no_digit`` / ``toy_no_space`` / ``toy_no_punct``: the stripped reply
  has no uppercase letter / digit / inner space / punctuation;
* ``toy_ends_lower``: the stripped reply ends with a lowercase letter;
* ``toy_one_char``: the stripped reply is one character;
* ``toy_nonempty``: the stripped reply is not empty;
* ``toy_zero``: always 0, a base for pure noise (``{name: noisy, params: {reward: toy_zero, std: 0.1}}``).

Every one is a string test per completion: they exist to grow K cheaply (benchmarks) and as
extra objectives of different difficulty.

>>> toy_exact([" q ", "qq"], target=["q", "q"])
[1.0, 0.0]
"""

from __future__ import annotations

import string
from typing import Any

import gdpo.rewards.transforms  # noqa: F401  (registers noisy / negated / anti)
from gdpo.rewards.registry import register_reward
from gdpo.rewards.text import completion_texts


@register_reward("toy_exact", columns=("target",), description="1 if the stripped reply is exactly the target letter")
def toy_exact(completions: list[str], target: list[str], **_: Any) -> list[float]:
    return [1.0 if c.strip() == t else 0.0 for c, t in zip(completion_texts(completions), target)]


def _all(pred, completions: list[str]) -> list[float]:
    return [1.0 if pred(c.strip()) else 0.0 for c in completion_texts(completions)]


@register_reward("toy_no_upper", description="1 if the reply has no uppercase letter")
def toy_no_upper(completions: list[str], **_: Any) -> list[float]:
    return _all(lambda s: not any(ch in string.ascii_uppercase for ch in s), completions)


@register_reward("toy_no_digit", description="1 if the reply has no digit")
def toy_no_digit(completions: list[str], **_: Any) -> list[float]:
    return _all(lambda s: not any(ch.isdigit() for ch in s), completions)


@register_reward("toy_no_space", description="1 if the stripped reply has no inner whitespace")
def toy_no_space(completions: list[str], **_: Any) -> list[float]:
    return _all(lambda s: not any(ch.isspace() for ch in s), completions)


@register_reward("toy_no_punct", description="1 if the reply has no punctuation")
def toy_no_punct(completions: list[str], **_: Any) -> list[float]:
    return _all(lambda s: not any(ch in string.punctuation for ch in s), completions)


@register_reward("toy_ends_lower", description="1 if the stripped reply ends with a lowercase letter")
def toy_ends_lower(completions: list[str], **_: Any) -> list[float]:
    return _all(lambda s: s[-1:] in string.ascii_lowercase and bool(s), completions)


@register_reward("toy_one_char", description="1 if the stripped reply is one character")
def toy_one_char(completions: list[str], **_: Any) -> list[float]:
    return _all(lambda s: len(s) == 1, completions)


@register_reward("toy_nonempty", description="1 if the stripped reply is not empty")
def toy_nonempty(completions: list[str], **_: Any) -> list[float]:
    return _all(lambda s: bool(s), completions)


@register_reward("toy_zero", description="always 0 (wrap it in noisy for a pure-noise reward)")
def toy_zero(completions: list[str], **_: Any) -> list[float]:
    return [0.0] * len(completions)


EXTRA_REWARDS = ("toy_exact", "toy_no_upper", "toy_no_digit", "toy_no_space", "toy_no_punct",
                 "toy_ends_lower", "toy_one_char", "toy_nonempty", "toy_zero")
