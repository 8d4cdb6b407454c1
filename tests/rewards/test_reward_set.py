"""Tests of the reward registry and the reward set."""

import numpy as np
import pytest

from gdpo.rewards import get, names, register_reward, register_reward_factory, unregister
from gdpo.rewards.reward_set import MissingColumnError, RewardSet, RewardSpec


def is_upper(completions, **_):
    return [1.0 if c.isupper() else 0.0 for c in completions]


def test_registry_round_trip_and_errors():
    @register_reward("test_len3", floor=-1.0, columns=("answer",))
    def len3(completions, answer, **_):
        return [float(len(c) == 3) for c in completions]

    try:
        assert get("test_len3") is len3 and "test_len3" in names()
        with pytest.raises(ValueError, match="already registered"):
            register_reward("test_len3")(is_upper)
        with pytest.raises(KeyError, match="Did you mean 'test_len3'"):
            get("test_len33")
        with pytest.raises(TypeError, match="takes no parameters"):
            get("test_len3", max_tokens=3)
    finally:
        unregister("test_len3")


def test_factory_and_dotted_path():
    @register_reward_factory("test_maxlen", floor=0.0)
    def make(max_chars=3):
        return lambda completions, **_: [float(len(c) <= max_chars) for c in completions]

    try:
        assert get("test_maxlen", max_chars=1)(["a", "ab"]) == [1.0, 0.0]
    finally:
        unregister("test_maxlen")
    fn = get("test_reward_set:is_upper")  # module:function on the path (tests dir)
    assert fn(["AB", "ab"]) == [1.0, 0.0]
    with pytest.raises(KeyError, match="cannot import reward"):
        get("no_such_module_xyz:fn")


def test_scores_matrix_with_none_condition_and_weights():
    def maybe(completions, **_):
        return [None if c == "skip" else 1.0 for c in completions]

    rs = RewardSet([RewardSpec("upper", fn=is_upper, weight=2.0), RewardSpec("maybe", fn=maybe, condition=("upper", 1.0))])
    scores = rs.score(["OK", "no", "skip"])
    # maybe: row 0 -> 1 (upper met), row 1 -> 0 (condition unmet), row 2 -> None -> NaN, then
    # condition (upper=0 for "skip") -> floor 0
    np.testing.assert_array_equal(scores.values, [[1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    assert scores.names == ["upper", "maybe"] and scores.weights.tolist() == [2.0, 1.0]
    plain = RewardSet([RewardSpec("maybe", fn=maybe)]).score(["skip", "x"])
    assert np.isnan(plain.values[0, 0]) and plain.values[1, 0] == 1.0


def test_a_reward_that_raises_on_one_sample_gets_floor_and_is_counted():
    def fragile(completions, **_):
        return [1 / len(c) for c in completions]  # ZeroDivisionError on ""

    rs = RewardSet([RewardSpec("fragile", fn=fragile, floor=-2.0)])
    scores = rs.score(["ab", "", "abcd", ""])
    np.testing.assert_allclose(scores.values[:, 0], [0.5, -2.0, 0.25, -2.0])
    assert scores.errors["fragile"].count == 2
    assert "ZeroDivisionError" in scores.errors["fragile"].first_message
    assert scores.error_summary() == {"fragile": {"count": 2, "first": scores.errors["fragile"].first_message}}


def test_missing_column_is_a_clear_error():
    @register_reward("test_needs_answer", columns=("answer",))
    def needs(completions, answer, **_):
        return [float(c == a) for c, a in zip(completions, answer)]

    try:
        rs = RewardSet.from_config(["test_needs_answer"])
        with pytest.raises(MissingColumnError, match=r"test_needs_answer.*\['answer'\]"):
            rs.score(["x"], solution=["x"])
        assert rs.score(["x", "y"], answer=["x", "x"]).values[:, 0].tolist() == [1.0, 0.0]
    finally:
        unregister("test_needs_answer")


@pytest.mark.parametrize(
    "config, match",
    [
        ([], "at least one reward"),
        ([{"name": "a", "wieght": 1}], r"rewards\[0\]\.wieght = 1: not a key of a reward entry\. Did you mean 'weight'\?"),
        ([{"weight": 1}], "missing 'name'"),
        ([{"name": "test_reward_set:is_upper", "condition": "x"}], r"rewards\[0\]\.condition = 'x': must look like"),
        ([{"name": "test_reward_set:is_upper", "condition": {"on": "other"}}], "'other': not a reward of this set"),
        ([{"name": "test_reward_set:is_upper", "weight": -1}], r"rewards\[0\]\.weight = -1: must be >= 0"),
        ([{"name": "test_reward_set:is_upper", "weight": float("nan")}], "must be a finite number"),
        (["test_reward_set:is_upper", "test_reward_set:is_upper"], "listed twice"),
        ([{"name": "toy_short", "params": {"max_len": 3}}], "'toy_short' takes no parameters"),
        ([{"name": "math_length", "params": {"max_tokenz": 3}}], "Did you mean 'max_tokens'"),
    ],
)
def test_bad_config_errors(config, match):
    with pytest.raises(ValueError, match=match):
        RewardSet.from_config(config)


def test_misaligned_column_and_bad_return():
    rs = RewardSet([RewardSpec("upper", fn=is_upper)])
    with pytest.raises(ValueError, match="column 'answer' has 1 values for 2 completions"):
        rs.score(["A", "b"], answer=["x"])
    bad = RewardSet([RewardSpec("inf", fn=lambda completions, **_: [float("inf")] * len(completions))])
    scores = bad.score(["a"])  # an inf is an error of that sample: floor, counted
    assert scores.values[0, 0] == 0.0 and scores.errors["inf"].count == 1


def test_condition_written_in_yaml_with_a_bare_on_key():
    import yaml

    # PyYAML (YAML 1.1) reads `on` as the boolean True; the reward set accepts it as "on".
    config = yaml.safe_load("""
- name: test_reward_set:is_upper
- name: short
  condition: {on: test_reward_set:is_upper, min: 1}
""")
    assert True in config[1]["condition"]
    config[1]["name"] = "test_reward_set:is_upper_copy"
    rs = RewardSet.from_config(config)
    assert rs.score(["AB", "ab"]).values.tolist() == [[1.0, 1.0], [0.0, 0.0]]


is_upper_copy = is_upper
