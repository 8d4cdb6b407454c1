"""BFCL's executable APIs as an environment, the bfcl_multi_turn task and its split, BFCL's
own multi-turn checker on replayed episodes, and the trajectory rewards."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("bfcl_eval", reason="could not import bfcl_eval (scripts/setup.sh installs bfcl-eval)")

from gdpo.data import get_task  # noqa: E402
from gdpo.data.bfcl_multi_turn import (evaluate_reference, load_entries, reference_replies,  # noqa: E402
                                       run_text_episode, split_of)
from gdpo.envs import make_env  # noqa: E402
from gdpo.envs.bfcl import bfcl_accuracy, bfcl_check, parse_call_string  # noqa: E402
from gdpo.rewards.reward_set import RewardSet  # noqa: E402
from gdpo.rewards.toolcall import ToolCall, render_tool_calls  # noqa: E402
from gdpo.train.scoring import reward_columns  # noqa: E402


@pytest.fixture(scope="module")
def task():
    return get_task("bfcl_multi_turn")


def test_split_keeps_ids_and_no_test_id_is_trained_on(task):
    train_ids = {r["id"] for r in task.train}
    test_ids = {r["id"] for r in task.test}
    assert len(train_ids) == 160 and len(test_ids) == 40 and not train_ids & test_ids
    assert {e["id"] for e in load_entries()} == train_ids | test_ids
    # The documented rule: multi_turn_base_k is a test entry iff k % 5 == 0.
    assert all(int(i.rsplit("_", 1)[1]) % 5 == 0 for i in test_ids)
    assert split_of("multi_turn_base_195") == "test" and split_of("multi_turn_base_196") == "train"
    small = get_task("bfcl_multi_turn", num_train=3, num_test=2)
    assert [r["id"] for r in small.test] == ["multi_turn_base_0", "multi_turn_base_5"]
    row = task.test[0]
    assert row["env"] == "bfcl" and row["prompt"][0]["role"] == "system" and '"name": "cd"' in row["prompt"][0]["content"]
    assert row["prompt"][1] == json.loads(row["question"])[0][0]  # the first user turn


def test_env_executes_json_calls_on_bfcl_apis(task):
    row = task.test[0]  # multi_turn_base_0: GorillaFileSystem + TwitterAPI
    env = make_env(row)
    env.reset(row)
    res = env.step([ToolCall("cd", {"folder": "document"}), ToolCall("mkdir", {"dir_name": "temp"})])
    assert not res.done and res.errors == 0 and json.loads(res.messages[0]["content"]) == {"current_working_directory": "document"}
    res = env.step([ToolCall("cd", {"folder": "nowhere"}), ToolCall("rm_rf", {}), ToolCall("mkdir", {"bogus": 1})])
    assert res.errors == 3
    assert "error" in json.loads(res.messages[0]["content"])  # BFCL's API reports misuse as {"error": ...}
    assert res.messages[1]["content"] == "Error during execution: no function named 'rm_rf'"
    assert res.messages[2]["content"].startswith("Error during execution: ")
    # Answering without a call moves to the next user turn, as BFCL's multi-turn protocol does.
    nxt = env.step([], "done")
    assert not nxt.done and nxt.messages == json.loads(row["question"])[1]
    assert env.steps == [[["cd(folder='document')", "mkdir(dir_name='temp')"], ["cd(folder='nowhere')"]], []]


def test_ground_truth_strings_are_read_as_literals(task):
    env = make_env(task.test[0])
    env.reset(task.test[0])
    assert parse_call_string("sort('final_report.pdf')", env.table) == ToolCall("sort", {"file_name": "final_report.pdf"})
    with pytest.raises(ValueError, match="not a method"):
        parse_call_string("__import__('os')", env.table)
    with pytest.raises(ValueError):
        parse_call_string("cd(folder=open('x'))", env.table)  # not a literal


def test_reference_replay_scores_100_percent_on_bfcls_checker(task):
    result = evaluate_reference(task.train + task.test)
    assert result["total"] == 200 and result["accuracy"] == 1.0, result["error_types"]


def test_checker_fails_wrong_and_unfinished_episodes(task):
    row = task.test[0]
    ep = run_text_episode(row, lambda ep: "Nothing to do.")  # answers every turn without a call
    assert ep.end == "answer" and len(ep.turns) == len(json.loads(row["question"]))
    verdict = bfcl_check(ep.env)
    assert verdict["valid"] is False and verdict["error_type"] == "multi_turn:empty_turn_model_response"
    # Right first turn, wrong second: the state check catches it on turn 2.
    ref = reference_replies(row)

    def half(ep):
        text = ref(ep)
        return text if len(ep.turns) < 2 else "Nothing to do."

    verdict = bfcl_check(run_text_episode(row, half).env)
    assert verdict["valid"] is False
    # Checking the same entry twice gives the same verdict (BFCL caches instances by name).
    good = run_text_episode(row, reference_replies(row))
    assert bfcl_check(good.env)["valid"] and bfcl_check(good.env)["valid"]
    assert bfcl_accuracy([good, ep])["accuracy"] == 0.5


def test_trajectory_rewards_on_bfcl_episodes(task):
    row = task.test[1]
    good = run_text_episode(row, reference_replies(row))
    idle = run_text_episode(row, lambda ep: "Nothing to do.")
    gt_calls = sum(len(t) for t in json.loads(row["ground_truth"]))
    first = json.loads(row["ground_truth"])[0]
    table = good.env.table
    wasteful_block = render_tool_calls([parse_call_string(c, table) for c in first] + [ToolCall("nope", {})])
    wasteful = run_text_episode(row, lambda ep: wasteful_block if not ep.turns else "Done.")
    rows = [dict(row, episode=e) for e in (good, idle, wasteful)]
    rs = RewardSet.from_config(["final_state_match", "turn_format", "call_efficiency", "env_no_errors"])
    v = rs.score(["", "", ""], **reward_columns(rows)).values
    assert v[0].tolist() == [1.0, 1.0, 1.0, 1.0]
    assert v[1, 0] == 0.0 and v[1, 1] == 1.0 and v[1, 2] == 0.0 and v[1, 3] == 1.0  # no calls: efficiency 0
    # wasteful: the first turn's calls + one unknown call, then idle: len(first)+1 calls used.
    used = len(first) + 1
    assert v[2, 2] == pytest.approx(min(used, gt_calls) / max(used, gt_calls)) and v[2, 3] == 0.0


def test_trajectory_rewards_need_an_episode():
    rs = RewardSet.from_config(["final_state_match"])
    with pytest.raises(Exception, match="episode"):
        rs.score(["x"], answer=["1"])


def test_eval_command_reports_bfcl_accuracy(capsys, tmp_path):
    from gdpo.envs.__main__ import main

    out = tmp_path / "records.jsonl"
    assert main(["--model", "reference", "--split", "test", "--limit", "5", "--output", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["accuracy"] == 1.0 and summary["total"] == 5 and summary["error_types"] == {}
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"multi_turn_base_{k}" for k in (0, 5, 10, 15, 20)]
    assert main(["--model", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a local folder" in err[0]


def test_model_episodes_are_scored_by_bfcls_checker(task):
    from gdpo.data.bfcl_multi_turn import evaluate_model
    from gdpo.models import build_tiny

    model, tok, _ = build_tiny(max_positions=512)
    rows = get_task("bfcl_multi_turn", docs="brief", num_test=2).test
    result = evaluate_model(model, tok, rows, max_new_tokens=4, max_prompt_tokens=128)
    assert result["total"] == 2 and result["accuracy"] == 0.0  # a random model solves nothing
    assert all(r["error_type"].startswith("multi_turn:") for r in result["records"])
    # it answered without calls: every user turn was played, one model turn each
    assert [r["turns"] for r in result["records"]] == [len(json.loads(r["question"])) for r in rows]


def test_trajectory_rewards_take_weights_and_conditions(task):
    row = task.test[2]
    good = run_text_episode(row, reference_replies(row))
    first = json.loads(row["ground_truth"])[0]
    table = good.env.table
    block = render_tool_calls([parse_call_string(c, table) for c in first])
    partial = run_text_episode(row, lambda ep: block if not ep.turns else "Done.")  # first turn only
    rows = [dict(row, episode=e) for e in (good, partial)]
    rs = RewardSet.from_config([{"name": "final_state_match", "weight": 2.0},
                                {"name": "call_efficiency", "weight": 0.5,
                                 "condition": {"on": "final_state_match", "min": 1.0}}])
    scores = rs.score(["", ""], **reward_columns(rows))
    assert scores.weights.tolist() == [2.0, 0.5]
    # partial: the wrong final state, so the condition gives call_efficiency its floor 0 (alone it
    # would score len(first) / all ground-truth calls).
    assert scores.values.tolist() == [[1.0, 1.0], [0.0, 0.0]]
    alone = RewardSet.from_config(["call_efficiency"]).score(["", ""], **reward_columns(rows)).values[:, 0]
    assert alone[1] == pytest.approx(len(first) / sum(len(t) for t in json.loads(row["ground_truth"])))
