"""What the trainer checks after reading the task and before loading any model: reward values
(the reward set is built with the policy's tokenizer alone), estimator options against the real
reward count K, and the weakest sandbox a run with code rewards accepts."""

import pytest

from gdpo.data.base import get_task
from gdpo.errors import UserError
from gdpo.rewards import code
from gdpo.train import config_from_dict, session, train

SMOKE = {
    "steps": 1, "model": {"name": "tiny", "tiny": {"hidden_size": 16, "num_layers": 1, "num_heads": 2,
                                                  "intermediate_size": 32}},
    "task": {"name": "toy", "params": {"num_rewards": 3, "letters": "ab", "max_len": 2}},
    "rollout": {"prompts_per_step": 2, "num_generations": 2, "max_new_tokens": 2},
    "checkpoint": {"every": 0, "save_final_model": False}, "logging": {"tensorboard": False}, "eval": {"every": 0},
}


@pytest.fixture
def no_model_load(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr(session, "load_policy", refuse)


def _cfg(tmp_path, **changes):
    return config_from_dict({**SMOKE, "output_dir": str(tmp_path / "run"), **changes})


def test_a_bad_reward_value_stops_the_run_before_the_model_loads(tmp_path, no_model_load):
    cfg = _cfg(tmp_path, rewards=[{"name": "toy_letter"}, {"name": "math_length", "params": {"max_tokens": -1}}])
    with pytest.raises(UserError, match="max_tokens must be a positive integer"):
        train(cfg)
    assert not (tmp_path / "run").exists()  # and nothing was written


def test_estimator_options_are_checked_against_the_tasks_reward_count(tmp_path, no_model_load):
    # the toy task brings K = 3 rewards; SAW's offsets name one per reward: two is a config error
    cfg = _cfg(tmp_path, method="saw_gdpo", method_options={"offsets": [0.0, 3.0]})
    with pytest.raises(UserError, match=r"method_options \(saw_gdpo, 3 rewards\)"):
        train(cfg)
    good = _cfg(tmp_path, method="saw_gdpo", method_options={"offsets": [0.0, 3.0, 0.0]})
    assert session.build_rewards(good, get_task("toy", num_rewards=3)).names == [
        "toy_letter", "toy_short", "toy_starts_lower"]


def test_code_rewards_apply_the_configured_sandbox_level(tmp_path):
    before = code.configure().min_level
    try:
        cfg = _cfg(tmp_path, rewards=[{"name": "code_pass_rate"}, {"name": "noisy",
                                                                  "params": {"reward": "code_bug_free", "std": 0.1}}],
                   sandbox_min_level="uid")
        rewards = session.build_rewards(cfg, get_task("toy", num_rewards=3))
        assert [session._runs_programs(fn) for fn in rewards.fns] == [True, True]  # noisy wraps a code reward
        assert code.configure().min_level == "uid"
    finally:
        code.configure(min_level=before)


def test_rule_rewards_do_not_touch_the_sandbox(tmp_path):
    rewards = session.build_rewards(_cfg(tmp_path), get_task("toy", num_rewards=3))
    assert not any(session._runs_programs(fn) for fn in rewards.fns)


def test_an_unknown_sandbox_level_is_a_config_error(tmp_path):
    with pytest.raises(UserError, match="sandbox_min_level"):
        _cfg(tmp_path, sandbox_min_level="chroot")


def test_prompts_over_the_limit_are_counted_warned_or_refused(tmp_path, capsys, no_model_load):
    from gdpo.models import build_tiny_tokenizer

    task = get_task("toy", num_rewards=3)
    task.train[0] = {**task.train[0], "prompt": [{"role": "user", "content": "a much longer request " * 3}]}
    tokenizer = build_tiny_tokenizer()
    # the tiny tokenizer is per character: "<|user|>" + text + "<|end|><|assistant|>" = 3 + len(text) tokens
    lengths = [3 + len(r["prompt"][0]["content"]) for r in task.train]
    assert sorted(set(lengths)) == [20, 3 + 66]  # toy prompts are 17 characters; the one above is 66
    limit, over = 20, 1
    warn = _cfg(tmp_path, rollout={**SMOKE["rollout"], "max_prompt_tokens": limit})
    session.check_prompts(warn, task, tokenizer)
    assert f"{over} of {len(lengths)} prompts exceed max_prompt_tokens={limit}" in capsys.readouterr().err
    # through train(): the toy task's own prompts (all 20 tokens) against a limit of 19
    refuse = _cfg(tmp_path, rollout={**SMOKE["rollout"], "max_prompt_tokens": 19, "long_prompts": "error"})
    with pytest.raises(UserError, match="256 of 256 prompts exceed max_prompt_tokens=19.*raise it to 20"):
        train(refuse)  # before any model loads (no_model_load)
    session.check_prompts(_cfg(tmp_path), task, tokenizer)  # the default limit: nothing to say
    assert "exceed" not in capsys.readouterr().err
