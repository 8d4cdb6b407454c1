"""`gdpo score` end to end, with real registered rewards and a user reward by import path."""

import json


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


def run_cli(capsys, *args):
    """(exit code, stdout, stderr) of ``gdpo score ARGS``."""
    rc = main(["score", *map(str, args)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_param_and_bad_input_errors(tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    src.write_text('{"completion": "a"}\nnot json\n')
    shouting = "test_score_cli:shouting"
    cases = [
        ((), r"c.jsonl:2: not valid JSON"),
        (("--param", "oops"), "REWARD.KEY=VALUE"),
        (("--param", "math_lenght.max_tokens=3"), "reward 'math_lenght' is not in --rewards"),
    ]
    for extra, words in cases:
        rc, _, err = run_cli(capsys, "--rewards", shouting, "--input", src, *extra)
        assert rc == 2 and words in err and len(err.strip().splitlines()) == 1, err
    rc, _, err = run_cli(capsys, "--rewards", shouting, "--input", tmp_path / "none.jsonl")
    assert rc == 2 and "no such file" in err
    src.write_text('{"text": "a"}\n')
    rc, _, err = run_cli(capsys, "--rewards", shouting, "--input", src)
    assert rc == 2 and "--completion-key" in err


def test_unknown_reward_and_param_names_fail_before_reading_the_input(tmp_path, capsys):
    missing = tmp_path / "never-read.jsonl"  # the names are checked first: no "no such file" error
    rc, _, err = run_cli(capsys, "--rewards", "math_formt", "--input", missing)
    assert rc == 2 and "--rewards = 'math_formt': not a registered reward. Did you mean 'math_format'?" in err
    rc, _, err = run_cli(capsys, "--rewards", "math_length", "--param", "math_length.max_tokenz=3", "--input", missing)
    assert rc == 2 and "--param math_length.max_tokenz = 3: not a parameter of reward 'math_length'" in err
    assert "Did you mean 'max_tokens'?" in err
    rc, _, err = run_cli(capsys, "--rewards", "math_length", "--param", "math_length.max_tokens=many", "--input", missing)
    assert rc == 2 and "--param math_length.max_tokens = 'many': must be an integer" in err


def test_on_error_skip_counts_and_reports_the_skipped_lines(tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    src.write_text('{"completion": "HI"}\nnot json\n{"completion": "lo"}\n{"text": "x"}\n'
                   '{"completion": "OK", "extra": 1}\n')
    rc, out, _ = run_cli(capsys, "--rewards", "test_score_cli:shouting", "--input", src, "--on-error", "skip")
    assert rc == 0
    # 5 lines: 2 good ("HI", "lo"), line 2 not JSON, line 4 no completion, line 5 a column the first lacks
    assert "skipped 3 of 5 input line(s) (--on-error skip); first: " in out and "c.jsonl:2: not valid JSON" in out
    lines = [json.loads(l) for l in (tmp_path / "c.scores.jsonl").read_text().splitlines()]
    assert [l["scores"]["test_score_cli:shouting"] for l in lines] == [1.0, 0.0]
    src.write_text("not json\n")
    rc, _, err = run_cli(capsys, "--rewards", "test_score_cli:shouting", "--input", src, "--on-error", "skip")
    assert rc == 2 and "holds no completions; 1 line(s) skipped" in err


def test_output_folder_gets_the_file_and_no_temp_is_left(tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    write_jsonl(src, [{"completion": "HI"}, {"completion": "lo"}])
    folder = tmp_path / "scores"
    folder.mkdir()
    rc, _, _ = run_cli(capsys, "--rewards", "test_score_cli:shouting", "--input", src, "--output", folder)
    assert rc == 0
    assert sorted(p.name for p in folder.iterdir()) == ["c.scores.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl", "scores"]  # no scores.tmp beside it
    rc, _, err = run_cli(capsys, "--rewards", "test_score_cli:shouting", "--input", src,
                         "--output", tmp_path / "no" / "such" / "out.jsonl")
    assert rc == 2 and "does not exist" in err


def test_progress_line_per_batch_when_not_a_terminal(tmp_path, capsys):
    src = tmp_path / "c.jsonl"
    write_jsonl(src, [{"completion": c} for c in ["A", "b", "C", "d", "E"]])
    rc, _, err = run_cli(capsys, "--rewards", "test_score_cli:shouting", "--input", src, "--batch-size", "2")
    assert rc == 0
    # 5 completions in batches of 2: 2, 4, 5 done; capsys' stderr is not a terminal: plain lines
    done = [line.split(",")[0] for line in err.splitlines() if line.startswith("scored ")]
    assert done == ["scored 2/5 completions", "scored 4/5 completions", "scored 5/5 completions"]
    assert "\r" not in err
