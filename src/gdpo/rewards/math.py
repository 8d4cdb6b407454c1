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

import atexit
import json
import os
import re
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Literal, NamedTuple, Sequence

from gdpo.rewards.text import completion_text
from gdpo.rewards.registry import register_reward, register_reward_factory

MAX_SCAN_CHARS = 20_000  # only the last 20k characters of a response are searched for the answer
MAX_ANSWER_CHARS = 1_000  # a longer "final answer" is garbage: no answer
DEFAULT_TIMEOUT_S = 5.0  # per-item verification deadline
DEFAULT_MAX_TOKENS = 4000  # the paper's length limit l


# ---------------------------------------------------------------------------------------
# Reading the final answer
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExtractedAnswer:
    """The final answer found in a response, and where it came from."""

    text: str
    source: Literal["answer_tag", "boxed"]


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


# ---------------------------------------------------------------------------------------
# Plain-string checks (no math-verify needed)
# ---------------------------------------------------------------------------------------

_INTEGER = re.compile(r"[+-]?(?:\d+|\d{1,3}(?:,\d{3})+)(?:\.0+)?")
_LATEX_SPACES = re.compile(r"\\[,!;: ]|\\quad|\\qquad|\s")


def _squeeze(answer: str) -> str:
    """``answer`` without whitespace, LaTeX spacing, ``$`` and a trailing period."""
    return _LATEX_SPACES.sub("", answer).replace("$", "").rstrip(".")


def as_integer(answer: str) -> int | None:
    """The integer ``answer`` spells (``"1,000"``, ``"-7"``, ``"12.0"``, ``"$5$"``), else None."""
    squeezed = _squeeze(answer)
    if len(squeezed) > 100 or not _INTEGER.fullmatch(squeezed):
        return None
    return int(squeezed.split(".")[0].replace(",", ""))


def _fast_verdict(gold: str, answer: str) -> bool | None:
    """True/False when plain string rules decide; None when math-verify must look."""
    if _squeeze(gold) == _squeeze(answer):
        return True
    gold_int, answer_int = as_integer(gold), as_integer(answer)
    if gold_int is not None and answer_int is not None:
        return gold_int == answer_int
    return None


def normalize_reference(gold: Any) -> str:
    """A reference answer as a non-empty string (``142.0`` -> ``"142"``, ``["9.6"]`` -> ``"9.6"``)."""
    if isinstance(gold, (list, tuple)):
        if not gold:
            raise ValueError("reference answer is an empty list; give the row an 'answer' string")
        gold = gold[0]
    if isinstance(gold, float) and gold.is_integer():
        gold = int(gold)
    if gold is None or not str(gold).strip():
        raise ValueError(f"reference answer {gold!r} is empty; give the row a non-empty 'answer' string")
    return str(gold).strip()


# ---------------------------------------------------------------------------------------
# The verification worker
# ---------------------------------------------------------------------------------------

VerifyStatus = Literal["fast", "cached", "verified", "timeout", "error"]


class VerifyOutcome(NamedTuple):
    """One verification: the verdict and how it was reached."""

    correct: bool
    status: VerifyStatus
    seconds: float


class MathVerifier:
    """Checks answers with math-verify in a persistent worker process, with a per-item deadline.

    Thread-safe (one lock around the worker); usable from any thread. The worker starts on
    first use; a worker that misses a deadline or dies is killed and replaced on the next call.

    timeout_s: per-item deadline, seconds (the item then scores 0 and is cached as wrong).
    startup_timeout_s: how long to wait for a (re)started worker to import math-verify.
    memory_limit_mb: address-space cap of the worker (``RLIMIT_AS``); None = no cap.
    cache_size: how many (reference, answer) verdicts to keep.
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, *, startup_timeout_s: float = 120.0,
                 memory_limit_mb: int | None = 4096, cache_size: int = 100_000):
        if not timeout_s > 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")
        self.timeout_s = float(timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.memory_limit_mb = memory_limit_mb
        self.cache_size = int(cache_size)
        self.restarts = 0  # workers killed after a timeout or a crash
        self._cache: OrderedDict[tuple[str, str, str], bool] = OrderedDict()
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._owner_pid = os.getpid()  # a forked child must not talk to (or kill) its parent's worker
        self._buffer = b""
        atexit.register(self.close)

    def verify(self, gold: str, answer: ExtractedAnswer) -> VerifyOutcome:
        """Whether ``answer`` equals the reference ``gold``."""
        started = time.perf_counter()
        fast = _fast_verdict(gold, answer.text)
        if fast is not None:
            return VerifyOutcome(fast, "fast", time.perf_counter() - started)
        key = (gold, answer.text, answer.source)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return VerifyOutcome(self._cache[key], "cached", time.perf_counter() - started)
            correct, status = self._ask_worker(key)
            self._remember(key, correct)
        return VerifyOutcome(correct, status, time.perf_counter() - started)

    def close(self) -> None:
        """Stop the worker (a later call starts a new one)."""
        proc, self._proc = self._proc, None
        self._buffer = b""
        if proc is not None and self._owner_pid != os.getpid():
            return  # inherited through fork: the worker belongs to the parent process, leave it
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc is not None:
            for stream in (proc.stdin, proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass

    # -- worker plumbing ------------------------------------------------------------
    def _remember(self, key: tuple[str, str, str], correct: bool) -> None:
        self._cache[key] = correct
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def _ask_worker(self, key: tuple[str, str, str]) -> tuple[bool, VerifyStatus]:
        proc = self._ensure_worker()
        try:
            proc.stdin.write((json.dumps(list(key)) + "\n").encode())
            proc.stdin.flush()
            reply = self._read_line(time.monotonic() + self.timeout_s)
        except (OSError, EOFError):
            self._kill_worker()
            return False, "error"
        if reply is None:  # deadline missed: the worker may be stuck forever, replace it
            self._kill_worker()
            return False, "timeout"
        try:
            message = json.loads(reply)
        except ValueError:  # not our protocol: resynchronise by replacing the worker
            self._kill_worker()
            return False, "error"
        return (bool(message.get("correct")), "verified") if "correct" in message else (False, "error")

    def _kill_worker(self) -> None:
        self.restarts += 1
        self.close()

    def _ensure_worker(self) -> subprocess.Popen:
        if self._proc is not None and self._owner_pid == os.getpid() and self._proc.poll() is None:
            return self._proc
        self.close()
        self._owner_pid = os.getpid()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", "from gdpo.rewards.math import _worker_main; _worker_main()",
             str(self.memory_limit_mb or 0)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            env=_worker_env(), close_fds=True,
        )
        try:
            ready = self._read_line(time.monotonic() + self.startup_timeout_s)
        except EOFError:
            ready = json.dumps({"fatal": "it exited while starting"})
        message = json.loads(ready) if ready else {"fatal": f"no answer in {self.startup_timeout_s:.0f} s"}
        if "ready" not in message:
            self.close()
            raise RuntimeError(
                f"the math-verify worker did not start: {message.get('fatal')}. "
                "Install it with `pip install math-verify` (or `pip install gdpo[rewards]`)."
            )
        return self._proc

    def _read_line(self, deadline: float) -> str | None:
        """One line from the worker, or None at the deadline; EOFError if the worker died."""
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if readable:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError("math-verify worker exited")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode()


def _worker_env() -> dict[str, str]:
    """The worker's environment: this package importable, one thread, no hub access."""
    import gdpo

    package_root = os.path.dirname(os.path.dirname(os.path.abspath(gdpo.__file__)))
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _worker_main() -> None:
    """Worker process loop: read ``[gold, answer, source]`` lines, write ``{"correct": bool}``."""
    import functools
    import logging

    memory_limit_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    if memory_limit_mb > 0:
        import resource

        limit = memory_limit_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        from math_verify import parse, verify
    except ImportError as exc:
        print(json.dumps({"fatal": f"cannot import math_verify ({exc})"}), flush=True)
        return
    logging.getLogger("math_verify").setLevel(logging.ERROR)

    @functools.lru_cache(maxsize=20_000)
    def parse_gold(gold: str) -> list:
        return parse("\\boxed{" + gold + "}", parsing_timeout=None) or parse(gold, parsing_timeout=None)

    def candidates(answer: str, source: str):
        # A boxed answer parses like the reference; free text in <answer> is tried both ways.
        yield parse("\\boxed{" + answer + "}", parsing_timeout=None)
        if source == "answer_tag":
            yield parse(answer, parsing_timeout=None)

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            gold, answer, source = json.loads(line)
            parsed_gold = parse_gold(gold)
            correct = any(
                bool(parsed) and verify(parsed_gold, parsed, timeout_seconds=None)
                for parsed in candidates(answer, source)
            )
            reply = {"correct": bool(correct)}
        except (Exception, MemoryError, RecursionError) as exc:  # noqa: BLE001 - report, keep serving
            reply = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        print(json.dumps(reply), flush=True)


_DEFAULT_VERIFIER: MathVerifier | None = None
_DEFAULT_LOCK = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide verifier the registered rewards use (created on first use)."""
    global _DEFAULT_VERIFIER
    with _DEFAULT_LOCK:
        if _DEFAULT_VERIFIER is None:
            _DEFAULT_VERIFIER = MathVerifier()
        return _DEFAULT_VERIFIER


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
