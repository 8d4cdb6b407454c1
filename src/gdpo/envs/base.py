"""The environment protocol and registry (multi-turn tool use).

An environment is created per rollout sample, from its dataset row, and lives for one
episode::

    env = make_env(row)                   # the registered class named by row["env"], built with row["env_params"]
    first = env.reset(row)                # extra messages before the first turn (usually [])
    res = env.step(calls, text)           # the model's parsed tool calls of one turn (+ its text)
    res.messages                          # tool results ("tool" role) or the next user turn ("user")
    res.done                              # the episode is over
    env.final_state()                     # what trajectory rewards read (JSON-able or live objects)

``step`` is called once per model turn. With calls, the environment executes them and returns
one ``tool`` message per call (errors as text, never an exception). Without calls (the model
answered), the default is to end the episode; environments with several user turns (BFCL)
return the next user message instead. ``errors`` counts tool calls that failed (unknown
function, bad arguments, a raising tool, a time-out, an error result).

Registration mirrors rewards and tasks: :func:`register_env` refuses a duplicate name;
:func:`env_names` lists them; an unknown name fails with the valid ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from gdpo.data.base import check_task_int
from gdpo.signature import unknown
from gdpo.rewards.toolcall import ParsedCalls, ToolCall, parse_tool_calls


@dataclass
class StepResult:
    """What one ``step`` returns: messages to append, whether the episode ended."""

    messages: list[dict[str, str]]  # chat messages ("tool" results, or the next "user" turn)
    done: bool = False
    errors: int = 0  # tool calls of this step that failed


class Environment:
    """Base class: subclasses implement :meth:`execute` (one call -> result text, error flag).

    The default :meth:`step` runs each call through :meth:`execute`, returns one ``tool``
    message per call, and ends the episode when the model answers without a call.
    :meth:`parse` reads a model turn's calls (our ``<tool_call>`` JSON lines by default).
    """

    def __init__(self) -> None:
        self.calls: list[list[ToolCall]] = []  # [turn][call]: every call made
        self.errors = 0  # failed calls over the episode

    def parse(self, text: str) -> ParsedCalls:
        return parse_tool_calls(text)

    def reset(self, row: dict[str, Any]) -> list[dict[str, str]]:
        return []

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        """Run one call; returns (result text, failed). Must not raise."""
        raise NotImplementedError

    def step(self, calls: Sequence[ToolCall], text: str = "") -> StepResult:
        if not calls:
            return StepResult([], done=True)
        self.calls.append(list(calls))
        messages, failed = [], 0
        for call in calls:
            result, bad = self.execute(call)
            failed += bool(bad)
            messages.append(tool_message(call.name, result))
        self.errors += failed
        return StepResult(messages, done=False, errors=failed)

    def success(self) -> float | None:
        """The environment's own verdict on the episode in [0, 1] (None: it has none)."""
        return None

    def needed_calls(self) -> int | None:
        """How many calls the task needs (None: unknown); for the call-efficiency reward."""
        return None

    def final_state(self) -> Any:
        return {"calls": [[c.to_dict() for c in turn] for turn in self.calls]}


def tool_message(name: str, content: str) -> dict[str, str]:
    """A ``tool`` role message (``name`` kept for templates that show it)."""
    return {"role": "tool", "name": name, "content": content}


def result_text(value: Any) -> str:
    """A tool's return value as text: strings as-is, JSON where possible, else ``str``."""
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)


# -- registry --------------------------------------------------------------------------------

_ENVS: dict[str, Callable[..., Environment]] = {}
_BUILTINS = ("gdpo.envs.toy", "gdpo.envs.bfcl")
_loaded = False


def register_env(name: str) -> Callable:
    """Decorator: register ``factory(**params) -> Environment`` under ``name``; twice is an error."""

    def decorate(factory: Callable[..., Environment]) -> Callable[..., Environment]:
        if name in _ENVS:
            raise ValueError(f"environment {name!r} is already registered; pick another name")
        _ENVS[name] = factory
        return factory

    return decorate


def unregister_env(name: str) -> None:
    _ENVS.pop(name, None)


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import importlib

    for module in _BUILTINS:
        importlib.import_module(module)


def env_names() -> list[str]:
    _load_builtins()
    return sorted(_ENVS)


def get_env(name: str, **params: Any) -> Environment:
    """A fresh environment ``name`` built with ``params``."""
    _load_builtins()
    if name not in _ENVS:  # a KeyError that is also a one-line user error (exit 2 from the CLI)
        raise unknown("env", name, "not a registered environment", name, sorted(_ENVS))
    return _ENVS[name](**params)


def make_env(row: dict[str, Any]) -> Environment:
    """The environment of one rollout sample: ``row["env"]`` built with ``row["env_params"]``."""
    name = row.get("env")
    if not isinstance(name, str) or not name:
        raise KeyError(f"row has no 'env' column naming its environment (columns: {sorted(row)}); "
                       "multi-turn tasks set it, e.g. env='bfcl' or a name given to register_env")
    params = row.get("env_params") or {}
    if isinstance(params, str):
        params = json.loads(params)
    return get_env(name, **params)


# -- episodes and prompts ---------------------------------------------------------------------

END_REASONS = ("answer", "max_turns", "budget", "env")


@dataclass
class Episode:
    """One sample's whole trajectory, as the rollout leaves it for the rewards (column ``episode``).

    turns: the model's text of each turn; parsed: what :meth:`Environment.parse` read from it;
    env_messages: the messages the environment returned after each turn (``[]`` for the last);
    end: why the episode stopped: ``answer`` (the environment ended it, e.g. the model answered
    without a call), ``max_turns``, ``budget`` (the trajectory token budget, or a turn cut at the
    per-turn token limit without EOS when the budget is hit), ``env`` (the environment ended it
    while the model was still calling tools).
    """

    env: Environment
    turns: list[str]
    parsed: list[ParsedCalls]
    env_messages: list[list[dict[str, str]]]
    end: str = "answer"
    parse_errors: int = 0  # turns whose <tool_call> block could not be read
    model_tokens: int = 0
    env_tokens: int = 0

    @property
    def num_calls(self) -> int:
        return sum(len(p.calls) for p in self.parsed if p.ok)

    @property
    def errors(self) -> int:
        """Failed tool calls plus unreadable call blocks."""
        return self.env.errors + self.parse_errors

    def summary(self) -> dict[str, Any]:
        """JSON-able view (samples.jsonl, eval outputs)."""
        return {"turns": self.turns, "env_messages": self.env_messages, "end": self.end,
                "calls": self.num_calls, "errors": self.errors}


MULTI_TURN_RULES = (
    "To call functions, reply with a block of JSON lines, one call per line:\n"
    "<tool_call>\n"
    '{"name": "function name", "arguments": {"argument name": "value"}}\n'
    "</tool_call>\n"
    "The results come back in the next message; you may then call more functions. "
    "When the request is done, reply without a <tool_call> block, with a short answer for the user."
)


def system_prompt(schemas: Sequence[dict[str, Any]], rules: str = MULTI_TURN_RULES) -> str:
    """The system message of a multi-turn tool task: the tool schemas and the call format."""
    lines = "\n".join(json.dumps(s, ensure_ascii=False) for s in schemas)
    return f"You are a helpful assistant that can call functions. Available functions:\n{lines}\n\n{rules}"


def check_limits(task: str, max_turns: int | None, max_trajectory_tokens: int | None) -> None:
    """A multi-turn task's episode limits: positive integers (or None for the default)."""
    check_task_int(task, "max_turns", max_turns)
    check_task_int(task, "max_trajectory_tokens", max_trajectory_tokens)
