"""The `reward_model` reward on a tiny random Llama sequence classifier built in code.

Every expected score comes from an independent forward pass of a separately loaded copy of
the same folder, so the reward's rendering, batching, label choice and caching are what is
being checked.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoModelForSequenceClassification, AutoTokenizer

import gdpo.rewards
from gdpo.cli import main
from gdpo.rewards import learned
from gdpo.rewards.learned import LearnedRewardError
from gdpo.rewards.reward_model import save_tiny_reward_model
from gdpo.rewards.reward_set import RewardSet

PROMPT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say the letter a."}]
COMPLETIONS = ["a", "The letter is a.", "b", "", "aaaaaaaaaaaaaaaaaaaaaaaa, and more text after", "a"]


@pytest.fixture(scope="module")
def rm_dir(tmp_path_factory):
    return save_tiny_reward_model(tmp_path_factory.mktemp("rm") / "rm", num_labels=2, seed=1)


@pytest.fixture(scope="module")
def reference(rm_dir):
    """An independently loaded copy: (model, tokenizer)."""
    tok = AutoTokenizer.from_pretrained(rm_dir)
    model = AutoModelForSequenceClassification.from_pretrained(rm_dir).eval()
    return model, tok


def direct_score(reference, prompt, completion, label=0, max_length=None):
    """One unpadded forward pass of the chat-templated conversation; logits[0, label]."""
    model, tok = reference
    text = tok.apply_chat_template([*prompt, {"role": "assistant", "content": completion}], tokenize=False)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    if max_length:
        ids = ids[:, -max_length:]  # the reward keeps the end
    with torch.no_grad():
        return model(input_ids=ids).logits[0, label].item()


def build(rm_dir, **params):
    return gdpo.rewards.get("reward_model", model=str(rm_dir), **params)


def test_scores_equal_a_direct_forward_pass_for_the_chosen_label(rm_dir, reference):
    for label in (0, 1, "LABEL_1"):
        fn = build(rm_dir, label=label, batch_size=4)
        got = fn(COMPLETIONS, prompts=[PROMPT] * len(COMPLETIONS))
        index = 1 if label == "LABEL_1" else label
        want = [direct_score(reference, PROMPT, c, index) for c in COMPLETIONS]
        assert got == pytest.approx(want, abs=1e-5)
    # the random head spreads: the two labels and the completions do differ
    assert len({round(v, 4) for v in want}) >= 4


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(completions=st.lists(st.text(alphabet="abc xyz.,!?019", max_size=30), min_size=1, max_size=7),
       batch_size=st.integers(1, 5))
def test_batched_scores_equal_one_at_a_time(rm_dir, completions, batch_size):
    batched = build(rm_dir, batch_size=batch_size, cache=False)
    single = build(rm_dir, batch_size=1, cache=False)
    prompts = [PROMPT] * len(completions)
    one_by_one = [single([c], prompts=[PROMPT])[0] for c in completions]
    assert batched(completions, prompts=prompts) == pytest.approx(one_by_one, abs=1e-5)


def test_the_prompt_is_part_of_the_input_and_of_the_cache_key(rm_dir, reference):
    fn = build(rm_dir)
    other = [{"role": "user", "content": "Say the letter z, please, now."}]
    a, b = fn(["a", "a"], prompts=[PROMPT, other])
    assert a == pytest.approx(direct_score(reference, PROMPT, "a"), abs=1e-5)
    assert b == pytest.approx(direct_score(reference, other, "a"), abs=1e-5)
    assert a != pytest.approx(b, abs=1e-6)
    # prompts as strings (a plain-text dataset) read as one user turn; 'prompt' works as the column name too
    (c,) = fn(["a"], prompt=["Say the letter a."])
    as_turn = [{"role": "user", "content": "Say the letter a."}]
    assert c == pytest.approx(direct_score(reference, as_turn, "a"), abs=1e-5)


def test_repeated_completions_are_scored_once_and_the_hit_rate_is_reported(rm_dir):
    fn = build(rm_dir, batch_size=3)
    seen = []
    real = fn.score_texts
    fn.score_texts = lambda texts: seen.append(len(texts)) or real(texts)
    group = ["a", "b", "a", "a", "b", "c", "a", "b"]  # 3 distinct of 8
    first = fn(group, prompts=[PROMPT] * 8)
    assert seen == [3]
    stats = fn.cache.stats()
    assert (stats.hits, stats.misses, stats.entries) == (5, 3, 3) and stats.hit_rate == pytest.approx(5 / 8)
    again = fn(group[::-1], prompts=[PROMPT] * 8)  # a later step: everything is cached
    assert seen == [3] and again == first[::-1]
    assert fn.cache.stats().hit_rate == pytest.approx(13 / 16)


def test_model_is_loaded_once_and_shared_by_reward_sets_and_gets_no_gradient(rm_dir):
    learned.release_shared()
    one = RewardSet.from_config([{"name": "reward_model", "params": {"model": str(rm_dir)}}, "toy_short"])
    two = RewardSet.from_config([{"name": "reward_model", "params": {"model": str(rm_dir), "label": 1}}])
    assert one.fns[0].model is two.fns[0].model
    assert not one.fns[0].model.training
    assert not any(p.requires_grad for p in one.fns[0].model.parameters())
    with torch.enable_grad():
        one.score(["a"], prompts=[PROMPT], target=["a"], max_len=[3])
    assert all(p.grad is None for p in one.fns[0].model.parameters())
    other_dtype = build(rm_dir, dtype="bfloat16")
    assert other_dtype.model is not one.fns[0].model and other_dtype.model.dtype == torch.bfloat16


def test_sigmoid_activation_left_truncation_and_a_tokenizer_without_chat_template(rm_dir, reference, tmp_path):
    raw = build(rm_dir)(COMPLETIONS, prompts=[PROMPT] * 6)
    prob = build(rm_dir, activation="sigmoid")(COMPLETIONS, prompts=[PROMPT] * 6)
    assert prob == pytest.approx([1 / (1 + math.exp(-v)) for v in raw], abs=1e-6)
    cut = build(rm_dir, max_length=12)(COMPLETIONS, prompts=[PROMPT] * 6)
    assert cut == pytest.approx([direct_score(reference, PROMPT, c, max_length=12) for c in COMPLETIONS], abs=1e-5)
    plain = build(rm_dir, chat_template=False)
    (got,) = plain(["a"], prompts=[PROMPT])
    model, tok = reference
    ids = tok("Be brief.\nSay the letter a.\na", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert got == pytest.approx(model(input_ids=ids).logits[0, 0].item(), abs=1e-5)


def test_works_as_a_trl_reward_function(rm_dir, reference, tmp_path):
    trl = pytest.importorskip("trl")
    datasets = pytest.importorskip("datasets")
    from gdpo.models import build_tiny

    fn = build(rm_dir)
    logged = {}
    # TRL's call: conversational completions, prompts, dataset columns and control keywords
    got = fn([[{"role": "assistant", "content": "a"}]], prompts=[PROMPT], completion_ids=[[1]], trainer_state=None,
             log_metric=lambda k, v: logged.setdefault(k, v), target=["a"])
    assert got == pytest.approx([direct_score(reference, PROMPT, "a")], abs=1e-5)
    assert fn.__name__ == "reward_model" and logged == {"reward_model/cache_hit_rate": 0.0}
    # and in a real GRPOTrainer step
    tiny = build_tiny(seed=0)
    rows = [{"prompt": [{"role": "user", "content": f"Say the letter {t}."}]} for t in "abcd"]
    args = trl.GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=8, num_generations=4,
                          max_completion_length=6, report_to=[], save_strategy="no", bf16=False, logging_steps=1,
                          use_cpu=True, dataloader_num_workers=0)
    trainer = trl.GRPOTrainer(model=tiny.model, reward_funcs=[build(rm_dir)], args=args,
                              train_dataset=datasets.Dataset.from_list(rows), processing_class=tiny.tokenizer)
    trainer.train()
    log = trainer.state.log_history[0]
    assert math.isfinite(log["rewards/reward_model/mean"]) and "reward_model/cache_hit_rate" in log


@pytest.mark.parametrize("params, words", [
    ({}, "params.model = None"),
    ({"model": "/nonexistent/rm"}, "no such folder"),
    ({"label": 2}, "the head has 2 label(s); use 0..1"),
    ({"label": "helpful"}, "not a label of this head"),
    ({"batch_size": 0}, "params.batch_size = 0"),
    ({"dtype": "fp8"}, "params.dtype = 'fp8'"),
    ({"device": "gpu"}, "params.device = 'gpu'"),
    ({"activation": "tanh"}, "params.activation"),
    ({"cache": "yes"}, "params.cache"),
])
def test_bad_options_fail_with_one_clear_line_before_loading(rm_dir, params, words, monkeypatch):
    loads = []
    monkeypatch.setattr(learned, "load_shared", lambda *a, **k: loads.append(a))
    if "model" not in params and params:
        params = {"model": str(rm_dir), **params}
    with pytest.raises(ValueError) as info:  # LearnedRewardError, or the schema check wrapping it
        RewardSet.from_config([{"name": "reward_model", "params": params}])
    assert words in str(info.value) and "reward 'reward_model'" in str(info.value)
    assert loads == []


def test_folders_that_are_not_reward_models_are_refused(tmp_path):
    (tmp_path / "weights.bin").write_text("x")
    with pytest.raises(LearnedRewardError, match="is a file"):
        build(tmp_path / "weights.bin")
    with pytest.raises(LearnedRewardError, match="has no config.json"):
        build(tmp_path)
    lm = tmp_path / "lm"
    lm.mkdir()
    (lm / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"]}))
    with pytest.raises(LearnedRewardError, match="not a sequence-classification head.*'judge'"):
        build(lm)
    # the same checks without building anything (what a CLI runs before loading a policy)
    with pytest.raises(LearnedRewardError, match="has no config.json"):
        learned.precheck([{"name": "reward_model", "params": {"model": str(tmp_path)}}, "toy_short"])


def test_gdpo_score_cli_with_a_param(rm_dir, reference, tmp_path, capsys):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"completion": c, "prompt": PROMPT}) + "\n" for c in COMPLETIONS[:3]))
    code = main(["score", "--rewards", "reward_model,math_format", "--param", f"reward_model.model={rm_dir}",
                 "--param", "reward_model.label=1", "--input", str(path)])
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "c.scores.jsonl").read_text().splitlines()]
    got = [r["scores"]["reward_model"] for r in rows]
    assert got == pytest.approx([direct_score(reference, PROMPT, c, 1) for c in COMPLETIONS[:3]], abs=1e-5)
    assert "| reward_model |" in capsys.readouterr().out


def test_gdpo_eval_with_a_reward_config(rm_dir, reference, tmp_path, capsys):
    from gdpo.data import get_task

    cfg = tmp_path / "rewards.yaml"
    cfg.write_text(f"- {{name: reward_model, params: {{model: {rm_dir}, label: 1}}}}\n")
    out = tmp_path / "eval"
    code = main(["eval", "--model", "tiny", "--task", "math", "--limit", "2", "--max-new-tokens", "4",
                 "--reward-config", str(cfg), "--output", str(out)])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert "reward/reward_model" in summary["metrics"] and "reward/math_format" in summary["metrics"]
    rows = get_task("math").test
    for line in (out / "results.jsonl").read_text().splitlines():
        record = json.loads(line)
        prompt = rows[record["index"]]["prompt"]
        (completion,) = record["completions"]
        want = direct_score(reference, prompt, completion, 1)  # the RM read the prompt, not just the completion
        assert record["metrics"]["reward/reward_model"] == pytest.approx([want], abs=1e-5)


@pytest.mark.parametrize("text, words", [
    ("- {name: reward_model, params: {model: /no/such/rm}}\n", "no such folder"),
    ("- {name: reward_modle}\n", "reward_model"),
    ("{name: reward_model}\n", "expected a non-empty list"),
])
def test_gdpo_eval_refuses_a_bad_reward_config_before_loading(tmp_path, capsys, text, words):
    cfg = tmp_path / "rewards.yaml"
    cfg.write_text(text)
    code = main(["eval", "--model", str(tmp_path / "no-model-here"), "--task", "math", "--reward-config", str(cfg),
                 "--output", str(tmp_path / "eval")])
    err = capsys.readouterr().err
    assert code == 2 and words in err and "Traceback" not in err
    assert "no-model-here" not in err  # the reward config failed first, before the model was looked at


def test_cache_metrics_of_a_reward_set(rm_dir):
    from gdpo.rewards.score_cache import cache_metrics

    rs = RewardSet.from_config([{"name": "reward_model", "params": {"model": str(rm_dir)}}, "toy_short"])
    rs.score(["a", "a", "b", "a"], prompts=[PROMPT] * 4, target=["a"] * 4, max_len=[3] * 4)
    assert cache_metrics(rs) == {"rewards/reward_model/cache_hit_rate": 0.5}  # 2 of 4 were repeats


def test_weights_and_conditions_apply_to_the_reward_model(rm_dir, reference):
    rs = RewardSet.from_config([
        {"name": "math_format"},
        {"name": "reward_model", "weight": 0.5, "params": {"model": str(rm_dir)},
         "condition": {"on": "math_format", "min": 1}, "floor": -9.0},
    ])
    good = "<think>2+3=5</think>\n<answer>5</answer>"
    scores = rs.score([good, "5"], prompts=[PROMPT] * 2)
    assert scores.weights.tolist() == [1.0, 0.5]
    # the well-formatted answer keeps its RM score; the other gets the entry's floor (unmet condition)
    assert scores.column("math_format").tolist() == [1.0, 0.0]
    assert scores.column("reward_model").tolist() == pytest.approx([direct_score(reference, PROMPT, good), -9.0],
                                                                   abs=1e-5)


def test_two_reward_models_in_one_set_under_a_second_name(rm_dir, reference):
    from gdpo.rewards import registry
    from gdpo.rewards.reward_model import make_reward_model

    registry.register_reward_factory("helpfulness_rm")(make_reward_model)
    try:
        rs = RewardSet.from_config([{"name": "reward_model", "params": {"model": str(rm_dir)}},
                                    {"name": "helpfulness_rm", "params": {"model": str(rm_dir), "label": 1}}])
        scores = rs.score(["a"], prompts=[PROMPT])
        assert scores.values[0].tolist() == pytest.approx([direct_score(reference, PROMPT, "a", 0),
                                                           direct_score(reference, PROMPT, "a", 1)], abs=1e-5)
    finally:
        registry.unregister("helpfulness_rm")
