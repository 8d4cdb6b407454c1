"""``bfcl_ast``: 1 when BFCL's own checker accepts the completion's calls, else 0 (floor 0).

The completion is decoded as ToolRL's BFCL handler decodes it (``decode_ast`` of its
``benchmarks/BFCL/rlla_qwen.py``, the paper's evaluation): no ``<tool_call>`` in the text -> no
calls; else the text after the LAST ``<tool_call>`` up to the next ``</tool_call>``, split into
lines, each line one JSON object ``{"name", "parameters"}`` (we also accept ``"arguments"``);
lines that do not parse are skipped, and so are calls named ``None`` (ToolRL's prompt allows
them for "no tool"). The result is BFCL's decoded form ``[{name: {param: value}}]``; then

* AST categories (simple / multiple / parallel / parallel_multiple, live or not, Java and
  JavaScript): ``bfcl_eval.eval_checker.ast_eval.ast_checker.ast_checker`` (BFCL's code,
  unchanged) with the row's ``functions`` and ``possible_answer``: BFCL's type rules (int
  accepted for float, tuples as lists, nested dicts, optional parameters via ``""``), string
  standardisation, parallel calls matched in any order, the function chosen among several.
  No decoded call scores 0 (BFCL: wrong number of functions).
* ``irrelevance`` / ``live_irrelevance``: 1 iff no call was decoded (no block, an unreadable
  block, or an empty one), as BFCL's relevance runner decides; ``live_relevance``: 1 iff at
  least one call was decoded.

How BFCL's checker is imported. ``ast_checker.py`` imports
``bfcl_eval.constants.model_config``, which imports every API client of the leaderboard
(``anthropic``, ``openai``, ``mistralai``, ...), only to look up, in ``convert_func_name``,
whether the *model* being scored writes ``.`` in function names as ``_``. We install the
package without those clients, so while importing the checker we place a stand-in
``bfcl_eval.constants.model_config`` in ``sys.modules`` that holds one entry, for our model
name :data:`MODEL_NAME`, with ``underscore_to_dot=False`` (names are compared as written, as
for BFCL's prompting models), and remove it again afterwards. If the real module is already
imported (a full ``bfcl-eval`` install), it is used and our entry added to its mapping.
``tests/eval/test_bfcl_agreement.py`` checks the result against the unmodified package in an
environment with its real dependencies.
"""

from __future__ import annotations

import json
import sys
import types
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Sequence

from gdpo.rewards.registry import register_reward
from gdpo.rewards.text import completion_text
from gdpo.rewards.toolcall import CALL_CLOSE, CALL_OPEN, MAX_CHARS, ToolCall

MODEL_NAME = "gdpo-prompting"  # the model name we hand BFCL's checker (see module doc)
_CONFIG_MODULE = "bfcl_eval.constants.model_config"
_CHECKER_MODULE = "bfcl_eval.eval_checker.ast_eval.ast_checker"


@dataclass(frozen=True)
class _ModelConfig:
    underscore_to_dot: bool = False


@lru_cache(maxsize=1)
def checker() -> types.ModuleType:
    """BFCL's ``ast_checker`` module (see the module doc for how it is imported)."""
    try:
        real = sys.modules.get(_CONFIG_MODULE)
        if real is not None:
            real.MODEL_CONFIG_MAPPING.setdefault(MODEL_NAME, _ModelConfig())
            import bfcl_eval.eval_checker.ast_eval.ast_checker as module

            return module
        stand_in = types.ModuleType(_CONFIG_MODULE)
        stand_in.MODEL_CONFIG_MAPPING = {MODEL_NAME: _ModelConfig()}
        stand_in.__doc__ = "gdpo's stand-in: only the model-name lookup of BFCL's ast_checker (see gdpo.rewards.bfcl)"
        sys.modules[_CONFIG_MODULE] = stand_in
        try:
            import bfcl_eval.eval_checker.ast_eval.ast_checker as module
        finally:
            if sys.modules.get(_CONFIG_MODULE) is stand_in:
                del sys.modules[_CONFIG_MODULE]
        return module
    except ImportError as exc:
        raise ImportError(f"bfcl_ast needs the bfcl-eval package ({exc}); run "
                          "`pip install --no-deps bfcl-eval==2026.3.23` (scripts/setup.sh does)") from exc


def language(category: str) -> Any:
    from bfcl_eval.constants.enums import Language

    if category == "simple_java":
        return Language.JAVA
    if category == "simple_javascript":
        return Language.JAVASCRIPT
    return Language.PYTHON


def decoded(calls: Sequence[ToolCall]) -> list[dict[str, dict[str, Any]]]:
    """Our calls in BFCL's decoded form ``[{name: {param: value}}]``."""
    return [{c.name: dict(c.arguments)} for c in calls]


def _load(value: Any) -> Any:
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def toolrl_decode(completion: Any) -> list[ToolCall]:
    """The calls of a completion as ToolRL's BFCL handler reads them (see module doc)."""
    text = completion_text(completion)
    if CALL_OPEN not in text:
        return []
    block = text.split(CALL_OPEN)[-1].split(CALL_CLOSE)[0].strip()
    calls = []
    for line in block.split("\n"):
        try:
            item = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            continue
        args = item.get("parameters", item.get("arguments"))
        if item["name"].strip().lower() == "none" or not isinstance(args, dict):
            continue
        calls.append(ToolCall(item["name"], args))
    return calls


def check(completion: Any, category: str, functions: Any, possible_answer: Any) -> tuple[bool, str]:
    """(accepted, BFCL's error type or "") of one completion."""
    calls = toolrl_decode(completion) if len(completion_text(completion)) <= MAX_CHARS else []
    has_call = len(calls) > 0
    if "irrelevance" in category:
        return (not has_call, "" if not has_call else "irrelevance_error:decoder_success")
    if "relevance" in category:
        return (has_call, "" if has_call else "relevance_error:decoder_failed")
    result = checker().ast_checker(_load(functions), decoded(calls), _load(possible_answer),
                                   language(category), category, MODEL_NAME)
    return bool(result["valid"]), "" if result["valid"] else str(result.get("error_type", ""))


@register_reward("bfcl_ast", floor=0.0, columns=("category", "functions", "possible_answer"),
                 description="1 iff BFCL's AST checker (or its relevance rule) accepts the completion's calls")
def bfcl_ast(completions: list[Any], *, category: Sequence[str], functions: Sequence[Any],
             possible_answer: Sequence[Any], **_: Any) -> list[float]:
    """1.0 where BFCL's rules accept the calls of the completion (see module doc)."""
    return [1.0 if check(c, cat, fn, pa)[0] else 0.0
            for c, cat, fn, pa in zip(completions, category, functions, possible_answer, strict=True)]
