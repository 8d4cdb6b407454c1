"""Building a run's pieces from its config: policy, reference, optimizer, schedule, settings."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch

from gdpo.train import dist
from gdpo.train.config import TrainConfig
from gdpo.train.update import UpdateSettings


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


@contextlib.contextmanager
def reproducible_mode(enabled: bool):
    """``reproducible: true``: one intra-op CPU thread and torch's deterministic algorithms.

    With several threads a CPU reduction may add its terms in another order from run to run, so
    two runs of the same seed drift apart in the last bits (1e-7 after a few steps); one thread
    and deterministic kernels make reruns and resumes bit-identical. On CUDA it also asks cuBLAS
    for a fixed workspace (``CUBLAS_WORKSPACE_CONFIG``, read when cuBLAS starts) and turns off
    cuDNN autotuning; ops without a deterministic kernel warn instead of failing. The previous
    settings come back when the run ends.
    """
    if not enabled:
        yield
        return
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = False, True
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = saved[3], saved[4]


def device_for(info: dist.DistInfo) -> torch.device:
    return torch.device(f"cuda:{info.local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def autocast_for(cfg: TrainConfig, device: torch.device) -> Callable[[], Any]:
    """bf16 autocast as ``model.dtype`` asks (see :mod:`gdpo.train.precision`); else fp32."""
    from gdpo.train.precision import compute_dtype

    if compute_dtype(cfg.model.dtype, device) == torch.bfloat16:
        return lambda: torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext


class Policy(NamedTuple):
    model: Any  # what the loss calls: DDP-wrapped (or FSDP-sharded) when distributed
    core: Any  # the HF (or peft) model: generate, save (FSDP: the sharded model itself, see gdpo.train.fsdp)
    tokenizer: Any


def load_base_model(model_cfg, seed: int) -> tuple[Any, Any]:
    """The model and tokenizer ``model_cfg`` names ('tiny': random init from ``model.init_seed``,
    else the run's ``seed``), as the policy, the reference and ``gdpo sft`` load them."""
    from gdpo.models import load_model_and_tokenizer

    init_seed = seed if model_cfg.init_seed is None else model_cfg.init_seed
    loaded = load_model_and_tokenizer(model_cfg.name, tiny=vars(model_cfg.tiny), seed=init_seed)
    return loaded.model, loaded.tokenizer


def load_policy(cfg: TrainConfig, info: dist.DistInfo, device: torch.device) -> Policy:
    """The trained model (LoRA-wrapped if asked), on ``device``; DDP-wrapped or FSDP-sharded when distributed."""
    torch.manual_seed(cfg.seed)  # same LoRA init on every process
    model, tok = load_base_model(cfg.model, cfg.seed)
    if cfg.model.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if cfg.model.lora is not None:
        model = _add_lora(model, cfg.model.lora)
    model.to(device)
    model.eval()  # no dropout: old and new logprobs must describe the same policy
    wrapped = model
    if info.enabled and cfg.distributed.strategy == "fsdp":
        from gdpo.train.fsdp import shard_policy

        sharded = shard_policy(model)  # in place: the same object is trained, generates and saves
        return Policy(sharded, sharded, tok)
    if info.enabled:
        ids = [info.local_rank] if device.type == "cuda" else None
        wrapped = torch.nn.parallel.DistributedDataParallel(model, device_ids=ids)
    return Policy(wrapped, model, tok)


def _add_lora(model, lora_cfg) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise ImportError("model.lora needs peft: `pip install peft`, or set model.lora: null") from None
    peft_cfg = LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                          target_modules=list(lora_cfg.target_modules), task_type="CAUSAL_LM")
    return get_peft_model(model, peft_cfg)


class Reference(NamedTuple):
    """Computes reference logprobs: a frozen copy, or the LoRA base with adapters disabled."""

    model: Any
    context: Callable[[], Any]


def load_reference(cfg: TrainConfig, policy: Policy, device: torch.device) -> Reference | None:
    """None unless loss.beta > 0. With LoRA the frozen base is the reference (no second copy)."""
    if cfg.loss.beta <= 0:
        return None
    if cfg.model.lora is not None:
        return Reference(policy.core, policy.core.disable_adapter)
    ref, _ = load_base_model(cfg.model, cfg.seed)
    ref.to(device).eval().requires_grad_(False)
    return Reference(ref, contextlib.nullcontext)


def build_optimizer(cfg: TrainConfig, model) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters, with warmup then cosine/constant per optimizer step."""
    o = cfg.optim
    params = [p for p in model.parameters() if p.requires_grad]
    # The fused kernel (one pass per parameter, CPU and CUDA) is the same update, done faster.
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params) or None
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=tuple(o.betas), weight_decay=o.weight_decay, fused=fused)
    total = max(1, cfg.steps * cfg.update.ppo_epochs * cfg.update.num_minibatches)
    schedule = lr_multiplier(o.warmup_steps, total, o.lr_schedule, o.min_lr_ratio)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def lr_multiplier(warmup: int, total: int, shape: str, min_ratio: float) -> Callable[[int], float]:
    """Learning-rate factor at optimizer step ``i``: linear warmup, then cosine or constant."""

    def factor(i: int) -> float:
        if warmup > 0 and i < warmup:
            return (i + 1) / warmup
        if shape == "constant":
            return 1.0
        progress = min(1.0, (i - warmup) / max(1, total - warmup))
        return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def update_settings(cfg: TrainConfig) -> UpdateSettings:
    lo, up = cfg.loss, cfg.update
    constant = lo.constant_normalizer or cfg.rollout.max_new_tokens
    return UpdateSettings(
        eps_low=lo.eps_low, eps_high=lo.eps_high, aggregation=lo.aggregation, constant_normalizer=constant,
        beta=lo.beta, kl_estimator=lo.kl_estimator, entropy_coef=lo.entropy_coef,
        ppo_epochs=up.ppo_epochs, num_minibatches=up.num_minibatches, micro_batch_size=up.micro_batch_size,
        max_grad_norm=cfg.optim.max_grad_norm, temperature=cfg.rollout.temperature,
        on_nonfinite=cfg.optim.on_nonfinite,
    )
