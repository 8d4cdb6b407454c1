"""Unit tests of gdpo.schema (the checks of user-supplied names) and gdpo.errors."""

from __future__ import annotations

import string
from pathlib import Path
from typing import Literal

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from gdpo import schema
from gdpo.data.base import get_task
from gdpo.errors import InputError, MissingFileError, UnknownNameError, UserError, one_line
from gdpo.rewards import register_reward_factory, unregister

ROOT = Path(__file__).resolve().parents[1]
words = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=12)


# -- errors -----------------------------------------------------------------------------------
def test_user_errors_keep_their_builtin_bases_and_plain_messages():
    e = UnknownNameError("task = 'x': not a registered task")
    assert isinstance(e, KeyError) and isinstance(e, ValueError) and isinstance(e, UserError)
    assert str(e) == "task = 'x': not a registered task"  # a bare KeyError would add quotes
    assert isinstance(MissingFileError("m"), FileNotFoundError) and str(MissingFileError("m")) == "m"
    assert one_line("a\n  b\n\nc") == "a b c"


# -- nearest ----------------------------------------------------------------------------------
def test_nearest_by_hand():
    assert schema.nearest("num_trian", ["num_train", "num_test", "seed"]) == "num_train"
    assert schema.nearest("wieght", schema.REWARD_ENTRY_KEYS) == "weight"
    assert schema.nearest("GDPO", ["gdpo", "grpo"]) == "gdpo"  # ratio 0 ("GDPO" vs "gdpo"), then case
    assert schema.nearest("zzz", ["gdpo", "grpo"]) is None


@settings(deadline=None)  # timing is not what these test; a loaded CPU misses the 200 ms default
@given(st.lists(words, min_size=1, max_size=8, unique=True), st.data())
def test_nearest_returns_a_choice_and_a_choice_itself(choices, data):
    name = data.draw(words)
    near = schema.nearest(name, choices)
    assert near is None or near in choices
    pick = data.draw(st.sampled_from(choices))
    assert schema.nearest(pick, choices) == pick


@settings(deadline=None)  # timing is not what these test; a loaded CPU misses the 200 ms default
@given(st.lists(st.text(alphabet="abcdefgh", min_size=4, max_size=10), min_size=1, max_size=6, unique=True),
       st.data())
def test_one_substitution_typo_always_gets_a_suggestion(choices, data):
    word = data.draw(st.sampled_from(choices))
    i = data.draw(st.integers(0, len(word) - 1))
    typo = word[:i] + "z" + word[i + 1:]  # "z" is outside the alphabet: a real typo
    # difflib ratio of a one-letter substitution in n >= 4 letters: 2(n-1)/2n >= 0.75 > 0.6
    assert schema.nearest(typo, choices) is not None


# -- parameters against a signature -------------------------------------------------------------
def builder(path: str, num_train: int = 10, frac: float = 0.5, mode: Literal["a", "b"] = "a",
            limit: int | None = None, folder: Path | None = None, flag: bool = False, tokenizer=None):
    return path


def test_check_params_names_required_and_types():
    ok = {"path": "x", "num_train": 3, "frac": 1, "mode": "b", "limit": None, "folder": "d", "flag": True}
    schema.check_params("task 't'", builder, ok, "task.params.{}")
    cases = [
        ({"path": "x", "num_trian": 3}, "task.params.num_trian = 3: not a parameter of task 't'. "
                                        "Did you mean 'num_train'? Valid: path, num_train, frac, mode, limit, "
                                        "folder, flag"),  # tokenizer is run-wide: not listed
        ({}, "task.params.path is missing: task 't' needs it (it has no default)"),
        ({"path": "x", "num_train": "3"}, "task.params.num_train = '3': must be an integer"),
        ({"path": "x", "num_train": True}, "task.params.num_train = True: must be an integer"),
        ({"path": "x", "frac": "half"}, "task.params.frac = 'half': must be a number"),
        ({"path": "x", "mode": "c"}, "task.params.mode = 'c': must be one of 'a', 'b'"),
        ({"path": "x", "limit": 1.5}, "task.params.limit = 1.5: must be an integer or null"),
        ({"path": "x", "flag": "yes"}, "task.params.flag = 'yes': must be true or false"),
        ({"path": 3}, "task.params.path = 3: must be a string"),
    ]
    for params, message in cases:
        with pytest.raises(InputError) as info:
            schema.check_params("task 't'", builder, params, "task.params.{}")
        assert message in str(info.value)
    with pytest.raises(InputError, match=r"task.params = \[1\]: must be a mapping"):
        schema.check_params("task 't'", builder, [1], "task.params.{}")


def test_kwargs_accept_any_name_and_positional_only_are_not_offered():
    def loose(a, /, b=1, **extra):
        return a

    schema.check_params("f", loose, {"anything": 1, "b": 2}, "{}")
    sig = schema.signature_of(loose)
    assert sig.accepted == ("b",) and sig.any_keyword


# -- tasks -------------------------------------------------------------------------------------
def test_task_names_and_params():
    schema.check_task_params("toy", {"num_train": 3, "letters": "ab"})
    with pytest.raises(UnknownNameError, match=r"task.name = 'humanevl': not a registered task\. "
                                               r"Did you mean 'humaneval'\?"):
        schema.check_task_params("humanevl", {})
    with pytest.raises(UnknownNameError, match=r"--task-param pth = 'x'.*Did you mean 'path'\?"):
        schema.check_task_params("humaneval", {"pth": "x"}, key="--task", key_format="--task-param {}")


def test_get_task_checks_first_and_wraps_the_builders_value_errors():
    with pytest.raises(KeyError, match="Did you mean 'num_train'"):  # still a KeyError for old callers
        get_task("toy", num_trian=3)
    with pytest.raises(InputError, match="num_rewards=5 must be 2 or 3") as info:
        get_task("toy", num_rewards=5)
    assert isinstance(info.value, ValueError) and isinstance(info.value.__cause__, ValueError)
    assert len(get_task("toy", num_train=3, num_test=1).train) == 3


# -- rewards -----------------------------------------------------------------------------------
def test_reward_entries_by_hand():
    schema.check_reward_entries(["toy_letter", {"name": "toy_short", "weight": "1e-3",  # YAML 1.1 string
                                                 "condition": {True: "toy_letter", "min": 1}}])
    cases = [
        ([{"name": "toy_letter", "wieght": 2}], "rewards[0].wieght = 2: not a key of a reward entry. "
                                                "Did you mean 'weight'?"),
        (["toy_leter"], "rewards[0] = 'toy_leter': not a registered reward. Did you mean 'toy_letter'?"),
        ([{"name": "toy_letter", "weight": float("inf")}], "rewards[0].weight = inf: must be a finite number"),
        ([{"name": "toy_letter", "floor": "low"}], "rewards[0].floor = 'low': must be a finite number"),
        ([{"name": "toy_letter", "params": {"x": 1}}], "rewards[0].params = {'x': 1}: reward 'toy_letter' "
                                                       "takes no parameters"),
        ([{"name": "math_length", "params": {"max_tokenz": 1}}], "rewards[0].params.max_tokenz = 1: not a "
                                                                 "parameter of reward 'math_length'"),
        ([{"name": "noisy", "params": {"reward": "toy_shrot"}}], "rewards[0].params.reward = 'toy_shrot': "
                                                                 "not a registered reward. Did you mean 'toy_short'?"),
        ([{"name": "noisy", "params": {"reward": "math_length", "params": {"max_tokenz": 3}}}],
         "rewards[0].params.params.max_tokenz = 3: not a parameter of reward 'math_length'"),
        ([{"name": "noisy"}], "rewards[0].params.reward is missing: reward 'noisy' needs it"),
        ([{"name": "toy_short", "condition": {"on": "toy_letter", "mn": 1}}],
         "rewards[0].condition.mn = 1: not a key of a condition. Did you mean 'min'?"),
        ([{"name": "toy_short", "condition": {"on": "toy_short"}}], "cannot be conditioned on itself"),
        ([{"name": "toy_short", "condition": {"on": "toy_leter"}}, "toy_letter"],
         "rewards[0].condition.on = 'toy_leter': not a reward of this set"),
        (["toy_short", "toy_short"], "rewards[1].name = 'toy_short': listed twice (also rewards[0])"),
        ([], "rewards = []: a run needs at least one reward"),
        ("toy_short", "rewards = 'toy_short': must be a list"),
        ([{"name": "no_such_module_xyz:fn"}], "rewards[0].name: cannot import reward 'no_such_module_xyz:fn'"),
    ]
    for entries, message in cases:
        with pytest.raises(InputError) as info:
            schema.check_reward_entries(entries)
        assert message in str(info.value), str(info.value)
        assert "\n" not in str(info.value)


def test_a_factorys_own_check_params_runs_and_its_error_is_one_line():
    def check_params(level=1):
        if level > 3:
            raise ValueError(f"level={level}\nmust be <= 3")

    @register_reward_factory("test_schema_levels")
    def make(level: int = 1):
        return lambda completions, **_: [float(level)] * len(completions)

    make.check_params = check_params
    try:
        schema.check_reward_entries([{"name": "test_schema_levels", "params": {"level": 2}}])
        with pytest.raises(InputError, match=r"^rewards\[0\]\.params: level=4 must be <= 3$"):
            schema.check_reward_entries([{"name": "test_schema_levels", "params": {"level": 4}}])
    finally:
        unregister("test_schema_levels")


def test_estimator_options():
    schema.check_estimator_options("gdpo", {"eps": 1e-4}, token_weighted=True)
    with pytest.raises(UnknownNameError, match=r"method = 'gdp': not an advantage estimator\. Did you mean"):
        schema.check_estimator_options("gdp", {})
    with pytest.raises(UnknownNameError, match=r"method_options.epss = 0.1: not an option of 'gdpo'\. "
                                               r"Did you mean 'eps'\?"):
        schema.check_estimator_options("gdpo", {"epss": 0.1})
    with pytest.raises(UnknownNameError, match="token_weighted_batch_norm: true for lengths"):
        schema.check_estimator_options("gdpo", {"lengths": [1]})
    with pytest.raises(InputError, match="token_weighted_batch_norm = true needs a method with a batch step"):
        schema.check_estimator_options("grpo", {}, token_weighted=True)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["gdpo", "grpo", "gdpo_no_std"]), words)
def test_any_unknown_option_name_is_refused_with_the_valid_ones(method, name):
    from gdpo.advantages import get_estimator

    valid = [k for k in get_estimator(method).options if k != "lengths"]
    if name in valid:
        return
    with pytest.raises(UnknownNameError) as info:
        schema.check_estimator_options(method, {name: 1})
    assert f"method_options.{name} = 1" in str(info.value) and f"Valid: {', '.join(valid)}" in str(info.value)


def test_every_shipped_training_config_passes():
    """No false alarms: the repository's own configs are all valid input."""
    from gdpo.train.config import config_from_dict

    checked = 0
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        data = yaml.safe_load(path.read_text())
        if not isinstance(data, dict) or not {"task", "rewards", "method"} & set(data):
            continue  # accelerate / sft configs are not training configs
        cfg = config_from_dict(data)
        schema.check_train_config(cfg)
        checked += 1
    assert checked >= 10
