"""Math rewards: symbolic correctness, response length, answer format, integer answers.

Registered names (dataset column ``answer`` = the reference final answer, a string):

* ``math_correctness`` in {0, 1}: the final answer equals the reference, checked with
  math-verify (``1/2`` equals ``0.5``, ``\\frac{\\sqrt 2}{2}`` equals ``\\sqrt{2}/2``).
* ``math_length`` (factory: ``max_tokens=4000``, ``tokenizer=None``) in {0, 1}: the response
  is at most ``max_tokens`` tokens long.
* ``math_length_if_correct`` (factory, same parameters) in {0, 1}: within the limit AND
  correct; the paper's conditioned length reward (Eq. 8).
* ``math_format`` in {0, 1}: the response is ``<think>…</think>`` then ``<answer>…</answer>``.
* ``math_integer`` in {0, 1}: the extracted final answer is an integer (GSM8K recipe).

Where the final answer is read from (see :func:`extract_final_answer`):

1. If the response contains ``</think>``, only the text after the last ``</think>`` is
   searched (a ``\\boxed{}`` inside the reasoning is a draft, not the answer).
2. The last ``<answer>…</answer>`` block wins (an unclosed ``<answer>`` runs to the end);
   if its content holds a ``\\boxed{…}``, the last boxed content is the answer.
3. Otherwise the last ``\\boxed{…}`` (or ``\\fbox{…}``, or ``\\boxed 5``) is the answer.
4. Otherwise there is no answer and the response scores 0. There is no "last number"
   fallback: a reward that guesses would teach the policy to skip the format.

Timeouts. math-verify's own timeout uses ``signal.alarm``, which only works on the main
thread, so it is switched off (``parsing_timeout=None``, ``timeout_seconds=None``) and the
checks run in one persistent worker *process* (:class:`MathVerifier`), fed one item at a
time over a pipe, with a per-item deadline enforced by the caller with ``select``. A worker
that misses the deadline is killed (and replaced on the next call) and the item scores 0.
This works from any thread, bounds memory (the worker caps its address space), and costs
one pipe round trip per item (~0.1 ms) on top of math-verify itself. Parsed reference answers
are cached in the worker; verdicts are cached in the caller, and trivial cases (equal strings,
two plain integers) never reach the worker.

Bad model output never raises: huge strings, unbalanced braces, unicode and garbage score 0.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from gdpo.rewards.math_verifier import (  # noqa: F401 - re-exported: the checker's public names
    DEFAULT_TIMEOUT_S,
    ExtractedAnswer,
    MathVerifier,
    VerifyOutcome,
    VerifyStatus,
    as_integer,
    default_verifier,
    normalize_reference,
)
from gdpo.rewards.registry import register_reward, register_reward_factory
from gdpo.rewards.text import completion_text

MAX_SCAN_CHARS = 20_000  # only the last 20k characters of a response are searched for the answer
MAX_ANSWER_CHARS = 1_000  # a longer "final answer" is garbage: no answer
DEFAULT_MAX_TOKENS = 4000  # the paper's length limit l


# ---------------------------------------------------------------------------------------
# Reading the final answer
# ---------------------------------------------------------------------------------------


def _answer_region(text: str) -> str:
    """The part of ``text`` searched for the final answer (after ``</think>``, bounded)."""
    end_of_thought = text.rfind("</think>")
    if end_of_thought >= 0:
        text = text[end_of_thought + len("</think>"):]
    return text[-MAX_SCAN_CHARS:]


def _balanced_content(text: str, open_index: int) -> str | None:
    """Content of the brace group opening at ``text[open_index] == '{'``, or None if unclosed."""
    depth = 0
    for i in range(open_index, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return text[open_index + 1:i]
    return None


_BOX_COMMANDS = ("\\boxed", "\\fbox")
_MAX_BOX_TRIES = 32  # how many earlier \boxed occurrences to try when later ones are malformed


def last_boxed_content(text: str) -> str | None:
    """Content of the last well-formed ``\\boxed{…}`` / ``\\fbox{…}`` / ``\\boxed 5`` in ``text``.

    >>> last_boxed_content(r"so \\boxed{1} or rather \\boxed{\\frac{1}{2}}")
    '\\\\frac{1}{2}'
    """
    end = len(text)
    for _ in range(_MAX_BOX_TRIES):
        start = max(text.rfind(cmd, 0, end) for cmd in _BOX_COMMANDS)
        if start < 0:
            return None
        cmd = next(c for c in _BOX_COMMANDS if text.startswith(c, start))
        after = start + len(cmd)
        rest = text[after:]
        stripped = rest.lstrip()
        if stripped.startswith("{"):
            content = _balanced_content(text, after + (len(rest) - len(stripped)))
            if content is not None:
                return content
        elif rest[:1] == " " and stripped:  # "\boxed 5": up to the next space or '$'
            return re.split(r"[\s$]", stripped, maxsplit=1)[0]
        end = start
    return None


def _answer_tag_content(region: str) -> str | None:
    """Content of the last ``<answer>`` block (an unclosed one runs to the end)."""
    start = region.rfind("<answer>")
    if start < 0:
        return None
    body = region[start + len("<answer>"):]
    close = body.find("</answer>")
    return body if close < 0 else body[:close]


def extract_final_answer(completion: Any) -> ExtractedAnswer | None:
    """The final answer of a response (see the module docstring for the order), or None.

    >>> extract_final_answer("<think>2+2</think>\\n<answer>4</answer>")
    ExtractedAnswer(text='4', source='answer_tag')
    >>> extract_final_answer(r"The answer is \\boxed{\\frac{1}{2}}.").text
    '\\\\frac{1}{2}'
    """
    region = _answer_region(completion_text(completion))
    tagged = _answer_tag_content(region)
    if tagged is not None:
        boxed = last_boxed_content(tagged)
        answer = ExtractedAnswer((boxed if boxed is not None else tagged).strip(), "answer_tag")
    else:
        boxed = last_boxed_content(region)
        answer = None if boxed is None else ExtractedAnswer(boxed.strip(), "boxed")
    if answer is None or not answer.text or len(answer.text) > MAX_ANSWER_CHARS:
        return None
    return answer


def is_correct(completion: Any, gold: Any, verifier: MathVerifier | None = None) -> bool:
    """Whether the final answer of ``completion`` equals the reference ``gold``."""
    answer = extract_final_answer(completion)
    if answer is None:
        return False
    return (verifier or default_verifier()).verify(normalize_reference(gold), answer).correct


# ---------------------------------------------------------------------------------------
# Token counting
# ---------------------------------------------------------------------------------------

_FALLBACK_TOKEN = re.compile(r"\w+|[^\w\s]")
_MAX_CHARS_PER_TOKEN = 100  # longer texts are over the limit without tokenizing them


def count_tokens(text: str, tokenizer: Any | None = None) -> int:
    """Tokens in ``text``: with ``tokenizer`` (a HF tokenizer, no special tokens) when given;
    otherwise words and single punctuation marks (``"x^2 = 4."`` -> x ^ 2 = 4 . -> 6), which
    tracks subword tokenizers on math text better than whitespace splitting."""
    if tokenizer is None:
        return len(_FALLBACK_TOKEN.findall(text))
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _lengths_within(completions: Sequence[Any], max_tokens: int, tokenizer: Any | None,
                    completion_ids: Sequence[Sequence[int]] | None) -> list[bool]:
    """Per completion: at most ``max_tokens`` tokens? Uses TRL's ``completion_ids`` when given."""
    if completion_ids is not None and len(completion_ids) == len(completions):
        return [len(ids) <= max_tokens for ids in completion_ids]
    within = []
    for completion in completions:
        text = completion_text(completion)
        if len(text) > _MAX_CHARS_PER_TOKEN * max_tokens:
            within.append(False)
        else:
            within.append(count_tokens(text, tokenizer) <= max_tokens)
    return within


def _check_max_tokens(max_tokens: Any) -> int:
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer (e.g. 4000), got {max_tokens!r}")
    return max_tokens


# ---------------------------------------------------------------------------------------
# The registered rewards
# ---------------------------------------------------------------------------------------


@register_reward("math_correctness", floor=0.0, columns=("answer",))
def math_correctness(completions: Sequence[Any], answer: Sequence[Any], **_: Any) -> list[float]:
    """1 iff the final answer (last ``<answer>`` block, else last ``\\boxed{}``) equals ``answer``.

    >>> math_correctness(["<answer>0.5</answer>", r"\\boxed{3}", "no idea"], answer=["1/2", "4", "1"])
    [1.0, 0.0, 0.0]
    """
    if len(answer) != len(completions):
        raise ValueError(f"got {len(answer)} reference answers for {len(completions)} completions; align them")
    verifier = default_verifier()
    return [float(is_correct(c, gold, verifier)) for c, gold in zip(completions, answer)]


@register_reward("math_format", floor=0.0)
def math_format(completions: Sequence[Any], **_: Any) -> list[float]:
    """1 iff the response is ``<think>…</think>`` then ``<answer>…</answer>`` and nothing else.

    Whitespace is free before, between and after the two blocks (the recipe's ``\\n`` between
    them is not required); each tag appears exactly once and both blocks are non-blank.

    >>> math_format(["<think>1+1</think>\\n<answer>2</answer>", "<answer>2</answer>"])
    [1.0, 0.0]
    """
    return [float(_is_think_answer(completion_text(c))) for c in completions]


def _is_think_answer(text: str) -> bool:
    text = text.strip()
    tags = ("<think>", "</think>", "<answer>", "</answer>")
    if not (text.startswith("<think>") and text.endswith("</answer>")):
        return False
    if any(text.count(tag) != 1 for tag in tags):
        return False
    think_end, answer_start = text.index("</think>"), text.index("<answer>")
    if answer_start < think_end or text[think_end + len("</think>"):answer_start].strip():
        return False
    thought = text[len("<think>"):think_end]
    final = text[answer_start + len("<answer>"):-len("</answer>")]
    return bool(thought.strip()) and bool(final.strip())


@register_reward("math_integer", floor=0.0)
def math_integer(completions: Sequence[Any], **_: Any) -> list[float]:
    """1 iff the extracted final answer is an integer (``"42"``, ``"-3"``, ``"1,000"``, ``"7.0"``).

    >>> math_integer(["<answer>42</answer>", "<answer>4.5</answer>", "42"])
    [1.0, 0.0, 0.0]
    """
    out = []
    for c in completions:
        answer = extract_final_answer(c)
        out.append(float(answer is not None and as_integer(answer.text) is not None))
    return out


@register_reward_factory("math_length", floor=0.0)
def make_math_length(max_tokens: int = DEFAULT_MAX_TOKENS, tokenizer: Any | None = None) -> Callable:
    """1 iff the response has at most ``max_tokens`` tokens (see :func:`count_tokens`)."""
    limit = _check_max_tokens(max_tokens)

    def math_length(completions: Sequence[Any], completion_ids: Sequence[Sequence[int]] | None = None,
                    **_: Any) -> list[float]:
        return [float(ok) for ok in _lengths_within(completions, limit, tokenizer, completion_ids)]

    math_length.__doc__ = f"1 iff the response has at most {limit} tokens."
    return math_length


@register_reward_factory("math_length_if_correct", floor=0.0, columns=("answer",))
def make_math_length_if_correct(max_tokens: int = DEFAULT_MAX_TOKENS, tokenizer: Any | None = None) -> Callable:
    """1 iff the response has at most ``max_tokens`` tokens AND is correct (paper Eq. 8)."""
    limit = _check_max_tokens(max_tokens)

    def math_length_if_correct(completions: Sequence[Any], answer: Sequence[Any],
                               completion_ids: Sequence[Sequence[int]] | None = None, **_: Any) -> list[float]:
        if len(answer) != len(completions):
            raise ValueError(f"got {len(answer)} reference answers for {len(completions)} completions; align them")
        within = _lengths_within(completions, limit, tokenizer, completion_ids)
        verifier = default_verifier()  # correctness is only checked where the length already passes
        return [float(ok and is_correct(c, gold, verifier)) for ok, c, gold in zip(within, completions, answer)]

    math_length_if_correct.__doc__ = f"1 iff correct and at most {limit} tokens."
    return math_length_if_correct
