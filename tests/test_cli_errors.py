"""Bad input through the real command line: exit code 2, one stderr line, no traceback, no model load.

The inputs named in issue 10 run ``python -m gdpo`` in a subprocess. "Before any model loads" is
proven by pointing the model at a folder that does not exist: looking for it is the first thing
a model load does, and it fails with "is not a local folder" (the probe tests show that message
does appear when the input is otherwise good). A bad-input case that printed that message,
instead of its own, would have reached the model load.

Further training inputs run ``gdpo.cli.main`` in this process (a subprocess pays ~1-3 s of
torch import each) with the model loader replaced by one that fails the test if it is called.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SMOKE = str(ROOT / "configs" / "smoke.yaml")
NO_MODEL = "/nonexistent/gdpo-model"
MODEL_LOAD = "is not a local folder"  # what loading NO_MODEL says


def gdpo(*args: str, tmp: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    full_env.pop("GDPO_DEBUG", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "gdpo", *args], cwd=tmp, env=full_env, capture_output=True,
                          text=True, timeout=120)


def train(*sets: str, tmp: Path) -> subprocess.CompletedProcess:
    args = ["train", "--config", SMOKE, "--output-dir", str(tmp / "run"), "--set", f"model.name={NO_MODEL}"]
    for item in sets:
        args += ["--set", item]
    return gdpo(*args, tmp=tmp)


def assert_one_line(proc: subprocess.CompletedProcess, command: str, *words: str) -> str:
    err = proc.stderr.strip()
    assert proc.returncode == 2, (proc.returncode, err)
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith(f"gdpo {command}: "), err
    assert MODEL_LOAD not in err, err  # the check ran before the model load
    for word in words:
        assert word in err, (word, err)
    return err


TRAIN_CASES = [
    # (--set items, words the one line must hold: key, value, nearest valid choice)
    (["rewards=[{name: toy_letter, wieght: 2}]"], ["rewards[0].wieght = 2", "Did you mean 'weight'?", "Valid: name"]),
    (["task.params.num_trian=3"], ["task.params.num_trian = 3", "Did you mean 'num_train'?", "num_rewards"]),
    # smoke.yaml's toy params do not fit humaneval; the valid ones are listed (test_fraction too)
    (["task.name=humaneval"], ["task.params.num_rewards = 3", "task 'humaneval'", "path, test_fraction, seed"]),
]


@pytest.mark.parametrize("sets, words", TRAIN_CASES, ids=[c[0][0][:40] for c in TRAIN_CASES])
def test_train_bad_input(tmp_path, sets, words):
    assert_one_line(train(*sets, tmp=tmp_path), "train", *words)
    assert not (tmp_path / "run").exists()  # nothing written either


def test_train_probe_a_good_config_does_reach_the_model_load(tmp_path):
    proc = train(tmp=tmp_path)
    assert proc.returncode == 2 and MODEL_LOAD in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


MORE_TRAIN_CASES = [
    (["task.name=humanevl"], ["task.name = 'humanevl'", "Did you mean 'humaneval'?", "toy"]),
    (["rewards=[toy_leter]"], ["rewards[0] = 'toy_leter'", "Did you mean 'toy_letter'?", "toy_short"]),
    (["rewards=[{name: math_length, params: {max_tokenz: 5}}]"],
     ["rewards[0].params.max_tokenz = 5", "reward 'math_length'", "Did you mean 'max_tokens'?"]),
    (["rewards=[{name: math_length, params: {max_tokens: lots}}]"],
     ["rewards[0].params.max_tokens = 'lots'", "must be an integer"]),
    (["rewards=[{name: noisy, params: {reward: toy_shrot}}]"],
     ["rewards[0].params.reward = 'toy_shrot'", "Did you mean 'toy_short'?"]),
    (["rewards=[{name: toy_letter, weight: -1}]"], ["rewards[0].weight = -1", ">= 0"]),
    (["rewards=[{name: toy_letter}, {name: toy_short, condition: {on: toy_leter}}]"],
     ["rewards[1].condition.on = 'toy_leter'", "Did you mean 'toy_letter'?"]),
    (["method_options.epss=1e-4"], ["method_options.epss", "Did you mean 'eps'?"]),
    (["method=gdp"], ["method = 'gdp'", "'gdpo'"]),
]


@pytest.fixture
def no_model_load(monkeypatch):
    import gdpo.models

    def refuse(*args, **kwargs):
        raise AssertionError("a model load started")

    monkeypatch.setattr(gdpo.models, "load_model_and_tokenizer", refuse)


@pytest.mark.parametrize("sets, words", MORE_TRAIN_CASES, ids=[c[0][0][:40] for c in MORE_TRAIN_CASES])
def test_more_train_bad_input_in_process(tmp_path, capsys, no_model_load, sets, words):
    from gdpo.cli import main

    args = ["train", "--config", SMOKE, "--output-dir", str(tmp_path / "run")]
    for item in sets:
        args += ["--set", item]
    rc = main(args)
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and err.startswith("gdpo train: "), err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "run").exists()


EVAL_CASES = [
    (["--task", "humaneval", "--task-param", "pth=x"], ["pth = 'x'", "task 'humaneval'", "Did you mean 'path'?"]),
    (["--task", "humanevl"], ["'humanevl'", "Did you mean 'humaneval'?"]),
    (["--task", "toy", "--task-param", "num_trian=3"], ["num_trian = 3", "Did you mean 'num_train'?"]),
    (["--task", "toy", "--task-param", "num_rewards=5"], ["toy task", "num_rewards=5", "2 or 3"]),
]


@pytest.mark.parametrize("args, words", EVAL_CASES, ids=[" ".join(c[0]) for c in EVAL_CASES])
def test_eval_bad_input(tmp_path, args, words):
    proc = gdpo("eval", "--model", NO_MODEL, "--output", str(tmp_path / "eval"), *args, tmp=tmp_path)
    assert_one_line(proc, "eval", *words)


def test_eval_probe_a_good_task_does_reach_the_model_load(tmp_path):
    proc = gdpo("eval", "--model", NO_MODEL, "--task", "toy", "--limit", "1", "--output", str(tmp_path / "e"),
                tmp=tmp_path)
    assert proc.returncode == 2 and MODEL_LOAD in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


SCORE_CASES = [
    (["--rewards", "nope_reward"], ["--rewards = 'nope_reward'", "not a registered reward", "math_format"]),
    (["--rewards", "toy_leter"], ["--rewards = 'toy_leter'", "Did you mean 'toy_letter'?"]),
    (["--rewards", "math_length", "--param", "math_length.max_tokenz=3"],
     ["--param math_length.max_tokenz = 3", "Did you mean 'max_tokens'?"]),
    (["--rewards", "no_such_module_xyz:fn"], ["'no_such_module_xyz:fn'", "cannot import"]),
]


@pytest.mark.parametrize("args, words", SCORE_CASES, ids=[" ".join(c[0]) for c in SCORE_CASES])
def test_score_bad_input(tmp_path, args, words):
    src = tmp_path / "c.jsonl"
    src.write_text('{"completion": "a"}\n')
    assert_one_line(gdpo("score", *args, "--input", str(src), tmp=tmp_path), "score", *words)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.jsonl"]  # no output, no temp file


@pytest.mark.parametrize("how", [["--debug"], []], ids=["--debug", "GDPO_DEBUG=1"])
def test_debug_shows_the_traceback(tmp_path, how):
    env = None if how else {"GDPO_DEBUG": "1"}
    proc = gdpo(*how, "score", "--rewards", "nope_reward", "--input", "x.jsonl", tmp=tmp_path, env=env)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "UnknownNameError" in proc.stderr


def test_in_process_probe_a_good_config_does_reach_the_patched_loader(tmp_path, no_model_load):
    from gdpo.cli import main

    with pytest.raises(AssertionError, match="a model load started"):
        main(["train", "--config", SMOKE, "--output-dir", str(tmp_path / "run")])
