"""The bfcl task (BFCL's data from the bfcl-eval package) and the bfcl_ast reward (BFCL's own checker)."""

from __future__ import annotations

import json
import sys

import pytest

from gdpo.data import get_task
from gdpo.data.bfcl import CATEGORIES, UNANSWERABLE, category_rows, parse_categories
from gdpo.eval import metrics as M
from gdpo.eval.harness import EvalSettings, evaluate
from gdpo.rewards.bfcl import bfcl_ast, check, toolrl_decode
from gdpo.rewards.toolcall import render_completion


def test_categories_sizes_ids_and_columns_come_from_the_package():
    sizes = {c: len(category_rows(c)) for c in ("simple_python", "multiple", "parallel", "parallel_multiple",
                                                 "live_simple", "live_multiple", "irrelevance")}
    assert sizes == {"simple_python": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200,
                     "live_simple": 258, "live_multiple": 1053, "irrelevance": 240}
    row = category_rows("simple_python")[0]
    assert row["id"] == "simple_python_0" and row["category"] == "simple_python" and row["live"] is False
    assert json.loads(row["possible_answer"]) == [{"calculate_triangle_area": {"base": [10], "height": [5],
                                                                               "unit": ["units", ""]}}]
    # The optional "unit" (its allowed values include "") is left out of the reference answer.
    assert json.loads(row["answer"]) == [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}]
    system, user = row["prompt"]
    assert "1. Name: calculate_triangle_area" in system["content"] and "<tool_call>" in system["content"]
    assert "Python 3 syntax" in system["content"]  # BFCL's own language hint on the function document
    assert user["content"].startswith("**Dialogue Records History**\n<user> Find the area of a triangle")
    java = category_rows("simple_java")[0]
    assert "Java 8 SDK syntax" in java["prompt"][0]["content"] and java["language"] == "java"


def test_category_parameter_aliases_and_errors():
    assert parse_categories("simple,java,live_simple") == ["simple_python", "simple_java", "live_simple"]
    assert parse_categories(None) == list(CATEGORIES) and len(CATEGORIES) == 13
    with pytest.raises(ValueError, match="multi-turn"):
        parse_categories("multi_turn_base")
    with pytest.raises(ValueError, match="unknown BFCL category 'simpel'"):
        parse_categories("simpel")
    task = get_task("bfcl", categories="simple_python,irrelevance", limit=3)
    assert [r["id"] for r in task.test] == ["simple_python_0", "simple_python_1", "simple_python_2",
                                            "irrelevance_0", "irrelevance_1", "irrelevance_2"]
    assert task.rewards[0]["name"] == "bfcl_ast" and task.train == []


# A real BFCL entry (parallel_multiple) to check the rules the checker applies.
def _row(entry_id: str) -> dict:
    category = entry_id.rsplit("_", 1)[0]
    return next(r for r in category_rows(category) if r["id"] == entry_id)


def _score(row: dict, calls: list[dict]) -> bool:
    return check(render_completion(calls, None if calls else "No tool.", key="parameters"), row["category"],
                 row["functions"], row["possible_answer"])[0]


def test_bfcl_rules_types_strings_order_and_optional_parameters():
    row = _row("simple_python_0")  # base, height: integer; unit optional ("units" or left out)
    assert _score(row, [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5}}])
    assert _score(row, [{"name": "calculate_triangle_area", "arguments": {"base": 10, "height": 5, "unit": "Units"}}])
    # a float for an integer parameter fails (only int -> float is accepted)
    assert not _score(row, [{"name": "calculate_triangle_area", "arguments": {"base": 10.0, "height": 5}}])
    assert not _score(row, [{"name": "calculate_triangle_area", "arguments": {"base": "10", "height": 5}}])
    assert not _score(row, [{"name": "calculate_triangle_area", "arguments": {"base": 10}}])  # missing required
    assert not _score(row, [])  # no call where one is needed
    par = _row("parallel_multiple_0")
    gold = json.loads(par["answer"])
    assert len(gold) == 2 and _score(par, gold) and _score(par, list(reversed(gold)))  # any order
    assert not _score(par, gold[:1]) and not _score(par, gold + gold[:1])


def test_int_accepted_for_float_and_irrelevance_relevance_rules():
    rows = [r for r in category_rows("simple_python") if any(
        p.get("type") == "float" and k in json.loads(r["answer"])[0]["arguments"]
        and float(json.loads(r["answer"])[0]["arguments"][k]).is_integer()
        for f in json.loads(r["functions"]) for k, p in f["parameters"]["properties"].items())]
    assert rows, "BFCL's simple set has float parameters with whole values"
    row = rows[0]
    calls = json.loads(row["answer"])
    name, args = calls[0]["name"], calls[0]["arguments"]
    floats = {k for f in json.loads(row["functions"]) for k, p in f["parameters"]["properties"].items()
              if p.get("type") == "float"}
    as_int = {k: int(v) if k in floats and float(v).is_integer() else v for k, v in args.items()}
    assert any(type(as_int[k]) is int and type(args[k]) is float for k in args)
    assert _score(row, [{"name": name, "arguments": as_int}])
    irr = category_rows("irrelevance")[0]
    assert _score(irr, []) and not _score(irr, [{"name": "anything", "arguments": {}}])
    rel = category_rows("live_relevance")[0]
    assert _score(rel, json.loads(rel["answer"])) and not _score(rel, [])


def test_decoding_follows_toolrls_bfcl_handler():
    text = ('<think> t </think>\n<tool_call>\n{"name": "a", "parameters": {"x": 1}}\n</tool_call>\n'
            '<tool_call>\nnot json\n{"name": "None", "parameters": {}}\n{"name": "b", "arguments": {"y": 2}}\n'
            '</tool_call>')
    # The LAST block; a line that is not JSON and a call named None are skipped; "arguments" accepted too.
    assert [(c.name, c.arguments) for c in toolrl_decode(text)] == [("b", {"y": 2})]
    assert toolrl_decode("<think> t </think>\n<response> no </response>") == []


def test_checker_import_leaves_no_stand_in_behind():
    row = category_rows("simple_python")[0]
    check(row["reference"], "simple_python", row["functions"], row["possible_answer"])
    assert "bfcl_eval.eval_checker.ast_eval.ast_checker" in sys.modules
    assert "bfcl_eval.constants.model_config" not in sys.modules  # removed again after the checker's import


def test_reference_model_scores_every_answerable_entry_of_every_category(tmp_path):
    result = evaluate(EvalSettings(model="reference", task="bfcl", batch_size=512), tmp_path, log=lambda _: None)
    assert result.num_prompts == 3641 and result.domain == "bfcl"
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    rows = get_task("bfcl").test
    failed = sorted(rows[r["index"]]["id"] for r in records if r["metrics"]["accuracy"] != [1.0])
    assert failed == sorted(UNANSWERABLE)  # exactly the entries no answer can pass
    assert result.metrics["format"] == 1.0
    assert set(result.by_category) == set(CATEGORIES)  # 2 simple_java, 2 live_simple, 3 live_multiple below
    for category, metrics in result.by_category.items():
        unanswerable = len({r["id"] for r in rows if r["category"] == category} & set(UNANSWERABLE))
        assert metrics["accuracy"] == pytest.approx(1 - unanswerable / metrics["prompts"]), category
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["bfcl"]["irrelevance"] == 1.0 and summary["samples_per_second"] > 0
    text = (tmp_path / "summary.md").read_text()
    assert "BFCL summary" in text and "| live_simple | 258 |" in text


def test_bfcl_summary_arithmetic_follows_bfcl():
    by_category = {"simple_python": (0.9, 400), "simple_java": (0.6, 100), "simple_javascript": (0.3, 50),
                   "multiple": (0.8, 200), "parallel": (0.4, 200), "parallel_multiple": (0.2, 200),
                   "live_simple": (0.5, 258), "live_multiple": (0.25, 1053), "irrelevance": (1.0, 240),
                   "live_irrelevance": (0.5, 884), "live_relevance": (0.75, 16)}
    s = M.bfcl_summary(by_category)
    assert s["simple"] == pytest.approx((0.9 + 0.6 + 0.3) / 3)  # 0.6, unweighted
    assert s["non_live"] == pytest.approx((0.6 + 0.8 + 0.4 + 0.2) / 4)  # 0.5
    assert s["live"] == pytest.approx((0.5 * 258 + 0.25 * 1053) / (258 + 1053))  # weighted by entries
    assert s["irrelevance"] == pytest.approx(0.75) and s["relevance"] == 0.75
    assert s["overall"] == pytest.approx((0.5 + s["live"] + 0.75) / 3)
    assert M.bfcl_summary({"multiple": (0.5, 200)}) == {"non_live": 0.5, "overall": 0.5}


def test_reward_through_the_registry():
    row = category_rows("multiple")[3]
    wrong = render_completion([{"name": "nope", "arguments": {}}], key="parameters")
    assert bfcl_ast([row["reference"], wrong], category=[row["category"]] * 2, functions=[row["functions"]] * 2,
                    possible_answer=[row["possible_answer"]] * 2) == [1.0, 0.0]
