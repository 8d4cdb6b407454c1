"""Tiny models, the char-level tokenizer, model loading errors, the toy task and its rewards."""

import pytest
import torch

from gdpo.data.base import get_task
from gdpo.models import (
    build_tiny,
    build_tiny_tokenizer,
    load_model_and_tokenizer,
    save_tiny,
)
from gdpo.rewards.reward_set import RewardSet


def test_tiny_tokenizer_round_trip_and_chat_template():
    tok = build_tiny_tokenizer()
    text = tok.apply_chat_template([{"role": "user", "content": "Say q"}], add_generation_prompt=True,
                                   tokenize=False)
    assert text == "<|user|>Say q<|end|><|assistant|>"
    ids = tok(text, add_special_tokens=False).input_ids
    # 3 special tokens + 5 characters
    assert len(ids) == 8
    assert tok.decode(ids, skip_special_tokens=True) == "Say q"
    assert tok.eos_token == "<|end|>" and tok.pad_token == "<|pad|>"


def test_tiny_model_is_small_deterministic_and_keeps_the_global_rng():
    state = torch.get_rng_state()
    a, b = build_tiny(seed=3).model, build_tiny(seed=3).model
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    n = sum(p.numel() for p in a.parameters())
    assert 50_000 < n < 4_000_000


def test_tiny_saves_and_loads_from_a_folder(tmp_path):
    path = save_tiny(tmp_path / "tiny", hidden_size=32, num_heads=2, seed=1)
    loaded = load_model_and_tokenizer(str(path))
    original = build_tiny(hidden_size=32, num_heads=2, seed=1)
    ids = torch.tensor([[5, 6, 7]])
    assert torch.allclose(loaded.model(ids).logits, original.model(ids).logits, atol=1e-6)
    assert loaded.tokenizer.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False) == \
        "<|user|>x<|end|>"


def test_hub_id_fails_fast_with_a_hint():
    with pytest.raises(FileNotFoundError, match="local folder"):
        load_model_and_tokenizer("HuggingFaceTB/SmolLM2-135M-Instruct")


def test_toy_rewards_by_hand():
    task = get_task("toy", num_train=4, num_test=2, letters="q", max_len=3, num_rewards=3)
    assert [r["name"] for r in task.rewards] == ["toy_letter", "toy_short", "toy_starts_lower"]
    rows = task.train[:3]
    assert rows[0]["prompt"][0]["content"] == "Say the letter q."
    rs = RewardSet.from_config(task.rewards)
    scores = rs.score(["q", "Xq!!", "abcd"], target=[r["target"] for r in rows],
                      max_len=[r["max_len"] for r in rows])
    # "q": contains q, 1 char <= 3, starts lowercase; "Xq!!": q, 4 chars, uppercase; "abcd": none of q, 4 > 3, lower
    assert scores.values.tolist() == [[1, 1, 1], [1, 0, 0], [0, 0, 1]]


def test_toy_task_two_rewards_and_bad_params():
    assert [r["name"] for r in get_task("toy", num_rewards=2).rewards] == ["toy_letter", "toy_short"]
    with pytest.raises(ValueError, match="num_rewards"):
        get_task("toy", num_rewards=5)
    with pytest.raises(ValueError, match="letters"):
        get_task("toy", letters="AB")
