"""The training config: one dataclass tree, each field documented once (its ``help``).

A YAML file maps onto :class:`TrainConfig` section by section. Unknown keys and bad values
are errors that name the key, show the value and suggest the nearest valid one.

>>> cfg = config_from_dict({"steps": 3, "rollout": {"num_generations": 4}})
>>> cfg.rollout.num_generations
4
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from gdpo.train.config_io import (
    AT_LEAST_0,
    AT_LEAST_1,
    POSITIVE,
    ConfigError,
    Range,
    apply_overrides,
    build_dataclass,
    config_to_dict,
    describe_fields,
)

__all__ = [
    "CheckpointConfig",
    "ConfigError",
    "DistributedConfig",
    "EvalConfig",
    "LoggingConfig",
    "LoraConfig",
    "LossConfig",
    "ModelConfig",
    "OptimConfig",
    "Range",
    "RolloutConfig",
    "TaskConfig",
    "TinyModelConfig",
    "TrainConfig",
    "UpdateConfig",
    "config_from_dict",
    "config_to_dict",
    "describe_fields",
    "load_config",
]


def _f(default: Any, help: str, valid: Range | None = None, **kw: Any) -> Any:
    """A dataclass field carrying its documentation and, for numbers, its valid :class:`Range`
    (every int and float field has one; NaN and inf are never valid). Mutable defaults are copied."""
    meta = {"help": help} if valid is None else {"help": help, "valid": valid}
    if isinstance(default, (dict, list)) or dataclasses.is_dataclass(default):
        proto = default
        return field(default_factory=lambda: copy.deepcopy(proto), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


@dataclass
class TinyModelConfig:
    """Shape of the random-init Llama used by ``model.name: tiny`` (tests, smoke runs)."""

    hidden_size: int = _f(64, "width of the residual stream", valid=AT_LEAST_1)
    num_layers: int = _f(2, "number of transformer blocks", valid=AT_LEAST_1)
    num_heads: int = _f(4, "attention heads (hidden_size must be divisible by it)", valid=AT_LEAST_1)
    intermediate_size: int = _f(128, "MLP width", valid=AT_LEAST_1)
    max_positions: int = _f(256, "maximum sequence length (prompt + response)", valid=AT_LEAST_1)


@dataclass
class LoraConfig:
    """LoRA adapters through peft; the frozen base doubles as the KL reference (no copy)."""

    r: int = _f(8, "adapter rank", valid=AT_LEAST_1)
    alpha: float = _f(16.0, "LoRA scaling numerator (scale = alpha / r)", valid=POSITIVE)
    dropout: float = _f(0.0, "dropout on the adapter input", valid=Range(0, 1, high_open=True))
    target_modules: list[str] = _f(["q_proj", "k_proj", "v_proj", "o_proj"], "module names that get adapters")


@dataclass
class ModelConfig:
    """Which causal LM to train."""

    name: str = _f("smollm2", "'smollm2' (embedded SmolLM2-135M-Instruct), 'tiny' (random init, "
                   "char-level tokenizer) or a local folder with an HF model and tokenizer")
    init_seed: int | None = _f(None, "seed of the random init for 'tiny' (default: the run's seed)",
                              valid=AT_LEAST_0)
    tiny: TinyModelConfig = _f(TinyModelConfig(), "shape of the 'tiny' model")
    dtype: Literal["auto", "float32", "bfloat16"] = _f(
        "auto", "training dtype: 'auto' = bf16 autocast on CUDA with bf16 support, fp32 on CPU")
    lora: LoraConfig | None = _f(None, "LoRA settings; null = train all weights")
    gradient_checkpointing: bool = _f(False, "recompute activations in backward (saves memory)")


@dataclass
class TaskConfig:
    """The task: prompts, test split and default rewards (``gdpo.data.get_task``)."""

    name: str = _f("toy", "registered task name (toy, toolcall, math, gsm8k, code, toolrl, ...)")
    params: dict[str, Any] = _f({}, "keyword parameters of the task builder (path, num_train, seed, ...)")


@dataclass
class RolloutConfig:
    """Sampling G completions per prompt: HF generate (KV cache) or a colocated vLLM engine."""

    prompts_per_step: int = _f(8, "B: prompts per step (over all processes)", valid=AT_LEAST_1)
    num_generations: int = _f(8, "G: completions per prompt (a group); at least 2", valid=Range(2))
    max_new_tokens: int = _f(16, "response length limit in tokens (generation stops at EOS)", valid=AT_LEAST_1)
    max_prompt_tokens: int = _f(1024, "prompts longer than this are cut from the left", valid=AT_LEAST_1)
    long_prompts: Literal["warn", "error"] = _f(
        "warn", "what a run does when training prompts exceed max_prompt_tokens (counted before any model loads): "
                "warn = print the count and train on the cut prompts; error = stop with the count")
    temperature: float = _f(1.0, "sampling temperature (> 0); logprobs use the same temperature",
                            valid=Range(0, low_open=True, fix="use a small value like 0.01 for near-greedy"))
    top_p: float = _f(1.0, "nucleus sampling mass in (0, 1]", valid=Range(0, 1, low_open=True, fix="1 = off"))
    top_k: int = _f(0, "top-k sampling; 0 = off (overrides a model's generation_config default)",
                    valid=AT_LEAST_0)
    backend: Literal["hf", "vllm"] = _f(
        "hf", "hf: HF generate on the policy itself (CPU or GPU); vllm: a vLLM engine on the same GPU, "
        "weights pushed from the policy before every rollout (needs `pip install vllm` and CUDA)")
    vllm_gpu_memory_utilization: float = _f(
        0.3, "backend=vllm: share of the GPU's memory the engine may take (weights + KV cache), in (0, 1]; "
        "the policy, its gradients and AdamW state need the rest",
        valid=Range(0, 1, low_open=True, fix="a share of the GPU's memory, e.g. 0.3 next to the policy"))
    vllm_sleep: bool = _f(
        False, "backend=vllm: put the engine to sleep during the update (weights to CPU RAM, KV cache "
        "freed), wake it for the next rollout; saves GPU memory, costs host<->device copies")


@dataclass
class LossConfig:
    """PPO-style clipped surrogate, KL and entropy terms, and how tokens are averaged."""

    eps_low: float = _f(0.2, "lower clip: ratio >= 1 - eps_low for negative advantages", valid=AT_LEAST_0)
    eps_high: float = _f(0.2, "upper clip: ratio <= 1 + eps_high for positive advantages (DAPO: 0.28)",
                         valid=AT_LEAST_0)
    aggregation: Literal["token_mean", "seq_mean", "constant"] = _f(
        "token_mean", "token_mean: mean over all response tokens of the minibatch (DAPO); seq_mean: "
        "mean per sequence, then over sequences (GRPO paper); constant: token sum / (num sequences x "
        "constant_normalizer) (Dr. GRPO)")
    constant_normalizer: int | None = _f(None, "tokens per sequence for aggregation=constant "
                                               "(default: rollout.max_new_tokens)", valid=AT_LEAST_1)
    beta: float = _f(0.0, "KL coefficient to a frozen reference; 0 = no reference model is loaded",
                     valid=AT_LEAST_0)
    kl_estimator: Literal["k1", "k3"] = _f("k3", "k1: logp - ref_logp; k3: exp(ref - logp) - (ref - logp) - 1")
    entropy_coef: float = _f(0.0, "entropy bonus coefficient (loss -= coef x entropy)", valid=AT_LEAST_0)


@dataclass
class OptimConfig:
    """AdamW with linear warmup then cosine (or constant) learning rate."""

    lr: float = _f(1e-6, "peak learning rate", valid=POSITIVE)
    weight_decay: float = _f(0.0, "AdamW weight decay", valid=AT_LEAST_0)
    betas: list[float] = _f([0.9, 0.999], "AdamW betas (two numbers)", valid=Range(0, 1, high_open=True))
    warmup_steps: int = _f(0, "optimizer steps of linear warmup from 0", valid=AT_LEAST_0)
    lr_schedule: Literal["cosine", "constant"] = _f("cosine", "shape after warmup")
    min_lr_ratio: float = _f(0.0, "cosine floor as a fraction of lr", valid=Range(0, 1))
    max_grad_norm: float | None = _f(1.0, "clip the global gradient norm; null = no clipping",
                                     valid=Range(0, low_open=True, fix="null = no clipping"))
    on_nonfinite: Literal["skip", "stop"] = _f(
        "skip", "an optimizer step whose gradient norm is NaN or inf: skip (no update, logged as "
        "update/nonfinite_skipped) or stop the run (exit 3); weights are never changed by it")
    nonfinite_patience: int = _f(3, "on_nonfinite=skip: stop the run (exit 3) after this many steps in a row "
                                    "whose every optimizer step was skipped", valid=AT_LEAST_1)


@dataclass
class UpdateConfig:
    """How each rollout batch is turned into optimizer steps."""

    ppo_epochs: int = _f(1, "passes over each rollout batch", valid=AT_LEAST_1)
    num_minibatches: int = _f(1, "optimizer steps per pass (samples assigned by index mod this number)",
                             valid=AT_LEAST_1)
    micro_batch_size: int = _f(16, "sequences per forward/backward per process (gradient accumulation)",
                              valid=AT_LEAST_1)
    dynamic_sampling: bool = _f(False, "mask out groups whose weighted total reward has no spread (DAPO; "
                                       "no refill, so the step trains on fewer groups)")


@dataclass
class CheckpointConfig:
    """Checkpoints: model, optimizer, scheduler, RNG states and data position."""

    every: int = _f(50, "save every this many steps (and at the end); 0 = only at the end", valid=AT_LEAST_0)
    keep_last: int = _f(2, "checkpoints kept; older ones are deleted", valid=AT_LEAST_1)
    save_final_model: bool = _f(True, "write an HF folder (model + tokenizer) to <output_dir>/final")


@dataclass
class LoggingConfig:
    """Where step metrics go, besides metrics.jsonl (always written)."""

    tensorboard: bool = _f(True, "write TensorBoard events to <output_dir>/tb")
    wandb: bool = _f(False, "log to Weights & Biases (needs `pip install wandb`)")
    mlflow: bool = _f(False, "log to MLflow (needs `pip install mlflow`)")
    project: str = _f("gdpo", "W&B project / MLflow experiment name")
    samples_every: int = _f(10, "write completions with their rewards to samples.jsonl every this many steps; "
                           "0 = never", valid=AT_LEAST_0)
    num_samples: int = _f(4, "completions written each time", valid=AT_LEAST_0)
    progress: Literal["auto", "bar", "lines"] = _f("auto", "auto: tqdm bar on a terminal, plain lines otherwise")


@dataclass
class EvalConfig:
    """Greedy evaluation on the task's test split, per-reward means to eval.jsonl."""

    every: int = _f(0, "evaluate every this many steps (and at the end); 0 = never", valid=AT_LEAST_0)
    num_prompts: int = _f(32, "test prompts used (the first ones)", valid=AT_LEAST_1)
    batch_size: int = _f(16, "prompts per generate call", valid=AT_LEAST_1)


@dataclass
class DistributedConfig:
    """How several processes (torchrun / accelerate launch) share the policy; ignored in one process."""

    strategy: Literal["ddp", "fsdp"] = _f(
        "ddp", "ddp: every process holds the whole model and AdamW state, gradients are averaged; "
        "fsdp: FSDP2 shards weights, gradients and AdamW state over processes (per decoder layer), "
        "gathering the full weights for generation and evaluation (no LoRA)")


@dataclass
class TrainConfig:
    """A training run. Every section below has its own fields."""

    seed: int = _f(0, "seeds python, numpy and torch (see reproducible for bit-identical reruns)",
                   valid=AT_LEAST_0)
    steps: int = _f(100, "rollout/update steps", valid=AT_LEAST_0)
    reproducible: bool = _f(False, "bit-identical reruns (and resumes) of the same seed: one intra-op CPU thread "
                                   "and torch's deterministic algorithms (slower; see docs/training.md)")
    output_dir: str = _f("runs/gdpo", "where metrics, checkpoints and the final model go")
    method: str = _f("gdpo", "advantage estimator: gdpo, grpo, grpo_no_std, gdpo_no_bn, gdpo_no_std, ...")
    method_options: dict[str, Any] = _f({}, "estimator options, e.g. {eps: 1e-4, leave_one_out: true}")
    token_weighted_batch_norm: bool = _f(False, "pass response lengths to the estimator (verl-style "
                                                "token-weighted batch normalization; GDPO family)")
    rewards: list[Any] | None = _f(None, "reward set [{name, weight, params, condition: {on, min}}]; "
                                         "null = the task's default rewards")
    sandbox_min_level: Literal["namespaces", "uid", "rlimits"] = _f(
        "namespaces", "weakest code-sandbox level a run with code rewards accepts (checked before any model "
                      "loads): namespaces blocks network, host files and host sockets; uid and rlimits do not "
                      "(see docs/sandbox.md)")
    model: ModelConfig = _f(ModelConfig(), "the policy")
    task: TaskConfig = _f(TaskConfig(), "the data")
    rollout: RolloutConfig = _f(RolloutConfig(), "sampling")
    loss: LossConfig = _f(LossConfig(), "the objective")
    optim: OptimConfig = _f(OptimConfig(), "the optimizer")
    update: UpdateConfig = _f(UpdateConfig(), "minibatches and epochs")
    checkpoint: CheckpointConfig = _f(CheckpointConfig(), "checkpointing")
    logging: LoggingConfig = _f(LoggingConfig(), "logging")
    eval: EvalConfig = _f(EvalConfig(), "evaluation")
    distributed: DistributedConfig = _f(DistributedConfig(), "multi-process training (DDP or FSDP)")


def config_from_dict(data: dict[str, Any] | None, overrides: list[str] | None = None) -> TrainConfig:
    """Build and validate a :class:`TrainConfig` from a (YAML) dict and ``a.b=value`` overrides."""
    from gdpo.train.validate import validate

    data = apply_overrides(dict(data or {}), overrides or [])
    cfg = build_dataclass(TrainConfig, data, path="")
    validate(cfg)
    return cfg


def load_config(path: str | None, overrides: list[str] | None = None) -> TrainConfig:
    """Read a YAML config file (None = the defaults) and apply overrides."""
    import yaml

    if path is None:
        return config_from_dict({}, overrides)
    try:
        with open(path) as fh:
            data = yaml.safe_load(fh) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file {path!r} does not exist; give a path to a YAML file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold a mapping at the top level, got {type(data).__name__}")
    return config_from_dict(data, overrides)
