"""Tool-calling rewards: hand-computed cases (arithmetic in the comments), edge cases, properties."""

from __future__ import annotations

import itertools
import json
import math
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gdpo.rewards import registry
from gdpo.rewards.reward_set import RewardSet
from gdpo.rewards.toolcall import (
    MAX_CHARS,
    ParsedCalls,
    ToolCall,
    _max_assignment,
    check_format,
    correctness_score,
    parse_ground_truth,
    parse_tool_calls,
    render_completion,
    tool_correctness,
    tool_format,
    values_equal,
)


def gt(*calls: tuple[str, dict]) -> str:
    """The ``answer`` column value for calls given as (name, arguments)."""
    return json.dumps([{"name": n, "arguments": a} for n, a in calls])


def reply(*lines: str, think: str = "ok", response: str | None = None) -> str:
    """A completion whose <tool_call> block holds ``lines`` verbatim."""
    out = f"<think> {think} </think>\n<tool_call>\n" + "\n".join(lines) + "\n</tool_call>"
    return out + (f"\n<response> {response} </response>" if response is not None else "")


def call(name: str, args: dict, key: str = "arguments") -> str:
    return json.dumps({"name": name, key: args})


def correctness(completion, answer) -> float:
    return tool_correctness([completion], answer=[answer])[0]


def fmt(completion, answer, expects_response=None) -> float:
    cols = {} if expects_response is None else {"expects_response": [expects_response]}
    return tool_format([completion], answer=[answer], **cols)[0]


# -- tool_correctness: hand cases ------------------------------------------------------------

class TestCorrectnessHandCases:
    def test_exact_match_scores_3(self):
        # S = r_name 1 + r_param 1 + r_value 2 = 4 = S_max (1 + 1 call + 2 keys)
        assert correctness(reply(call("f", {"a": 1, "b": "x"})), gt(("f", {"a": 1, "b": "x"}))) == 3.0

    def test_parameters_key_is_accepted(self):
        assert correctness(reply(call("f", {"a": 1}, key="parameters")), gt(("f", {"a": 1}))) == 3.0

    def test_ground_truth_with_parameters_key(self):
        answer = json.dumps([{"name": "f", "parameters": {"a": 1}}])
        assert correctness(reply(call("f", {"a": 1})), answer) == 3.0

    def test_wrong_name_scores_minus_3(self):
        # names {get_weather} vs {get_time}: r_name = 0/2; no same-name pair; S = 0 -> -3
        assert correctness(reply(call("get_time", {"city": "Paris"})), gt(("get_weather", {"city": "Paris"}))) == -3.0

    def test_partial_arguments(self):
        # r_name 1; r_param |{a}|/|{a,b}| = 1/2; r_value 1 (a); S = 2.5; S_max = 1+1+2 = 4
        # R = 6*2.5/4 - 3 = 0.75
        assert correctness(reply(call("f", {"a": 1})), gt(("f", {"a": 1, "b": 2}))) == pytest.approx(0.75)

    def test_wrong_value(self):
        # r_name 1 + r_param 1 + r_value 1 (a only) = 3 of 4 -> 6*3/4 - 3 = 1.5
        assert correctness(reply(call("f", {"a": 1, "b": 3})), gt(("f", {"a": 1, "b": 2}))) == pytest.approx(1.5)

    def test_extra_key(self):
        # r_param = |{a}| / |{a, z}| = 1/2, r_value 1 -> S = 2.5 of 3 -> 6*2.5/3 - 3 = 2
        assert correctness(reply(call("f", {"a": 1, "z": 0})), gt(("f", {"a": 1}))) == pytest.approx(2.0)

    def test_extra_call(self):
        # names {f} vs {f, g}: r_name 1/2; f pair 1 + 1 = 2; S = 2.5; S_max = 1+1+1 = 3 -> 2.0
        completion = reply(call("f", {"a": 1}), call("g", {"b": 2}))
        assert correctness(completion, gt(("f", {"a": 1}))) == pytest.approx(2.0)

    def test_duplicated_call(self):
        # names {f} vs {f, f}: multiset r_name 1/2; one pair used (2); S = 2.5 of 3 -> 2.0
        completion = reply(call("f", {"a": 1}), call("f", {"a": 1}))
        assert correctness(completion, gt(("f", {"a": 1}))) == pytest.approx(2.0)

    def test_missing_call(self):
        # names {f, g} vs {f}: r_name 1/2; f pair 2; S = 2.5; S_max = 1+2+2 = 5 -> 6*2.5/5 - 3 = 0
        completion = reply(call("f", {"a": 1}))
        assert correctness(completion, gt(("f", {"a": 1}), ("g", {"b": 2}))) == pytest.approx(0.0)

    def test_swapped_order_scores_3(self):
        completion = reply(call("g", {"b": 2}), call("f", {"a": 1}))
        assert correctness(completion, gt(("f", {"a": 1}), ("g", {"b": 2}))) == 3.0

    def test_optimal_not_greedy_matching(self):
        # G1 = f(a=1,b=2), G2 = f(a=1,b=3); P1 = f(a=1,b=3), P2 = f(a=1).
        # pair scores: G1P1 = 1 + 1 = 2, G1P2 = 1/2 + 1 = 1.5, G2P1 = 1 + 2 = 3, G2P2 = 1/2 + 1 = 1.5
        # greedy in GT order: G1->P1 (2), G2->P2 (1.5): 3.5.  optimal: G1->P2, G2->P1: 4.5.
        # S = r_name 1 + 4.5 = 5.5; S_max = 1 + 2 + 4 = 7 -> 6*5.5/7 - 3 = 12/7 (greedy: 6/7)
        completion = reply(call("f", {"a": 1, "b": 3}), call("f", {"a": 1}))
        answer = gt(("f", {"a": 1, "b": 2}), ("f", {"a": 1, "b": 3}))
        assert correctness(completion, answer) == pytest.approx(12 / 7)

    def test_no_arguments(self):
        # G = f(): S_max = 1 + 1 + 0 = 2. Exact: r_param of two empty key sets is 1 -> S = 2 -> 3.
        assert correctness(reply(call("f", {})), gt(("f", {}))) == 3.0
        # P = f(x=1): r_param 0/1 = 0, no values to match: S = 1 -> 6*1/2 - 3 = 0
        assert correctness(reply(call("f", {"x": 1})), gt(("f", {}))) == pytest.approx(0.0)

    def test_value_types(self):
        # JSON equality: 1 == 1.0, True != 1, "1" != 1; each case is f(a=?) vs f(a=1): S_max 3
        assert correctness(reply(call("f", {"a": 1.0})), gt(("f", {"a": 1}))) == 3.0
        assert correctness(reply(call("f", {"a": "1"})), gt(("f", {"a": 1}))) == pytest.approx(1.0)  # S = 2 of 3
        assert correctness(reply(call("f", {"a": True})), gt(("f", {"a": 1}))) == pytest.approx(1.0)
        assert correctness(reply(call("f", {"a": [1, {"b": None}]})), gt(("f", {"a": [1.0, {"b": None}]}))) == 3.0

    def test_unicode_values_and_names(self):
        answer = gt(("météo", {"ville": "Zürich", "城市": "東京"}))
        assert correctness(reply(call("météo", {"ville": "Zürich", "城市": "東京"})), answer) == 3.0
        raw = ('<think> ✓ </think>\n<tool_call>\n{"name": "météo", "arguments": {"ville": "Zürich", "城市": "東京"}}'
               '\n</tool_call>')
        assert correctness(raw, answer) == 3.0

    def test_openai_style_string_arguments(self):
        line = json.dumps({"name": "f", "arguments": json.dumps({"a": 1})})
        assert correctness(reply(line), gt(("f", {"a": 1}))) == 3.0


class TestCorrectnessEdgeCases:
    def test_no_calls_expected_and_none_made(self):
        assert correctness("<think> hi </think>\n<response> hello </response>", "[]") == 3.0

    def test_calls_made_when_none_expected(self):
        # r_name = 0 (one predicted, none expected); S_max = 1 -> -3
        assert correctness(reply(call("f", {})), "[]") == -3.0

    def test_no_block_when_calls_expected(self):
        assert correctness("<think> hi </think>\n<response> hello </response>", gt(("f", {"a": 1}))) == -3.0

    @pytest.mark.parametrize("body", [
        '{"name": "f", "arguments": {"a": 1}',  # unbalanced
        "{'name': 'f', 'arguments': {}}",  # Python, not JSON
        '{"name": "f", "arguments": {"a": 1}} trailing words',
        '{"name": "f", "arguments": [1]}',  # non-dict arguments
        '{"name": "f", "arguments": "not json"}',
        '{"name": "f"}',  # no arguments at all
        '{"arguments": {"a": 1}}',  # no name
        '{"name": 3, "arguments": {}}',
        '["f", {"a": 1}]',
        "42",
        "",  # empty block
        "[" * 100_000,  # deep nesting: RecursionError inside json
    ])
    def test_unparseable_calls_score_minus_3(self, body):
        completion = "<think> x </think>\n<tool_call>\n" + body + "\n</tool_call>"
        assert correctness(completion, gt(("f", {"a": 1}))) == -3.0
        assert correctness(completion, "[]") == -3.0
        assert not parse_tool_calls(completion).ok

    def test_unclosed_block(self):
        completion = '<think> x </think>\n<tool_call>\n{"name": "f", "arguments": {"a": 1}}'
        parsed = parse_tool_calls(completion)
        assert (parsed.ok, parsed.found, parsed.calls) == (False, True, [])
        assert correctness(completion, gt(("f", {"a": 1}))) == -3.0

    def test_pretty_printed_and_list_forms(self):
        pretty = json.dumps({"name": "f", "arguments": {"a": 1}}, indent=2)
        assert correctness(reply(pretty), gt(("f", {"a": 1}))) == 3.0
        as_list = json.dumps([{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}])
        assert correctness(reply(as_list), gt(("f", {"a": 1}), ("g", {}))) == 3.0
        same_line = call("f", {"a": 1}) + " " + call("g", {})
        assert correctness(reply(same_line), gt(("f", {"a": 1}), ("g", {}))) == 3.0

    def test_repeated_blocks_read_the_first(self):
        completion = ("<think> x </think>\n<tool_call>\n" + call("f", {"a": 1}) + "\n</tool_call>\n"
                      "<tool_call>\n" + call("g", {"b": 2}) + "\n</tool_call>")
        assert [c.name for c in parse_tool_calls(completion).calls] == ["f"]
        # first block only: names {f, g} vs {f} -> r_name 1/2, f pair 2: S = 2.5 of 5 -> 0
        assert correctness(completion, gt(("f", {"a": 1}), ("g", {"b": 2}))) == pytest.approx(0.0)
        assert fmt(completion, gt(("f", {"a": 1}), ("g", {"b": 2}))) == 0.0

    def test_block_mentioned_inside_think_is_skipped(self):
        completion = ("<think> I will put the call in <tool_call> tags </think>\n<tool_call>\n"
                      + call("f", {"a": 1}) + "\n</tool_call>")
        assert correctness(completion, gt(("f", {"a": 1}))) == 3.0
        assert fmt(completion, gt(("f", {"a": 1}))) == 1.0

    def test_no_think_still_reads_calls(self):
        assert correctness("<tool_call>\n" + call("f", {"a": 1}) + "\n</tool_call>", gt(("f", {"a": 1}))) == 3.0

    def test_too_many_calls(self):
        completion = reply(*[call("f", {"a": i}) for i in range(100)])
        assert not parse_tool_calls(completion).ok
        assert correctness(completion, gt(("f", {"a": 1}))) == -3.0

    def test_huge_outputs_return_quickly(self):
        answer = gt(("f", {"a": 1}))
        huge = [
            "x" * 10_000_000,
            "<think>" + "a" * 5_000_000 + "</think><tool_call>" + call("f", {"a": 1}) + "</tool_call>",
            "<think>x</think><tool_call>" + "{" * 1_000_000,
            "<tool_call>" * 1_000_000,
            "<think>x</think><tool_call>" + call("f", {"a": "z" * 150_000}) + "</tool_call>",
        ]
        start = time.perf_counter()
        c = tool_correctness(huge, answer=[answer] * len(huge))
        f = tool_format(huge, answer=[answer] * len(huge))
        assert time.perf_counter() - start < 5.0
        # the last one is under MAX_CHARS and well formed: name and key right, value wrong:
        # S = 1 + 1 + 0 of 3 -> 6*2/3 - 3 = 1
        assert c == [-3.0, -3.0, -3.0, -3.0, pytest.approx(1.0)]
        assert f == [0.0, 0.0, 0.0, 0.0, 1.0]

    def test_text_over_the_limit_is_floor(self):
        long_think = "<think>" + "a" * MAX_CHARS + "</think>\n<tool_call>\n" + call("f", {"a": 1}) + "\n</tool_call>"
        assert parse_tool_calls(long_think).error.startswith("completion has")
        assert correctness(long_think, gt(("f", {"a": 1}))) == -3.0

    def test_lone_surrogates_and_odd_input_do_not_raise(self):
        weird = ["\ud800<think>\udfff</think>", None, 123, {"content": 5}, [], b"bytes", "\x00" * 100]
        out = tool_correctness(weird, answer=[gt(("f", {"a": 1}))] * len(weird))
        assert out == [-3.0] * len(weird)
        assert tool_format(weird, answer=["[]"] * len(weird)) == [0.0] * len(weird)

    def test_conversational_completions(self):
        completion = [{"role": "assistant", "content": reply(call("f", {"a": 1}))}]
        assert correctness(completion, gt(("f", {"a": 1}))) == 3.0
        assert fmt(completion, gt(("f", {"a": 1}))) == 1.0
        parts = [{"role": "assistant", "content": [{"type": "text", "text": reply(call("f", {"a": 1}))}]}]
        assert correctness(parts, gt(("f", {"a": 1}))) == 3.0

    def test_ground_truth_as_list(self):
        assert correctness(reply(call("f", {"a": 1})), [{"name": "f", "arguments": {"a": 1}}]) == 3.0
        assert correctness(reply(call("f", {"a": 1})), [ToolCall("f", {"a": 1})]) == 3.0
        assert correctness("<think>.</think><response>x</response>", []) == 3.0


class TestBadGroundTruthRaises:
    @pytest.mark.parametrize("answer, fragment", [
        ("not json", "'not json'"),
        ('{"name": "f", "arguments": {}}', "is a dict"),
        ('[{"name": "f", "arguments": [1]}]', "item 0"),
        ('[{"arguments": {}}]', "item 0"),
        (None, "None"),
        (42, "42"),
    ])
    def test_raises_naming_the_value(self, answer, fragment):
        for fn in (tool_correctness, tool_format):
            with pytest.raises(ValueError, match="ground truth") as info:
                fn(["<think>x</think>"], answer=[answer])
            assert fragment in str(info.value)

    def test_bad_expects_response_raises(self):
        with pytest.raises(ValueError, match="expects_response"):
            tool_format(["<think>x</think>"], answer=["[]"], expects_response=["maybe"])

    def test_reward_set_gives_floor_and_counts_error(self):
        rs = RewardSet.from_config([{"name": "tool_format"}, {"name": "tool_correctness"}])
        good = reply(call("f", {"a": 1}))
        scores = rs.score([good, good], answer=[gt(("f", {"a": 1})), "garbage"])
        np.testing.assert_array_equal(scores.values, [[1.0, 3.0], [0.0, -3.0]])
        assert scores.errors["tool_correctness"].count == 1
        assert "garbage" in scores.errors["tool_correctness"].first_message


# -- tool_format -----------------------------------------------------------------------------

CALL = call("f", {"a": 1})
ONE_CALL = gt(("f", {"a": 1}))


class TestFormat:
    @pytest.mark.parametrize("completion, expected", [
        (f"<think> a </think>\n<tool_call>\n{CALL}\n</tool_call>", 1.0),
        (f"  \n<think> a </think><tool_call>{CALL}</tool_call>\n\n", 1.0),  # any whitespace between
        (f"<think></think>\n<tool_call>\n{CALL}\n</tool_call>", 1.0),  # empty think is allowed (as ToolRL)
        (f"<tool_call>\n{CALL}\n</tool_call>", 0.0),  # no think
        (f"Sure! <think> a </think>\n<tool_call>\n{CALL}\n</tool_call>", 0.0),  # text before think
        (f"<think> a </think>\n<tool_call>\n{CALL}\n</tool_call>\nDone.", 0.0),  # text after
        (f"<think> a </think>\nSo: <tool_call>\n{CALL}\n</tool_call>", 0.0),  # text between
        (f"<think> a </think>\n<think> b </think>\n<tool_call>\n{CALL}\n</tool_call>", 0.0),  # think twice
        (f"<think> a\n<tool_call>\n{CALL}\n</tool_call>", 0.0),  # think unclosed
        (f"<think> a </think>\n<tool_call>\n{CALL}\n</tool_call>\n<tool_call>\n{CALL}\n</tool_call>", 0.0),
        (f"<think> a </think>\n<tool_call>\n{CALL}\n", 0.0),  # unclosed call
        (f"<think> a </think>\n<tool_call>\n{CALL}\n</tool_call>\n<response> hi </response>", 0.0),  # unrequired
        ("<think> a </think>\n<response> hi </response>", 0.0),  # call missing
        (f"<think> uses <tool_call> and <response> tags </think>\n<tool_call>\n{CALL}\n</tool_call>", 1.0),
        (f"<think> a </think>\n</tool_call>\n{CALL}\n<tool_call>", 0.0),  # tags reversed
    ])
    def test_call_only_sample(self, completion, expected):
        assert fmt(completion, ONE_CALL) == expected

    @pytest.mark.parametrize("completion, expected", [
        ("<think> a </think>\n<response> hello </response>", 1.0),
        ("<think> a </think>", 0.0),
        (f"<think> a </think>\n<tool_call>\n{CALL}\n</tool_call>\n<response> hi </response>", 0.0),
        ("<think> a </think>\n<response> hi </response>\n<response> again </response>", 0.0),
        ("<think> a </think>\n<response> hi <tool_call> </response>", 0.0),  # a tag inside the response
    ])
    def test_response_only_sample_by_default(self, completion, expected):
        assert fmt(completion, "[]") == expected  # no calls -> a response is expected by default

    def test_call_and_response_sample(self):
        both = f"<think> a </think>\n<tool_call>\n{CALL}\n</tool_call>\n<response> done </response>"
        swapped = f"<think> a </think>\n<response> done </response>\n<tool_call>\n{CALL}\n</tool_call>"
        assert fmt(both, ONE_CALL, expects_response=True) == 1.0
        assert fmt(swapped, ONE_CALL, expects_response=True) == 0.0
        assert fmt(f"<think> a </think>\n<tool_call>\n{CALL}\n</tool_call>", ONE_CALL, expects_response=True) == 0.0
        assert fmt(both, ONE_CALL, expects_response=False) == 0.0

    def test_think_only_sample(self):
        assert fmt("<think> nothing to do </think>", "[]", expects_response=False) == 1.0
        assert fmt("<think> a </think>\n<response> hi </response>", "[]", expects_response=False) == 0.0

    def test_expects_response_values(self):
        both = f"<think> a </think>\n<tool_call>\n{CALL}\n</tool_call>\n<response> done </response>"
        for flag in (True, 1, "true", np.bool_(True)):
            assert fmt(both, ONE_CALL, expects_response=flag) == 1.0
        # None in the column means the default (a response iff no calls)
        assert tool_format([both], answer=[ONE_CALL], expects_response=[None]) == [0.0]

    def test_check_format_directly(self):
        assert check_format("<think>a</think>", need_call=False, need_response=False)
        assert not check_format("<think>a</think><response>b</response>", need_call=False, need_response=False)


# -- helpers ---------------------------------------------------------------------------------

def test_parse_tool_calls_result_shape():
    parsed = parse_tool_calls(reply(call("f", {"a": 1}, key="parameters")))
    assert parsed == ParsedCalls([ToolCall("f", {"a": 1})], True, None, True)
    calls, ok, error, found = parse_tool_calls("<think>a</think><response>b</response>")
    assert (calls, ok, error, found) == ([], True, None, False)


def test_render_round_trip():
    calls = [ToolCall("f", {"a": 1}), ToolCall("g", {"s": "é"})]
    text = render_completion(calls, "done")
    assert parse_tool_calls(text).calls == calls
    assert check_format(text, need_call=True, need_response=True)
    assert parse_ground_truth(json.dumps([c.to_dict() for c in calls])) == calls


def test_registered_with_floors_and_columns():
    fmt_entry, corr_entry = registry.entry("tool_format"), registry.entry("tool_correctness")
    assert (fmt_entry.floor, fmt_entry.columns) == (0.0, ("answer",))
    assert (corr_entry.floor, corr_entry.columns) == (-3.0, ("answer",))
    assert registry.get("tool_correctness") is tool_correctness


def test_reward_set_reports_missing_answer_column():
    from gdpo.rewards.reward_set import MissingColumnError

    rs = RewardSet.from_config(["tool_format"])
    with pytest.raises(MissingColumnError, match="answer"):
        rs.score(["<think>x</think>"])


# -- properties ------------------------------------------------------------------------------

def _brute_force_assignment(scores):
    n, m = len(scores), len(scores[0])
    if n <= m:
        return max(sum(scores[i][j] for i, j in enumerate(p)) for p in itertools.permutations(range(m), n))
    return max(sum(scores[i][j] for j, i in enumerate(p)) for p in itertools.permutations(range(n), m))


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 5).flatmap(lambda n: st.integers(1, 5).flatmap(
    lambda m: st.lists(st.lists(st.sampled_from([0, 0.5, 1, 1.5, 2, 3, 1 / 3]), min_size=m, max_size=m),
                       min_size=n, max_size=n))))
def test_hungarian_matches_brute_force(scores):
    assert _max_assignment(scores) == pytest.approx(_brute_force_assignment(scores))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from([0.5, 1.0, -2.0]) | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=2), inner, max_size=3),
    max_leaves=6,
)
calls_strategy = st.lists(
    st.builds(ToolCall, st.sampled_from(["f", "g", "h"]),
              st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), json_values, max_size=3)),
    max_size=4,
)


@settings(max_examples=100, deadline=None)
@given(calls_strategy, calls_strategy)
def test_correctness_bounded(gt_calls, pred_calls):
    r = correctness_score(gt_calls, pred_calls)
    assert -3.0 <= r <= 3.0 and math.isfinite(r)


@settings(max_examples=100, deadline=None)
@given(calls_strategy, st.randoms())
def test_any_permutation_of_the_reference_scores_3(gt_calls, rnd):
    pred = list(gt_calls)
    rnd.shuffle(pred)
    answer = json.dumps([c.to_dict() for c in gt_calls])
    text = render_completion(pred, None if gt_calls else "ok")
    assert tool_correctness([text], answer=[answer]) == [3.0]
    assert tool_format([text], answer=[answer]) == [1.0]


MODEL_TOKENS = list('<>/{}[]":, \n\\abtk') + ["<think>", "</think>", "<tool_call>", "</tool_call>", "<response>",
                                               '"name"', '"arguments"', "é", "\ud800"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(MODEL_TOKENS), max_size=60).map("".join))
def test_never_raises_on_model_output(text):
    c = tool_correctness([text], answer=[ONE_CALL])[0]
    f = tool_format([text], answer=[ONE_CALL])[0]
    assert -3.0 <= c <= 3.0 and f in (0.0, 1.0)


def test_values_equal_table():
    assert values_equal({"a": [1, 2.0]}, {"a": [1.0, 2]})
    assert not values_equal({"a": 1}, {"a": 1, "b": None})
    assert not values_equal([1, 2], [2, 1])
    assert not values_equal(None, 0) and not values_equal(False, 0) and not values_equal("", None)
    assert values_equal(float("inf"), float("inf")) and not values_equal(float("nan"), float("nan"))


def test_misaligned_columns_raise():
    with pytest.raises(ValueError):
        tool_correctness(["<think>x</think>", "<think>y</think>"], answer=["[]"])
    with pytest.raises(ValueError):
        tool_format(["<think>x</think>"], answer=["[]"], expects_response=[True, False])
