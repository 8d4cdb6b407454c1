"""BFCL (Berkeley Function Calling Leaderboard) single-turn categories, read from the installed ``bfcl-eval``.

``get_task("bfcl", categories="simple_python,multiple,...")`` gives one test row per BFCL
entry, in BFCL's file order, category by category. The data are the package's own files
(``bfcl_eval/data/BFCL_v4_<category>.json`` and ``possible_answer/``; BFCL v4 keeps the
v3 single-turn sets unchanged). Nothing is downloaded.

Row columns:

* ``prompt``: chat messages in the output format of our tool-calling tasks, as ToolRL
  evaluates BFCL (its ``benchmarks/BFCL/rlla_qwen.py`` handler, rebuilt here): a system
  message with ToolRL's training instruction listing BFCL's function documents (after BFCL's
  own language hints, ``add_language_specific_hint_to_function_doc``: Java / JavaScript
  parameters become strings) and the format ``<think>…</think>`` then ``<tool_call>`` JSON
  lines and/or ``<response>``; then one user message with the dialogue
  (``**Dialogue Records History**``, ``<user> … </user>`` plus ToolRL's instruction to call
  no tool, or a tool named ``None``, when none applies). BFCL's system messages are dropped,
  as ToolRL's handler drops them.
* ``id``, ``category``, ``live`` (bool), ``language`` (python / java / javascript): BFCL's.
* ``functions``: JSON of the function documents *without* the hints (what BFCL's checker
  reads); ``possible_answer``: JSON of BFCL's ``ground_truth`` (``null`` for the
  relevance / irrelevance categories, which have none).
* ``answer`` (JSON calls ``[{"name", "arguments"}]``) and ``reference`` (a full completion):
  one answer BFCL's checker accepts, built from the first allowed value of each parameter
  (optional parameters, whose allowed values include ``""``, are left out); Java and
  JavaScript values are written as the source strings BFCL's type converters read back.
  Irrelevance rows: ``answer = "[]"`` and a ``<response>``. Relevance rows (any call
  passes): a call of the first function with its required parameters set to a value of
  their type. ``expects_response``: True iff the answer has no calls. ``answerable``: False
  for the 7 entries of :data:`UNANSWERABLE`, which BFCL's checker refuses whatever the answer.

Rewards (the task's default): ``bfcl_ast`` (BFCL's checker, see :mod:`gdpo.rewards.bfcl`)
then ``tool_format``.
"""

from __future__ import annotations

import copy
import importlib.util
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

from gdpo.data.base import Row, Task, register_task
from gdpo.rewards.toolcall import ToolCall, render_completion

VERSION_PREFIX = "BFCL_v4"
NON_LIVE_AST = ("simple_python", "simple_java", "simple_javascript", "multiple", "parallel", "parallel_multiple")
LIVE_AST = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
RELEVANCE = ("irrelevance", "live_irrelevance", "live_relevance")
CATEGORIES = NON_LIVE_AST + LIVE_AST + RELEVANCE  # the default: BFCL v3's single-turn (AST) categories
ALIASES = {"simple": "simple_python", "java": "simple_java", "javascript": "simple_javascript"}
OTHER_CATEGORIES = ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param", "multi_turn_long_context",
                    "web_search", "memory", "format_sensitivity")

SYSTEM_HEAD = (
    "You are a helpful multi-turn dialogue assistant capable of leveraging tool calls to solve user tasks and "
    "provide structured chat responses.\n\n**Available Tools**\nIn your response, you can use the following tools:\n"
)
SYSTEM_TAIL = (
    "\n\n**Steps for Each Turn**\n"
    "1. **Think:** Recall relevant context and analyze the current user goal.\n"
    "2. **Decide on Tool Usage:** If a tool is needed, specify the tool and its parameters.\n"
    "3. **Respond Appropriately:** If a response is needed, generate one while maintaining consistency across "
    "user queries.\n\n"
    "**Output Format**\n```plaintext\n<think> Your thoughts and reasoning </think>\n<tool_call>\n"
    '{"name": "Tool name", "parameters": {"Parameter name": "Parameter content", "... ...": "... ..."}}\n'
    '{"name": "... ...", "parameters": {"... ...": "... ...", "... ...": "... ..."}}\n...\n</tool_call>\n'
    "<response> AI's final response </response>\n```\n\n"
    "**Important Notes**\n"
    "1. You must always include the `<think>` field to outline your reasoning. Provide at least one of "
    "`<tool_call>` or `<response>`. Decide whether to use `<tool_call>` (possibly multiple times), `<response>`, "
    "or both.\n"
    "2. You can invoke multiple tool calls simultaneously in the `<tool_call>` fields. Each tool call should be a "
    'JSON object with a "name" field and an "parameters" field containing a dictionary of parameters. If no '
    'parameters are needed, leave the "parameters" field an empty dictionary.\n'
    "3. Refer to the previous dialogue records in the history, including the user's queries, previous "
    "`<tool_call>`, `<response>`, and any tool feedback noted as `<obs>` (if exists).\n"
)
USER_SUFFIX = (
    "\nIf there's no appropriate tools to apply or required parameters are missing, please directly inform me in "
    "your response without any tool call, or call the tool with the name as 'None'. Otherwise, you should use one "
    "or more necessary tool calls to complete the given task in this turn."
)
# Entries no answer can pass under BFCL's own checker (data slips, checked in tests/eval/test_bfcl.py).
UNANSWERABLE = {
    "simple_java_36": "an ArrayList of 'any': BFCL's converter reads every item as a string, the answer holds 42, true",
    "simple_java_65": "an ArrayList of 'any': BFCL's converter reads every item as a string, the answer holds true",
    "live_simple_106-63-0": "two required parameters list no allowed value ([])",
    "live_simple_112-68-0": "five required parameters list no allowed value ([])",
    "live_multiple_507-149-4": "required 'origin_airport' allows only '' (left out), which the required check refuses",
    "live_multiple_862-181-3": "the answer sets 'journey_start_time', which Trains_1_FindTrains does not have",
    "live_multiple_964-207-0": "the answer names 'question'; the function requires 'statement'",
}
IRRELEVANT_REPLY = "None of the available tools can be used for this request."


# -- where the data is ------------------------------------------------------------------------

def package_root() -> Path:
    """The installed ``bfcl_eval`` package folder (found without importing it)."""
    spec = importlib.util.find_spec("bfcl_eval")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the bfcl task reads the bfcl-eval package, which is not installed; run "
                                "`pip install --no-deps bfcl-eval==2026.3.23` (scripts/setup.sh does)")
    return Path(list(spec.submodule_search_locations)[0])


def data_file(category: str, answers: bool = False) -> Path:
    folder = package_root() / "data"
    return (folder / "possible_answer" if answers else folder) / f"{VERSION_PREFIX}_{category}.json"


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def language_of(category: str) -> str:
    return "java" if category == "simple_java" else "javascript" if category == "simple_javascript" else "python"


def parse_categories(categories: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``"simple,multiple"`` or a list -> BFCL category names (aliases resolved), checked."""
    if categories is None or categories == "all":
        return list(CATEGORIES)
    items = categories.split(",") if isinstance(categories, str) else list(categories)
    out = []
    for item in (str(i).strip() for i in items):
        name = ALIASES.get(item, item)
        if name in OTHER_CATEGORIES:
            raise ValueError(f"categories: {item!r} is a multi-turn / agentic BFCL category, not scored by this "
                             "single-turn task (the bfcl_multi_turn task runs multi_turn_*); choose from "
                             f"{', '.join(CATEGORIES)}")
        if name not in CATEGORIES:
            raise ValueError(f"categories: unknown BFCL category {item!r}; choose from {', '.join(CATEGORIES)} "
                             f"(aliases: {', '.join(ALIASES)}), comma-separated")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError("categories is empty; name at least one BFCL category, e.g. categories=simple_python")
    return out


# -- the prompt -------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _hint_function():
    """BFCL's own ``add_language_specific_hint_to_function_doc`` (its import writes folders: we point them away)."""
    import os
    import tempfile

    os.environ.setdefault("BFCL_PROJECT_ROOT", str(Path(tempfile.gettempdir()) / "gdpo-bfcl-project"))
    from bfcl_eval.utils import add_language_specific_hint_to_function_doc

    return add_language_specific_hint_to_function_doc


def shown_functions(entry: dict[str, Any]) -> list[dict[str, Any]]:
    """The function documents as BFCL shows them to a prompting model (language hints added)."""
    copied = copy.deepcopy({"id": entry["id"], "function": entry["function"]})
    return _hint_function()([copied])[0]["function"]


def tool_list(functions: list[dict[str, Any]]) -> str:
    """ToolRL's numbered tool list: name, description, parameters (the JSON of the properties)."""
    return "\n".join(f"{i}. Name: {fn['name']}\nDescription: {fn.get('description', '')}\n"
                     f"Parameters: {json.dumps((fn.get('parameters') or {}).get('properties', {}))}"
                     for i, fn in enumerate(functions, 1))


def render_prompt(entry: dict[str, Any]) -> list[dict[str, str]]:
    """ToolRL's BFCL prompt (its ``benchmarks/BFCL/rlla_qwen.py``): tools + format, then the dialogue.

    As there, BFCL's own system messages are dropped, each user turn is ``<user> … </user>``
    with ToolRL's single-turn instruction appended, and an assistant turn is copied as is.
    """
    system = SYSTEM_HEAD + tool_list(shown_functions(entry)) + SYSTEM_TAIL
    user = "**Dialogue Records History**\n"
    for message in entry["question"][0]:
        if message["role"] == "user":
            user += f"<user> {message['content'].strip()}{USER_SUFFIX} </user>\n"
        elif message["role"] == "assistant":
            user += f"\n{message['content'].strip()}\n"
    return [{"role": "system", "content": system}, {"role": "user", "content": user.strip()}]


# -- one accepted answer ----------------------------------------------------------------------

def _first_allowed(options: list[Any]) -> Any:
    """The first option that is not ``""``; ``[]`` when BFCL lists none (a data slip: no value passes)."""
    return next((o for o in options if o != ""), [])


def _gold_value(options: list[Any], schema: dict[str, Any]) -> Any:
    """A value BFCL accepts for a parameter: the first allowed option, a dict's keys resolved one level.

    BFCL's ``dict_checker`` reads a dict option as key -> allowed values, one level deep (a dict
    nested in it is compared as written); ``list_dict_checker`` does the same per list item.
    """
    value = _first_allowed(options)
    kind = schema.get("type")
    if kind in ("dict", "HashMap") and isinstance(value, dict):
        return _gold_dict(value)
    if kind in ("array", "tuple") and isinstance(value, list) and value and all(isinstance(v, dict) for v in value) \
            and (schema.get("items") or {}).get("type") == "dict":
        return [_gold_dict(v) for v in value]
    return value


def _gold_dict(options_by_key: dict[str, Any]) -> dict[str, Any]:
    """Key -> its first allowed value; keys whose allowed values include ``""`` are left out."""
    return {key: _first_allowed(options) for key, options in options_by_key.items()
            if isinstance(options, list) and "" not in options}


def _java_source(value: Any, kind: str, items: dict[str, Any] | None) -> str:
    """A Java expression BFCL's ``java_type_converter`` reads back as ``value``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "long":
        return f"{value}L"
    if kind == "float" and isinstance(value, (int, float)):
        return f"{float(value)}f"
    if kind == "ArrayList" and isinstance(value, list):
        nested = (items or {}).get("type")
        parts = [f'"{v}"' if nested in ("String", "char") else
                 _java_source(v, nested, None) if nested else _java_literal(v) for v in value]
        return f"new ArrayList<>(Arrays.asList({', '.join(parts)}))" if parts else "new ArrayList<>()"
    if kind == "Array" and isinstance(value, list):
        nested = (items or {}).get("type") or "Object"
        return f"new {nested}[]{{{', '.join(_java_source(v, nested, None) for v in value)}}}"
    if kind == "HashMap" and isinstance(value, dict):
        puts = " ".join(f'put("{k}", {_java_literal(v)});' for k, v in value.items())
        return f"new HashMap<String, Object>() {{{{ {puts} }}}}" if puts else "new HashMap<>()"
    return str(value)


def _java_literal(value: Any) -> str:
    """A value as ``parse_java_value`` reads it: strings quoted, booleans lower case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def _js_source(value: Any, kind: str) -> str:
    """A JavaScript expression BFCL's ``js_type_converter`` reads back as ``value``."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "Bigint":
        return f"{value}n"
    if kind in ("array", "dict"):
        return json.dumps(value)
    return str(value)


def gold_calls(entry: dict[str, Any], ground_truth: list[dict[str, Any]] | None, language: str) -> list[ToolCall]:
    """One answer BFCL's checker accepts (see module doc)."""
    functions = {f["name"]: f for f in entry["function"]}
    if ground_truth is None:
        return []
    calls = []
    for item in ground_truth:
        (name, params), = item.items()
        props = (functions.get(name) or {}).get("parameters", {}).get("properties", {})
        required = set((functions.get(name) or {}).get("parameters", {}).get("required", []))
        args = {}
        for key, options in params.items():
            if "" in options and key not in required:
                continue
            schema = props.get(key) or {}
            value = _gold_value(options, schema)
            if language == "java":
                value = _java_source(value, schema.get("type", ""), schema.get("items"))
            elif language == "javascript":
                value = _js_source(value, schema.get("type", ""))
            args[key] = value
        calls.append(ToolCall(name, args))
    return calls


_TYPE_EXAMPLES = {"string": "example", "integer": 1, "float": 1.0, "number": 1.0, "boolean": True, "array": [],
                  "tuple": [], "dict": {}, "any": "example"}


def relevance_call(entry: dict[str, Any]) -> ToolCall:
    """A call of the first function with its required parameters set to a value of their type."""
    fn = entry["function"][0]
    params = fn.get("parameters") or {}
    props = params.get("properties") or {}
    args = {k: (props.get(k) or {}).get("enum", [None])[0] or _TYPE_EXAMPLES.get((props.get(k) or {}).get("type"), "x")
            for k in params.get("required", [])}
    return ToolCall(fn["name"], args)


# -- rows and the task ------------------------------------------------------------------------

def category_rows(category: str) -> list[Row]:
    """Every entry of one BFCL category as a row (see module doc)."""
    entries = _read_jsonl(data_file(category))
    answers: list[dict[str, Any] | None]
    if category in RELEVANCE:
        answers = [None] * len(entries)
    else:
        by_id = {a["id"]: a for a in _read_jsonl(data_file(category, answers=True))}
        missing = [e["id"] for e in entries if e["id"] not in by_id]
        if missing:
            raise ValueError(f"bfcl: {len(missing)} {category} entries have no possible answer, e.g. {missing[0]}")
        answers = [by_id[e["id"]] for e in entries]
    language = language_of(category)
    rows = []
    for entry, answer in zip(entries, answers):
        truth = None if answer is None else answer["ground_truth"]
        if category == "live_relevance":
            calls = [relevance_call(entry)]
        else:
            calls = gold_calls(entry, truth, language)
        reply = IRRELEVANT_REPLY if not calls else None
        rows.append({
            "prompt": render_prompt(entry),
            "id": entry["id"],
            "category": category,
            "live": category.startswith("live_"),
            "language": language,
            "answerable": entry["id"] not in UNANSWERABLE,
            "functions": json.dumps(entry["function"], ensure_ascii=False),
            "possible_answer": json.dumps(truth, ensure_ascii=False),
            "answer": json.dumps([c.to_dict() for c in calls], ensure_ascii=False),
            "expects_response": not calls,
            "reference": render_completion(calls, reply, think="I read the request and the available tools.",
                                           key="parameters"),
        })
    return rows


@register_task("bfcl")
def bfcl_task(categories: str | list[str] | None = None, limit: int | None = None) -> Task:
    """BFCL's single-turn categories (default: all of :data:`CATEGORIES`); ``limit``: first k per category."""
    import gdpo.rewards.bfcl  # noqa: F401  (registers bfcl_ast)

    names = parse_categories(categories)
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"limit must be a positive integer (rows per category), got {limit!r}")
    rows: list[Row] = []
    sizes = {}
    for name in names:
        part = category_rows(name)[:limit] if limit else category_rows(name)
        sizes[name] = len(part)
        rows += part
    return Task(
        name="bfcl", train=[], test=rows,
        rewards=[{"name": "bfcl_ast"}, {"name": "tool_format"}],
        description="BFCL single-turn categories from the bfcl-eval package, scored by BFCL's AST checker",
        info={"data": str(package_root() / "data"), "categories": sizes},
    )
