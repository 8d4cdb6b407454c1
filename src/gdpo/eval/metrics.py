"""The paper's evaluation metrics, per sample and aggregated. Pure functions; no model.

* **Tool calling** (BFCL-style): ``format`` = the ToolRL format check passes;
  ``accuracy`` = the predicted calls equal the reference calls as a multiset, compared like
  BFCL's AST checker: same function names, the same argument keys, and equal values (JSON
  equality, :func:`gdpo.rewards.toolcall.values_equal`). Parallel calls match in any order.
  A reply that should call nothing is accurate iff it calls nothing.
* **Math**: ``correct`` (pass@1 averaged over the n samples of each prompt) and ``exceed``
  (response longer than the length limit, in tokens).
* **Code**: ``pass_rate`` (share of tests passed), ``passed`` (all tests pass), ``bug``
  (a program was found, the generation ended (EOS), and a run ended in a runtime or
  compilation error), ``no_program`` (no program found in the completion, see
  :mod:`gdpo.rewards.code_program`) and ``exceed``. A truncated completion (no EOS within
  ``--max-new-tokens``, the ``truncated`` metric every task has) is never a bug.
* **BFCL** (the ``bfcl`` task): ``accuracy`` = the ``bfcl_ast`` reward (BFCL's own checker,
  :mod:`gdpo.rewards.bfcl`), ``format`` = ``tool_format``; :func:`bfcl_summary` gives BFCL's
  summary figures from the per-category accuracies.

Any other task is scored with its own rewards (``reward/<name>`` means).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gdpo.rewards.toolcall import ToolCall, parse_ground_truth, parse_tool_calls, tool_format, values_equal

DOMAINS = ("bfcl", "toolcall", "math", "code", "rewards")


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is shown: its key, a label, and whether it is a percentage."""

    key: str
    label: str
    percent: bool = True


DOMAIN_METRICS: dict[str, list[MetricSpec]] = {
    "toolcall": [MetricSpec("format", "correct format %"), MetricSpec("accuracy", "call accuracy %")],
    "math": [MetricSpec("correct", "pass@1 %"), MetricSpec("exceed", "over length limit %")],
    "bfcl": [MetricSpec("accuracy", "BFCL AST accuracy %"), MetricSpec("format", "correct format %")],
    "code": [MetricSpec("pass_rate", "pass rate %"), MetricSpec("passed", "all tests pass %"),
             MetricSpec("bug", "bug ratio %"), MetricSpec("no_program", "no program found %"),
             MetricSpec("exceed", "over length limit %")],
    "rewards": [],
}


def domain_of(reward_names: Sequence[str]) -> str:
    """The metric family of a task, from its reward names (bfcl_ast, tool_*, math_*, code_*)."""
    if "bfcl_ast" in reward_names:
        return "bfcl"
    for prefix, domain in (("tool_", "toolcall"), ("math_", "math"), ("code_", "code")):
        if any(name.startswith(prefix) for name in reward_names):
            return domain
    return "rewards"


# --------------------------------------------------------------------------------------
# Tool calling
# --------------------------------------------------------------------------------------
def calls_match(predicted: Sequence[ToolCall], reference: Sequence[ToolCall]) -> bool:
    """BFCL-style AST match: a one-to-one pairing of equal calls exists (order-free)."""
    if len(predicted) != len(reference):
        return False
    unused = list(predicted)
    for ref in reference:
        match = next((i for i, p in enumerate(unused) if _same_call(p, ref)), None)
        if match is None:
            return False
        unused.pop(match)
    return True


def _same_call(pred: ToolCall, ref: ToolCall) -> bool:
    if pred.name != ref.name or set(pred.arguments) != set(ref.arguments):
        return False
    return all(values_equal(pred.arguments[k], ref.arguments[k]) for k in ref.arguments)


def call_accuracy(completions: Sequence[str], answers: Sequence[Any]) -> list[float]:
    """1.0 where the completion's calls match the reference calls exactly (see :func:`calls_match`)."""
    out = []
    for completion, answer in zip(completions, answers, strict=True):
        parsed = parse_tool_calls(completion)
        out.append(1.0 if parsed.ok and calls_match(parsed.calls, parse_ground_truth(answer)) else 0.0)
    return out


def toolcall_metrics(completions: Sequence[str], columns: dict[str, list[Any]]) -> dict[str, list[float]]:
    """Per sample: ``format`` and ``accuracy`` (0/1)."""
    return {
        "format": tool_format(list(completions), answer=columns["answer"],
                              expects_response=columns.get("expects_response")),
        "accuracy": call_accuracy(completions, columns["answer"]),
    }


# --------------------------------------------------------------------------------------
# Math and code
# --------------------------------------------------------------------------------------
def exceeds(lengths: Sequence[int], limit: int) -> list[float]:
    """1.0 where the response has more than ``limit`` tokens."""
    return [1.0 if int(n) > limit else 0.0 for n in lengths]


def math_metrics(completions: Sequence[str], columns: dict[str, list[Any]], lengths: Sequence[int],
                 limit: int) -> dict[str, list[float]]:
    """Per sample: ``correct`` (0/1) and ``exceed`` (0/1)."""
    from gdpo.rewards.math import math_correctness

    return {"correct": [float(v) for v in math_correctness(list(completions), answer=columns["answer"])],
            "exceed": exceeds(lengths, limit)}


def code_metrics(completions: Sequence[str], columns: dict[str, list[Any]], lengths: Sequence[int],
                 limit: int, ended: Sequence[bool] | None = None) -> dict[str, list[float]]:
    """Per sample: ``pass_rate`` in [0, 1]; ``passed``, ``bug``, ``no_program``, ``exceed`` (0/1).

    ``ended[i]``: sample i stopped at EOS (default: all did). A truncated sample is not a bug.
    """
    from gdpo.rewards.code import code_bug_free, code_pass_rate, parse_tests
    from gdpo.rewards.code_program import extract_program
    from gdpo.rewards.text import completion_text

    extra = {k: columns[k] for k in ("tests", "test", "entry_point") if k in columns}
    rates = [0.0 if v is None else float(v) for v in code_pass_rate(list(completions), **extra)]
    bug_free = [1.0 if v is None else float(v) for v in code_bug_free(list(completions), **extra)]
    ended = [True] * len(completions) if ended is None else list(ended)
    found = []
    for i, text in enumerate(completions):
        cases = parse_tests(*(extra.get(k, [None] * len(completions))[i] for k in ("tests", "test", "entry_point")))
        prefix = cases[0].prefix if cases and cases[0].kind == "check" else None
        found.append(extract_program(completion_text(text), prefix) is not None)
    return {"pass_rate": rates, "passed": [1.0 if r >= 1.0 else 0.0 for r in rates],
            "bug": [1.0 if f and e and b < 1.0 else 0.0 for f, e, b in zip(found, ended, bug_free)],
            "no_program": [0.0 if f else 1.0 for f in found], "exceed": exceeds(lengths, limit)}


def bfcl_metrics(completions: Sequence[str], columns: dict[str, list[Any]]) -> dict[str, list[float]]:
    """Per sample: ``accuracy`` (BFCL's checker accepts the calls) and ``format`` (0/1)."""
    from gdpo.rewards.bfcl import bfcl_ast

    return {"accuracy": bfcl_ast(list(completions), category=columns["category"], functions=columns["functions"],
                                 possible_answer=columns["possible_answer"]),
            "format": tool_format(list(completions), answer=columns["answer"],
                                  expects_response=columns.get("expects_response"))}


# BFCL's summary (bfcl_eval/eval_checker/eval_runner_helper.py, v4): simple = the unweighted mean
# of python / java / javascript; non-live = the unweighted mean of simple, multiple, parallel,
# parallel_multiple; live = the mean over the live AST entries (weighted by count);
# irrelevance = the unweighted mean of irrelevance and live_irrelevance.
BFCL_SIMPLE = ("simple_python", "simple_java", "simple_javascript")
BFCL_NON_LIVE = ("multiple", "parallel", "parallel_multiple")
BFCL_LIVE = ("live_simple", "live_multiple", "live_parallel", "live_parallel_multiple")
BFCL_IRRELEVANCE = ("irrelevance", "live_irrelevance")


def bfcl_summary(by_category: dict[str, tuple[float, int]]) -> dict[str, float]:
    """BFCL's summary figures from {category: (accuracy, entries)}, over the categories present.

    ``overall`` is BFCL v4's weighting (non-live 10, live 10, irrelevance 10, multi-turn 30,
    agentic 40) restricted to the single-turn parts present and renormalized: the mean of
    the non-live, live and irrelevance figures. It is not the leaderboard's overall, which
    also counts multi-turn and agentic tasks. A figure none of whose categories ran is absent.
    """
    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    out: dict[str, float] = {}
    simple = mean([by_category[c][0] for c in BFCL_SIMPLE if c in by_category])
    non_live = mean(([simple] if simple is not None else []) +
                    [by_category[c][0] for c in BFCL_NON_LIVE if c in by_category])
    live_items = [by_category[c] for c in BFCL_LIVE if c in by_category]
    live_count = sum(n for _, n in live_items)
    live = sum(a * n for a, n in live_items) / live_count if live_count else None
    irrelevance = mean([by_category[c][0] for c in BFCL_IRRELEVANCE if c in by_category])
    for key, value in (("simple", simple), ("non_live", non_live), ("live", live), ("irrelevance", irrelevance)):
        if value is not None:
            out[key] = value
    if "live_relevance" in by_category:
        out["relevance"] = by_category["live_relevance"][0]
    parts = [v for v in (non_live, live, irrelevance) if v is not None]
    if parts:
        out["overall"] = sum(parts) / len(parts)
    return out


# --------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------
def aggregate(per_prompt: Sequence[dict[str, list[float]]]) -> dict[str, float]:
    """Mean of each metric over prompts of (mean over that prompt's samples); NaN-aware.

    With n samples per prompt this is pass@1 averaged over the n samples.
    """
    keys = sorted({k for scores in per_prompt for k in scores})
    out = {}
    for key in keys:
        prompt_means = [np.nanmean(s[key]) for s in per_prompt if key in s and np.any(~np.isnan(s[key]))]
        out[key] = float(np.mean(prompt_means)) if prompt_means else float("nan")
    return out
