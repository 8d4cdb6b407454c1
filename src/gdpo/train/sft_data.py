"""Chat examples for `gdpo sft`, in TRL's conversational prompt-completion shape.

Every example is ``{"prompt": [messages...], "completion": [{"role": "assistant", "content": str}]}``:
TRL renders ``prompt`` with the chat template's generation prompt and ``prompt + completion``
in full, and computes the loss on the completion's tokens only (the assistant reply and the
template's end-of-turn token). A conversation with several assistant turns becomes one
example per assistant turn (prompt = every message before it), so every assistant turn is
trained and nothing else is.

Sources (``data.source``):

* ``task``: a registered task's train rows with their reference reply (:func:`reference_reply`);
* ``toolrl``: ToolRL's SFT JSON (``instruction`` / ``input`` / ``output`` records);
* ``jsonl``: one ``{"messages": [{"role", "content"}, ...]}`` per line;
* ``toy_mixture``: toy-task prompts (``Say the letter q.``) with generated replies that earn
  each toy reward part of the time (:func:`toy_mixture_examples`);
* ``peek_mixture``: two-turn ``toy_peek`` games (peek, read the secret, answer) that earn the
  game's trajectory rewards part of the time (:func:`peek_mixture_examples`).

>>> reply = reference_reply({"prompt": [], "target": "q", "max_len": 3}, "toy")
>>> reply
'q'
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path
from typing import Any, NamedTuple

from gdpo.train.config_io import ConfigError

Example = dict[str, Any]
ROLES = ("system", "user", "assistant", "tool")


class SFTData(NamedTuple):
    train: list[Example]
    test: list[Example]  # held out for the eval loss ([] when data.test_fraction = 0)
    description: str


def reference_reply(row: dict[str, Any], task: str) -> str:
    """The ideal assistant reply for a task row, or ValueError saying the task has none.

    ``reference`` column (toolcall, toolrl, BFCL gold calls): as is; ``solution`` + ``answer``
    (math, gsm8k): ``<think>solution</think>\\n<answer>answer</answer>``; ``solution`` alone
    (code): a fenced Python block; ``target`` (toy): the letter itself.
    """
    if isinstance(row.get("reference"), str) and row["reference"]:
        return row["reference"]
    if "answer" in row and "solution" in row and not row.get("tests"):
        from gdpo.data.math import reference_completion

        return reference_completion(row)
    if isinstance(row.get("solution"), str) and row["solution"].strip():
        return f"```python\n{row['solution'].rstrip()}\n```"
    if task == "toy" and "target" in row:
        return str(row["target"])
    raise ValueError(f"task {task!r}: its rows carry no reference reply (no 'reference', 'solution' or 'target' "
                     f"column; columns: {sorted(row)}); use data.source: jsonl with your own replies")


def _check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}}, got {messages!r:.120}")
    out = []
    for j, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise ValueError(f"{where}: message {j} must be {{'role': one of {ROLES}, 'content': str}}, "
                             f"got {m!r:.120}")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def split_turns(messages: list[dict[str, str]]) -> list[Example]:
    """One prompt-completion example per assistant turn that follows at least one message."""
    return [{"prompt": messages[:i], "completion": [messages[i]]}
            for i, m in enumerate(messages) if m["role"] == "assistant" and i > 0]


def read_jsonl_messages(path: str | Path) -> list[Example]:
    """A JSONL of ``{"messages": [...]}`` as examples (every assistant turn trained)."""
    path = Path(path).expanduser()
    examples = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}: line {n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: not valid JSON ({exc.msg}); write one JSON object per line") from None
        if not isinstance(record, dict) or "messages" not in record:
            raise ValueError(f"{where}: expected an object with a 'messages' list, got {line[:120]!r}")
        turns = split_turns(_check_messages(record["messages"], where))
        if not turns:
            raise ValueError(f"{where}: no assistant message after the first message; nothing to train on")
        examples.extend(turns)
    if not examples:
        raise ValueError(f"{path}: no examples (empty file?)")
    return examples


def _row_examples(rows: list[dict[str, Any]], task: str) -> list[Example]:
    return [{"prompt": list(r["prompt"]), "completion": [{"role": "assistant", "content": reference_reply(r, task)}]}
            for r in rows]


# --------------------------------------------------------------------------------------
# toy_mixture: a warm start that earns each toy reward part of the time
# --------------------------------------------------------------------------------------
def toy_mixture_reply(target: str, rng: random.Random, *, letters: str, letter_rate: float, long_rate: float,
                      upper_rate: float, digit_rate: float, punct_rate: float) -> str:
    """A reply to ``Say the letter <target>.`` with independent flaws, each with its own rate.

    core = the target (probability ``letter_rate``) or another of ``letters``; then, each
    independently: a space and 3 other letters after it (``long_rate``), an uppercase letter,
    a digit, a punctuation mark (each before or after, at random). The flawless reply is the
    target alone, which earns every toy reward.
    """
    others = [c for c in letters if c != target] or [c for c in string.ascii_lowercase if c != target]
    parts = [target if rng.random() < letter_rate else rng.choice(others)]
    if rng.random() < long_rate:
        parts.append(" " + "".join(rng.choice(others) for _ in range(3)))
    for rate, pool in ((upper_rate, string.ascii_uppercase), (digit_rate, string.digits), (punct_rate, "!?.,;")):
        if rng.random() < rate:
            ch = rng.choice(pool)
            parts = [ch, *parts] if rng.random() < 0.5 else [*parts, ch]
    return "".join(parts)


def _check_mixture(num_examples: Any, rates: dict[str, Any]) -> None:
    """A generated warm start's parameters: a positive example count and probabilities in [0, 1]."""
    for key, value in rates.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"data.params.{key} = {value!r} must be a probability in [0, 1]")
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"data.params.num_examples = {num_examples!r} must be a positive integer")


def toy_mixture_examples(num_examples: int = 2000, letters: str = "abcdef", seed: int = 0,
                         letter_rate: float = 0.5, long_rate: float = 0.4, upper_rate: float = 0.3,
                         digit_rate: float = 0.3, punct_rate: float = 0.3) -> list[Example]:
    """``num_examples`` toy prompts with :func:`toy_mixture_reply` replies (the toy task's prompt text)."""
    rates = {"letter_rate": letter_rate, "long_rate": long_rate, "upper_rate": upper_rate,
             "digit_rate": digit_rate, "punct_rate": punct_rate}
    _check_mixture(num_examples, rates)
    if not letters or any(c not in string.ascii_lowercase for c in letters):
        raise ValueError(f"data.params.letters = {letters!r} must be lowercase ASCII letters, e.g. 'abcdef'")
    rng = random.Random(f"gdpo-toy-mixture:{seed}")
    out = []
    for _ in range(num_examples):
        target = rng.choice(letters)
        reply = toy_mixture_reply(target, rng, letters=letters, **rates)
        out.append({"prompt": [{"role": "user", "content": f"Say the letter {target}."}],
                    "completion": [{"role": "assistant", "content": reply}]})
    return out


# --------------------------------------------------------------------------------------
# peek_mixture: a multi-turn warm start for the toy_peek game
# --------------------------------------------------------------------------------------
def peek_mixture_examples(num_examples: int = 2000, digits: str = "0123", seed: int = 0,
                          peek_rate: float = 0.5, right_rate: float = 0.5) -> list[Example]:
    """``num_examples`` ``toy_peek`` conversations (prompt ``go``), one example per assistant turn.

    With probability ``peek_rate`` the model peeks (``?``), the tool returns the secret and the
    model answers it (probability ``right_rate``) or another digit; otherwise it answers a
    random digit at once, without the tool. A model that imitates the mixture earns
    ``call_efficiency`` and ``final_state_match`` each part of the time, so both vary in most
    groups at the start of RL (the multi-signal regime).
    """
    _check_mixture(num_examples, {"peek_rate": peek_rate, "right_rate": right_rate})
    if not isinstance(digits, str) or len(digits) < 2 or not digits.isdigit():
        raise ValueError(f"data.params.digits = {digits!r} must be two or more digits, e.g. '0123'")
    rng = random.Random(f"gdpo-peek-mixture:{seed}")
    out: list[Example] = []
    for _ in range(num_examples):
        secret = rng.choice(digits)
        messages = [{"role": "user", "content": "go"}]
        if rng.random() < peek_rate:
            wrong = rng.choice([d for d in digits if d != secret])
            answer = secret if rng.random() < right_rate else wrong
            messages += [{"role": "assistant", "content": "?"}, {"role": "tool", "content": secret},
                         {"role": "assistant", "content": answer}]
        else:
            messages.append({"role": "assistant", "content": rng.choice(digits)})
        out.extend(split_turns(messages))
    return out


# --------------------------------------------------------------------------------------
# The one entry point
# --------------------------------------------------------------------------------------
def _examples(cfg) -> tuple[list[Example], str]:
    d = cfg.data
    if d.source == "task":
        from gdpo.data.base import get_task

        task = get_task(d.task, **d.params)
        return _row_examples(task.train, d.task), f"task {d.task} (train rows' reference replies)"
    if d.source == "toolrl":
        from gdpo.data.toolcall import DEFAULT_TOOLRL_PATH, load_toolrl_sft

        path = Path(d.path).expanduser() if d.path else DEFAULT_TOOLRL_PATH
        if not path.is_file():
            raise ValueError(f"data.path: ToolRL SFT file {str(path)!r} not found; set data.path to rlla_sft.json")
        rows = load_toolrl_sft(path)
        return _row_examples(rows, "toolrl"), f"ToolRL SFT ({path})"
    if d.source == "jsonl":
        return read_jsonl_messages(d.path), f"JSONL messages ({d.path})"
    if d.source == "peek_mixture":
        return peek_mixture_examples(**d.params), f"peek_mixture {d.params}"
    return toy_mixture_examples(**d.params), f"toy_mixture {d.params}"


def load_sft_data(cfg) -> SFTData:
    """The config's examples, split into train and held-out test (by ``data.seed``), limited.

    Raises :class:`ConfigError` (one line, names the key) for unreadable data, before any model loads.
    """
    try:
        examples, description = _examples(cfg)
    except TypeError as exc:  # a task builder / generator given an unknown parameter
        raise ConfigError(f"data.params = {cfg.data.params!r}: {exc}") from None
    except (ValueError, KeyError, FileNotFoundError) as exc:
        # a KeyError's str() quotes its message; strip()ping quotes instead ate a message's own closing quote
        message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
        raise ConfigError(message if message.startswith("data") else f"data ({cfg.data.source}): {message}") from None
    order = list(range(len(examples)))
    n_test = int(round(cfg.data.test_fraction * len(examples)))
    if n_test:
        random.Random(cfg.data.seed).shuffle(order)
    test = [examples[i] for i in sorted(order[:n_test])]
    train = [examples[i] for i in sorted(order[n_test:])]
    if cfg.data.limit is not None:
        train = train[: cfg.data.limit]
    if not train:
        raise ConfigError(f"data: no training examples left ({len(examples)} read, {n_test} held out); "
                          "lower data.test_fraction")
    return SFTData(train, test, description)
