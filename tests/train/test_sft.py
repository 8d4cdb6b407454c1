"""`gdpo sft`: smoke SFT -> `gdpo train` -> `gdpo eval` end to end, loss masks, resume, errors, data."""

import json
import random
from pathlib import Path

import pytest
import yaml

from gdpo.cli import main
from gdpo.train.sft_config import sft_config_from_dict
from gdpo.train.sft_data import (
    load_sft_data,
    peek_mixture_examples,
    read_jsonl_messages,
    reference_reply,
    toy_mixture_examples,
    toy_mixture_reply,
)

ROOT = Path(__file__).resolve().parents[2]
SMOKE_SFT = ROOT / "configs" / "sft" / "smoke.yaml"
SMOKE_RL = ROOT / "configs" / "smoke.yaml"


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _smoke(**changes):
    cfg = yaml.safe_load(SMOKE_SFT.read_text())
    for key, value in changes.items():
        node = cfg
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return cfg


def test_smoke_sft_then_train_then_eval(tmp_path):
    out = tmp_path / "sft"
    assert main(["sft", "--config", str(SMOKE_SFT), "--output-dir", str(out)]) == 0
    logged = [r for r in _rows(out / "metrics.jsonl") if "loss" in r]
    assert [r["step"] for r in logged] == [10, 20, 30, 40]  # steps 40, logging every 10
    assert all(r["tokens_per_s"] > 0 and r["lr"] > 0 and r["grad_norm"] > 0 for r in logged)
    assert logged[-1]["loss"] < logged[0]["loss"] - 1.0  # 3.3 -> 0.95 in the run we measured
    assert any("eval_loss" in r for r in _rows(out / "metrics.jsonl"))  # test_fraction 0.1
    final = out / "final"
    assert (final / "config.json").is_file() and (final / "tokenizer_config.json").is_file()
    assert json.loads((out / "summary.json").read_text())["steps"] == 40

    rl = tmp_path / "rl"
    short = ["steps=2", "rollout.prompts_per_step=2", "rollout.num_generations=4", "checkpoint.every=0",
             f"model.name={final}"]
    assert main(["train", "--config", str(SMOKE_RL), "--output-dir", str(rl),
                 *[x for s in short for x in ("--set", s)]]) == 0
    assert [r["step"] for r in _rows(rl / "metrics.jsonl")] == [1, 2]
    assert yaml.safe_load((rl / "config.yaml").read_text())["model"]["name"] == str(final)

    ev = tmp_path / "eval"
    assert main(["eval", "--model", str(final), "--task", "toy", "--limit", "2", "--max-new-tokens", "8",
                 "--output", str(ev)]) == 0
    assert len(_rows(ev / "results.jsonl")) == 2


def test_loss_covers_the_assistant_reply_only(tmp_path):
    from gdpo.train.sft import make_trainer

    cfg = sft_config_from_dict(_smoke(steps=1, output_dir=str(tmp_path)))
    data = load_sft_data(cfg)
    trainer, _ = make_trainer(cfg, data, tmp_path)
    tok = trainer.processing_class
    for i in range(3):
        ex = trainer.train_dataset[i]
        ids, mask = ex["input_ids"], [label != -100 for label in ex["labels"]]  # -100 = not in the loss
        target = data.train[i]["completion"][0]["content"]
        # tiny template: "<|user|>Say the letter q.<|end|><|assistant|>" then "q<|end|>": 2 trained tokens
        assert tok.decode([t for t, m in zip(ids, mask) if m]) == target + "<|end|>"
        assert sum(mask) == len(target) + 1
        assert tok.decode(ids).startswith("<|user|>Say the letter")


def _losses(out):
    return {r["step"]: r["loss"] for r in _rows(out / "metrics.jsonl") if "loss" in r}


def test_resume_continues_exactly_and_skips_incomplete_checkpoints(tmp_path):
    full = tmp_path / "full"
    cfg = ["--config", str(SMOKE_SFT), "--set", "steps=8", "--set", "checkpoint.every=4",
           "--set", "logging.every=4", "--set", "data.test_fraction=0"]
    assert main(["sft", *cfg, "--output-dir", str(full)]) == 0
    part = tmp_path / "part"
    assert main(["sft", *cfg, "--set", "steps=4", "--output-dir", str(part)]) == 0
    broken = part / "checkpoints" / "checkpoint-6"  # a save killed before trainer_state.json
    broken.mkdir()
    (broken / "model.safetensors").write_bytes(b"half")
    assert main(["sft", "--output-dir", str(part), "--resume", "--set", "steps=8"]) == 0
    assert not broken.exists()
    assert sorted(_losses(part)) == [4, 8]
    assert _losses(part)[8] == pytest.approx(_losses(full)[8], rel=1e-5)
    tokens = [r["num_tokens"] for r in _rows(part / "metrics.jsonl") if "loss" in r]
    assert tokens[1] > tokens[0]  # counted over the whole run, not restarted at the resume


def test_lora_output_is_a_plain_merged_folder(tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    assert main(["sft", "--config", str(SMOKE_SFT), "--output-dir", str(out), "--set", "steps=2",
                 "--set", "data.test_fraction=0", "--set", "model.lora={r: 4, alpha: 8}"]) == 0
    final = out / "final"
    assert not (final / "adapter_config.json").exists()
    model = AutoModelForCausalLM.from_pretrained(final)
    assert not any("lora" in n for n, _ in model.named_parameters())


@pytest.mark.parametrize("override, words", [
    ("data.sourse=task", ["data.sourse", "Did you mean 'source'"]),
    ("data.source=jsonl", ["data.path"]),
    ("model.name=/no/such/folder", ["model.name", "/no/such/folder"]),
    ("data.task=toys", ["data.task", "'toys'", "toy"]),
    ("train.lr=0", ["train.lr"]),
    ("data.params={num_rewardz: 2}", ["data (task)", "num_rewardz", "num_rewards"]),
])
def test_bad_config_exits_2_with_one_line(capsys, tmp_path, override, words):
    code = main(["sft", "--config", str(SMOKE_SFT), "--output-dir", str(tmp_path / "x"), "--set", override])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("gdpo sft: config error:") and "Traceback" not in err
    assert all(w in err for w in words), err
    assert not (tmp_path / "x" / "final").exists()


def test_bad_jsonl_line_names_the_line(capsys, tmp_path):
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n"
                    + json.dumps({"messages": [{"role": "robot", "content": "x"}]}) + "\n")
    code = main(["sft", "--config", str(SMOKE_SFT), "--set", "data.source=jsonl", "--set", f"data.path={path}",
                 "--output-dir", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "line 2" in err and "robot" in err


def test_jsonl_conversation_gives_one_example_per_assistant_turn(tmp_path):
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
            {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"},
            {"role": "assistant", "content": "a2"}]
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps({"messages": msgs}) + "\n\n")
    examples = read_jsonl_messages(path)
    assert [len(e["prompt"]) for e in examples] == [2, 4]
    assert [e["completion"][0]["content"] for e in examples] == ["a1", "a2"]


def test_reference_replies_of_tasks():
    assert reference_reply({"target": "q", "max_len": 3}, "toy") == "q"
    row = {"answer": "12", "solution": "3 * 4 = 12"}
    assert reference_reply(row, "math") == "<think>3 * 4 = 12</think>\n<answer>12</answer>"
    assert reference_reply({"reference": "<tool_call>[]</tool_call>", "answer": "[]"}, "toolcall").startswith("<tool")
    assert reference_reply({"solution": "print(1)\n", "tests": "[]"}, "code") == "```python\nprint(1)\n```"
    with pytest.raises(ValueError, match="no reference reply"):
        reference_reply({"prompt": []}, "other")


def test_task_source_renders_toolcall_references():
    cfg = sft_config_from_dict({"data": {"source": "task", "task": "toolcall", "params": {"num_train": 5,
                                                                                         "num_test": 2}}})
    data = load_sft_data(cfg)
    from gdpo.data import get_task

    rows = get_task("toolcall", num_train=5, num_test=2).train
    assert len(data.train) == 5
    assert [e["completion"][0]["content"] for e in data.train] == [r["reference"] for r in rows]
    assert data.train[0]["prompt"] == rows[0]["prompt"]


def test_toy_mixture_rates_and_the_flawless_reply():
    rng = random.Random(0)
    clean = dict(letters="abcdef", letter_rate=1.0, long_rate=0.0, upper_rate=0.0, digit_rate=0.0, punct_rate=0.0)
    assert toy_mixture_reply("q", rng, **clean) == "q"
    examples = toy_mixture_examples(num_examples=4000, seed=1, letter_rate=0.5, long_rate=0.55, upper_rate=0.3,
                                    digit_rate=0.3, punct_rate=0.3)
    targets = [e["prompt"][0]["content"][-2] for e in examples]
    replies = [e["completion"][0]["content"] for e in examples]
    # the filler never holds the target, so "contains the target" = "core is the target": rate 0.5
    # (4000 draws: std sqrt(0.25 / 4000) = 0.008, so +-0.04 is 5 std)
    assert abs(sum(t in r for t, r in zip(targets, replies)) / 4000 - 0.5) < 0.04
    assert abs(sum(" " in r for r in replies) / 4000 - 0.55) < 0.04
    assert abs(sum(any(c.isdigit() for c in r) for r in replies) / 4000 - 0.3) < 0.04
    with pytest.raises(ValueError, match="letter_rate"):
        toy_mixture_examples(letter_rate=1.5)


def test_peek_mixture_rates_and_turns():
    examples = peek_mixture_examples(num_examples=4000, seed=2, peek_rate=0.5, right_rate=0.5)
    first = [e for e in examples if len(e["prompt"]) == 1]  # every game's first assistant turn
    second = [e for e in examples if len(e["prompt"]) == 3]  # after '?' and the tool's secret
    assert len(first) == 4000 and len(first) + len(second) == len(examples)
    # 4000 games: std sqrt(0.25 / 4000) = 0.008, so +-0.04 is 5 std; after a peek, right half the time
    assert abs(sum(e["completion"][0]["content"] == "?" for e in first) / 4000 - 0.5) < 0.04
    assert abs(len(second) / 4000 - 0.5) < 0.04
    right = sum(e["completion"][0]["content"] == e["prompt"][2]["content"] for e in second) / len(second)
    assert abs(right - 0.5) < 0.06
    assert all(e["prompt"][1] == {"role": "assistant", "content": "?"} and e["prompt"][2]["role"] == "tool"
               for e in second)
    for bad, word in (({"peek_rate": 2}, "peek_rate"), ({"digits": "7"}, "digits"), ({"num_examples": 0}, "num_examples")):
        with pytest.raises(ValueError, match=word):
            peek_mixture_examples(**bad)


def test_peek_mixture_second_turn_renders_as_the_multi_turn_rollout_does():
    """SFT's turn-2 prompt is token for token the context the rollout builds before turn 2."""
    from gdpo.envs.base import tool_message
    from gdpo.envs.toy import build_peek_model
    from gdpo.rollout.multi_turn import env_token_ids

    _, tok = build_peek_model()
    game = next(e for e in peek_mixture_examples(num_examples=20, seed=0) if len(e["prompt"]) == 3)
    sft_prompt = tok.apply_chat_template(game["prompt"], add_generation_prompt=True, tokenize=True,
                                         return_dict=True)["input_ids"]
    prompt = tok.apply_chat_template(game["prompt"][:1], add_generation_prompt=True, tokenize=True,
                                     return_dict=True)["input_ids"]
    turn1 = tok("?", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    env = env_token_ids(tok, [tool_message("peek", game["prompt"][2]["content"])])
    assert sft_prompt == prompt + turn1 + env


def test_a_data_error_keeps_its_own_quotes(capsys, tmp_path):
    code = main(["sft", "--config", str(SMOKE_SFT), "--output-dir", str(tmp_path / "x"),
                 "--set", "data.source=peek_mixture", "--set", "data.params={digits: '7'}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.endswith("must be two or more digits, e.g. '0123'"), err
