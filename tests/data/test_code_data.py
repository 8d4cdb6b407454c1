"""Code data: APPS / CodeContests / TACO and HumanEval loaders, the built-in `code` task."""

from __future__ import annotations

import gzip
import json
import re

import pytest

from gdpo.data.base import get_task
from gdpo.data.code import (
    _problems,
    generate_code_problems,
    load_humaneval,
    load_io_problems,
)
from gdpo.rewards.code import configure, parse_tests
from gdpo.rewards.reward_set import RewardSet
from gdpo.rewards.sandbox import SandboxLimits


@pytest.fixture(autouse=True)
def small_limits():
    before = configure()
    configure(limits=SandboxLimits(cpu_seconds=2, wall_seconds=5, memory_bytes=512 * 1024**2), workers=2)
    yield
    configure(limits=before.limits, workers=before.workers)


def write_jsonl(path, records, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in records)
    if gz:
        with gzip.open(path, "wt", encoding="utf-8") as handle:
            handle.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


APPS_RECORD = {  # APPS / TACO: input_output is a JSON string
    "problem_id": 7, "question": "Add two numbers.", "difficulty": "introductory", "starter_code": "",
    "solutions": json.dumps(["a,b=map(int,input().split())\nprint(a+b)"]),
    "input_output": json.dumps({"inputs": ["1 2\n", "3 4\n"], "outputs": ["3\n", "7\n"]}),
}
APPS_CALL_RECORD = {
    "problem_id": 8, "question": "Write add(a, b).", "starter_code": "def add(a, b):",
    "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [[3]]}),
}
CODECONTESTS_RECORD = {  # CodeContests: description + {input: [...], output: [...]} blocks
    "name": "1_A. Double", "description": "Print twice n.", "source": 2, "difficulty": 7,
    "public_tests": {"input": ["2\n"], "output": ["4\n"]},
    "private_tests": {"input": ["5\n"], "output": ["10\n"]},
    "generated_tests": {"input": ["0\n"], "output": ["0\n"]},
}
NO_TESTS_RECORD = {"question": "No tests here.", "input_output": ""}


@pytest.mark.parametrize("gz", [False, True])
def test_load_io_problems_reads_apps_codecontests_and_taco_shapes(tmp_path, gz):
    path = write_jsonl(tmp_path / ("p.jsonl.gz" if gz else "p.jsonl"),
                       [APPS_RECORD, APPS_CALL_RECORD, CODECONTESTS_RECORD, NO_TESTS_RECORD], gz=gz)
    rows = load_io_problems(path)
    assert len(rows) == 3  # the record without tests is skipped
    apps, call, contests = rows
    assert apps["prompt"][0]["role"] == "user" and "Add two numbers." in apps["prompt"][0]["content"]
    assert json.loads(apps["tests"]) == [{"input": "1 2\n", "output": "3\n"}, {"input": "3 4\n", "output": "7\n"}]
    assert apps["problem_id"] == "7"
    assert [c.kind for c in parse_tests(call["tests"])] == ["call"]
    assert len(json.loads(contests["tests"])) == 3  # public + private + generated
    assert contests["name"] == "1_A. Double"
    assert load_io_problems(path, limit=1) == rows[:1]


def test_apps_rows_score_through_the_reward_set(tmp_path):
    rows = load_io_problems(write_jsonl(tmp_path / "p.jsonl", [APPS_RECORD, CODECONTESTS_RECORD]))
    rs = RewardSet.from_config(["code_pass_rate", "code_bug_free"])
    completions = ["```python\na, b = map(int, input().split())\nprint(a + b)\n```",
                   "```python\nprint(2 * int(input()) + 0 ** 0 - 1)\n```"]  # 2n + 1 - 1 = 2n
    scores = rs.score(completions, tests=[r["tests"] for r in rows])
    assert scores.values.tolist() == [[1.0, 1.0], [1.0, 1.0]]


def test_load_humaneval_and_check(tmp_path):
    record = {
        "task_id": "HumanEval/0", "entry_point": "add",
        "prompt": "from typing import List\n\n\ndef add(xs: List[int]) -> int:\n    \"\"\"Sum of xs.\"\"\"\n",
        "canonical_solution": "    return sum(xs)\n",
        "test": "METADATA = {}\n\n\ndef check(candidate):\n    assert candidate([1, 2]) == 3\n",
    }
    rows = load_humaneval(write_jsonl(tmp_path / "he.jsonl.gz", [record], gz=True))
    assert rows[0]["task_id"] == "HumanEval/0"
    assert "def add" in rows[0]["prompt"][0]["content"]
    rs = RewardSet.from_config(["code_pass_rate"])
    canonical = f"```python\n{rows[0]['solution']}```"
    assert rs.score([canonical, "```python\ndef add(xs):\n    return 0\n```"],
                    tests=[rows[0]["tests"]] * 2).values[:, 0].tolist() == [1.0, 0.0]
    task = get_task("humaneval", path=str(tmp_path / "he.jsonl.gz"))
    assert task.train == [] and len(task.test) == 1
    with pytest.raises(ValueError, match="lacks field"):
        load_humaneval(write_jsonl(tmp_path / "bad.jsonl", [{"task_id": "x"}]))


def test_missing_file_and_bad_json_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such data file"):
        load_io_problems(tmp_path / "absent.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "x"}\nnot json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        load_io_problems(bad)


def test_apps_task_splits_by_seed(tmp_path):
    records = [dict(APPS_RECORD, problem_id=i) for i in range(10)]
    path = write_jsonl(tmp_path / "p.jsonl", records)
    task = get_task("apps", path=str(path), test_fraction=0.2, seed=3)
    assert len(task.train) == 8 and len(task.test) == 2  # 10 * 0.2 = 2 test rows
    again = get_task("apps", path=str(path), test_fraction=0.2, seed=3)
    assert [r["problem_id"] for r in again.test] == [r["problem_id"] for r in task.test]


# -- the built-in task ----------------------------------------------------------------------

def test_code_task_is_deterministic_distinct_and_has_default_rewards():
    task = get_task("code", num_train=20, num_test=10, seed=5)
    assert len(task.train) == 20 and len(task.test) == 10
    keys = [r["problem"] for r in task.train + task.test]
    assert len(set(keys)) == 30  # distinct problems, test disjoint from train
    assert get_task("code", num_train=20, num_test=10, seed=5).train == task.train
    assert get_task("code", num_train=20, num_test=10, seed=6).train != task.train
    assert task.rewards == [{"name": "code_pass_rate"},
                            {"name": "code_length_if_passed", "params": {"max_tokens": 300}},
                            {"name": "code_bug_free"}]
    assert all(len(json.loads(r["tests"])) == 4 for r in task.train)
    assert max(len(r["prompt"][0]["content"]) for r in task.train) < 200  # short prompts
    default = get_task("code")
    assert (len(default.train), len(default.test)) == (200, 50)
    with pytest.raises(ValueError, match="distinct problems"):
        get_task("code", num_train=len(_problems()), num_test=1)


def test_reference_answers_agree_with_reference_programs_on_one_problem_per_family():
    problems = _problems()
    families = {}  # family name (leading letters of the key) -> its first problem
    for index, problem in enumerate(problems):
        families.setdefault(re.match(r"[a-z]+", problem.key).group(), index)
    by_key = {r["problem"]: r for r in generate_code_problems(len(problems), seed=0)}
    rows = [by_key[problems[i].key] for i in families.values()]
    assert len(rows) >= 10
    rs = RewardSet.from_config(get_task("code", num_train=1, num_test=0).rewards)
    completions = [f"```python\n{r['solution']}```" for r in rows]
    scores = rs.score(completions, tests=[r["tests"] for r in rows])
    assert scores.values.tolist() == [[1.0, 1.0, 1.0]] * len(rows), [r["problem"] for r in rows]


def test_wrong_solution_scores_partially():
    row = next(r for r in generate_code_problems(len(_problems()), seed=0) if r["problem"] == "largest+0")
    tests = json.loads(row["tests"])
    # "print the first number" is right only where the first number is the largest
    first = "input()\nprint(input().split()[0])\n"
    expected = sum(t["input"].split("\n")[1].split()[0] == t["output"].strip() for t in tests) / len(tests)
    rs = RewardSet.from_config(["code_pass_rate", "code_bug_free"])
    scores = rs.score([f"```python\n{first}```", "```python\nprint(max(\n```"], tests=[row["tests"]] * 2)
    assert scores.values.tolist() == [[expected, 1.0], [0.0, 0.0]]


@pytest.mark.slow
def test_every_reference_program_passes_its_tests():
    rows = generate_code_problems(len(_problems()), seed=0)
    rs = RewardSet.from_config(["code_pass_rate"])
    scores = rs.score([f"```python\n{r['solution']}```" for r in rows], tests=[r["tests"] for r in rows])
    failing = [r["problem"] for r, v in zip(rows, scores.values[:, 0]) if v != 1.0]
    assert failing == []
