"""The paper's evaluation metrics, per sample and aggregated. Pure functions; no model.

* **Tool calling** (BFCL-style): ``format`` = the ToolRL format check passes;
  ``accuracy`` = the predicted calls equal the reference calls as a multiset, compared like
  BFCL's AST checker: same function names, the same argument keys, and equal values (JSON
  equality, :func:`gdpo.rewards.toolcall.values_equal`). Parallel calls match in any order.
  A reply that should call nothing is accurate iff it calls nothing.
* **Math**: ``correct`` (pass@1 averaged over the n samples of each prompt) and ``exceed``
  (response longer than the length limit, in tokens).
* **Code**: ``pass_rate`` (share of tests passed), ``passed`` (all tests pass), ``bug``
  (a runtime or compilation error) and ``exceed``.

Any other task is scored with its own rewards (``reward/<name>`` means).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from gdpo.rewards.toolcall import ToolCall, parse_ground_truth, parse_tool_calls, tool_format, values_equal

DOMAINS = ("toolcall", "math", "code", "rewards")


@dataclass(frozen=True)
class MetricSpec:
    """How one metric is shown: its key, a label, and whether it is a percentage."""

    key: str
    label: str
    percent: bool = True


DOMAIN_METRICS: dict[str, list[MetricSpec]] = {
    "toolcall": [MetricSpec("format", "correct format %"), MetricSpec("accuracy", "call accuracy %")],
    "math": [MetricSpec("correct", "pass@1 %"), MetricSpec("exceed", "over length limit %")],
    "code": [MetricSpec("pass_rate", "pass rate %"), MetricSpec("passed", "all tests pass %"),
             MetricSpec("bug", "bug ratio %"), MetricSpec("exceed", "over length limit %")],
    "rewards": [],
}


def domain_of(reward_names: Sequence[str]) -> str:
    """The metric family of a task, from its reward names (tool_*, math_*, code_*)."""
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
                 limit: int) -> dict[str, list[float]]:
    """Per sample: ``pass_rate`` in [0, 1], ``passed``, ``bug`` and ``exceed`` (0/1)."""
    from gdpo.rewards.code import code_bug_free, code_pass_rate

    extra = {k: columns[k] for k in ("test", "entry_point") if k in columns}
    rates = [0.0 if v is None else float(v) for v in code_pass_rate(list(completions), tests=columns["tests"], **extra)]
    bug_free = [1.0 if v is None else float(v) for v in code_bug_free(list(completions), tests=columns["tests"], **extra)]
    return {"pass_rate": rates, "passed": [1.0 if r >= 1.0 else 0.0 for r in rates],
            "bug": [1.0 - b for b in bug_free], "exceed": exceeds(lengths, limit)}


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
