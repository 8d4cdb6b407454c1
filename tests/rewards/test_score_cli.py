"""`gdpo score` end to end, with real registered rewards and a user reward by import path."""

import json

import pytest

from gdpo.cli import main


def shouting(completions, **_):
    """1 for an all-caps completion, None for an empty one (not applicable)."""
    return [None if not c else float(c.isupper()) for c in completions]


def crashes_on_x(completions, **_):
    if any("x" in c for c in completions):
        raise RuntimeError("x is not allowed")
    return [1.0] * len(completions)


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_scores_jsonl_and_summary(tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    write_jsonl(src, [{"completion": "HI", "answer": "1"}, {"completion": "", "answer": "2"},
                      {"completion": "x", "answer": "3"}])
    rewards = "test_score_cli:shouting,test_score_cli:crashes_on_x"
    assert main(["score", "--rewards", rewards, "--input", str(src)]) == 0
    lines = [json.loads(l) for l in (tmp_path / "c.scores.jsonl").read_text().splitlines()]
    assert [l["scores"]["test_score_cli:shouting"] for l in lines] == [1.0, None, 0.0]
    # the batch raised, each sample was retried: "x" gets the floor (0) and is counted
    assert [l["scores"]["test_score_cli:crashes_on_x"] for l in lines] == [1.0, 1.0, 0.0]
    out = capsys.readouterr().out
    assert "| test_score_cli:shouting | 0.5000 | 0.5000 | 0.0000 | 1.0000 | 1 | 0 |" in out
    assert "raised on 1 completion(s); first: RuntimeError: x is not allowed" in out


def test_param_and_bad_input_errors(tmp_path):
    src = tmp_path / "c.jsonl"
    src.write_text('{"completion": "a"}\nnot json\n')
    with pytest.raises(SystemExit, match=r"c.jsonl:2: not valid JSON"):
        main(["score", "--rewards", "test_score_cli:shouting", "--input", str(src)])
    with pytest.raises(SystemExit, match="REWARD.KEY=VALUE"):
        main(["score", "--rewards", "test_score_cli:shouting", "--input", str(src), "--param", "oops"])
    with pytest.raises(SystemExit, match="does not exist"):
        main(["score", "--rewards", "test_score_cli:shouting", "--input", str(tmp_path / "none.jsonl")])
    src.write_text('{"text": "a"}\n')
    with pytest.raises(SystemExit, match="--completion-key"):
        main(["score", "--rewards", "test_score_cli:shouting", "--input", str(src)])
