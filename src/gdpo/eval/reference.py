"""``--model reference``: a pseudo-model that answers every row with its reference answer.

It writes, in the task's own output format, what a perfect model would: the row's
``reference`` column where there is one (tool tasks: ``<think>`` then the gold calls /
``<response>``; BFCL: one answer BFCL's checker accepts; HumanEval: the canonical solution,
a function body continuing the prompt, HumanEval's own format), else for code the
``solution`` in a fenced block, else for math ``<think> solution </think> <answer>
\\boxed{answer} </answer>``. Scoring these through the normal path (prompt -> parse ->
checker) must give 100% on the task's metric: the end-to-end check of the evaluation.

Lengths are counted without a tokenizer (words and punctuation marks,
:func:`gdpo.rewards.code.count_tokens`); every reference "stops at EOS".
"""

from __future__ import annotations

from typing import Any

REFERENCE_MODEL = "reference"


def reference_completion(row: dict[str, Any], domain: str) -> str:
    """The reference answer of ``row`` as a completion (see module doc); ValueError if it has none."""
    if isinstance(row.get("reference"), str):
        return row["reference"]
    if domain == "code" and isinstance(row.get("solution"), str):
        return f"```python\n{row['solution'].rstrip()}\n```"
    if domain == "math" and row.get("answer") is not None:
        solution = str(row.get("solution") or "I solve the problem.").replace("</think>", "")
        return f"<think> {solution} </think>\n<answer> \\boxed{{{row['answer']}}} </answer>"
    columns = sorted(k for k in row if k != "prompt")
    raise ValueError(f"--model reference: this task's rows carry no reference answer (columns: {columns}); "
                     "it needs a 'reference' column, or 'solution' (code) or 'answer' (math)")


def reference_completions(rows: list[dict[str, Any]], domain: str, samples: int) -> tuple[list[str], list[int]]:
    """``samples`` copies of each row's reference (samples of a row contiguous) and their lengths."""
    from gdpo.rewards.code import count_tokens

    texts = [reference_completion(row, domain) for row in rows for _ in range(samples)]
    return texts, [count_tokens(t) for t in texts]
