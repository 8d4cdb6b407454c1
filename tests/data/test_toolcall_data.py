"""ToolRL loaders (SFT JSON, verl parquet) and the built-in ``toolcall`` task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gdpo.data import get_task, task_names
from gdpo.data import toolcall as tc
from gdpo.rewards.reward_set import RewardSet
from gdpo.rewards.toolcall import parse_ground_truth, parse_tool_calls, render_completion

SHARED_SFT = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "toolrl" / "rlla_sft.json"
needs_shared = pytest.mark.skipif(not SHARED_SFT.exists(), reason=f"shared ToolRL data not found at {SHARED_SFT}")

SYSTEM = "You can use these tools:\n1. Name: f\nParameters: {\"a\": {\"type\": \"int\"}}"
CALL_OUT = '<think> call f </think>\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n</tool_call>'
BOTH_OUT = ('<think> I use <tool_call> tags </think>\n<tool_call>\n{"name": "f", "parameters": {"a": 1}}\n'
            '{"name": "g", "parameters": {}}\n</tool_call>\n<response> Working on it. </response>')
RESP_OUT = "<think> no tool fits </think>\n<response> Which city? </response>"


def score_references(rows):
    """Score each row's ``reference`` with the task's default rewards: [N, 2] (format, correctness)."""
    rs = RewardSet.from_config(tc.DEFAULT_REWARDS)
    scores = rs.score([r["reference"] for r in rows], answer=[r["answer"] for r in rows],
                      expects_response=[r["expects_response"] for r in rows])
    assert scores.error_summary() == {}
    return scores.values


# -- SFT JSON --------------------------------------------------------------------------------

def write_sft(path: Path, outputs: list[str]) -> Path:
    records = [{"instruction": SYSTEM, "input": f"<user> request {i} </user>", "output": o}
               for i, o in enumerate(outputs)]
    path.write_text(json.dumps(records), encoding="utf-8")
    return path


def test_load_sft_small_file(tmp_path):
    rows = tc.load_toolrl_sft(write_sft(tmp_path / "sft.json", [CALL_OUT, BOTH_OUT, RESP_OUT]))
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert rows[0]["prompt"] == [{"role": "system", "content": SYSTEM},
                                 {"role": "user", "content": "<user> request 0 </user>"}]
    assert json.loads(rows[0]["answer"]) == [{"name": "f", "arguments": {"a": 1}}]
    assert json.loads(rows[1]["answer"]) == [{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]
    assert rows[2]["answer"] == "[]"
    assert [r["expects_response"] for r in rows] == [False, True, True]
    assert rows[1]["reference"] == BOTH_OUT and rows[0]["source"] == "toolrl_sft"
    np.testing.assert_array_equal(score_references(rows), [[1.0, 3.0]] * 3)


def test_load_sft_jsonl(tmp_path):
    path = tmp_path / "sft.jsonl"
    lines = [json.dumps({"instruction": SYSTEM, "input": "u", "output": o}) for o in (CALL_OUT, RESP_OUT)]
    path.write_text("\n".join(lines))
    assert [r["answer"] != "[]" for r in tc.load_toolrl_sft(path)] == [True, False]


def test_load_sft_bad_record(tmp_path):
    bad = '<think> x </think>\n<tool_call>\n{"name": "f", "parameters": [1]}\n</tool_call>'
    path = write_sft(tmp_path / "sft.json", [CALL_OUT, bad, RESP_OUT])
    with pytest.raises(ValueError, match=r"record 1: cannot read the reference's tool calls"):
        tc.load_toolrl_sft(path)
    assert [r["index"] for r in tc.load_toolrl_sft(path, on_error="skip")] == [0, 2]
    (tmp_path / "keys.json").write_text(json.dumps([{"question": "q"}]))
    with pytest.raises(ValueError, match="expected keys instruction, input, output"):
        tc.load_toolrl_sft(tmp_path / "keys.json")
    with pytest.raises(ValueError, match="on_error"):
        tc.load_toolrl_sft(path, on_error="ignore")
    with pytest.raises(FileNotFoundError, match="no ToolRL data file"):
        tc.load_toolrl_sft(tmp_path / "missing.json")


@pytest.mark.shared_data
@needs_shared
def test_load_real_sft_file():
    rows = tc.load_toolrl_sft(SHARED_SFT)
    assert len(rows) == 400
    assert all([m["role"] for m in r["prompt"]] == ["system", "user"] for r in rows)
    with_calls = [r for r in rows if r["answer"] != "[]"]
    assert len(with_calls) == 346  # counted from the file: 346 with calls, 54 response-only
    assert sum(r["expects_response"] for r in rows) == 54
    assert all(parse_ground_truth(r["answer"]) for r in with_calls)
    assert max(len(json.loads(r["answer"])) for r in rows) == 5  # one request needs 5 calls
    # every reference reply is well formed and exactly right under our rewards
    np.testing.assert_array_equal(score_references(rows), [[1.0, 3.0]] * len(rows))


@pytest.mark.shared_data
@needs_shared
def test_toolrl_task_default_path():
    task = get_task("toolrl")
    assert (len(task.train), len(task.test)) == (360, 40)
    assert task.rewards == [{"name": "tool_format"}, {"name": "tool_correctness"}]
    again = get_task("toolrl", seed=0)
    assert [r["index"] for r in again.test] == [r["index"] for r in task.test]
    other = get_task("toolrl", seed=1, test_fraction=0.25)
    assert len(other.test) == 100 and [r["index"] for r in other.test] != [r["index"] for r in task.test]


def test_toolrl_task_with_path_and_errors(tmp_path, monkeypatch):
    path = write_sft(tmp_path / "sft.json", [CALL_OUT] * 10)
    task = get_task("toolrl", path=str(path), test_fraction=0.2, seed=3)
    assert (len(task.train), len(task.test)) == (8, 2)
    assert sorted(r["index"] for r in task.train + task.test) == list(range(10))
    whole = get_task("toolrl", path=path, test_fraction=1.0)  # evaluate every row of one file
    assert (len(whole.train), len(whole.test)) == (0, 10)
    with pytest.raises(ValueError, match="test_fraction"):
        get_task("toolrl", path=path, test_fraction=1.5)
    other = write_sft(tmp_path / "test.json", [CALL_OUT] * 3)
    split = get_task("toolrl", path=path, test_path=other)  # ToolRL's own train / test files
    assert (len(split.train), len(split.test)) == (10, 3) and split.info["test_path"] == str(other)
    monkeypatch.setattr(tc, "DEFAULT_TOOLRL_PATH", tmp_path / "nowhere" / "rlla_sft.json")
    with pytest.raises(FileNotFoundError, match="pass path="):
        get_task("toolrl")


def test_toolrl_short_rows_filter_after_the_split_and_cut_only_the_think(tmp_path):
    # 10 records; records 0-4 carry a long user turn (+400 characters), 5-9 a short one
    long_user = "x" * 400
    records = [{"instruction": SYSTEM, "input": f"<user> request {i} {long_user if i < 5 else ''} </user>",
                "output": "<think> one two three four </think>\n" + CALL_OUT.split("\n", 1)[1]} for i in range(10)]
    path = tmp_path / "sft.json"
    path.write_text(json.dumps(records), encoding="utf-8")
    full = get_task("toolrl", path=path, test_fraction=0.3, seed=1)
    limit = min(tc.prompt_chars(r) for r in full.train + full.test) + 50  # admits exactly the short ones
    short = get_task("toolrl", path=path, test_fraction=0.3, seed=1, max_prompt_chars=limit, reference_think_words=2)
    short_ids = {r["index"] for r in full.train + full.test if tc.prompt_chars(r) <= limit}
    assert short_ids == {5, 6, 7, 8, 9}
    # the filter runs after the split: each filtered split is a subset of the unfiltered one
    assert {r["index"] for r in short.test} == {r["index"] for r in full.test} & short_ids
    assert {r["index"] for r in short.train} == {r["index"] for r in full.train} & short_ids
    # the think keeps its first 2 words; the call after it is unchanged, so the rewards still give [1, 3]
    assert all(r["reference"].startswith("<think> one two </think>\n<tool_call>") for r in short.train)
    np.testing.assert_array_equal(score_references(short.train), [[1.0, 3.0]] * len(short.train))
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="max_prompt_chars"):
            get_task("toolrl", path=path, max_prompt_chars=bad)
    with pytest.raises(ValueError, match="reference_think_words"):
        get_task("toolrl", path=path, reference_think_words=0)


# -- verl parquet ----------------------------------------------------------------------------

def verl_records(outputs: list[str]) -> list[dict]:
    return [{
        "data_source": "rlla",
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"<user> q{i} </user>"}],
        "ability": "tool_use",
        "reward_model": {"style": "rule", "ground_truth": out},
        "extra_info": {"index": 100 + i, "split": "train", "input": f"<user> q{i} </user>",
                       "instruction": SYSTEM, "output": out},
    } for i, out in enumerate(outputs)]


def test_parquet_round_trip_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    path = tmp_path / "train.parquet"
    datasets.Dataset.from_list(verl_records([CALL_OUT, BOTH_OUT, RESP_OUT])).to_parquet(str(path))
    rows = tc.load_toolrl_parquet(path)
    assert [r["index"] for r in rows] == [100, 101, 102]
    assert [r["split"] for r in rows] == ["train"] * 3 and rows[0]["source"] == "rlla"
    assert rows[0]["prompt"][1] == {"role": "user", "content": "<user> q0 </user>"}
    assert [len(json.loads(r["answer"])) for r in rows] == [1, 2, 0]
    assert [r["expects_response"] for r in rows] == [False, True, True]
    np.testing.assert_array_equal(score_references(rows), [[1.0, 3.0]] * 3)
    task = get_task("toolrl", path=path, test_fraction=0.0)
    assert len(task.train) == 3 and task.test == []


def test_parquet_with_pyarrow_and_bad_rows(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    records = verl_records([CALL_OUT, "<think> x </think>\n<tool_call>\n{oops}\n</tool_call>"])
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(records), path)
    with pytest.raises(ValueError, match="row 1: cannot read"):
        tc.load_toolrl_parquet(path)
    assert len(tc.load_toolrl_parquet(path, on_error="skip")) == 1
    no_gt = [{"data_source": "x", "prompt": "just a string prompt", "reward_model": {"style": "rule"}}]
    pq.write_table(pa.Table.from_pylist(no_gt), tmp_path / "nogt.parquet")
    with pytest.raises(ValueError, match="reward_model.ground_truth"):
        tc.load_toolrl_parquet(tmp_path / "nogt.parquet")
    with pytest.raises(FileNotFoundError):
        tc.load_toolrl_parquet(tmp_path / "missing.parquet")


# -- the built-in task -----------------------------------------------------------------------

def test_builtin_task_registered_with_default_rewards():
    assert {"toolcall", "toolrl"} <= set(task_names())
    task = get_task("toolcall", num_train=50, num_test=10)
    assert (len(task.train), len(task.test)) == (50, 10)
    assert task.rewards == [{"name": "tool_format"}, {"name": "tool_correctness"}]
    assert {"answer", "expects_response", "reference"} <= set(task.columns())


def test_builtin_task_is_deterministic():
    a = get_task("toolcall", num_train=200, num_test=50, seed=7)
    b = get_task("toolcall", num_train=200, num_test=50, seed=7)
    c = get_task("toolcall", num_train=200, num_test=50, seed=8)
    assert a.train == b.train and a.test == b.test
    assert a.train != c.train and a.test != c.test
    # the test split does not depend on num_train (only on seed and num_test)
    assert get_task("toolcall", num_train=20, num_test=50, seed=7).test == a.test


def test_builtin_task_rows_are_sound():
    task = get_task("toolcall", num_train=600, num_test=200)
    key = lambda r: (r["prompt"][-1]["content"], r["tools"])  # noqa: E731
    assert not {key(r) for r in task.train} & {key(r) for r in task.test}
    assert len({key(r) for r in task.train}) == len(task.train)
    kinds = {r["kind"] for r in task.train}
    assert kinds == set(tc.KINDS)
    for r in task.train + task.test:
        calls = parse_ground_truth(r["answer"])
        shown = json.loads(r["tools"])
        assert [m["role"] for m in r["prompt"]] == ["system", "user", "assistant", "user"]
        system, example, user = r["prompt"][0]["content"], r["prompt"][2]["content"], r["prompt"][3]["content"]
        assert r["expects_response"] == (not calls)
        assert len(shown) == 4 and all(f'"name": "{name}"' in system for name in shown)
        assert "<tool_call>" in system and "<response>" in system
        example_calls = parse_tool_calls(example).calls
        assert len(example_calls) == 1 and example_calls[0].name in shown
        for c in calls:
            assert c.name in shown
            tool = next(t for t in tc.TOOLS if t.name == c.name)
            assert set(tool.required) <= set(c.arguments) <= set(tool.properties)
            for value in c.arguments.values():
                assert str(value) in user  # every value is stated verbatim in the request
        if r["kind"] == "double" or r["kind"] == "paired":
            assert len(calls) == 2
        if r["kind"] == "paired":
            assert calls[0].name == calls[1].name


def test_every_builtin_reference_scores_full_marks():
    task = get_task("toolcall", num_train=1000, num_test=200)
    rows = task.train + task.test
    np.testing.assert_array_equal(score_references(rows), [[1.0, 3.0]] * len(rows))
    # the same through a fresh rendering of the answer column (with "parameters" spelling)
    texts = [render_completion(parse_ground_truth(r["answer"]), "ok" if r["expects_response"] else None,
                               key="parameters") for r in rows]
    scores = RewardSet.from_config(task.rewards).score(
        texts, answer=[r["answer"] for r in rows], expects_response=[r["expects_response"] for r in rows])
    assert (scores.values == [1.0, 3.0]).all()


def test_builtin_example_in_system_message():
    turn = get_task("toolcall", num_train=20, num_test=0).train
    system = get_task("toolcall", num_train=20, num_test=0, example="system").train
    for a, b in zip(turn, system, strict=True):
        assert [m["role"] for m in b["prompt"]] == ["system", "user"]
        assert b["prompt"][0]["content"] == (a["prompt"][0]["content"] + '\n\nExample. Request: "'
                                             + a["prompt"][1]["content"] + '" Reply:\n' + a["prompt"][2]["content"])
        assert b["prompt"][1] == a["prompt"][3] and b["answer"] == a["answer"]
    with pytest.raises(ValueError, match="example must be one of"):
        get_task("toolcall", example="inline")


def test_builtin_rows_survive_datasets_round_trip():
    datasets = pytest.importorskip("datasets")
    rows = get_task("toolcall", num_train=30, num_test=1).train
    assert datasets.Dataset.from_list(rows).to_list() == rows


def test_builtin_parameter_errors():
    with pytest.raises(ValueError, match="num_tools"):
        get_task("toolcall", num_tools=1)
    with pytest.raises(ValueError, match=">= 0"):
        get_task("toolcall", num_train=-1)
    task = get_task("toolcall", num_train=0, num_test=5, num_tools=len(tc.TOOLS))
    assert task.train == [] and len(task.test) == 5


def test_paper_recipe_names_toolrls_real_files():
    import inspect

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "configs" / "paper" /
                             "qwen2.5-1.5b_toolcall_gdpo.yaml").read_text())
    params = config["task"]["params"]
    # ToolRL's repository ships dataset/rlla_4k/train.parquet and test.parquet (verl RL files).
    assert params["path"].endswith("dataset/rlla_4k/train.parquet")
    assert params["test_path"].endswith("dataset/rlla_4k/test.parquet")
    inspect.signature(tc.toolrl_task).bind(**params)  # every parameter is one the task takes
