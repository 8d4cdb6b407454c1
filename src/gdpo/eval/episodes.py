"""`gdpo eval` for tasks that are scored by their own episode runner (multi-turn environments).

A task opts in through ``Task.info["evaluate"] = "module:function"``: the function takes
``(rows, model_or_None, tokenizer, *, max_new_tokens, max_prompt_tokens, batch_size)`` and returns one
record per row with at least ``accuracy`` in {0, 1} (``model=None`` is ``--model reference``: the
task's ground-truth policy). ``bfcl_multi_turn`` uses this: BFCL's own multi-turn checker decides each
entry, so the mean of ``accuracy`` is BFCL's multi-turn accuracy. Records go to ``results.jsonl``
one row at a time (a rerun resumes), and the usual ``summary.json`` / ``summary.md``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from gdpo.eval import metrics as M

DOMAIN = "multi_turn"
NUMERIC = ("accuracy", "state_match", "turns", "calls", "env_errors")  # per-row figures averaged in the summary
M.DOMAIN_METRICS.setdefault(DOMAIN, [M.MetricSpec("accuracy", "BFCL multi-turn accuracy %"),
                                     M.MetricSpec("state_match", "final state matches %")])


def hook_of(task: Any) -> Callable[..., list[dict[str, Any]]] | None:
    """The task's episode evaluator (``Task.info["evaluate"]``), or None for ordinary tasks."""
    spec = (task.info or {}).get("evaluate")
    if not spec:
        return None
    module, _, name = str(spec).partition(":")
    return getattr(importlib.import_module(module), name)


def run_episodes(hook: Callable[..., list[dict[str, Any]]], rows: list[dict[str, Any]], todo: list[int],
                 settings: Any, model: Any, tokenizer: Any, write: Callable[[int, dict[str, Any]], None],
                 progress: Any) -> None:
    """Run ``hook`` over ``rows[i] for i in todo`` in batches; ``write(i, line)`` gets one results line
    per row (``metrics`` as lists, as the single-turn lines have them; BFCL's error type; the trajectory)."""
    for first in range(0, len(todo), settings.batch_size):
        batch = todo[first:first + settings.batch_size]
        records = hook([rows[i] for i in batch], model, tokenizer, max_new_tokens=settings.max_new_tokens,
                       max_prompt_tokens=settings.max_prompt_tokens, batch_size=settings.batch_size)
        for i, record in zip(batch, records):
            write(i, {"id": rows[i].get("id"),
                      "metrics": {k: [float(record[k])] for k in NUMERIC if k in record},
                      "error_type": record.get("error_type"), "trajectory": record.get("trajectory")})
        progress.step(len(batch), f"{first + len(batch)}/{len(todo)} episodes")
