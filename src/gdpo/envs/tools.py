"""User tools: a list of plain Python functions becomes an environment.

    def add(a: float, b: float) -> float:
        '''Add two numbers.

        Args:
            a: the first number.
            b: the second number.
        '''
        return a + b

    register_tools("calculator", [add], time_limit_s=2.0)   # rows with env="calculator" use it
    tool_schemas([add])   # [{"name": "add", "description": "Add two numbers.", "parameters": {...}}]

Contract:

* The schema comes from the signature (JSON types from the annotations; parameters without a
  default are required) and the docstring (first paragraph = description; ``name: text``
  lines under ``Args:`` describe parameters).
* Model arguments arrive already JSON-decoded (:func:`gdpo.rewards.toolcall.parse_tool_calls`);
  nothing the model writes is ever ``eval``-ed. Arguments that do not bind to the signature
  (unknown or missing names) return an error text, the function is not called.
* A tool that raises returns ``Error: <Type>: <message>`` to the model; the episode goes on.
* Each call runs in a worker thread with a time limit (``time_limit_s``); past it the model
  gets ``Error: tool 'f' timed out after T s``. Python cannot stop a thread: a tool that never
  returns keeps its thread (a daemon) until the process ends, so tools that may hang or run
  hostile code belong in the sandbox (``gdpo.rewards.sandbox``), not here.
"""

from __future__ import annotations

import inspect
import re
import threading
import typing
from typing import Any, Callable, Sequence

from gdpo.envs.base import Environment, register_env, result_text
from gdpo.rewards.toolcall import ToolCall

JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", list: "array",
              dict: "object", tuple: "array"}


def tool_schemas(tools: Sequence[Callable]) -> list[dict[str, Any]]:
    return [function_schema(fn) for fn in tools]


def function_schema(fn: Callable) -> dict[str, Any]:
    """``{"name", "description", "parameters": JSON schema}`` of a function."""
    sig = inspect.signature(fn)
    description, arg_docs = _parse_docstring(inspect.getdoc(fn) or "")
    hints = _type_hints(fn)
    props, required = {}, []
    for name, p in sig.parameters.items():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        prop: dict[str, Any] = {}
        json_type = _json_type(hints.get(name, p.annotation))
        if json_type:
            prop["type"] = json_type
        if name in arg_docs:
            prop["description"] = arg_docs[name]
        props[name] = prop
        if p.default is p.empty:
            required.append(name)
    return {"name": fn.__name__, "description": description,
            "parameters": {"type": "object", "properties": props, "required": required}}


def _type_hints(fn: Callable) -> dict[str, Any]:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: fall back to raw annotations
        return {}


def _json_type(annotation: Any) -> str | None:
    origin = typing.get_origin(annotation) or annotation
    if origin in JSON_TYPES:
        return JSON_TYPES[origin]
    if origin is typing.Union or type(annotation).__name__ == "UnionType":  # Optional[int], int | None
        types = [t for t in typing.get_args(annotation) if t is not type(None)]
        return _json_type(types[0]) if len(types) == 1 else None
    return None


def _parse_docstring(doc: str) -> tuple[str, dict[str, str]]:
    """(first paragraph, {arg: description}) from a Google-style docstring."""
    description = doc.split("\n\n", 1)[0].strip().replace("\n", " ")
    args: dict[str, str] = {}
    match = re.search(r"^(Args|Arguments|Parameters):\s*$", doc, flags=re.M)
    if match:
        for line in doc[match.end():].splitlines():
            if line.strip() and not line.startswith((" ", "\t")):
                break  # the next section
            m = re.match(r"\s+(\w+)\s*(?:\([^)]*\))?\s*:\s*(.*)", line)
            if m:
                args[m.group(1)] = m.group(2).strip()
    return description, args


class ToolsEnv(Environment):
    """An environment whose tools are plain Python functions (see the module doc)."""

    def __init__(self, tools: Sequence[Callable], time_limit_s: float = 5.0):
        super().__init__()
        if time_limit_s <= 0:
            raise ValueError(f"time_limit_s must be > 0 seconds, got {time_limit_s}")
        self.tools = {fn.__name__: fn for fn in tools}
        if len(self.tools) != len(tools):
            raise ValueError(f"two tools share a name: {[fn.__name__ for fn in tools]}")
        self.time_limit_s = float(time_limit_s)
        self.results: list[str] = []  # every result text, in order

    @property
    def schemas(self) -> list[dict[str, Any]]:
        return tool_schemas(list(self.tools.values()))

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        text, failed = self._run(call)
        self.results.append(text)
        return text, failed

    def _run(self, call: ToolCall) -> tuple[str, bool]:
        fn = self.tools.get(call.name)
        if fn is None:
            return f"Error: unknown tool {call.name!r}; available tools: {', '.join(sorted(self.tools))}", True
        try:
            inspect.signature(fn).bind(**call.arguments)
        except TypeError as exc:
            return f"Error: bad arguments for {call.name!r}: {exc}", True
        return call_with_time_limit(fn, call.arguments, self.time_limit_s, call.name)


def call_with_time_limit(fn: Callable, kwargs: dict[str, Any], limit_s: float, name: str) -> tuple[str, bool]:
    """Run ``fn(**kwargs)`` in a daemon thread; (result text, failed)."""
    box: dict[str, Any] = {}

    def work() -> None:
        try:
            box["value"] = fn(**kwargs)
        except BaseException as exc:  # the tool's failure goes back to the model as text
            box["error"] = exc

    thread = threading.Thread(target=work, name=f"tool-{name}", daemon=True)
    thread.start()
    thread.join(limit_s)
    if thread.is_alive():
        return f"Error: tool {name!r} timed out after {limit_s:g} s", True
    if "error" in box:
        exc = box["error"]
        return f"Error: {type(exc).__name__}: {exc}", True
    return result_text(box.get("value")), False


def register_tools(name: str, tools: Sequence[Callable], *, time_limit_s: float = 5.0) -> None:
    """Register an environment ``name`` made of ``tools`` (rows may pass ``time_limit_s``)."""
    tools = list(tools)
    for fn in tools:
        if not callable(fn) or not getattr(fn, "__name__", "").isidentifier():
            raise ValueError(f"tool {fn!r} of environment {name!r} must be a named Python function")

    @register_env(name)
    def factory(**params: Any) -> ToolsEnv:
        return ToolsEnv(tools, time_limit_s=params.pop("time_limit_s", time_limit_s), **params)
