"""BFCL's executable multi-turn APIs as an environment (``env: bfcl``), and BFCL's own checker.

The API classes (GorillaFileSystem, MathAPI, MessageAPI, TwitterAPI, TicketAPI, TradingBot,
TravelAPI, VehicleControlAPI) are imported from the ``bfcl-eval`` package, loaded with the
row's ``initial_config`` exactly as BFCL loads them, and driven with the model's parsed calls:

* a call's name must be a public method of an involved class (minus the row's
  ``excluded_function``); its JSON arguments are bound to the method's signature and passed as
  keywords. Nothing is ``eval``-ed: BFCL's own executor evaluates Python call strings, we call
  the bound method. Results are rendered as BFCL renders them (strings as-is, dicts as JSON,
  else ``str``); an exception becomes ``Error during execution: ...`` as in BFCL.
* a call fails (counts in ``errors``) when the name is unknown, the arguments do not bind, the
  method raises, or it returns a dict with an ``"error"`` key (BFCL's APIs report misuse so).
* BFCL rows have several user turns: when the model answers without a call, the next user
  turn is returned as a ``user`` message; after the last one the episode ends.

:func:`bfcl_accuracy` scores finished episodes with BFCL's ``multi_turn_checker`` (state and
execution-response checks per turn, against the ground-truth call strings). Ground-truth call
strings are read with :mod:`ast` (literals only) into calls, so :func:`reference_episode` can
replay them through this environment (``gdpo eval --model reference``).
"""

from __future__ import annotations

import ast
import copy
import importlib
import inspect
import json
import re
import uuid
from typing import Any, Sequence

from gdpo.envs.base import Environment, StepResult, register_env
from gdpo.rewards.toolcall import ToolCall

MULTI_TURN_CLASSES = ("GorillaFileSystem", "MathAPI", "MessageAPI", "TwitterAPI", "TicketAPI",
                      "TradingBot", "TravelAPI", "VehicleControlAPI")


def _load(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def load_instances(involved_classes: Sequence[str], initial_config: dict[str, Any]) -> dict[str, Any]:
    """Fresh API instances, configured as BFCL's executor configures them."""
    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING, STATELESS_CLASSES

    instances = {}
    for name in involved_classes:
        if name not in MULTI_TURN_CLASSES:
            raise ValueError(f"BFCL class {name!r} is not one of the multi-turn APIs {MULTI_TURN_CLASSES}")
        instance = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[name]), name)()
        if name not in STATELESS_CLASSES:
            instance._load_scenario(copy.deepcopy(initial_config.get(name, {})), long_context=False)
        instances[name] = instance
    return instances


def method_table(instances: dict[str, Any], excluded: Sequence[str] = ()) -> dict[str, Any]:
    """Public method name -> bound method, over the instances (later classes do not override)."""
    table: dict[str, Any] = {}
    for instance in instances.values():
        for name, method in inspect.getmembers(instance, predicate=inspect.ismethod):
            if not name.startswith("_") and name not in excluded:
                table.setdefault(name, method)
    return table


def func_docs(involved_classes: Sequence[str], excluded: Sequence[str] = ()) -> list[dict[str, Any]]:
    """BFCL's function documents of the classes (the tool schemas shown to the model)."""
    from bfcl_eval.constants.eval_config import MULTI_TURN_FUNC_DOC_PATH
    from bfcl_eval.constants.executable_backend_config import MULTI_TURN_FUNC_DOC_FILE_MAPPING

    docs = []
    for name in involved_classes:
        path = MULTI_TURN_FUNC_DOC_PATH / MULTI_TURN_FUNC_DOC_FILE_MAPPING[name]
        for line in path.read_text().splitlines():
            if line.strip():
                doc = json.loads(line)
                if doc["name"] not in excluded:
                    docs.append({k: doc[k] for k in ("name", "description", "parameters")})
    return docs


def render_result(value: Any) -> str:
    """A result as BFCL's executor renders it."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        try:
            return json.dumps(value)
        except (TypeError, ValueError):
            return str(value)
    return str(value)


def call_string(call: ToolCall) -> str:
    """``name(key=value, ...)`` with Python literals: what BFCL's checker executes.

    Only produced for calls whose name is a method of the environment and whose keys are
    identifiers (see :meth:`BFCLEnv.execute`), so the string names nothing but that method.
    """
    args = ", ".join(f"{k}={v!r}" for k, v in call.arguments.items())
    return f"{call.name}({args})"


def parse_call_string(text: str, table: dict[str, Any]) -> ToolCall:
    """A ground-truth call string (``cd(folder='x')``, ``sort('f')``) -> a call; literals only."""
    node = ast.parse(text.strip(), mode="eval").body
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name):
        raise ValueError(f"ground-truth call {text!r} is not a plain function call")
    name = node.func.id
    if name not in table:
        raise ValueError(f"ground-truth call {text!r} names {name!r}, not a method of the environment")
    params = [p for p in inspect.signature(table[name]).parameters]
    args = {params[i]: ast.literal_eval(a) for i, a in enumerate(node.args)}
    args.update({kw.arg: ast.literal_eval(kw.value) for kw in node.keywords})
    return ToolCall(name, args)


class BFCLEnv(Environment):
    """One BFCL multi-turn entry: its APIs, its remaining user turns, the calls made per turn."""

    def reset(self, row: dict[str, Any]) -> list[dict[str, str]]:
        self.id = row.get("id", "")
        self.involved = list(_load(row["involved_classes"]))
        self.initial_config = _load(row["initial_config"])
        self.excluded = list(_load(row.get("excluded_function") or []))
        self.instances = load_instances(self.involved, self.initial_config)
        self.table = method_table(self.instances, self.excluded)
        questions = _load(row["question"])
        self.pending = [list(turn) for turn in questions[1:]]  # the first turn is in the prompt
        self.steps: list[list[list[str]]] = [[]]  # [user turn][step][call string] for BFCL's checker
        self.ground_truth = _load(row.get("ground_truth") or "[]")
        return []

    def step(self, calls: Sequence[ToolCall], text: str = "") -> StepResult:
        if calls:
            self.steps[-1].append([])  # one step per model turn with calls
            return super().step(calls, text)
        if not self.pending:
            return StepResult([], done=True)
        self.steps.append([])
        return StepResult(self.pending.pop(0), done=False)

    def execute(self, call: ToolCall) -> tuple[str, bool]:
        method = self.table.get(call.name)
        if method is None:
            return f"Error during execution: no function named {call.name!r}", True
        if not all(isinstance(k, str) and k.isidentifier() for k in call.arguments):
            return f"Error during execution: argument names of {call.name!r} must be identifiers", True
        try:
            inspect.signature(method).bind(**call.arguments)
        except TypeError as exc:
            return f"Error during execution: {exc}", True
        self.steps[-1][-1].append(call_string(call))
        try:
            value = method(**call.arguments)
        except Exception as exc:  # the API's own failure, reported as BFCL reports it
            return f"Error during execution: {exc}", True
        return render_result(value), isinstance(value, dict) and "error" in value

    def success(self) -> float:
        """1.0 iff the final state matches the ground-truth execution (BFCL's state checker)."""
        from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import state_checker

        truth = ground_truth_instances(self)
        return 1.0 if state_checker(self.instances, truth)["valid"] else 0.0

    def needed_calls(self) -> int:
        return sum(len(turn) for turn in self.ground_truth)

    def final_state(self) -> dict[str, Any]:
        return {"instances": self.instances, "steps": self.steps}


def ground_truth_instances(env: BFCLEnv) -> dict[str, Any]:
    """The APIs after replaying every ground-truth call of the entry on a fresh copy."""
    instances = load_instances(env.involved, env.initial_config)
    table = method_table(instances, env.excluded)
    for turn in env.ground_truth:
        for text in turn:
            call = parse_call_string(text, table)
            try:
                table[call.name](**call.arguments)
            except Exception:  # BFCL's executor records the error and goes on; so do we
                pass
    return instances


register_env("bfcl")(BFCLEnv)


# -- BFCL's checker ----------------------------------------------------------------------------

def bfcl_check(env: BFCLEnv) -> dict[str, Any]:
    """BFCL's ``multi_turn_checker`` verdict for a finished episode: ``{"valid": bool, ...}``.

    The model's calls of each user turn (steps of call strings) are executed by BFCL's own
    executor on fresh instances and compared with the ground truth, turn by turn. Turns the
    episode never reached count as empty (BFCL fails an entry whose model output is short).
    """
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    gt = env.ground_truth
    decoded = [[step for step in steps if step] for steps in env.steps[:len(gt)]]
    decoded += [[] for _ in range(len(gt) - len(decoded))]
    entry = {"id": env.id, "initial_config": env.initial_config, "involved_classes": env.involved}
    # BFCL caches instances in its module globals by (model name, entry id): a fresh name per
    # check keeps repeated checks of one entry apart, and the entries are dropped afterwards.
    name = f"gdpo_{uuid.uuid4().hex}"
    try:
        return multi_turn_checker(decoded, gt, entry, "multi_turn_base", name)
    finally:
        prefix = re.sub(r"[-./:]", "_", name)
        for key in [k for k in vars(multi_turn_utils) if k.startswith(prefix)]:
            del vars(multi_turn_utils)[key]


def bfcl_accuracy(episodes: Sequence[Any]) -> dict[str, Any]:
    """BFCL multi-turn accuracy of finished episodes (share whose ``multi_turn_checker`` is valid)."""
    verdicts = [bfcl_check(ep.env) for ep in episodes]
    valid = [bool(v.get("valid")) for v in verdicts]
    errors: dict[str, int] = {}
    for v in verdicts:
        if not v.get("valid"):
            kind = str(v.get("error_type", "unknown"))
            errors[kind] = errors.get(kind, 0) + 1
    return {"accuracy": sum(valid) / max(1, len(valid)), "correct": sum(valid), "total": len(valid),
            "error_types": errors, "valid": valid}
