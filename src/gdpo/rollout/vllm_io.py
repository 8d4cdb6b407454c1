"""What goes into and comes out of the vLLM engine, without importing vllm (tested on CPU).

* :func:`engine_folder`: the HF folder the engine is built from (the policy's source).
* :func:`engine_dtype`: the engine's dtype for ``model.dtype``.
* :func:`policy_weights`: the policy's weights under HF names, LoRA adapters merged in.
* :func:`prompt_seeds`: a seed per prompt, from (run seed, rank, step).
* :func:`turn_seeds`: a seed per sample and model turn of a multi-turn episode.
* :func:`engine_context`: the engine's ``max_model_len`` for the run's rows (single- or multi-turn).
* :func:`rollout_from_samples`: sampled token lists -> a :class:`Rollout` padded and masked
  exactly like the HF path's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gdpo.train.config import TrainConfig
from gdpo.train.config_io import ConfigError
from gdpo.rollout.hf import Rollout, response_mask


def engine_folder(cfg: TrainConfig, rank: int) -> Path:
    """A local HF folder (config, weights, tokenizer) with the policy's architecture.

    'tiny' exists only in code: it is saved under ``<output_dir>/vllm_model/rank-<r>`` (one
    folder per process, no barrier needed). The engine's initial weights do not matter: the
    policy's weights are pushed before every rollout.
    """
    from gdpo.models import save_tiny, smollm2_folder

    name = cfg.model.name
    if name == "tiny":
        seed = cfg.seed if cfg.model.init_seed is None else cfg.model.init_seed
        return save_tiny(Path(cfg.output_dir) / "vllm_model" / f"rank-{rank}", **vars(cfg.model.tiny), seed=seed)
    folder = smollm2_folder() if name == "smollm2" else Path(name).expanduser()
    if not (folder / "config.json").is_file():
        raise ConfigError(f"rollout.backend = 'vllm' builds its engine from a saved HF folder, and model.name = "
                          f"{name!r} has no config.json; set model.name to a folder written by save_pretrained")
    return folder


def engine_dtype(setting: str, training_dtype: torch.dtype) -> str:
    """The engine's dtype: the training compute dtype; fp16 where 'auto' trains in fp32 on a GPU.

    'auto' on an fp16-only GPU trains in fp32; vLLM then samples in fp16 (fast; the HF policy
    still recomputes every logprob the loss uses). ``float32`` asks for fp32 sampling too.
    """
    if training_dtype == torch.bfloat16:
        return "bfloat16"
    return "float32" if setting == "float32" else "float16"


def policy_weights(core: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(HF name, tensor) of every weight of ``core``; a peft model yields base + merged LoRA.

    The merge is computed, not applied: W + scale B A per adapted layer, so the trained
    model is left exactly as it was (merge/unmerge in place would drift the frozen base).
    """
    if not hasattr(core, "get_base_model"):
        for name, param in core.named_parameters():
            yield name, param.detach()
        return
    base = core.get_base_model()
    deltas = _lora_deltas(base)  # {"...q_proj.weight": [out, in]}
    for name, param in base.named_parameters():
        if ".lora_" in name:
            continue
        clean = name.replace(".base_layer.", ".")
        weight = param.detach()
        if clean in deltas:
            weight = weight + deltas[clean].to(weight.dtype)
        yield clean, weight


def _lora_deltas(base: torch.nn.Module) -> dict[str, torch.Tensor]:
    deltas = {}
    for name, module in base.named_modules():
        if not (hasattr(module, "get_delta_weight") and hasattr(module, "base_layer")):
            continue
        active = [a for a in module.active_adapters if a in getattr(module, "lora_A", {})]
        if getattr(module, "merged", False):
            raise ValueError(f"LoRA layer {name} is merged into its base already; unmerge it before pushing weights")
        if active:
            deltas[f"{name}.weight"] = sum(module.get_delta_weight(a) for a in active).detach()
    return deltas


def prompt_seeds(seed: int, rank: int, step: int, num_prompts: int) -> list[int]:
    """One sampling seed per prompt (vLLM seeds a prompt's G samples seed, seed+1, ...)."""
    rng = np.random.default_rng([seed, rank, step])
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=num_prompts)]


def turn_seeds(seed: int, rank: int, step: int, turn: int, num_samples: int) -> list[int]:
    """One sampling seed per sample for model turn ``turn`` (0-based) of a step's episodes.

    Each (run seed, rank, step, turn) gives its own stream, so a rerun samples the same
    trajectories and no two turns or steps share a seed by construction.

    >>> turn_seeds(0, 0, 1, 0, 3) == turn_seeds(0, 0, 1, 0, 3) != turn_seeds(0, 0, 1, 1, 3)
    True
    """
    rng = np.random.default_rng([seed, rank, step, turn, 0x6D74])  # 0x6D74: apart from prompt_seeds' streams
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=num_samples)]


def engine_context(cfg: TrainConfig, rows: list[dict[str, Any]], model_limit: int | None) -> int:
    """The engine's ``max_model_len``: the longest prompt + completion the run can ask for.

    Single-turn rows: ``max_prompt_tokens + max_new_tokens``. Multi-turn rows (an ``env``
    column): ``max_prompt_tokens`` + the largest trajectory budget among them
    (:func:`gdpo.rollout.multi_turn.episode_limits`). Capped by the model's positions
    (``model_limit``); the multi-turn loop cuts each episode's budget to what is left.
    """
    from gdpo.rollout.multi_turn import episode_limits, is_multi_turn

    r = cfg.rollout
    longest = r.max_new_tokens
    if is_multi_turn(rows):
        longest = max(episode_limits(row, r.max_new_tokens)[1] for row in rows)
    wanted = r.max_prompt_tokens + longest
    return min(wanted, int(model_limit)) if model_limit else wanted


def rollout_from_samples(prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, samples: list[list[int]],
                         rows: list[dict[str, Any]], num_generations: int, tokenizer) -> Rollout:
    """A :class:`Rollout` from sampled token lists, G per prompt, in prompt order.

    prompt_ids, prompt_mask: [B, P] left-padded (as :func:`render_prompts` returns them);
    samples: N = B x G token lists, each ending at its first EOS (included) or at the length
    limit. Completions are right-padded to the longest one, L, with the pad token; the mask
    covers tokens up to and including the first EOS, as in the HF path.
    """
    n = len(samples)
    if n != prompt_ids.shape[0] * num_generations:
        raise ValueError(f"{n} samples for {prompt_ids.shape[0]} prompts x num_generations={num_generations}")
    length = max(1, max(len(s) for s in samples))
    pad = tokenizer.pad_token_id
    ids = torch.full((n, length), pad, dtype=torch.long)  # [N, L]
    for i, sample in enumerate(samples):
        ids[i, :len(sample)] = torch.as_tensor(sample, dtype=torch.long)
    sizes = torch.as_tensor([len(s) for s in samples])  # [N]
    within = torch.arange(length)[None, :] < sizes[:, None]  # [N, L]: the sample's own tokens
    mask = response_mask(ids, tokenizer.eos_token_id) * within.long()  # [N, L]
    ids = torch.where(mask.bool(), ids, pad)
    device = prompt_ids.device
    texts = tokenizer.batch_decode(ids, skip_special_tokens=True)
    expanded = [row for row in rows for _ in range(num_generations)]
    return Rollout(prompt_ids.repeat_interleave(num_generations, dim=0), prompt_mask.repeat_interleave(
        num_generations, dim=0), ids.to(device), mask.to(device), texts, expanded)
