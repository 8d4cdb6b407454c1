"""Reading the text of a completion, whatever shape a trainer hands it over in.

TRL passes plain strings for plain-text prompts and ``[{"role": "assistant", "content": ...}]``
for conversational ones; every built-in reward reads completions through
:func:`completion_text`, so each works unchanged in both cases.
"""

from __future__ import annotations

from typing import Any


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or TRL's conversational ``[{"role", "content"}]``.

    For a message list, the content of the last message; content given as a list of parts
    keeps its ``text`` parts. Anything else reads as "" (so it scores the floor, never raises).

    >>> completion_text([{"role": "assistant", "content": "4"}]), completion_text("4"), completion_text(None)
    ('4', '4', '')
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return _content_text(completion.get("content"))
    if isinstance(completion, (list, tuple)) and completion:
        last = completion[-1]
        return _content_text(last.get("content")) if isinstance(last, dict) else ""
    return ""


def completion_texts(completions: Any) -> list[str]:
    """:func:`completion_text` of each completion."""
    return [completion_text(c) for c in completions]


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, (list, tuple)):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""
