"""The environment protocol, its registry, and user-tool environments (schemas, JSON args,
errors as text, time limits)."""

from __future__ import annotations

import time

import pytest

from gdpo.envs import (Environment, ToolsEnv, env_names, function_schema, get_env, make_env, register_env,
                       register_tools, unregister_env)
from gdpo.rewards.toolcall import ToolCall


def add(a: float, b: float = 1.0) -> float:
    """Add two numbers.

    Second line of the description is not part of it.

    Args:
        a: the first number.
        b (float): the second number.

    Returns:
        the sum.
    """
    return a + b


def shout(text: str, times: int | None = None) -> str:
    """Upper-case a text."""
    return text.upper() * (times or 1)


def boom(x: int) -> int:
    """Always fails."""
    raise RuntimeError(f"no luck with {x}")


def slow() -> str:
    """Sleeps past any sensible limit."""
    time.sleep(2.0)
    return "late"


def test_schema_from_signature_and_docstring():
    s = function_schema(add)
    assert s["name"] == "add" and s["description"] == "Add two numbers."
    assert s["parameters"] == {"type": "object", "required": ["a"], "properties": {
        "a": {"type": "number", "description": "the first number."},
        "b": {"type": "number", "description": "the second number."}}}
    s = function_schema(shout)
    assert s["parameters"]["properties"] == {"text": {"type": "string"}, "times": {"type": "integer"}}
    assert s["parameters"]["required"] == ["text"]


def test_tools_env_runs_calls_and_returns_errors_as_text():
    env = ToolsEnv([add, shout, boom], time_limit_s=1.0)
    env.reset({})
    res = env.step([ToolCall("add", {"a": 2, "b": 3}), ToolCall("shout", {"text": "hi", "times": 2})])
    assert [m["content"] for m in res.messages] == ["5", "HIHI"]
    assert [m["role"] for m in res.messages] == ["tool", "tool"] and not res.done and res.errors == 0
    res = env.step([ToolCall("boom", {"x": 4}), ToolCall("nope", {}), ToolCall("add", {"c": 1})])
    texts = [m["content"] for m in res.messages]
    assert texts[0] == "Error: RuntimeError: no luck with 4"
    assert texts[1].startswith("Error: unknown tool 'nope'") and "add, boom, shout" in texts[1]
    assert texts[2].startswith("Error: bad arguments for 'add'")
    assert res.errors == 3 and env.errors == 3
    assert env.step([], "the answer").done  # no call: the episode ends
    assert [len(t) for t in env.calls] == [2, 3]


def test_arguments_are_never_evaluated():
    env = ToolsEnv([shout])
    env.reset({})
    hostile = "__import__('os').system('echo pwned')"
    res = env.step([ToolCall("shout", {"text": hostile})])
    assert res.messages[0]["content"] == hostile.upper()  # the text is data, passed through as a string


def test_time_limit_per_call():
    env = ToolsEnv([slow], time_limit_s=0.2)
    env.reset({})
    t0 = time.perf_counter()
    res = env.step([ToolCall("slow", {})])
    assert time.perf_counter() - t0 < 1.5
    assert res.messages[0]["content"] == "Error: tool 'slow' timed out after 0.2 s" and res.errors == 1


def test_registry_refuses_duplicates_and_names_the_valid_ones():
    register_tools("test_calc_env", [add])
    try:
        assert "test_calc_env" in env_names() and "bfcl" in env_names() and "toy_calculator" in env_names()
        with pytest.raises(ValueError, match="already registered"):
            register_tools("test_calc_env", [add])
        env = make_env({"env": "test_calc_env", "env_params": {"time_limit_s": 0.5}})
        assert isinstance(env, ToolsEnv) and env.time_limit_s == 0.5
        with pytest.raises(KeyError, match="Did you mean 'test_calc_env'"):
            get_env("test_calc_en")
        with pytest.raises(KeyError, match="no 'env' column"):
            make_env({"prompt": "x"})
    finally:
        unregister_env("test_calc_env")


def test_a_plain_python_environment_in_twenty_lines():
    """The docs' example: a counter whose final state the rewards read."""

    @register_env("test_counter")
    class Counter(Environment):
        def reset(self, row):
            self.value = int(row.get("start", 0))
            return []

        def execute(self, call):
            if call.name != "increment":
                return f"Error: unknown tool {call.name!r}", True
            self.value += int(call.arguments.get("by", 1))
            return str(self.value), False

        def success(self):
            return 1.0 if self.value == 3 else 0.0

    try:
        env = make_env({"env": "test_counter", "start": 1})
        env.reset({"start": 1})
        assert env.step([ToolCall("increment", {"by": 2})]).messages[0]["content"] == "3"
        assert env.success() == 1.0 and env.step([]).done
    finally:
        unregister_env("test_counter")


@pytest.mark.parametrize("task,params,message", [
    ("multi_turn_toy", {"max_turns": 0}, "max_turns=0; give a whole number >= 1"),
    ("multi_turn_peek", {"max_trajectory_tokens": -5}, "max_trajectory_tokens=-5"),
    ("multi_turn_peek", {"digits": "ab"}, "digits='ab'"),
    ("bfcl_multi_turn", {"docs": "bogus"}, "docs='bogus'; expected 'full'"),
])
def test_multi_turn_task_limits_are_checked(task, params, message):
    from gdpo.data import get_task

    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        get_task(task, **params)
