"""Every built-in reward reads TRL's conversational completions like plain strings."""

import pytest

from gdpo.rewards import get, names
from gdpo.rewards.text import completion_text

ROWS = {  # columns each reward family reads
    "answer": ["4"], "target": ["q"], "max_len": [3],
    "tests": ['[{"input": "", "output": "4\\n"}]'],
}
TEXT = "<think>2+2</think>\n<answer>4</answer>\n```python\nprint(4)\n```"


def test_completion_text_shapes():
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "a"}, {"type": "image"}]}]) == "a"
    assert completion_text({"content": "b"}) == "b" and completion_text(42) == "" and completion_text([]) == ""


@pytest.mark.parametrize("name", ["math_correctness", "math_format", "math_integer", "toy_letter", "toy_short",
                                  "toy_starts_lower", "toy_no_digit", "toy_exact", "code_pass_rate", "code_bug_free",
                                  "tool_format"])
def test_conversational_equals_plain(name):
    fn = get(name)
    columns = dict(ROWS, answer=["[]"]) if name.startswith("tool") else ROWS
    plain = fn([TEXT], **columns)
    chat = fn([[{"role": "assistant", "content": TEXT}]], **columns)
    assert chat == plain, name
    assert name in names()
