"""``bfcl_ast`` against BFCL's own, unmodified checker, over every category: gold answers and perturbations.

Our reward imports BFCL's ``ast_checker`` with a stand-in for ``bfcl_eval.constants.model_config``
(the API clients are not installed here, see :mod:`gdpo.rewards.bfcl`) and decodes our JSON
``<tool_call>`` lines. The reference is the package as published, with the dependencies its
import needs, in a separate virtual environment (``$GDPO_BFCL_VENV``, default
``/tmp/bfcl-venv``; built with pip when missing: 560 MB, 3 to 14 minutes here; the test skips, saying
why, when it cannot be built). There the same calls, written as BFCL's prompting models write
them (``[f(a=1)]``), go through BFCL's decoder and checker (``bfcl_reference_checker.py``).

Cases: for every entry of the 13 categories, the gold answer and systematic perturbations
(wrong function name, a dropped / an extra parameter, a string changed in case and spacing
(BFCL standardises), a string altered, an int given for a float and a whole float for an int, a
number changed, a number as a string, a boolean flipped, a list reversed, an optional
parameter given its allowed value, parallel calls reordered / one dropped / one duplicated,
a call on an irrelevance entry, no call on a relevance entry). Agreement must be >= 99.5%;
every disagreement is listed.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from gdpo.data.bfcl import CATEGORIES, category_rows
from gdpo.rewards.bfcl import bfcl_ast
from gdpo.rewards.toolcall import render_completion

HERE = Path(__file__).resolve().parent
# What `import bfcl_eval.eval_checker.ast_eval.ast_checker` and its model table pull in (found
# by importing until nothing was missing), at the versions that worked; bfcl-eval itself with --no-deps
# (its full list adds sentence-transformers, faiss and torch, which the checker never imports).
REFERENCE_REQUIREMENTS = [
    "requests==2.34.2", "tqdm==4.70.1", "numpy==1.26.4", "pandas==3.0.6", "pydantic==2.14.4", "python-dotenv==1.2.4",
    "filelock==3.20.0", "tenacity==9.1.4", "overrides==7.7.0", "typer==0.29.2", "tabulate==0.10.0",
    "tree_sitter==0.21.3", "tree-sitter-java==0.21.0", "tree-sitter-javascript==0.21.4", "anthropic==2.14.0",
    "cohere==5.18.0", "openai==3.57.0", "google-genai==3.6.1", "mistralai==1.7.0", "boto3==1.44.8",
    "qwen-agent==0.0.34", "soundfile==0.14.0", "writer-sdk==3.0.0", "datamodel-code-generator==0.89.0",
]
IMPORT_CHECK = "import bfcl_eval.constants.model_config, bfcl_eval.eval_checker.ast_eval.ast_checker, " \
               "bfcl_eval.model_handler.utils"


def reference_python() -> Path:
    """The reference venv's python with the unmodified checker importable; builds it once, else skips."""
    venv = Path(os.environ.get("GDPO_BFCL_VENV", "/tmp/bfcl-venv"))
    python = venv / "bin" / "python"
    env = {**os.environ, "BFCL_PROJECT_ROOT": str(venv / "bfcl-project")}
    if python.exists() and subprocess.run([python, "-c", IMPORT_CHECK], capture_output=True, env=env).returncode == 0:
        return python
    try:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=300)
        steps = [["bfcl-eval==2026.3.23", "--no-deps"], REFERENCE_REQUIREMENTS]
        for step in steps:
            pip = subprocess.run([python, "-m", "pip", "install", "-q", *step], capture_output=True, text=True,
                                 timeout=1800)
            if pip.returncode != 0:
                pytest.skip(f"cannot install BFCL's checker dependencies in {venv}: {pip.stderr[-600:]}")
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.skip(f"cannot build the BFCL reference environment at {venv}: {exc}")
    check = subprocess.run([python, "-c", IMPORT_CHECK], capture_output=True, text=True, env=env)
    if check.returncode != 0:
        pytest.skip(f"BFCL's checker does not import in {venv}: {check.stderr[-600:]}")
    return python


# -- perturbations ----------------------------------------------------------------------------

def _first(args: dict[str, Any], kind: type | tuple[type, ...]) -> str | None:
    return next((k for k, v in args.items() if isinstance(v, kind) and not isinstance(v, bool)
                 or (kind is bool and isinstance(v, bool))), None)


def _with(calls: list[dict[str, Any]], i: int, key: str, value: Any) -> list[dict[str, Any]]:
    out = copy.deepcopy(calls)
    out[i]["arguments"][key] = value
    return out


def perturbations(row: dict[str, Any]) -> list[tuple[str, list[dict[str, Any]]]]:
    """(label, calls) cases of one row: the gold calls, then each perturbation that applies."""
    gold = json.loads(row["answer"])
    cases = [("gold", gold)]
    if row["category"] in ("irrelevance", "live_irrelevance"):
        functions = json.loads(row["functions"])
        name = functions[0]["name"] if functions else "lookup"
        return cases + [("call on irrelevance", [{"name": name, "arguments": {}}])]
    if row["category"] == "live_relevance":
        return cases + [("no call on relevance", [])]
    if not gold:
        return cases
    first = gold[0]
    args = first["arguments"]
    cases.append(("wrong name", [{**first, "name": first["name"] + "_x"}] + gold[1:]))
    if args:
        dropped = copy.deepcopy(gold)
        dropped[0]["arguments"].pop(next(iter(args)))
        cases.append(("drop parameter", dropped))
    cases.append(("extra parameter", _with(gold, 0, "extra_param_x", 1)))
    key = _first(args, str)
    if key is not None:
        cases.append(("string case and spaces", _with(gold, 0, key, " ".join(args[key].upper().split("_")))))
        cases.append(("string altered", _with(gold, 0, key, args[key] + "zq")))
    key = _first(args, int)
    if key is not None:
        cases.append(("int as float", _with(gold, 0, key, float(args[key]))))
        cases.append(("number changed", _with(gold, 0, key, args[key] + 1)))
        cases.append(("number as string", _with(gold, 0, key, str(args[key]))))
    key = _first(args, float)
    if key is not None:
        if float(args[key]).is_integer():
            cases.append(("whole float as int", _with(gold, 0, key, int(args[key]))))
        cases.append(("float changed", _with(gold, 0, key, args[key] * 2 + 1)))
    key = _first(args, bool)
    if key is not None:
        cases.append(("bool flipped", _with(gold, 0, key, not args[key])))
    key = _first(args, list)
    if key is not None and len(args[key]) > 1:
        cases.append(("list reversed", _with(gold, 0, key, list(reversed(args[key])))))
    optional = _optional_value(row, first["name"], args)
    if optional is not None:
        cases.append(("optional given", _with(gold, 0, *optional)))
    if len(gold) > 1:
        cases += [("calls reversed", list(reversed(gold))), ("call dropped", gold[:-1]),
                  ("call duplicated", gold + gold[:1])]
    return cases


def _optional_value(row: dict[str, Any], name: str, args: dict[str, Any]) -> tuple[str, Any] | None:
    """An optional parameter (allowed values include "") not in ``args``, with its first allowed value."""
    truth = json.loads(row["possible_answer"]) or []
    for item in truth:
        params = item.get(name)
        if params is None:
            continue
        for key, options in params.items():
            allowed = [o for o in options if o != ""]
            if key not in args and "" in options and allowed and not isinstance(allowed[0], (dict, list)):
                return key, allowed[0]
    return None


def python_source(calls: list[dict[str, Any]]) -> str:
    """The calls as BFCL's prompting models write them: ``[f(a=1, b='x'), g()]``."""
    return "[" + ", ".join(f"{c['name']}(" + ", ".join(f"{k}={v!r}" for k, v in c["arguments"].items()) + ")"
                           for c in calls) + "]"


@functools.lru_cache(maxsize=1)
def _cases() -> tuple[dict[str, Any], ...]:
    return tuple(_build_cases())


def all_cases() -> list[dict[str, Any]]:
    """Every case (built once per session: about 22,000 from 3,641 entries)."""
    return list(_cases())


def _build_cases() -> list[dict[str, Any]]:
    cases = []
    for category in CATEGORIES:
        for row in category_rows(category):
            for label, calls in perturbations(row):
                cases.append({"id": row["id"], "label": label, "category": category,
                              "functions": json.loads(row["functions"]),
                              "possible_answer": json.loads(row["possible_answer"]), "calls": calls,
                              "python": python_source(calls),
                              "functions_json": row["functions"], "possible_answer_json": row["possible_answer"]})
    return cases


def test_perturbations_cover_every_category_and_kind():
    cases = all_cases()
    assert {c["category"] for c in cases} == set(CATEGORIES)
    labels = {c["label"] for c in cases}
    assert {"gold", "wrong name", "drop parameter", "extra parameter", "string case and spaces", "int as float",
            "whole float as int", "bool flipped", "list reversed", "optional given", "calls reversed",
            "call duplicated", "call on irrelevance", "no call on relevance"} <= labels
    # Our side alone: gold passes wherever BFCL can be passed; a wrong name never passes.
    ours = our_verdicts(cases)
    gold = [v for c, v in zip(cases, ours) if c["label"] == "gold"]
    assert len(gold) == 3641 and sum(gold) == 3641 - 7
    assert not any(v for c, v in zip(cases, ours) if c["label"] == "wrong name")


def our_verdicts(cases: list[dict[str, Any]]) -> list[bool]:
    completions = [render_completion(c["calls"], None if c["calls"] else "No tool applies.", key="parameters")
                   for c in cases]
    scores = bfcl_ast(completions, category=[c["category"] for c in cases],
                      functions=[c["functions_json"] for c in cases],
                      possible_answer=[c["possible_answer_json"] for c in cases])
    return [s == 1.0 for s in scores]


@pytest.mark.bfcl_reference  # like the verl test: outside the README's test command, run by .ci/run
def test_bfcl_ast_agrees_with_bfcls_unmodified_checker(tmp_path):
    python = reference_python()
    cases = all_cases()
    path = tmp_path / "cases.jsonl"
    with path.open("w") as fh:
        for c in cases:
            fh.write(json.dumps({k: c[k] for k in ("category", "functions", "possible_answer", "calls", "python")})
                     + "\n")
    env = {**os.environ, "BFCL_PROJECT_ROOT": str(tmp_path / "bfcl-project")}
    out = subprocess.run([python, str(HERE / "bfcl_reference_checker.py"), str(path)], capture_output=True,
                         text=True, timeout=900, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    theirs = [json.loads(line) for line in out.stdout.splitlines()]
    assert len(theirs) == len(cases)
    ours = our_verdicts(cases)
    disagreements = [(c["id"], c["label"], o, t["valid"], t["error_type"])
                     for c, o, t in zip(cases, ours, theirs) if o != t["valid"]]
    agreement = 1 - len(disagreements) / len(cases)
    report = "\n".join(f"  {i} [{label}]: ours {o}, BFCL {t} ({e})" for i, label, o, t, e in disagreements)
    print(f"{len(cases)} cases, agreement {agreement:.4%}, {len(disagreements)} disagreements\n{report}")
    assert agreement >= 0.995, report
    by_label: dict[str, list[int]] = {}
    for c, t in zip(cases, theirs):
        by_label.setdefault(c["label"], [0, 0])[t["valid"]] += 1
    print("\n".join(f"  {label}: BFCL accepts {ok}, refuses {bad}" for label, (bad, ok) in sorted(by_label.items())))
    assert sum(t["valid"] for t in theirs) > 5000 and sum(not t["valid"] for t in theirs) > 5000  # both outcomes
