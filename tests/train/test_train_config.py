"""The config tree: parsing, overrides, errors naming the key and the nearest valid value."""

from pathlib import Path

import pytest

from gdpo.train.config import (
    ConfigError,
    TrainConfig,
    config_from_dict,
    config_to_dict,
    describe_fields,
    load_config,
)
from gdpo.train.config_io import apply_overrides

ROOT = Path(__file__).resolve().parents[2]
CONFIG_ROOT = ROOT / "configs"
# configs/accelerate holds launcher files (tests/train/test_accelerate_configs.py) and configs/sft
# `gdpo sft` configs (tests/train/test_sft*.py), not `gdpo train` configs
CONFIGS = sorted(p for p in CONFIG_ROOT.rglob("*.yaml") if p.parent.name not in ("accelerate", "sft"))


def test_defaults_are_the_embedded_model_on_the_toy_task():
    cfg = config_from_dict({})
    assert (cfg.model.name, cfg.task.name, cfg.method) == ("smollm2", "toy", "gdpo")


def test_nested_values_and_overrides():
    cfg = config_from_dict({"rollout": {"num_generations": 4}, "optim": {"lr": "1e-5"}},
                           ["optim.lr=3e-4", "loss.aggregation=seq_mean", "task.params.num_rewards=2"])
    assert cfg.rollout.num_generations == 4
    assert cfg.optim.lr == pytest.approx(3e-4)  # the override wins over the file
    assert cfg.loss.aggregation == "seq_mean"
    assert cfg.task.params == {"num_rewards": 2}


@pytest.mark.parametrize("data, words", [
    ({"stepz": 3}, ["stepz", "'steps'"]),
    ({"rollout": {"temprature": 0.7}}, ["rollout.temprature", "'temperature'"]),
    ({"loss": {"aggregation": "token_men"}}, ["loss.aggregation", "'token_mean'"]),
    ({"method": "gdp"}, ["'gdp'", "'gdpo'"]),
    ({"method_options": {"epss": 1e-4}}, ["epss", "'eps'"]),
    ({"rollout": {"num_generations": 1}}, ["rollout.num_generations", ">= 2"]),
    ({"update": {"num_minibatches": 3}}, ["num_minibatches", "64"]),
    ({"optim": {"lr": "fast"}}, ["optim.lr", "'fast'"]),
    ({"logging": {"wandb": "yes"}}, ["logging.wandb", "true or false"]),
    ({"method": "grpo", "token_weighted_batch_norm": True}, ["token_weighted_batch_norm", "'grpo'"]),
])
def test_errors_name_the_key_value_and_suggestion(data, words):
    with pytest.raises(ConfigError) as info:
        config_from_dict(data)
    for word in words:
        assert word in str(info.value)


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="key.sub=value"):
        apply_overrides({}, ["optim.lr"])
    with pytest.raises(ConfigError, match="'steps' is a value"):
        apply_overrides({"steps": 3}, ["steps.x=1"])


def test_round_trip_through_dict():
    cfg = config_from_dict({"model": {"name": "tiny", "lora": {"r": 4}}, "steps": 7})
    again = config_from_dict(config_to_dict(cfg))
    assert again == cfg
    assert again.model.lora.r == 4 and again.model.lora.target_modules[0] == "q_proj"


def test_every_field_is_documented():
    rows = describe_fields(TrainConfig)
    undocumented = [key for key, _, _, help_text in rows if not help_text]
    assert undocumented == []
    assert any(key == "loss.eps_high" for key, *_ in rows)


def test_the_docs_table_lists_every_field_with_its_range():
    from gdpo.train.config_io import numeric_fields

    rows = {line.split(" | ")[0][3:-1]: line for line in (ROOT / "docs" / "training.md").read_text().splitlines()
            if line.startswith("| `")}
    assert [key for key, *_ in describe_fields(TrainConfig) if key not in rows] == []
    assert [key for key, valid in numeric_fields(TrainConfig) if f"| {valid} |" not in rows.get(key, "")] == []


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(str(tmp_path / "nope.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_parses(path):
    cfg = load_config(str(path))
    assert cfg.steps >= 1


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_names_a_registered_task_whose_rewards_resolve(path):
    from gdpo.data.base import get_task, task_names
    from gdpo.rewards.reward_set import RewardSet

    cfg = load_config(str(path))
    assert cfg.task.name in task_names()
    if "path" in cfg.task.params:
        return  # data the user downloads (paper recipes); parsing is all we can check here
    try:
        task = get_task(cfg.task.name, **cfg.task.params)
    except FileNotFoundError as exc:  # gsm8k / toolrl read ../shared/data beside the repository
        if cfg.task.name in ("toy", "math", "code", "toolcall"):
            raise  # built-in tasks need no files: this is a real failure
        pytest.skip(f"{path.name}: the task's shared data is absent here ({exc})")
    rewards = RewardSet.from_config(cfg.rewards or task.rewards)
    assert len(rewards.names) >= 2  # every shipped recipe is multi-reward
