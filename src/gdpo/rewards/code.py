"""Code rewards: run the completion's program on test cases in the sandbox.

The program is the LAST fenced Python block of the completion (```python, ```py, ```python3
or a bare ```); a block whose closing fence is missing (a truncated generation) does not count.
For HumanEval-style rows (a ``check`` case with a ``prefix``) a completion without a fence is
read in HumanEval's own format, a function body continuing the prompt
(:mod:`gdpo.rewards.code_program`).

The ``tests`` column (a list/dict, or its JSON string) holds the test cases, in any of these
shapes (see ``docs/sandbox.md``):

* stdin/stdout cases: ``[{"input": "1 2\\n", "output": "3\\n"}, ...]`` (CodeContests style), or
  APPS' ``{"inputs": [...], "outputs": [...]}``;
* call-based cases (APPS style): ``{"fn_name": "add", "inputs": [[1, 2], ...], "outputs": [3, ...]}``
  -- each ``inputs`` entry is the positional argument list; the function may be top level or a
  method of ``class Solution``; a result equal to ``outputs[i]`` or, APPS' convention, to
  ``outputs[i][0]`` when that is a one-element list, passes;
* HumanEval-style checks: ``{"check": "<source defining check(candidate)>", "entry_point": "f",
  "prefix": "<code run before the program, e.g. the HumanEval prompt>"}``; one case, passed when
  ``check`` returns without an ``AssertionError``. The columns ``test`` + ``entry_point`` (the raw
  HumanEval fields, with ``prompt`` as the prefix when it is the HumanEval prompt text) work
  too when ``tests`` is absent; with neither, the rewards raise ``MissingColumnError``.

Rewards (all floor 0):

* ``code_pass_rate`` in [0, 1]: fraction of cases passed; stdout compared line by line with
  trailing whitespace and trailing blank lines ignored.
* ``code_bug_free`` in {0, 1}: 1 when no case ends in a runtime error, a compilation (syntax)
  error, a memory error or a crash by signal. A wrong answer, a timeout and too much output are
  not bugs (the program ran; it was wrong or slow).
* ``code_length`` (factory: ``max_tokens=4000``, ``tokenizer=None``): 1 when the completion has
  at most ``max_tokens`` tokens; ``code_length_if_passed``: that, and pass rate 1.

Cases run in order of the list, the first alone; once a case times out, the cases not yet
started are not run (status ``skipped``, failed, not a bug). No program in the completion:
pass rate 0 and bug-free 0. No test cases for a row: ``None``
(not applicable). Results are cached by (program, cases, limits), so ``code_pass_rate`` and
``code_bug_free`` on the same completion run it once.
"""

from __future__ import annotations

import json
import os
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

from gdpo.rewards.code_program import extract_program
from gdpo.rewards.registry import register_reward, register_reward_factory
from gdpo.rewards.text import completion_text
from gdpo.rewards.sandbox import RunResult, SandboxLimits, resolve_min_level, run_program

BUG_STATUSES = frozenset({"runtime_error", "compile_error", "memory", "killed"})
_RESULT_MARKER = "\n__gdpo_result__ "


@dataclass(frozen=True)
class TestCase:
    """One test case. ``kind``: "stdio" | "call" | "check". Nested values are JSON text (hashable)."""

    kind: str
    stdin: str = ""
    expected: str = ""  # stdio: expected stdout; call: JSON of the expected value
    fn_name: str = ""  # call: function name; check: entry point
    args: str = "[]"  # call: JSON list of positional arguments
    check: str = ""  # check: source defining check(candidate)
    prefix: str = ""  # check: code run before the program


@dataclass(frozen=True)
class CodeSettings:
    """How the code rewards run programs.

    limits: per-case sandbox limits.
    workers: concurrent sandbox runs across all completions and cases (``GDPO_CODE_WORKERS``).
    min_level: weakest sandbox level the rewards accept (``GDPO_SANDBOX_MIN_LEVEL``, default
        ``"namespaces"``: no network, no host writes, no host sockets); below it every run
        raises :class:`~gdpo.rewards.sandbox.SandboxError` instead of running the program.
    """

    limits: SandboxLimits = SandboxLimits(cpu_seconds=4, wall_seconds=8)
    workers: int = max(1, int(os.environ.get("GDPO_CODE_WORKERS", min(4, os.cpu_count() or 1))))
    min_level: str = field(default_factory=lambda: resolve_min_level(None, default="namespaces"))


_SETTINGS = CodeSettings()
_RUN_SLOTS = threading.BoundedSemaphore(_SETTINGS.workers)  # concurrent sandbox runs, all callers


def configure(*, limits: SandboxLimits | None = None, workers: int | None = None,
              min_level: str | None = None) -> CodeSettings:
    """Change the limits / worker count / weakest accepted sandbox level of the code rewards."""
    global _SETTINGS, _RUN_SLOTS
    if workers is not None and (not isinstance(workers, int) or workers < 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if min_level is not None:
        resolve_min_level(min_level)  # validates the name
    changes = (("limits", limits), ("workers", workers), ("min_level", min_level))
    _SETTINGS = replace(_SETTINGS, **{k: v for k, v in changes if v is not None})
    _RUN_SLOTS = threading.BoundedSemaphore(_SETTINGS.workers)
    return _SETTINGS


@dataclass(frozen=True)
class Evaluation:
    """Per-case outcome of one program."""

    passed: tuple[bool, ...]
    statuses: tuple[str, ...]

    @property
    def pass_rate(self) -> float:
        return sum(self.passed) / len(self.passed) if self.passed else 0.0

    @property
    def bug_free(self) -> bool:
        return not any(status in BUG_STATUSES for status in self.statuses)


# -- test-case parsing ------------------------------------------------------------------------

def parse_tests(tests: Any, test: str | None = None, entry_point: str | None = None,
                prefix: str | None = None) -> tuple[TestCase, ...]:
    """Normalize a row's test cases (see module doc) into a tuple of :class:`TestCase`."""
    if isinstance(tests, str):
        try:
            tests = json.loads(tests)
        except ValueError as exc:
            raise ValueError(f"tests column is a string but not JSON ({exc}): {tests[:80]!r}") from None
    if tests is None or tests == [] or tests == {}:
        if test and entry_point:
            return (TestCase("check", check=test, fn_name=entry_point, prefix=prefix or ""),)
        return ()
    items = tests if isinstance(tests, list) else [tests]
    cases: list[TestCase] = []
    for item in items:
        cases.extend(_parse_item(item))
    return tuple(cases)


def _parse_item(item: Any) -> list[TestCase]:
    if not isinstance(item, dict):
        raise ValueError(f"a test case must be a dict, got {type(item).__name__}: {str(item)[:80]!r}")
    if "check" in item:
        if not item.get("entry_point"):
            raise ValueError(f"check-style test needs 'entry_point', got keys {sorted(item)}")
        return [TestCase("check", check=str(item["check"]), fn_name=str(item["entry_point"]),
                         prefix=str(item.get("prefix") or ""))]
    if "input" in item and "output" in item:
        return [TestCase("stdio", stdin=_as_text(item["input"]), expected=_as_text(item["output"]))]
    if "inputs" in item and "outputs" in item:
        inputs, outputs = item["inputs"], item["outputs"]
        if len(inputs) != len(outputs):
            raise ValueError(f"tests have {len(inputs)} inputs but {len(outputs)} outputs; pair them up")
        if item.get("fn_name"):
            return [TestCase("call", fn_name=str(item["fn_name"]), args=json.dumps(_as_args(i)),
                             expected=json.dumps(o)) for i, o in zip(inputs, outputs)]
        return [TestCase("stdio", stdin=_as_text(i), expected=_as_text(o)) for i, o in zip(inputs, outputs)]
    raise ValueError(f"unrecognized test case with keys {sorted(item)}; expected input/output, "
                     "inputs/outputs(/fn_name) or check/entry_point (see gdpo.rewards.code)")


def _as_text(value: Any) -> str:
    """Stdin/stdout text; a list of lines (seen in TACO) is joined with newlines."""
    if isinstance(value, list):
        return "\n".join(str(v) for v in value) + "\n"
    return str(value)


def _as_args(value: Any) -> list:
    return value if isinstance(value, list) else [value]


# -- running ----------------------------------------------------------------------------------

_CALL_DRIVER = """\
import json, sys, traceback
sys.path.insert(0, "")
try:
    _code = compile(open("solution.py", encoding="utf-8").read(), "solution.py", "exec")
except (SyntaxError, ValueError) as exc:
    traceback.print_exception_only(exc)
    sys.exit(1)
_ns = {"__name__": "__gdpo_solution__"}
exec(_code, _ns)
_name = %(fn_name)r
_fn = _ns.get(_name) or getattr(_ns["Solution"](), _name)
_result = _fn(*json.loads(sys.stdin.read()))
sys.stdout.write(%(marker)r + json.dumps(_result, default=repr) + "\\n")
"""

_CHECK_DRIVER = """\
import sys, traceback
try:
    _code = compile(open("prefix.py", encoding="utf-8").read() + "\\n" + open("solution.py", encoding="utf-8").read(),
                    "solution.py", "exec")
except (SyntaxError, ValueError) as exc:
    traceback.print_exception_only(exc)
    sys.exit(1)
_ns = {"__name__": "__gdpo_solution__"}
exec(_code, _ns)
exec(compile(open("check.py", encoding="utf-8").read(), "check.py", "exec"), _ns)
try:
    _ns["check"](_ns[%(entry_point)r])
except AssertionError:
    sys.stdout.write(%(marker)r + "false\\n")
else:
    sys.stdout.write(%(marker)r + "true\\n")
"""


def run_case(program: str, case: TestCase, limits: SandboxLimits) -> tuple[bool, str]:
    """Run ``program`` on one case; (passed, sandbox status). At most ``workers`` runs at once."""
    with _RUN_SLOTS:
        return _run_case(program, case, limits)


def _run_case(program: str, case: TestCase, limits: SandboxLimits) -> tuple[bool, str]:
    if case.kind == "stdio":
        result = run_program(program, case.stdin, limits=limits, min_level=_SETTINGS.min_level)
        return result.status == "ok" and same_output(result.stdout, case.expected), result.status
    if case.kind == "call":
        driver = _CALL_DRIVER % {"fn_name": case.fn_name, "marker": _RESULT_MARKER}
        result = run_program(driver, case.args, limits=limits, files={"solution.py": program},
                             min_level=_SETTINGS.min_level)
        return result.status == "ok" and _call_matches(result, case.expected), result.status
    driver = _CHECK_DRIVER % {"entry_point": case.fn_name, "marker": _RESULT_MARKER}
    files = {"solution.py": program, "prefix.py": case.prefix, "check.py": case.check}
    result = run_program(driver, "", limits=limits, files=files, min_level=_SETTINGS.min_level)
    return result.status == "ok" and _marked_value(result) is True, result.status


def same_output(got: str, expected: str) -> bool:
    """Line-by-line equality, ignoring trailing whitespace of lines and trailing blank lines."""
    return _normalized_lines(got) == _normalized_lines(expected)


def _normalized_lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _marked_value(result: RunResult) -> Any:
    head, marker, tail = result.stdout.rpartition(_RESULT_MARKER.strip() + " ")
    if not marker:
        return None
    try:
        return json.loads(tail.strip().split("\n")[0])
    except ValueError:
        return None


def _call_matches(result: RunResult, expected_json: str) -> bool:
    got, expected = _marked_value(result), json.loads(expected_json)
    if got == expected:
        return True
    return isinstance(expected, list) and len(expected) == 1 and got == expected[0]


def evaluate_program(program: str, cases: tuple[TestCase, ...], limits: SandboxLimits | None = None,
                     workers: int | None = None) -> Evaluation:
    """Run all ``cases``, in parallel up to ``workers``; cached by (program, cases, limits)."""
    return _evaluate_cached(program, tuple(cases), limits or _SETTINGS.limits, workers or _SETTINGS.workers)


@lru_cache(maxsize=4096)
def _evaluate_cached(program: str, cases: tuple[TestCase, ...], limits: SandboxLimits, workers: int) -> Evaluation:
    if not cases:
        return Evaluation((), ())
    first = run_case(program, cases[0], limits)
    if first[1] == "compile_error":  # the same source fails to compile for every case
        return Evaluation((False,) * len(cases), ("compile_error",) * len(cases))
    outcomes = [first, *_run_rest(program, cases[1:], limits, workers, stop=first[1] == "timeout")]
    return Evaluation(tuple(p for p, _ in outcomes), tuple(s for _, s in outcomes))


SKIPPED = (False, "skipped")  # not run: an earlier case timed out


def _run_rest(program: str, rest: tuple[TestCase, ...], limits: SandboxLimits, workers: int,
              stop: bool) -> list[tuple[bool, str]]:
    """Outcomes of the remaining cases; after the first timeout the cases not started are skipped
    (a program that loops on one input usually loops on all: each would cost a full limit)."""
    if stop or not rest:
        return [SKIPPED] * len(rest)
    if workers == 1:
        outcomes: list[tuple[bool, str]] = []
        for case in rest:
            stop = stop or bool(outcomes) and outcomes[-1][1] == "timeout"
            outcomes.append(SKIPPED if stop else run_case(program, case, limits))
        return outcomes
    timed_out = threading.Event()

    def run_unless_timed_out(case: TestCase) -> tuple[bool, str]:
        if timed_out.is_set():
            return SKIPPED
        outcome = run_case(program, case, limits)
        if outcome[1] == "timeout":
            timed_out.set()
        return outcome

    with ThreadPoolExecutor(max_workers=min(workers, len(rest))) as pool:
        return list(pool.map(run_unless_timed_out, rest))


def _evaluations(completions: list[str], tests, test, entry_point, prompt=None) -> list[Evaluation | None]:
    """One Evaluation per completion (completions run concurrently); None where a row has no tests."""
    n = len(completions)
    if tests is None and (test is None or entry_point is None):
        from gdpo.rewards.reward_set import MissingColumnError

        raise MissingColumnError("the code rewards need a 'tests' column, or HumanEval's 'test' and 'entry_point' "
                                 "columns; the data has neither")
    prefixes = [p if isinstance(p, str) else None for p in (prompt if prompt is not None else [None] * n)]
    tests = tests if tests is not None else [None] * n
    test = test if test is not None else [None] * n
    entry_point = entry_point if entry_point is not None else [None] * n
    jobs = [_job(c, t, tt, e, p) for c, t, tt, e, p in zip(completions, tests, test, entry_point, prefixes)]
    if _SETTINGS.workers > 1 and sum(callable(j) for j in jobs) > 1:
        with ThreadPoolExecutor(max_workers=_SETTINGS.workers) as pool:
            futures = [pool.submit(j) if callable(j) else None for j in jobs]
            return [f.result() if f is not None else j for f, j in zip(futures, jobs)]
    return [j() if callable(j) else j for j in jobs]


def _job(completion: str, row_tests: Any, row_test: Any, row_entry: Any, row_prompt: str | None = None):
    """An Evaluation now (no tests / no program), or a thunk that runs the program."""
    cases = parse_tests(row_tests, row_test, row_entry, row_prompt)
    if not cases:
        return None
    prefix = cases[0].prefix if cases[0].kind == "check" else None
    program = extract_program(completion_text(completion), prefix)
    if program is None:
        return Evaluation((False,) * len(cases), ("no_program",) * len(cases))
    return lambda: evaluate_program(program, cases)


# -- rewards ----------------------------------------------------------------------------------

@register_reward("code_pass_rate", floor=0.0)
def code_pass_rate(completions: list[str], tests=None, test=None, entry_point=None, prompt=None,
                   **_: Any) -> list[float | None]:
    """Fraction of test cases the completion's last python block passes, in [0, 1]."""
    return [None if e is None else e.pass_rate for e in _evaluations(completions, tests, test, entry_point, prompt)]


@register_reward("code_bug_free", floor=0.0)
def code_bug_free(completions: list[str], tests=None, test=None, entry_point=None, prompt=None,
                  **_: Any) -> list[float | None]:
    """1 when no test run ends in a runtime/compile/memory error or a crash; 0 without a program."""
    evaluations = _evaluations(completions, tests, test, entry_point, prompt)
    return [None if e is None else float(e.bug_free and "no_program" not in e.statuses) for e in evaluations]


_MAX_CHARS_PER_TOKEN = 100  # with a tokenizer: a longer text is over the limit without tokenizing it
_TOKEN = re.compile(r"\w+|[^\w\s]")


def within_tokens(text: Any, max_tokens: int, tokenizer: Any = None) -> bool:
    """Whether ``text`` has at most ``max_tokens`` tokens, at a cost bounded by ``max_tokens``.

    Without a tokenizer the count stops at ``max_tokens + 1`` (exact, whatever the length);
    with one, a text of more than ``100 * max_tokens`` characters is over the limit untokenized
    (as in ``math_length``): a 50 MB completion never reaches the tokenizer.
    """
    text = completion_text(text)
    if tokenizer is None:
        for count, _ in enumerate(_TOKEN.finditer(text), start=1):
            if count > max_tokens:
                return False
        return True
    if len(text) > _MAX_CHARS_PER_TOKEN * max_tokens:
        return False
    return count_tokens(text, tokenizer) <= max_tokens


def count_tokens(text: str, tokenizer: Any = None) -> int:
    """Tokens of ``text``: with a tokenizer (``.encode`` or a callable returning a list), else words
    and punctuation marks counted separately (a rough, tokenizer-free stand-in)."""
    text = completion_text(text)
    if tokenizer is None:
        return len(_TOKEN.findall(text))
    if hasattr(tokenizer, "encode"):
        try:
            return len(tokenizer.encode(text, add_special_tokens=False))
        except TypeError:
            return len(tokenizer.encode(text))
    return len(tokenizer(text))


def _check_max_tokens(max_tokens: Any) -> int:
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError(f"max_tokens must be a positive integer, got {max_tokens!r}")
    return max_tokens


@register_reward_factory("code_length", floor=0.0)
def make_code_length(max_tokens: int = 4000, tokenizer: Any = None):
    """1 when the completion has at most ``max_tokens`` tokens, else 0."""
    limit = _check_max_tokens(max_tokens)

    def code_length(completions: list[str], **_: Any) -> list[float]:
        return [float(within_tokens(c, limit, tokenizer)) for c in completions]

    return code_length


@register_reward_factory("code_length_if_passed", floor=0.0)
def make_code_length_if_passed(max_tokens: int = 4000, tokenizer: Any = None):
    """1 when the completion is within ``max_tokens`` tokens AND passes every test case."""
    limit = _check_max_tokens(max_tokens)

    def code_length_if_passed(completions: list[str], tests=None, test=None, entry_point=None, prompt=None,
                              **_: Any) -> list[float | None]:
        evaluations = _evaluations(completions, tests, test, entry_point, prompt)
        return [None if e is None else float(e.pass_rate == 1.0 and within_tokens(c, limit, tokenizer))
                for c, e in zip(completions, evaluations)]

    return code_length_if_passed
