"""Evaluation harness: the paper's metrics on a task's test split (``gdpo eval``).

:func:`gdpo.eval.harness.evaluate` generates, scores, appends per-prompt results to a JSONL
(resumable) and writes a JSON and Markdown summary; :mod:`gdpo.eval.metrics` holds the
metrics as pure functions.
"""
