"""Tool-calling rewards (the ToolRL recipe): ``tool_format`` in {0, 1} and ``tool_correctness`` in [-3, 3].

A completion has the ToolRL / Qwen shape::

    <think> reasoning </think>
    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Oslo"}}
    {"name": "set_timer", "arguments": {"minutes": 5}}
    </tool_call>
    <response> text for the user </response>

with ``<tool_call>`` and/or ``<response>`` after the think block. A call may spell its
arguments ``"arguments"`` (Qwen, OpenAI) or ``"parameters"`` (ToolRL's data).

Ground truth is the ``answer`` column: a list of ``{"name": str, "arguments": dict}`` (or
``"parameters"``), or that list as a JSON string; ``[]`` when the right reply calls nothing.
The optional ``expects_response`` column (bool, or None) says whether the reply must carry a
``<response>`` block; where it is absent or None the default is "a response iff no calls".

``tool_format`` (floor 0): 1 iff, after stripping surrounding whitespace,

* the text starts with ``<think>`` and holds exactly one ``<think>`` and one ``</think>``;
* after ``</think>`` come exactly the required blocks, in the order ``<tool_call>…</tool_call>``
  (required iff the ground truth has calls) then ``<response>…</response>`` (required iff
  the sample expects a response), each tag exactly once, separated only by whitespace, with
  nothing after the last block. A block that is not required must not appear at all.

  Mentions of ``<tool_call>`` / ``<response>`` *inside* the think block are allowed (of the
  400 ToolRL SFT references, 17 mention ``<tool_call>`` and 5 ``<response>`` while reasoning).
  ToolRL's regex counts tags over the whole text and requires single newlines between blocks; we count only after
  ``</think>`` and accept any whitespace. The blocks' contents are not checked here (the
  JSON inside ``<tool_call>`` is ``tool_correctness``'s business).

``tool_correctness`` (floor -3), the paper's R_correct, predicted calls P vs ground truth G:

* r_name = |N_G ∩ N_P| / |N_G ∪ N_P| over the multisets of names (1 when both are empty);
* each ground-truth call G_j is matched to at most one predicted call of the same name, each
  predicted call used at most once; a matched pair adds
  r_param = |keys_G ∩ keys_P| / |keys_G ∪ keys_P| (1 when both are empty) plus
  r_value = #{k in keys_G : k in P's arguments and P[k] == G[k]};
* S = r_name + Σ matched (r_param + r_value), S_max = 1 + |G| + Σ_j |keys(G_j)|,
  R_correct = 6·S / S_max − 3.

Decisions, each documented and tested:

* **Matching is optimal**, not greedy: within each name, the assignment of ground-truth calls
  to predicted calls maximizes the total r_param + r_value (Hungarian algorithm). ToolRL's
  code matches greedily in ground-truth order, which can under-score (a worked example is in
  the tests); on every case where greedy is optimal the two agree.
* **Which calls are "predicted"**: those in the first ``<tool_call>…</tool_call>`` block after
  the first ``</think>`` (the whole text when there is no ``</think>``), as ToolRL reads the
  first block. Inside a block, JSON values separated by whitespace (one per line, or
  pretty-printed over several lines); a JSON list of call objects is flattened.
* **Unparseable calls score -3**: an unclosed or empty block, a value that is not a JSON
  object, a call without a string ``name`` or without an object of arguments (``"arguments"``
  first, else ``"parameters"``; a JSON *string* holding an object, as OpenAI's API writes
  arguments, is decoded), more than :data:`MAX_CALLS` calls, or a text over
  :data:`MAX_CHARS` characters. ToolRL likewise gives its minimum when any line fails.
* **No block** means P = [] (not an error): with calls expected this scores -3 by the formula
  (r_name = 0, S = 0), matching ToolRL.
* **No calls expected** (G = []): S_max = 1 and r_name decides: no predicted calls → 3,
  any predicted call → -3. This follows the formula (and the commented-out branch of
  ToolRL's code); ToolRL's released code instead returns 0 for such samples, leaving them to
  other rewards. Use ``tool_format`` (which forbids an unrequired ``<tool_call>``) or a
  condition if you want that behavior.
* **Value equality** is JSON equality: numbers compare by value (``1 == 1.0``), booleans only
  equal booleans (``True != 1``, unlike Python), strings exactly (``"1" != 1``: no case or
  whitespace folding), lists elementwise in order, objects key by key. Extra predicted keys
  cost through r_param only.

Neither reward raises on model output; both raise ``ValueError`` on bad ground truth, naming
the value. Work is bounded: texts over :data:`MAX_CHARS` are rejected before parsing.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from typing import Any, Iterable, NamedTuple, Sequence

from gdpo.rewards.text import completion_text
from gdpo.rewards.registry import register_reward

MAX_CHARS = 200_000  # longer completions score the floor without being parsed
MAX_CALLS = 64  # more predicted calls than this in one block is treated as unparseable

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESP_OPEN, RESP_CLOSE = "<response>", "</response>"

CORRECT_MAX, CORRECT_MIN = 3.0, -3.0

__all__ = [
    "CORRECT_MAX",
    "CORRECT_MIN",
    "MAX_CALLS",
    "MAX_CHARS",
    "ParsedCalls",
    "ToolCall",
    "check_format",
    "completion_text",
    "correctness_score",
    "parse_ground_truth",
    "parse_tool_calls",
    "render_completion",
    "render_tool_calls",
    "tool_correctness",
    "tool_format",
    "values_equal",
]


class ToolCall(NamedTuple):
    """One call: a function name and its arguments."""

    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


class ParsedCalls(NamedTuple):
    """What :func:`parse_tool_calls` read from a completion.

    calls: the predicted calls, in order ([] when there is no block or it failed to parse).
    ok: False iff a block was found but could not be read (or the text is too long).
    error: why it failed, else None.
    found: whether a ``<tool_call>`` block was found at all.
    """

    calls: list[ToolCall]
    ok: bool
    error: str | None = None
    found: bool = False


# -- reading text ----------------------------------------------------------------------------

def _after_think(text: str) -> str:
    """The part of ``text`` after the first ``</think>`` (all of it when there is none)."""
    i = text.find(THINK_CLOSE)
    return text if i < 0 else text[i + len(THINK_CLOSE):]


def parse_tool_calls(text: Any) -> ParsedCalls:
    """Read the predicted calls of a completion; never raises.

    >>> parse_tool_calls('<think> x </think>\\n<tool_call>\\n{"name": "f", "parameters": {"a": 1}}\\n</tool_call>')
    ParsedCalls(calls=[ToolCall(name='f', arguments={'a': 1})], ok=True, error=None, found=True)
    >>> parse_tool_calls('<think> x </think>\\n<response> hi </response>').calls
    []
    >>> parse_tool_calls('<tool_call>{"name": "f", "arguments": [1]}</tool_call>').error
    'call 1: "arguments" must be a JSON object, got list'
    """
    text = completion_text(text)
    if len(text) > MAX_CHARS:
        return ParsedCalls([], False, f"completion has {len(text)} characters, over the limit of {MAX_CHARS}", False)
    region = _after_think(text)
    start = region.find(CALL_OPEN)
    if start < 0:
        return ParsedCalls([], True, None, False)
    end = region.find(CALL_CLOSE, start)
    if end < 0:
        return ParsedCalls([], False, f"{CALL_OPEN} block is not closed", True)
    body = region[start + len(CALL_OPEN):end]
    try:
        values = _decode_json_sequence(body)
    except (ValueError, RecursionError) as exc:
        return ParsedCalls([], False, f"invalid JSON in {CALL_OPEN} block: {_short(exc)}", True)
    if not values:
        return ParsedCalls([], False, f"empty {CALL_OPEN} block", True)
    raw: list[Any] = []
    for v in values:
        raw.extend(v if isinstance(v, list) else [v])
    if len(raw) > MAX_CALLS:
        return ParsedCalls([], False, f"{len(raw)} calls in one block, over the limit of {MAX_CALLS}", True)
    calls = []
    for i, item in enumerate(raw, 1):
        call, error = _read_call(item)
        if error:
            return ParsedCalls([], False, f"call {i}: {error}", True)
        calls.append(call)
    return ParsedCalls(calls, True, None, True)


def _decode_json_sequence(body: str) -> list[Any]:
    """JSON values separated by whitespace; raises ValueError on anything else."""
    decoder = json.JSONDecoder()
    values, i, n = [], 0, len(body)
    while True:
        while i < n and body[i].isspace():
            i += 1
        if i >= n:
            return values
        value, i = decoder.raw_decode(body, i)
        values.append(value)


def _read_call(item: Any) -> tuple[ToolCall | None, str | None]:
    if not isinstance(item, dict):
        return None, f"expected a JSON object, got {type(item).__name__}"
    name = item.get("name")
    if not isinstance(name, str) or not name:
        return None, 'missing a non-empty string "name"'
    key = "arguments" if "arguments" in item else "parameters" if "parameters" in item else None
    if key is None:
        return None, 'missing "arguments" (or "parameters")'
    args = item[key]
    if isinstance(args, str):  # OpenAI style: arguments as a JSON string
        try:
            args = json.loads(args)
        except (ValueError, RecursionError):
            return None, f'"{key}" is a string that is not a JSON object'
    if not isinstance(args, dict):
        return None, f'"{key}" must be a JSON object, got {type(args).__name__}'
    return ToolCall(name, args), None


def _short(exc: BaseException, limit: int = 120) -> str:
    s = str(exc)
    return s if len(s) <= limit else s[:limit] + "…"


# -- ground truth ----------------------------------------------------------------------------

def parse_ground_truth(answer: Any) -> list[ToolCall]:
    """The reference calls: a list of ``{"name", "arguments" | "parameters"}`` or its JSON string.

    Raises ValueError naming the value when it is not one.

    >>> parse_ground_truth('[{"name": "f", "parameters": {"x": "1"}}]')
    [ToolCall(name='f', arguments={'x': '1'})]
    >>> parse_ground_truth([])
    []
    """
    value = answer
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(
                f"tool-call ground truth {_preview(answer)} is not valid JSON ({exc}); expected a JSON list "
                'of {"name": ..., "arguments": {...}} objects, "[]" for no call'
            ) from None
    if isinstance(value, tuple) and not isinstance(value, ToolCall):
        value = list(value)
    if not isinstance(value, list):
        raise ValueError(
            f"tool-call ground truth {_preview(answer)} is a {type(value).__name__}; expected a list of "
            '{"name": ..., "arguments": {...}} objects (or its JSON string), [] for no call'
        )
    calls = []
    for i, item in enumerate(value):
        if isinstance(item, ToolCall):
            item = item.to_dict()
        call, error = _read_call(item)
        if error:
            raise ValueError(f"tool-call ground truth {_preview(answer)}: item {i}: {error}")
        calls.append(call)
    return calls


def _preview(value: Any, limit: int = 200) -> str:
    s = repr(value)
    return s if len(s) <= limit else s[:limit] + "…"


def _expects_response(flag: Any, gt_calls: Sequence[ToolCall]) -> bool:
    """The ``expects_response`` value of a row; None means "a response iff no calls"."""
    if flag is None:
        return not gt_calls
    if isinstance(flag, str):
        low = flag.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
    elif flag in (True, False):  # bool, numpy.bool_, 0, 1
        return bool(flag)
    raise ValueError(f"expects_response must be a bool (or None for the default), got {flag!r}")


# -- format ----------------------------------------------------------------------------------

def check_format(text: Any, *, need_call: bool, need_response: bool) -> bool:
    """True iff ``text`` has exactly the required fields, in order, each once (see module doc).

    >>> check_format("<think> a </think>\\n<response> b </response>", need_call=False, need_response=True)
    True
    >>> check_format("<think> a </think>\\n<response> b </response>", need_call=True, need_response=False)
    False
    """
    text = completion_text(text)
    if len(text) > MAX_CHARS:
        return False
    text = text.strip()
    if not text.startswith(THINK_OPEN) or text.count(THINK_OPEN) != 1 or text.count(THINK_CLOSE) != 1:
        return False
    rest = text[text.index(THINK_CLOSE) + len(THINK_CLOSE):]
    required = [(CALL_OPEN, CALL_CLOSE, need_call), (RESP_OPEN, RESP_CLOSE, need_response)]
    for open_tag, close_tag, need in required:
        want = 1 if need else 0
        if rest.count(open_tag) != want or rest.count(close_tag) != want:
            return False
    pos = 0
    for open_tag, close_tag, need in required:
        if not need:
            continue
        while pos < len(rest) and rest[pos].isspace():
            pos += 1
        if not rest.startswith(open_tag, pos):
            return False
        end = rest.find(close_tag, pos + len(open_tag))
        if end < 0:
            return False
        pos = end + len(close_tag)
    return rest[pos:].strip() == ""


# -- correctness -----------------------------------------------------------------------------

def values_equal(a: Any, b: Any) -> bool:
    """JSON equality: numbers by value, booleans only with booleans, containers recursively.

    >>> values_equal(1, 1.0), values_equal(True, 1), values_equal("1", 1), values_equal([1, {"a": 2}], [1.0, {"a": 2}])
    (True, False, False, True)
    """
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return a == b
    if isinstance(a, str) or isinstance(b, str):
        return isinstance(a, str) and isinstance(b, str) and a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return False


def _jaccard(a: Iterable[str], b: Iterable[str]) -> float:
    """|A ∩ B| / |A ∪ B| over multisets; 1.0 when both are empty."""
    ca, cb = Counter(a), Counter(b)
    if not ca and not cb:
        return 1.0
    inter = sum((ca & cb).values())
    return inter / (sum(ca.values()) + sum(cb.values()) - inter)


def _pair_score(gt: ToolCall, pred: ToolCall) -> float:
    """r_param + r_value of a same-name pair."""
    r_param = _jaccard(gt.arguments.keys(), pred.arguments.keys())
    r_value = sum(1 for k, v in gt.arguments.items() if k in pred.arguments and values_equal(pred.arguments[k], v))
    return r_param + r_value


def _max_assignment(scores: list[list[float]]) -> float:
    """Largest total of a matching in the n×m matrix ``scores`` (each row, column used once).

    Hungarian algorithm (potentials, O(n²·m)) on costs = -scores; scores are >= 0, so
    matching min(n, m) pairs loses nothing.
    """
    if not scores or not scores[0]:
        return 0.0
    if len(scores) > len(scores[0]):
        scores = [list(col) for col in zip(*scores)]
    n, m = len(scores), len(scores[0])
    inf = math.inf
    u, v = [0.0] * (n + 1), [0.0] * (m + 1)
    owner = [0] * (m + 1)  # owner[j] = row matched to column j (1-based), 0 = free
    way = [0] * (m + 1)
    for i in range(1, n + 1):
        owner[0] = i
        j0 = 0
        minv = [inf] * (m + 1)
        used = [False] * (m + 1)
        while True:
            used[j0] = True
            i0, delta, j1 = owner[j0], inf, 0
            for j in range(1, m + 1):
                if not used[j]:
                    cur = -scores[i0 - 1][j - 1] - u[i0] - v[j]
                    if cur < minv[j]:
                        minv[j], way[j] = cur, j0
                    if minv[j] < delta:
                        delta, j1 = minv[j], j
            for j in range(m + 1):
                if used[j]:
                    u[owner[j]] += delta
                    v[j] -= delta
                else:
                    minv[j] -= delta
            j0 = j1
            if owner[j0] == 0:
                break
        while j0:
            j1 = way[j0]
            owner[j0] = owner[j1]
            j0 = j1
    return sum(scores[owner[j] - 1][j - 1] for j in range(1, m + 1) if owner[j])


def correctness_score(gt: Sequence[ToolCall], pred: Sequence[ToolCall]) -> float:
    """R_correct = 6·S/S_max − 3 for predicted calls ``pred`` against ``gt`` (see module doc).

    >>> correctness_score([ToolCall("f", {"a": 1})], [ToolCall("f", {"a": 1})])
    3.0
    >>> correctness_score([ToolCall("f", {"a": 1})], [ToolCall("f", {"a": 2})])  # S = 1+1+0 of 3
    1.0
    """
    s = _jaccard([c.name for c in gt], [c.name for c in pred])
    for name in dict.fromkeys(c.name for c in gt):  # ordered, deterministic
        g = [c for c in gt if c.name == name]
        p = [c for c in pred if c.name == name]
        if p:
            s += _max_assignment([[_pair_score(gc, pc) for pc in p] for gc in g])
    s_max = 1 + len(gt) + sum(len(c.arguments) for c in gt)
    return min(CORRECT_MAX, max(CORRECT_MIN, (CORRECT_MAX - CORRECT_MIN) * s / s_max + CORRECT_MIN))


# -- rendering (references, SFT targets, tests) ----------------------------------------------

def render_tool_calls(calls: Iterable[ToolCall | dict[str, Any]], *, key: str = "arguments") -> str:
    """The ``<tool_call>`` block for ``calls``: one compact JSON object per line."""
    lines = []
    for c in calls:
        c = c if isinstance(c, ToolCall) else parse_ground_truth([c])[0]
        lines.append(json.dumps({"name": c.name, key: c.arguments}, ensure_ascii=False))
    return CALL_OPEN + "\n" + "\n".join(lines) + "\n" + CALL_CLOSE


def render_completion(calls: Iterable[ToolCall | dict[str, Any]] = (), response: str | None = None, *,
                      think: str = "I will answer the user's request.", key: str = "arguments") -> str:
    """A well-formed completion: think, then the calls (if any), then the response (if given)."""
    calls = list(calls)
    parts = [f"{THINK_OPEN} {think} {THINK_CLOSE}"]
    if calls:
        parts.append(render_tool_calls(calls, key=key))
    if response is not None:
        parts.append(f"{RESP_OPEN} {response} {RESP_CLOSE}")
    return "\n".join(parts)


# -- the rewards -----------------------------------------------------------------------------

def _column(values: Any, n: int) -> list[Any]:
    return [None] * n if values is None else list(values)


@register_reward("tool_format", floor=0.0, columns=("answer",),
                 description="1 iff <think>, then the required <tool_call>/<response> blocks, in order, each once")
def tool_format(completions: list[Any], *, answer: Sequence[Any], expects_response: Sequence[Any] | None = None,
                **_: Any) -> list[float]:
    """1.0 iff the completion has exactly the fields this sample requires, in order, each once.

    >>> tool_format(["<think> a </think>\\n<tool_call>\\n{}\\n</tool_call>", "<tool_call></tool_call>"],
    ...             answer=['[{"name": "f", "arguments": {}}]'] * 2)
    [1.0, 0.0]
    """
    flags = _column(expects_response, len(completions))
    out = []
    for completion, ans, flag in zip(completions, answer, flags, strict=True):
        gt = parse_ground_truth(ans)
        ok = check_format(completion, need_call=bool(gt), need_response=_expects_response(flag, gt))
        out.append(1.0 if ok else 0.0)
    return out


@register_reward("tool_correctness", floor=CORRECT_MIN, columns=("answer",),
                 description="ToolRL's R_correct in [-3, 3]: names, keys and values of predicted vs reference calls")
def tool_correctness(completions: list[Any], *, answer: Sequence[Any], **_: Any) -> list[float]:
    """R_correct in [-3, 3] of each completion's calls against the ``answer`` column.

    >>> tool_correctness(['<think>.</think><tool_call>{"name": "f", "parameters": {"a": 1}}</tool_call>',
    ...                   '<think>.</think><tool_call>{"name": "f", "parameters": {"a": 1}</tool_call>'],
    ...                  answer=['[{"name": "f", "arguments": {"a": 1}}]'] * 2)
    [3.0, -3.0]
    """
    out = []
    for completion, ans in zip(completions, answer, strict=True):
        gt = parse_ground_truth(ans)
        parsed = parse_tool_calls(completion)
        out.append(correctness_score(gt, parsed.calls) if parsed.ok else CORRECT_MIN)
    return out
