"""Math data: GSM8K / MATH-JSON loaders on the shared files, and the built-in arithmetic task."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdpo.data import get_task
from gdpo.data.math import (
    THINK_ANSWER_SYSTEM_PROMPT,
    generate_word_problems,
    gsm8k_final_answer,
    load_gsm8k,
    load_math_json,
    make_prompt,
    reference_answers,
    reference_completion,
)
from gdpo.rewards.reward_set import RewardSet

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GSM8K = SHARED / "gsm8k"
DEEPSCALER = SHARED / "deepscaler"


def _needs(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"shared data {path} is absent (public copies live in ../shared/data); skipping")


# --- GSM8K --------------------------------------------------------------------------------

def test_gsm8k_final_answer_removes_commas():
    assert gsm8k_final_answer("12*100 = 1,200 dollars.\n#### 1,200") == "1200"
    with pytest.raises(ValueError, match="####"):
        gsm8k_final_answer("no final answer here")


def test_load_gsm8k_real_file_first_row():
    _needs(GSM8K / "train.jsonl")
    rows = load_gsm8k(GSM8K / "train.jsonl", limit=3)
    assert len(rows) == 3
    first = rows[0]
    # Natalia: 48 + 48/2 = 72
    assert first["answer"] == "72"
    assert first["prompt"][0] == {"role": "system", "content": THINK_ANSWER_SYSTEM_PROMPT}
    assert first["prompt"][-1]["content"].startswith("Natalia sold clips")
    assert "<<" not in first["solution"] and "48/2 = 24" in first["solution"]


def test_gsm8k_task_sizes_and_integer_answers():
    _needs(GSM8K)
    task = get_task("gsm8k", limit=200)
    assert (len(task.train), len(task.test)) == (200, 200)
    assert all(row["answer"].lstrip("-").isdigit() for row in task.train + task.test)
    assert [r["name"] for r in task.rewards] == ["math_correctness", "math_integer", "math_format"]


def test_gsm8k_missing_file_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_gsm8k(tmp_path / "nowhere.jsonl")


# --- MATH-style JSON ----------------------------------------------------------------------

def test_reference_answers_normalize_mixed_types():
    assert reference_answers(142.0) == ["142"]          # AMC floats
    assert reference_answers(["9.6\n", " 9.60 "]) == ["9.6", "9.60"]  # Minerva lists
    assert reference_answers(None) == []


def test_load_math_json_skips_records_without_answers(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([
        {"problem": "1+1?", "answer": 2.0},
        {"problem": "no answer", "answer": None},
        {"problem": "x?", "answer": ["3", "3.0"], "solution": ["because"]},
    ]))
    with pytest.warns(UserWarning, match="skipped 1"):
        rows = load_math_json(path)
    assert [r["answer"] for r in rows] == ["2", "3"]
    assert json.loads(rows[1]["answer_alternatives"]) == ["3", "3.0"]
    assert rows[1]["solution"] == "because"
    assert rows[0]["prompt"] == make_prompt("1+1?", "boxed")


@pytest.mark.filterwarnings("ignore:.*skipped 4 record")  # train/math.json has 4 answerless records
@pytest.mark.parametrize("subset, num_test", [("aime", 30), ("amc", 83), ("math", 500),
                                              ("minerva", 272), ("olympiad_bench", 675)])
def test_deepscaler_eval_sets_load(subset, num_test):
    _needs(DEEPSCALER / "test" / f"{subset}.json")
    task = get_task("deepscaler", subset=subset)
    assert len(task.test) == num_test
    assert all(isinstance(r["answer"], str) and r["answer"] for r in task.test)
    assert task.test[0]["prompt"][-1]["content"].endswith("within \\boxed{}.")
    assert task.rewards[1] == {"name": "math_length_if_correct", "params": {"max_tokens": 4000}}


def test_deepscaler_amc_float_answer_becomes_integer_string():
    _needs(DEEPSCALER / "test" / "amc.json")
    assert get_task("deepscaler", subset="amc").test[0]["answer"] == "142"  # stored as 142.0


def test_missing_default_folder_says_to_pass_path():
    from gdpo.data.math import _data_dir

    with pytest.raises(FileNotFoundError, match="pass path="):
        _data_dir(None, "no_such_folder_here", "gsm8k")


def test_deepscaler_unknown_subset_lists_what_exists():
    _needs(DEEPSCALER)
    with pytest.raises(FileNotFoundError, match="olympiad_bench"):
        get_task("deepscaler", subset="nope")


def test_loaded_rows_survive_hf_datasets():
    _needs(DEEPSCALER / "test" / "minerva.json")
    datasets = pytest.importorskip("datasets")
    rows = get_task("deepscaler", subset="minerva").test
    back = datasets.Dataset.from_list(rows).to_list()
    assert back[0]["answer"] == rows[0]["answer"] and back[0]["prompt"] == rows[0]["prompt"]


def test_deepscaler_reference_answers_score_one_when_boxed():
    _needs(DEEPSCALER / "test" / "aime.json")
    rows = get_task("deepscaler", subset="aime").test
    rewards = RewardSet.from_config([{"name": "math_correctness"}])
    completions = [f"<think>...</think> So the answer is \\boxed{{{r['answer']}}}." for r in rows]
    scores = rewards.score(completions, answer=[r["answer"] for r in rows])
    assert scores.values[:, 0].tolist() == [1.0] * len(rows)


# --- the built-in task --------------------------------------------------------------------

def test_builtin_task_is_deterministic_and_splits_are_disjoint():
    a = get_task("math", num_train=300, num_test=50, seed=3)
    b = get_task("math", num_train=300, num_test=50, seed=3)
    c = get_task("math", num_train=300, num_test=50, seed=4)
    assert a.train == b.train and a.test == b.test
    assert a.train != c.train
    questions = lambda rows: {r["prompt"][-1]["content"] for r in rows}  # noqa: E731
    assert not questions(a.train) & questions(a.test)
    assert len(questions(a.train)) == 300


def test_builtin_answers_are_small_nonnegative_integers_matching_their_solution():
    for problem in generate_word_problems(500, seed=0):
        # the solution's last step ends in "=<answer>", e.g. "9*3=27, 27+12=39"
        assert problem.solution.endswith(f"={problem.answer}")
        assert 0 <= problem.answer <= 35  # at most 5*5+10


def test_builtin_reference_completions_score_one_on_every_reward():
    task = get_task("math", num_train=100, num_test=20)
    rows = task.train + task.test
    rewards = RewardSet.from_config(task.rewards)
    # e.g. "<think>6*3=18</think>\n<answer>18</answer>": correct, short, well formatted
    completions = [reference_completion(r) for r in rows]
    scores = rewards.score(completions, answer=[r["answer"] for r in rows])
    assert scores.names == ["math_correctness", "math_length_if_correct", "math_format"]
    assert (scores.values == 1.0).all()
    # and a wrong answer scores 0 on correctness and on the conditioned length reward
    wrong = rewards.score(["<think>x</think>\n<answer>-1</answer>"], answer=[rows[0]["answer"]])
    assert wrong.values.tolist() == [[0.0, 0.0, 1.0]]


def test_builtin_task_rejects_bad_sizes():
    with pytest.raises(ValueError, match="num_train"):
        get_task("math", num_train=-1)


def test_builtin_prompt_shows_one_worked_example_that_is_not_a_problem():
    from gdpo.data.math import THINK_ANSWER_EXAMPLE

    task = get_task("math", num_train=2000, num_test=200)
    roles = [m["role"] for m in task.train[0]["prompt"]]
    assert roles == ["system", "user", "assistant", "user"]
    example_question = THINK_ANSWER_EXAMPLE[0]["content"]
    assert all(r["prompt"][-1]["content"] != example_question for r in task.train + task.test)


def test_two_step_share_controls_the_mix():
    one_step = generate_word_problems(200, seed=1, two_step_share=0.0)
    two_step = generate_word_problems(200, seed=1, two_step_share=1.0)
    assert all("," not in p.solution for p in one_step)   # "a+b=c": one step
    assert all("," in p.solution for p in two_step)       # "a*b=c, c+d=e": two steps
