"""Toy environments and tasks for smoke runs and tests.

* ``toy_calculator`` (user tools, :func:`gdpo.envs.tools.register_tools`): ``add`` and
  ``multiply``. Task ``multi_turn_toy``: "What is (a + b) * c?"; the reference uses two calls
  over two turns (``add``, then ``multiply`` on its result) and answers the number. Rewards:
  ``final_answer`` (the answer turn holds ``answer``), ``turn_format``, ``call_efficiency``
  (``needed_calls`` = 2), ``env_no_errors``.
* ``toy_peek``: a two-turn memory game with a one-character call syntax, small enough for a
  tiny random model to learn by RL in a test: a turn containing ``?`` calls ``peek``, which
  returns the row's secret digit; any other turn is the answer. ``success`` = 1 iff the model
  peeked and then answered exactly the secret. Task ``multi_turn_peek``. Its model:
  :func:`save_peek_model` (a tiny Llama over the game's 13 tokens), ``python -m gdpo.envs.toy DIR``.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from gdpo.data.base import Task, register_task
from gdpo.envs.base import Environment, check_limits, register_env, system_prompt
from gdpo.envs.tools import register_tools, tool_schemas
from gdpo.rewards import trajectory  # noqa: F401  (registers the trajectory rewards these tasks use)
from gdpo.rewards.toolcall import ParsedCalls, ToolCall


def add(a: float, b: float) -> float:
    """Add two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a + b


def multiply(a: float, b: float) -> float:
    """Multiply two numbers.

    Args:
        a: the first number.
        b: the second number.
    """
    return a * b


CALCULATOR = [add, multiply]
register_tools("toy_calculator", CALCULATOR, time_limit_s=2.0)

BRIEF_RULES = ('Tools: add(a, b), multiply(a, b). Call one per turn: <tool_call>{"name": "add", '
               '"arguments": {"a": 1, "b": 2}}</tool_call>. Then answer with the number.')


@register_task("multi_turn_toy")
def calculator_task(num_train: int = 64, num_test: int = 16, seed: int = 0, brief: bool = False,
                    max_turns: int = 4, max_trajectory_tokens: int | None = None) -> Task:
    """(a + b) * c questions for the ``toy_calculator`` environment (see the module doc)."""
    check_limits("multi_turn_toy", max_turns, max_trajectory_tokens)
    rng = random.Random(seed)
    system = BRIEF_RULES if brief else system_prompt(tool_schemas(CALCULATOR))

    def row(i: int) -> dict[str, Any]:
        a, b, c = rng.randint(1, 9), rng.randint(1, 9), rng.randint(2, 9)
        out = {"id": f"toy_{i}", "prompt": [{"role": "system", "content": system},
                                            {"role": "user", "content": f"What is ({a} + {b}) * {c}?"}],
               "env": "toy_calculator", "answer": str((a + b) * c), "needed_calls": 2, "max_turns": max_turns}
        if max_trajectory_tokens:
            out["max_trajectory_tokens"] = max_trajectory_tokens
        return out

    rows = [row(i) for i in range(num_train + num_test)]
    return Task("multi_turn_toy", rows[:num_train], rows[num_train:], rewards=[
        {"name": "final_answer", "weight": 1.0}, {"name": "turn_format", "weight": 0.5},
        {"name": "call_efficiency", "weight": 0.5}, {"name": "env_no_errors", "weight": 0.5}],
        description="(a + b) * c with add/multiply tools over several turns", info={"seed": seed})


def reference_calls(row: dict[str, Any]) -> list[list[ToolCall]]:
    """The reference trajectory of a ``multi_turn_toy`` row: one call per turn."""
    text = row["prompt"][-1]["content"]
    a, b, c = (int(x) for x in text.replace("(", " ").replace(")", " ").replace("?", " ").split()
               if x.isdigit())
    return [[ToolCall("add", {"a": a, "b": b})], [ToolCall("multiply", {"a": a + b, "b": c})]]


class PeekEnv(Environment):
    """The ``toy_peek`` game (module doc): ``?`` peeks, anything else answers."""

    def reset(self, row: dict[str, Any]) -> list[dict[str, str]]:
        self.secret = str(row["secret"])
        self.answer: str | None = None
        return []

    def parse(self, text: str) -> ParsedCalls:
        if "?" in text:
            return ParsedCalls([ToolCall("peek", {})], True, None, True)
        return ParsedCalls([], True, None, False)

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        return self.secret, False

    def step(self, calls: Sequence[ToolCall], text: str = ""):
        if not calls:
            self.answer = text.strip()
        return super().step(calls, text)

    def success(self) -> float:
        peeked = any(self.calls)
        return 1.0 if peeked and self.answer == self.secret else 0.0

    def needed_calls(self) -> int:
        return 1


register_env("toy_peek")(PeekEnv)


@register_task("multi_turn_peek")
def peek_task(num_train: int = 32, num_test: int = 8, seed: int = 0, digits: str = "0123",
              max_turns: int = 2, max_trajectory_tokens: int | None = None) -> Task:
    """Rows of the ``toy_peek`` game: a short prompt, a secret digit the model must peek at."""
    check_limits("multi_turn_peek", max_turns, max_trajectory_tokens)
    if not digits or not digits.isdigit():
        raise ValueError(f"task multi_turn_peek: digits={digits!r}; give a string of digits such as '0123'")
    rng = random.Random(seed)
    rows = [{"id": f"peek_{i}", "prompt": [{"role": "user", "content": "go"}], "env": "toy_peek",
             "secret": rng.choice(digits), "max_turns": max_turns,
             **({"max_trajectory_tokens": max_trajectory_tokens} if max_trajectory_tokens else {})}
            for i in range(num_train + num_test)]
    return Task("multi_turn_peek", rows[:num_train], rows[num_train:], rewards=[
        {"name": "final_state_match", "weight": 1.0}, {"name": "call_efficiency", "weight": 1.0}],
        description="peek (?) at a secret digit, then answer it", info={"seed": seed})


PEEK_SPECIAL = ["<|pad|>", "<|unk|>", "<|end|>", "<|user|>", "<|assistant|>", "<|tool|>"]
PEEK_CHARS = "?0123go"


def build_peek_model(hidden_size: int = 64, seed: int = 0):
    """A random-init Llama over the ``toy_peek`` game's 13 tokens and its tokenizer (chat template
    as the ``tiny`` model's); small enough that RL learns the game in ~100 steps on a CPU."""
    import torch
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from gdpo.models import TINY_CHAT_TEMPLATE

    vocab = {t: i for i, t in enumerate(PEEK_SPECIAL)}
    for ch in PEEK_CHARS:
        vocab[ch] = len(vocab)
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<|unk|>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"<\|[a-z]+\|>|."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<|pad|>", unk_token="<|unk|>",
                                  eos_token="<|end|>", additional_special_tokens=PEEK_SPECIAL[3:])
    tok.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=64, max_position_embeddings=64,
                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
                         tie_word_embeddings=True)
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    torch.random.set_rng_state(state)
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    return model, tok


def save_peek_model(path, hidden_size: int = 64, seed: int = 0):
    """:func:`build_peek_model` saved as an HF folder (``model.name: <path>`` in a config)."""
    model, tok = build_peek_model(hidden_size, seed)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        print("usage: python -m gdpo.envs.toy DIR   (saves the toy_peek model there)", file=sys.stderr)
        raise SystemExit(2)
    print(save_peek_model(sys.argv[1]))
