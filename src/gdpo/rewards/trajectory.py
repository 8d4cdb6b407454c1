"""Trajectory rewards: they score a whole multi-turn episode, read from the ``episode`` column.

The multi-turn rollout (:mod:`gdpo.rollout.multi_turn`) puts each sample's
:class:`gdpo.envs.Episode` into its row; these rewards read it (TRL's convention,
``fn(completions, episode=..., **columns)``), so they combine with weights and conditions like
any other reward. A sample without an episode (a single-turn rollout) makes them raise, which
the reward set reports as a missing column.

* ``final_state_match`` in {0, 1} (or the environment's own [0, 1] score): the environment's
  verdict on its final state. BFCL: BFCL's ``state_checker`` between the episode's API
  instances and a fresh copy that replayed the ground-truth calls. ``toy_peek``: peeked, then
  answered the secret. None (not applicable) where the environment has no verdict.
* ``final_answer`` in {0, 1}: the episode ended with an answer (no call block) that holds the
  row's ``answer``: a number equal by value to a number in the text, else the text as a substring.
* ``turn_format`` in [0, 1]: share of model turns that are well formed: a readable
  ``<tool_call>`` block (as the environment parses it) or a non-empty answer without one.
* ``call_efficiency`` in [0, 1]: ``min(used, needed) / max(used, needed)`` (``needed`` = the
  row's ``needed_calls`` column, else the environment's count, e.g. BFCL's ground-truth calls):
  1 for exactly the calls needed, lower for too many and for too few (3 of 6 needed: 0.5; 6
  for 3 needed: 0.5); 1 when both are 0; None where ``needed`` is unknown.
* ``env_no_errors`` in {0, 1}: 1 iff no tool call failed and every call block was readable.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from gdpo.envs.base import Episode
from gdpo.rewards.registry import register_reward


def _episodes(episode: Sequence[Any]) -> list[Episode]:
    out = []
    for ep in episode:
        if not isinstance(ep, Episode):
            raise TypeError(f"the 'episode' column holds {type(ep).__name__}, not an Episode: trajectory rewards "
                            "need a multi-turn rollout (a task whose rows set 'env')")
        out.append(ep)
    return out


@register_reward("final_state_match", floor=0.0, columns=("episode",),
                 description="the environment's verdict on its final state (BFCL: state checker vs ground truth)")
def final_state_match(completions: list[Any], *, episode: Sequence[Any], **_: Any) -> list[float | None]:
    return [ep.env.success() for ep in _episodes(episode)]


@register_reward("final_answer", floor=0.0, columns=("episode", "answer"),
                 description="1 iff the model's last turn contains the row's answer")
def final_answer(completions: list[Any], *, episode: Sequence[Any], answer: Sequence[Any], **_: Any) -> list[float]:
    out = []
    for ep, ans in zip(_episodes(episode), answer, strict=True):
        last = ep.turns[-1] if ep.turns else ""
        answered = ep.end == "answer" and not (ep.parsed and ep.parsed[-1].found)
        out.append(1.0 if answered and _holds(last, str(ans).strip()) else 0.0)
    return out


def _holds(text: str, answer: str) -> bool:
    """A numeric answer matches a number in the text by value (``35`` is not in ``135``); else a substring."""
    if not answer:
        return False
    try:
        target = float(answer)
    except ValueError:
        return answer in text
    return any(float(x) == target for x in re.findall(r"-?\d+(?:\.\d+)?", text))


@register_reward("turn_format", floor=0.0, columns=("episode",),
                 description="share of model turns that are a readable call block or a non-empty answer")
def turn_format(completions: list[Any], *, episode: Sequence[Any], **_: Any) -> list[float]:
    out = []
    for ep in _episodes(episode):
        good = [p.ok and (p.found or bool(text.strip())) for p, text in zip(ep.parsed, ep.turns)]
        out.append(sum(good) / len(good) if good else 0.0)
    return out


@register_reward("call_efficiency", floor=0.0, columns=("episode",),
                 description="min(used, needed) / max(used, needed) calls")
def call_efficiency(completions: list[Any], *, episode: Sequence[Any], needed_calls: Sequence[Any] | None = None,
                    **_: Any) -> list[float | None]:
    eps = _episodes(episode)
    needed_col = list(needed_calls) if needed_calls is not None else [None] * len(eps)
    out: list[float | None] = []
    for ep, needed in zip(eps, needed_col, strict=True):
        needed = ep.env.needed_calls() if needed is None else int(needed)
        used = ep.num_calls
        if needed is None:
            out.append(None)
        elif max(used, needed) == 0:
            out.append(1.0)
        else:
            out.append(min(used, needed) / max(used, needed))
    return out


@register_reward("env_no_errors", floor=0.0, columns=("episode",),
                 description="1 iff no tool call failed and every call block was readable")
def env_no_errors(completions: list[Any], *, episode: Sequence[Any], **_: Any) -> list[float]:
    return [1.0 if ep.errors == 0 else 0.0 for ep in _episodes(episode)]
