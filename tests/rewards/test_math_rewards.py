"""Math rewards: answer extraction, symbolic correctness, timeouts, length, format, integer."""

from __future__ import annotations

import threading
import time

import pytest

from gdpo.rewards import registry
from gdpo.rewards.math import (
    ExtractedAnswer,
    MathVerifier,
    as_integer,
    count_tokens,
    extract_final_answer,
    last_boxed_content,
    math_correctness,
    math_format,
    math_integer,
    normalize_reference,
)
from gdpo.rewards.reward_set import RewardSet

pytest.importorskip("math_verify", reason="math rewards need math-verify: pip install math-verify")


# --- extraction ---------------------------------------------------------------------------

def test_last_boxed_wins_and_nested_braces_are_balanced():
    text = r"first \boxed{1}, finally \boxed{\frac{1}{\sqrt{2}}} done"
    assert last_boxed_content(text) == r"\frac{1}{\sqrt{2}}"


def test_unclosed_last_boxed_falls_back_to_the_previous_well_formed_one():
    assert last_boxed_content(r"\boxed{7} then \boxed{\frac{1}{2}") == "7"


def test_boxed_without_braces_and_fbox():
    assert last_boxed_content(r"so $\boxed 12$.") == "12"
    assert last_boxed_content(r"\fbox{x+1}") == "x+1"


def test_answer_tag_beats_boxed_and_boxed_inside_tag_is_unwrapped():
    assert extract_final_answer(r"\boxed{3} <answer>4</answer>") == ExtractedAnswer("4", "answer_tag")
    assert extract_final_answer(r"<answer>so \boxed{5}</answer>").text == "5"


def test_unclosed_answer_tag_runs_to_the_end():
    assert extract_final_answer("<think>x</think><answer> 42 ").text == "42"


def test_boxed_inside_thinking_is_ignored_when_thinking_is_closed():
    # The draft \boxed{2} is before </think>; nothing after it is an answer.
    assert extract_final_answer(r"<think>maybe \boxed{2}</think> I am not sure") is None
    assert extract_final_answer(r"<think>maybe \boxed{2}</think> so \boxed{3}").text == "3"


def test_no_answer_and_too_long_answer_are_none():
    assert extract_final_answer("the answer is 42") is None
    assert extract_final_answer("<answer>" + "1" * 5000 + "</answer>") is None
    assert extract_final_answer("<answer>   </answer>") is None


def test_conversational_completion_is_read():
    messages = [{"role": "assistant", "content": "<answer>7</answer>"}]
    assert extract_final_answer(messages).text == "7"


# --- correctness --------------------------------------------------------------------------

def test_correctness_hand_cases():
    completions = [
        r"The answer is \boxed{0.5}.",            # 1/2 == 0.5 symbolically -> 1
        "<think>half</think>\n<answer>\\frac{1}{2}</answer>",  # -> 1
        r"\boxed{3}",                              # wrong -> 0
        "I think it is 4",                         # no answer -> 0
        r"\boxed{\frac{\sqrt{2}}{2}}",             # equals \sqrt{2}/2 -> 1
        "<answer>1,000</answer>",                  # thousands comma vs 1000 -> 1
        "<answer>18 dollars</answer>",             # unit words are dropped -> 1
    ]
    gold = ["1/2", "0.5", "4", "4", r"\sqrt{2}/2", "1000", "18"]
    assert math_correctness(completions, answer=gold) == [1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 1.0]


def test_correctness_reference_normalization():
    # AMC stores 142.0 as a float, Minerva/OlympiadBench store lists.
    assert normalize_reference(142.0) == "142"
    assert normalize_reference(["9.6"]) == "9.6"
    with pytest.raises(ValueError, match="empty"):
        normalize_reference(None)


def test_correctness_never_raises_on_garbage():
    garbage = [
        "\\boxed{" * 2000,                                  # unbalanced, deep
        "}" * 10_000 + "\\boxed{}}}",                        # empty boxed
        "<answer>\x00\ud800\u202e∑∫ 🙂</answer>",            # odd unicode
        "x" * 2_000_000 + "<answer>5</answer>",              # huge string, answer at the end
        "<answer>\\frac{{{{1}}}}{2}</answer>",                # nested braces in LaTeX
        None,
    ]
    scores = math_correctness(garbage, answer=["5"] * len(garbage))
    assert scores == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0]


def test_correctness_from_a_thread():
    results: list = []

    def worker():
        results.append(math_correctness([r"\boxed{\frac{2}{4}}", r"\boxed{0.25}"], answer=["0.5", "0.5"]))

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join(timeout=120)
    assert results == [[1.0, 0.0]]


def test_pathological_answer_times_out_and_the_worker_is_replaced():
    verifier = MathVerifier(timeout_s=1.0)
    try:
        # Warm the worker so the deadline below measures verification, not start-up.
        assert verifier.verify("1/2", ExtractedAnswer("0.5", "boxed")).correct
        outcome: list = []

        def check():  # off the main thread, where signal.alarm could not help
            start = time.perf_counter()
            outcome.append((verifier.verify("1", ExtractedAnswer(r"10^{10^{10^{10}}}", "boxed")),
                            time.perf_counter() - start))

        thread = threading.Thread(target=check)
        thread.start()
        thread.join(timeout=60)
        (result, seconds), = outcome
        assert (result.correct, result.status) == (False, "timeout")
        assert seconds < 1.0 + 2.0  # deadline plus killing the stuck worker, with slack for a busy CPU
        assert verifier.restarts == 1
        # The same answer again is answered from the verdict cache, instantly.
        again = verifier.verify("1", ExtractedAnswer(r"10^{10^{10^{10}}}", "boxed"))
        assert (again.correct, again.status) == (False, "cached")
        # A fresh worker serves the next item.
        assert verifier.verify("1/2", ExtractedAnswer("2/4", "boxed")).status == "verified"
    finally:
        verifier.close()


def test_integer_answers_skip_the_worker():
    verifier = MathVerifier()
    assert verifier.verify("72", ExtractedAnswer("72", "answer_tag")).status == "fast"
    assert verifier.verify("72", ExtractedAnswer("71", "answer_tag"))[:2] == (False, "fast")
    assert verifier._proc is None  # never started
    verifier.close()


# --- format and integer -------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("<think>3*4=12</think>\n<answer>12</answer>", 1.0),
    ("  <think>a</think>  <answer>12</answer>\n", 1.0),      # whitespace around/between is free
    ("<think>a</think><answer>12</answer>", 1.0),            # no newline needed
    ("<answer>12</answer>", 0.0),                            # no thinking
    ("<think>a</think>\n<answer>12</answer> extra", 0.0),    # trailing text
    ("<think>a</think> so <answer>12</answer>", 0.0),        # text between the blocks
    ("<think> </think>\n<answer>12</answer>", 0.0),          # blank thinking
    ("<think>a</think>\n<answer>1</answer><answer>2</answer>", 0.0),  # two answers
    ("<answer>1</answer><think>a</think>", 0.0),             # wrong order
])
def test_math_format(text, expected):
    assert math_format([text]) == [expected]


def test_math_integer():
    texts = ["<answer>42</answer>", "<answer>-7</answer>", "<answer>1,000</answer>", "<answer>12.0</answer>",
             "<answer>4.5</answer>", "<answer>1/2</answer>", r"\boxed{$5$}", "42"]
    assert math_integer(texts) == [1.0, 1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0]
    assert as_integer("1,234,567") == 1234567


# --- length -------------------------------------------------------------------------------

def test_fallback_token_count_counts_words_and_symbols():
    # x ^ 2 = 4 .  -> 6 tokens
    assert count_tokens("x^2 = 4.") == 6


def test_math_length_with_fallback_and_with_trl_completion_ids():
    length = registry.get("math_length", max_tokens=3)
    # "a b c" = 3 tokens (within), "a b c d" = 4 (over)
    assert length(["a b c", "a b c d"]) == [1.0, 0.0]
    # TRL passes the generated ids; they win over counting the text.
    assert length(["a b c d", "a"], completion_ids=[[1, 2], [1, 2, 3, 4]]) == [1.0, 0.0]
    with pytest.raises(ValueError, match="max_tokens"):
        registry.get("math_length", max_tokens=0)


def test_math_length_with_a_real_hf_tokenizer():
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"[UNK]": 0, "one": 1, "two": 2}
    backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    length = registry.get("math_length", max_tokens=2, tokenizer=tokenizer)
    # "one two" -> 2 tokens (within); "one two one" -> 3 (over)
    assert length(["one two", "one two one"]) == [1.0, 0.0]


def test_length_if_correct_through_reward_set_matches_eq8():
    rewards = RewardSet.from_config([
        {"name": "math_correctness"},
        {"name": "math_length_if_correct", "params": {"max_tokens": 5}},
    ])
    # Lengths come from TRL-style completion_ids: 5, 5 and 6 tokens against a limit of 5.
    completions = [
        "<answer>4</answer>",   # correct, 5 tokens -> [1, 1]
        "<answer>5</answer>",   # wrong, 5 tokens -> [0, 0]: the length reward needs correctness
        "<answer>4</answer>",   # correct, 6 tokens -> [1, 0]: too long
    ]
    scores = rewards.score(completions, answer=["4", "4", "4"], completion_ids=[[1] * 5, [1] * 5, [1] * 6])
    assert scores.values.tolist() == [[1.0, 1.0], [0.0, 0.0], [1.0, 0.0]]


def test_rewards_are_registered_with_their_columns():
    assert registry.entry("math_correctness").columns == ("answer",)
    assert registry.entry("math_length_if_correct").is_factory
    assert {"math_format", "math_integer", "math_length"} <= set(registry.names())


def _verify_in_child(verifier, queue):
    outcome = verifier.verify("1/2", ExtractedAnswer("3/6", "boxed"))
    queue.put((outcome.correct, outcome.status, verifier._proc.pid))


def test_forked_child_starts_its_own_worker_and_leaves_the_parents_alone():
    import multiprocessing

    verifier = MathVerifier()
    try:
        assert verifier.verify("1/2", ExtractedAnswer("0.5", "boxed")).status == "verified"
        parent_worker = verifier._proc
        context = multiprocessing.get_context("fork")
        queue = context.Queue()
        child = context.Process(target=_verify_in_child, args=(verifier, queue))
        child.start()
        correct, status, child_worker_pid = queue.get(timeout=120)
        child.join(timeout=30)
        assert (correct, status) == (True, "verified")
        assert child_worker_pid != parent_worker.pid
        # the parent's worker still serves the parent
        assert parent_worker.poll() is None
        assert verifier.verify("1/3", ExtractedAnswer("2/6", "boxed")).status == "verified"
    finally:
        verifier.close()


def test_math_verifier_does_not_import_math_and_math_re_exports_its_names():
    # The import circle math <-> math_verifier is gone: the shared ExtractedAnswer lives in the
    # lower layer (math_verifier); math re-exports the checker's public names unchanged.
    import ast
    import inspect

    from gdpo.rewards import math as math_rewards
    from gdpo.rewards import math_verifier

    tree = ast.parse(inspect.getsource(math_verifier))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "gdpo.rewards.math" not in imported
    for name in ("ExtractedAnswer", "MathVerifier", "VerifyOutcome", "VerifyStatus", "DEFAULT_TIMEOUT_S",
                 "as_integer", "default_verifier", "normalize_reference"):
        assert getattr(math_rewards, name) is getattr(math_verifier, name)
