"""The `gdpo sft` config: one dataclass tree, each field documented once (its ``help``).

The model section is :class:`gdpo.train.config.ModelConfig`, the same as `gdpo train`'s, so
``model.name`` takes 'tiny', 'smollm2' or a local HF folder, and ``model.lora`` adds adapters.
Every check here runs before any model loads; a bad key or value raises :class:`ConfigError`
naming the key, showing the value and saying how to fix it.

>>> cfg = sft_config_from_dict({"steps": 3, "data": {"source": "task", "task": "toy"}})
>>> cfg.train.batch_size, cfg.data.source
(8, 'task')
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from gdpo.train.config import ModelConfig, _f
from gdpo.train.config_io import ConfigError, apply_overrides, build_dataclass, config_to_dict

__all__ = ["SFTConfig", "SFTDataConfig", "SFTOptimConfig", "load_sft_config", "sft_config_from_dict",
           "config_to_dict"]

SOURCES = ("task", "toolrl", "jsonl", "toy_mixture", "peek_mixture")


@dataclass
class SFTDataConfig:
    """Where the chat examples come from; every example is (prompt messages, one assistant reply)."""

    source: Literal["task", "toolrl", "jsonl", "toy_mixture", "peek_mixture"] = _f(
        "task", "task: a registered task's reference answers (toy, toolcall, toolrl, math, gsm8k, code, ...); "
        "toolrl: ToolRL's SFT JSON (instruction/input/output); jsonl: a JSONL file of {messages: [...]}, "
        "every assistant turn trained; toy_mixture: toy-task prompts with replies that earn each toy reward "
        "part of the time (a warm start for the multi-signal regime, see docs/sft.md); peek_mixture: two-turn "
        "toy_peek games that peek and answer right part of the time (a multi-turn warm start)")
    path: str | None = _f(None, "file for source=toolrl (default ../shared/data/toolrl/rlla_sft.json) or "
                                "source=jsonl (required)")
    task: str = _f("toy", "source=task: the registered task whose train rows are rendered")
    params: dict[str, Any] = _f({}, "source=task: task builder parameters; source=toy_mixture: generator "
                                    "parameters (num_examples, letters, seed, letter_rate, long_rate, "
                                    "upper_rate, digit_rate, punct_rate); source=peek_mixture: num_examples, "
                                    "digits, seed, peek_rate, right_rate")
    limit: int | None = _f(None, "use only the first this many examples (after the test split); null = all")
    test_fraction: float = _f(0.0, "share of examples held out for the eval loss (eval_loss in metrics.jsonl), "
                                   "in [0, 1)")
    seed: int = _f(0, "seed of the held-out split")


@dataclass
class SFTOptimConfig:
    """Batches, AdamW and the learning-rate schedule (TRL's SFTTrainer does the steps)."""

    batch_size: int = _f(8, "sequences per forward/backward (per process)")
    grad_accum: int = _f(1, "forward/backward passes per optimizer step")
    lr: float = _f(2e-5, "peak learning rate")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    warmup_steps: int = _f(0, "optimizer steps of linear warmup from 0")
    lr_schedule: Literal["cosine", "constant", "linear"] = _f("cosine", "shape after warmup")
    max_grad_norm: float = _f(1.0, "clip the global gradient norm (0 = no clipping)")
    max_length: int = _f(1024, "tokens per sequence (prompt + reply); longer ones are cut at the end")
    packing: bool = _f(False, "pack several examples into one max_length row (best-fit decreasing); "
                              "no padding, but needs flash attention to keep examples apart, so off on CPU")
    group_by_length: bool = _f(True, "length-sorted batches: each batch draws examples of similar length "
                                     "(less padding); ignored with packing")


@dataclass
class SFTCheckpointConfig:
    """TRL checkpoints (model, optimizer, scheduler, RNG, trainer state) under <output_dir>/checkpoints."""

    every: int = _f(0, "save every this many optimizer steps (and at the end); 0 = only at the end")
    keep_last: int = _f(1, "checkpoints kept; older ones are deleted")


@dataclass
class SFTLoggingConfig:
    """metrics.jsonl (always) and the progress display."""

    every: int = _f(10, "log loss, lr, grad norm and tokens/s every this many optimizer steps")
    progress: Literal["auto", "bar", "lines"] = _f("auto", "auto: tqdm bar on a terminal, plain lines otherwise")


@dataclass
class SFTConfig:
    """A supervised fine-tuning run: loss on the assistant reply only; the result is an HF folder."""

    seed: int = _f(0, "seeds python, numpy, torch and the data order")
    steps: int = _f(100, "optimizer steps; 0 = run `epochs` passes over the data instead")
    epochs: float = _f(1.0, "passes over the data when steps = 0")
    output_dir: str = _f("runs/sft", "where metrics and checkpoints go; the model lands in <output_dir>/final")
    model: ModelConfig = _f(ModelConfig(), "the model to fine-tune (as in gdpo train)")
    data: SFTDataConfig = _f(SFTDataConfig(), "the chat examples")
    train: SFTOptimConfig = _f(SFTOptimConfig(), "batches and optimizer")
    checkpoint: SFTCheckpointConfig = _f(SFTCheckpointConfig(), "checkpointing")
    logging: SFTLoggingConfig = _f(SFTLoggingConfig(), "logging")


def _at_least(key: str, value: Any, minimum: float) -> None:
    if value < minimum:
        raise ConfigError(f"{key} = {value!r} must be >= {minimum}")


def validate_sft(cfg: SFTConfig) -> None:
    """Cross-field rules that type checks cannot catch (no model or data is loaded here)."""
    _at_least("steps", cfg.steps, 0)
    if cfg.steps == 0 and not cfg.epochs > 0:
        raise ConfigError(f"epochs = {cfg.epochs!r} must be > 0 when steps = 0 (or set steps >= 1)")
    t = cfg.train
    for key in ("batch_size", "grad_accum", "max_length"):
        _at_least(f"train.{key}", getattr(t, key), 1)
    if not t.lr > 0:
        raise ConfigError(f"train.lr = {t.lr!r} must be > 0, e.g. 2e-5 for a pretrained model, 3e-3 for 'tiny'")
    for key in ("weight_decay", "warmup_steps", "max_grad_norm"):
        _at_least(f"train.{key}", getattr(t, key), 0)
    _at_least("checkpoint.every", cfg.checkpoint.every, 0)
    _at_least("checkpoint.keep_last", cfg.checkpoint.keep_last, 1)
    _at_least("logging.every", cfg.logging.every, 1)
    d = cfg.data
    if not 0 <= d.test_fraction < 1:
        raise ConfigError(f"data.test_fraction = {d.test_fraction!r} must be in [0, 1), e.g. 0.1")
    if d.limit is not None:
        _at_least("data.limit", d.limit, 1)
    if d.source == "jsonl" and not d.path:
        raise ConfigError("data.source = 'jsonl' needs data.path: a JSONL file with one {\"messages\": [...]} per line")
    if d.path and d.source in ("toolrl", "jsonl") and not Path(d.path).expanduser().is_file():
        raise ConfigError(f"data.path = {d.path!r} is not a file; give the path of the "
                          f"{'ToolRL SFT JSON' if d.source == 'toolrl' else 'JSONL of messages'}")
    if d.source == "task":
        from gdpo.schema import SchemaError, task_builder

        try:  # the task's name, with the nearest registered one (its params: when the data loads)
            task_builder(d.task, "data.task")
        except SchemaError as exc:
            raise ConfigError(str(exc)) from None
    _check_model(cfg.model)


def _check_model(m: ModelConfig) -> None:
    if m.name not in ("tiny", "smollm2") and not Path(m.name).expanduser().is_dir():
        raise ConfigError(f"model.name = {m.name!r} is not 'tiny', 'smollm2' or a local folder "
                          "(model hubs are not contacted); give the path of a folder saved with save_pretrained")
    if m.name == "tiny" and m.tiny.hidden_size % m.tiny.num_heads:
        raise ConfigError(f"model.tiny.hidden_size = {m.tiny.hidden_size} must be divisible by "
                          f"model.tiny.num_heads = {m.tiny.num_heads}")
    if m.lora is not None:
        _at_least("model.lora.r", m.lora.r, 1)


def sft_config_from_dict(data: dict[str, Any] | None, overrides: list[str] | None = None) -> SFTConfig:
    """Build and validate an :class:`SFTConfig` from a (YAML) dict and ``a.b=value`` overrides."""
    data = apply_overrides(dict(data or {}), overrides or [])
    cfg = build_dataclass(SFTConfig, data, path="")
    validate_sft(cfg)
    return cfg


def load_sft_config(path: str | None, overrides: list[str] | None = None) -> SFTConfig:
    """Read a YAML config file (None = the defaults) and apply overrides."""
    import yaml

    if path is None:
        return sft_config_from_dict({}, overrides)
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist; give a path to a YAML file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path!r} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping at the top level, got {type(data).__name__}")
    return sft_config_from_dict(data, overrides)
