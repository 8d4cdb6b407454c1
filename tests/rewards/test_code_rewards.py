"""Code rewards: program extraction, test schemas, pass rate / bug-free / length, hostile programs."""

from __future__ import annotations

import json
import os
import socket
import uuid

import pytest

from gdpo.rewards import registry
from gdpo.rewards.code import (
    TestCase,
    code_bug_free,
    code_pass_rate,
    configure,
    count_tokens,
    evaluate_program,
    extract_program,
    make_code_length,
    make_code_length_if_passed,
    parse_tests,
    same_output,
)
from gdpo.rewards.reward_set import RewardSet
from gdpo.rewards.sandbox import SandboxLimits, sandbox_capabilities

TestCase.__test__ = False  # a dataclass named Test*, not a pytest class

SMALL = SandboxLimits(cpu_seconds=1, wall_seconds=3, memory_bytes=256 * 1024**2, max_processes=8,
                      output_bytes=64 * 1024)
ADD_TESTS = json.dumps([{"input": "1 2\n", "output": "3\n"}, {"input": "5 5\n", "output": "10"},
                        {"input": "0 0\n", "output": "0\n"}, {"input": "-1 1\n", "output": "0\n"}])


@pytest.fixture(autouse=True)
def small_limits():
    before = configure()
    configure(limits=SMALL, workers=2)
    yield
    configure(limits=before.limits, workers=before.workers)


def block(code: str) -> str:
    return f"Here you go:\n```python\n{code}\n```\n"


# -- extraction and parsing -----------------------------------------------------------------

def test_last_python_block_is_the_program():
    text = "```python\nprint(1)\n```\ntext\n```\nprint(2)\n```\n```cpp\nint main(){}\n```"
    assert extract_program(text) == "print(2)\n"  # the cpp block is not python; the bare one is
    assert extract_program("```py\nx = 1\n```") == "x = 1\n"
    assert extract_program("no code") is None
    assert extract_program("```python\nprint(1)\n") is None  # unclosed fence: truncated, not counted


def test_parse_tests_accepts_every_documented_shape():
    stdio = parse_tests(ADD_TESTS)
    assert [c.kind for c in stdio] == ["stdio"] * 4 and stdio[1].expected == "10"
    apps = parse_tests({"inputs": ["1\n", ["a", "b"]], "outputs": ["2\n", "x"]})
    assert apps[1].stdin == "a\nb\n"  # TACO-style list of lines joined
    call = parse_tests(json.dumps({"fn_name": "f", "inputs": [[1, 2]], "outputs": [3]}))
    assert call[0].kind == "call" and json.loads(call[0].args) == [1, 2]
    check = parse_tests(None, test="def check(c): pass", entry_point="f")
    assert check[0].kind == "check" and check[0].fn_name == "f"
    assert parse_tests([]) == ()
    with pytest.raises(ValueError, match="unrecognized test case"):
        parse_tests([{"stdin": "1"}])
    with pytest.raises(ValueError, match="2 inputs but 1 outputs"):
        parse_tests({"inputs": ["1", "2"], "outputs": ["1"]})


def test_output_comparison_ignores_trailing_whitespace_only():
    assert same_output("3 \n4\n\n", "3\n4")
    assert not same_output("3\n4\n", "3 4\n")
    assert not same_output(" 3\n", "3\n")  # leading space matters


# -- pass rate, bug-free --------------------------------------------------------------------

def test_correct_wrong_syntax_runtime_and_missing_programs():
    completions = [
        block("a, b = map(int, input().split())\nprint(a + b)"),  # passes 4/4
        block("a, b = map(int, input().split())\nprint(a * b)"),  # 1*2=2 no, 25 no, 0 yes, -1 no -> 1/4
        block("def f(:\n    pass"),  # syntax error
        block("a, b = map(int, input().split())\nprint(a // (a + b))"),  # 1//3=0 wrong, 5//10=0 wrong,
        # 0//0 ZeroDivisionError, -1//0 ZeroDivisionError -> 0/4, runtime error
        "I cannot write code today.",  # no program
    ]
    tests = [ADD_TESTS] * len(completions)
    assert code_pass_rate(completions, tests=tests) == [1.0, 0.25, 0.0, 0.0, 0.0]
    # a wrong answer is not a bug; syntax/runtime errors are; no program counts as buggy
    assert code_bug_free(completions, tests=tests) == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_rows_without_tests_are_not_applicable():
    assert code_pass_rate([block("print(1)")], tests=[None]) == [None]
    assert code_bug_free([block("print(1)")], tests=["[]"]) == [None]


def test_call_based_cases_top_level_and_solution_class():
    tests = json.dumps({"fn_name": "add", "inputs": [[1, 2], [3, 4], [0, 0]], "outputs": [3, [7], 1]})
    good = block("def add(a, b):\n    return a + b")  # 3 ok, 7 == [7][0] ok, 0 != 1 -> 2/3
    method = block("class Solution:\n    def add(self, a, b):\n        return a + b")
    raising = block("def add(a, b):\n    raise KeyError(a)")
    assert code_pass_rate([good, method, raising], tests=[tests] * 3) == pytest.approx([2 / 3, 2 / 3, 0.0])
    assert code_bug_free([good, raising], tests=[tests] * 2) == [1.0, 0.0]


def test_humaneval_check_cases_with_prefix_and_raw_columns():
    check = "def check(candidate):\n    assert candidate([1, 2]) == 3\n    assert candidate([]) == 0\n"
    prefix = "from typing import List\n\ndef total(xs: List[int]) -> int:\n    \"\"\"Sum.\"\"\"\n"
    tests = json.dumps([{"check": check, "entry_point": "total", "prefix": prefix}])
    full = block("def total(xs: List[int]) -> int:\n    return sum(xs)")  # List comes from the prefix
    body_only = block("    return sum(xs)")  # completes the prefix's function
    wrong = block("def total(xs):\n    return len(xs)")  # 2 != 3: AssertionError = wrong, not a bug
    assert code_pass_rate([full, body_only, wrong], tests=[tests] * 3) == [1.0, 1.0, 0.0]
    assert code_bug_free([wrong], tests=[tests]) == [1.0]
    # raw HumanEval columns, no `tests`
    raw = code_pass_rate([block("def total(xs):\n    return sum(xs)")], test=[check], entry_point=["total"])
    assert raw == [1.0]


def test_results_are_cached_across_rewards():
    program = "import random\nprint(random.random())"  # output differs per run: a re-run would show
    cases = parse_tests([{"input": "", "output": "x"}])
    first = evaluate_program(program, cases)
    assert evaluate_program(program, cases) is first


# -- length ---------------------------------------------------------------------------------

def test_length_rewards():
    # "```python\nprint(1)\n```" -> 3 backticks + python + print + ( + 1 + ) + 3 backticks = 11 tokens
    assert count_tokens("```python\nprint(1)\n```") == 11
    assert make_code_length(max_tokens=11)(["```python\nprint(1)\n```"]) == [1.0]
    assert make_code_length(max_tokens=10)(["```python\nprint(1)\n```"]) == [0.0]
    assert count_tokens("abc", tokenizer=lambda text: list(text)) == 3  # callable tokenizer
    good = block("a, b = map(int, input().split())\nprint(a + b)")
    wrong = block("print(3)")
    length_if_passed = make_code_length_if_passed(max_tokens=4000)
    assert length_if_passed([good, wrong], tests=[ADD_TESTS] * 2) == [1.0, 0.0]
    assert make_code_length_if_passed(max_tokens=5)([good], tests=[ADD_TESTS]) == [0.0]  # passes, too long
    with pytest.raises(ValueError, match="max_tokens"):
        make_code_length(max_tokens=0)


def test_registered_names_and_reward_set_with_condition():
    assert {"code_pass_rate", "code_bug_free", "code_length", "code_length_if_passed"} <= set(registry.names())
    rs = RewardSet.from_config([
        {"name": "code_pass_rate"},
        {"name": "code_length", "params": {"max_tokens": 4000}, "condition": {"on": "code_pass_rate", "min": 1.0}},
        {"name": "code_bug_free"},
    ])
    completions = [block("a, b = map(int, input().split())\nprint(a + b)"), block("print(3)")]
    scores = rs.score(completions, tests=[ADD_TESTS] * 2)
    # second: passes 1/4 ("3"), so the conditioned length reward drops to its floor 0
    assert scores.values.tolist() == [[1.0, 1.0, 1.0], [0.25, 0.0, 1.0]]


# -- hostile programs score 0 ---------------------------------------------------------------

def test_hostile_programs_score_zero_and_leave_no_trace(tmp_path):
    configure(limits=SandboxLimits(cpu_seconds=1, wall_seconds=1.5, memory_bytes=256 * 1024**2,
                                   max_processes=8, output_bytes=64 * 1024))
    caps = sandbox_capabilities()
    token = uuid.uuid4().hex
    target = str(tmp_path / f"gdpo-pwned-{token}")  # a host temp dir; the program sees a private /tmp
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        listener.settimeout(0.2)
        port = listener.getsockname()[1]
        hostile = {
            "busy": "while True:\n    pass",
            "sleep": "import time\ntime.sleep(60)",
            "memory": "x = bytearray(1 << 30)",
            "output": "import sys\nwhile True:\n    sys.stdout.write('3' * 65536)",
            "write": f"open({target!r}, 'w').write('x')\nprint(3)",
            "connect": f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\nprint(3)",
        }
        if caps.process_limit:
            hostile["fork"] = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"
        tests = json.dumps([{"input": "", "output": "3\n"}])
        names = list(hostile)
        completions = [block(hostile[n]) for n in names]
        pass_rates = dict(zip(names, code_pass_rate(completions, tests=[tests] * len(names))))
        if caps.network_isolated:
            with pytest.raises(socket.timeout):
                listener.accept()
    if caps.filesystem_isolated:
        assert pass_rates.pop("write") == 0.0  # the host path does not exist in the private /tmp
        assert not os.path.exists(target)
        assert pass_rates.pop("connect") == 0.0  # connection refused -> runtime error
    assert all(rate == 0.0 for name, rate in pass_rates.items() if name not in ("write", "connect")), pass_rates
    bug = dict(zip(names, code_bug_free(completions, tests=[tests] * len(names))))
    assert bug["memory"] == 0.0  # MemoryError is a runtime error
    assert bug["busy"] == 1.0 and bug["sleep"] == 1.0 and bug["output"] == 1.0  # timeouts/output: not bugs


# -- issue 11, item 11 ------------------------------------------------------------------------

def test_a_program_that_loops_on_every_case_runs_once(tmp_path):
    # Before: all 4 cases ran, each to its limit ("timeout" x 4). Now the cases after the
    # first timeout are skipped: one run, one limit's worth of time.
    program = "while True:\n    pass\n"
    cases = parse_tests(ADD_TESTS)
    evaluation = evaluate_program(program, cases, limits=SMALL, workers=2)
    assert evaluation.statuses == ("timeout", "skipped", "skipped", "skipped")
    assert evaluation.pass_rate == 0.0 and evaluation.bug_free  # a timeout is not a bug
    # with one worker the cases run in list order: 1st ok, 2nd loops (5 + 5 = 10), rest skipped
    slow_on_ten = "a, b = map(int, input().split())\nwhile a + b == 10:\n    pass\nprint(a + b)\n"
    sequential = evaluate_program(slow_on_ten, cases, limits=SMALL, workers=1)
    assert sequential.statuses == ("ok", "timeout", "skipped", "skipped")
    assert sequential.passed == (True, False, False, False)


def test_code_length_on_a_50_mb_completion_is_cheap():
    import time
    import tracemalloc

    huge = "```python\nprint(1)\n```\n" + "word " * 10_000_000  # 50 MB, 10 million fallback tokens
    tracemalloc.start()
    start = time.perf_counter()
    scores = make_code_length(max_tokens=4000)([huge, "```python\nprint(1)\n```"])
    seconds = time.perf_counter() - start
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert scores == [0.0, 1.0]
    # before: 22 s and 350 MB (a list of every token); now the count stops at 4001 tokens
    assert seconds < 1.0, seconds
    assert peak < 10 * 1024**2, peak
    one_huge_word = "x" * 50_000_000  # one token by the fallback count: within the limit, exactly
    assert make_code_length(max_tokens=1)([one_huge_word]) == [1.0]


def test_code_length_with_a_tokenizer_skips_tokenizing_a_huge_completion():
    calls = []

    def tokenizer(text):  # a callable tokenizer: one token per character
        calls.append(len(text))
        return list(text)

    reward = make_code_length(max_tokens=10, tokenizer=tokenizer)
    assert reward(["x" * 10, "x" * 11, "x" * 5000]) == [1.0, 0.0, 0.0]
    assert calls == [10, 11]  # 5000 chars > 100 x 10: over the limit without the tokenizer


def test_a_lone_surrogate_in_a_program_is_the_programs_error_not_the_sandboxes():
    # Before: SandboxError("sandbox setup failed: UnicodeEncodeError ...") blamed the sandbox.
    completion = "```python\nprint('\ud800')\n```"
    assert code_pass_rate([completion], tests=[ADD_TESTS]) == [0.0]
    assert code_bug_free([completion], tests=[ADD_TESTS]) == [0.0]
