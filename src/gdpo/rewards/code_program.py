"""Which program a code completion holds (used by the code rewards and the evaluation metrics).

:func:`extract_program` returns, in this order of preference,

1. the LAST closed fenced block (```python, ```py, ```python3 or a bare ```); a block whose
   closing fence is missing (a truncated generation) does not count;
2. where the row gives a HumanEval-style ``prefix`` (the function's signature and docstring)
   and there is no fenced block: the completion in HumanEval's own format, a function body
   continuing the prompt. It is cut at the first line that starts at column 0 with one of
   HumanEval's stop sequences (``def``, ``class``, ``if``, ``print``, ``#``: Codex's
   ``["\\nclass", "\\ndef", "\\n#", "\\nif", "\\nprint"]``), and accepted when ``prefix +
   body`` compiles; an opening fence with no closing one (truncated) is dropped first;
3. otherwise None: "no program found", which the rewards score 0 and the evaluation counts
   as ``no_program`` (apart from bugs).
"""

from __future__ import annotations

import re

_FENCE = re.compile(r"```[ \t]*(python3?|py)?[ \t]*\r?\n(.*?)```", re.DOTALL | re.IGNORECASE)
_OPEN_FENCE = re.compile(r"^\s*```[ \t]*(python3?|py)?[ \t]*\r?\n", re.IGNORECASE)
STOP_SEQUENCES = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")


def fenced_program(completion: str) -> str | None:
    """The last closed fenced block of ``completion``; None when there is none."""
    blocks = [m.group(2) for m in _FENCE.finditer(completion or "")]
    return blocks[-1] if blocks else None


def humaneval_body(completion: str, prefix: str) -> str | None:
    """The completion as a function body continuing ``prefix`` (HumanEval's format), or None."""
    text = _OPEN_FENCE.sub("", completion or "", count=1)
    cut = min((i for i in (text.find(s) for s in STOP_SEQUENCES) if i >= 0), default=len(text))
    body = text[:cut].rstrip()
    if not body.strip():
        return None
    try:
        compile(prefix + body + "\n", "<humaneval>", "exec")
    except (SyntaxError, ValueError):
        return None
    return body + "\n"


def extract_program(completion: str, prefix: str | None = None) -> str | None:
    """The program of ``completion`` (see module doc); ``prefix``: the HumanEval prompt, if any."""
    program = fenced_program(completion)
    if program is None and prefix:
        program = humaneval_body(completion, prefix)
    return program
