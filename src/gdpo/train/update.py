"""One rollout batch -> optimizer steps: minibatches, epochs, gradient accumulation.

Minibatch ``j`` holds the samples whose index is ``j`` modulo ``num_minibatches``. Indexing
by the sample's position keeps minibatches identical however the batch is split across
processes (each process holds a contiguous block whose size is a multiple of the number of
minibatches), and each minibatch's loss normalizer is summed over processes, so a
distributed update equals the single-process one.

Non-finite steps: an optimizer step whose global gradient norm is NaN or inf changes nothing
(no AdamW step, no schedule step); ``optim.on_nonfinite`` says whether the run skips it (the
figures report ``update/nonfinite_skipped``) or stops (:class:`NonFiniteError`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from gdpo.train import dist
from gdpo.train.loss import loss_denominator, policy_loss
from gdpo.rollout.hf import sequence_logprobs


@dataclass
class UpdateBatch:
    """A process's share of a scored rollout, ready for the loss."""

    prompt_ids: torch.Tensor  # [N, P]
    prompt_mask: torch.Tensor  # [N, P]
    completion_ids: torch.Tensor  # [N, L]
    completion_mask: torch.Tensor  # [N, L] (dropped groups are all 0)
    advantages: torch.Tensor  # [N] float32
    old_logp: torch.Tensor | None = None  # [N, L]; None = the current policy's (one update per batch)
    ref_logp: torch.Tensor | None = None  # [N, L]; None = no KL term

    def __len__(self) -> int:
        return self.completion_ids.shape[0]

    def rows(self, idx: torch.Tensor) -> dict[str, Any]:
        pick = lambda t: None if t is None else t[idx]
        return dict(prompt_ids=self.prompt_ids[idx], prompt_mask=self.prompt_mask[idx],
                    completion_ids=self.completion_ids[idx], completion_mask=self.completion_mask[idx],
                    advantages=self.advantages[idx], old_logp=pick(self.old_logp), ref_logp=pick(self.ref_logp))


@dataclass
class UpdateSettings:
    """The numbers :func:`update_policy` needs (taken from the config by the loop)."""

    eps_low: float
    eps_high: float
    aggregation: str
    constant_normalizer: float | None
    beta: float
    kl_estimator: str
    entropy_coef: float
    ppo_epochs: int
    num_minibatches: int
    micro_batch_size: int
    max_grad_norm: float | None
    temperature: float
    on_nonfinite: str = "skip"  # "skip" | "stop": an optimizer step whose gradient norm is NaN / inf


class NonFiniteError(RuntimeError):
    """Training met a NaN / inf it cannot step over (a gradient with optim.on_nonfinite=stop, too many
    skipped steps in a row, or weights about to be checkpointed); the weights were not updated by it."""


@torch.no_grad()
def batched_logprobs(model, batch: UpdateBatch, micro_batch_size: int, temperature: float,
                     autocast: Callable = contextlib.nullcontext) -> torch.Tensor:
    """Per-token logprobs [N, L] of ``batch`` under ``model``, in micro-batches, no grad."""
    out = []
    for start in range(0, len(batch), micro_batch_size):
        idx = torch.arange(start, min(start + micro_batch_size, len(batch)))
        r = batch.rows(idx)
        with autocast():
            logp, _ = sequence_logprobs(model, r["prompt_ids"], r["prompt_mask"], r["completion_ids"],
                                        r["completion_mask"], temperature=temperature)
        out.append(logp.float())
    return torch.cat(out)  # [N, L]


def update_policy(model, optimizer, scheduler, batch: UpdateBatch, s: UpdateSettings,
                  info: dist.DistInfo = dist.DistInfo(), autocast: Callable = contextlib.nullcontext) -> dict[str, float]:
    """Run ``ppo_epochs`` x ``num_minibatches`` optimizer steps on ``batch``; returns mean figures."""
    if len(batch) % s.num_minibatches:
        raise ValueError(f"{len(batch)} samples on this process are not divisible by "
                         f"update.num_minibatches={s.num_minibatches}")
    sums: dict[str, torch.Tensor] = {}
    grad_norms, skipped = [], 0
    for _ in range(s.ppo_epochs):
        for j in range(s.num_minibatches):
            minibatch = torch.arange(j, len(batch), s.num_minibatches)
            figures = _minibatch_step(model, batch, minibatch, s, info, autocast)
            for key, value in figures.items():
                sums[key] = sums.get(key, torch.zeros(())) + value
            norm = float(_step_optimizer(model, optimizer, scheduler, s.max_grad_norm, s.on_nonfinite))
            grad_norms.append(norm)
            skipped += not math.isfinite(norm)
    num = s.ppo_epochs * s.num_minibatches
    totals = dist.all_reduce_sum(torch.stack([sums[k] for k in sorted(sums)]), info)
    out = {f"loss/{k}" if k != "loss" else "loss": float(v) / num for k, v in zip(sorted(sums), totals)}
    out["grad_norm"] = sum(grad_norms) / len(grad_norms)  # NaN / inf when a step was skipped
    out["lr"] = scheduler.get_last_lr()[0]
    out["update/nonfinite_skipped"] = float(skipped)  # optimizer steps (of ppo_epochs x num_minibatches) skipped
    return out


def _minibatch_step(model, batch: UpdateBatch, minibatch: torch.Tensor, s: UpdateSettings,
                    info: dist.DistInfo, autocast: Callable) -> dict[str, torch.Tensor]:
    """Accumulate the gradient of one minibatch; returns this process's share of its figures."""
    constant = s.constant_normalizer
    denom = dist.all_reduce_sum(loss_denominator(batch.completion_mask[minibatch], s.aggregation, constant), info)
    figures: dict[str, torch.Tensor] = {}
    chunks = list(torch.split(minibatch, s.micro_batch_size))
    for i, idx in enumerate(chunks):
        r = batch.rows(idx)
        last = i == len(chunks) - 1
        sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            with autocast():
                logp, ent = sequence_logprobs(model, r["prompt_ids"], r["prompt_mask"], r["completion_ids"],
                                              r["completion_mask"], temperature=s.temperature,
                                              with_entropy=True, entropy_grad=s.entropy_coef > 0)
            old = r["old_logp"] if r["old_logp"] is not None else logp.detach()
            out = policy_loss(logp, old, r["advantages"], r["completion_mask"], eps_low=s.eps_low,
                              eps_high=s.eps_high, mode=s.aggregation, denominator=denom, constant=constant,
                              ref_logp=r["ref_logp"], beta=s.beta, kl_estimator=s.kl_estimator,
                              entropy=ent, entropy_coef=s.entropy_coef)
            # DDP averages gradients over processes; the denominator is already global.
            (out.loss * info.world_size).backward()
        for key, value in out._asdict().items():
            figures[key] = figures.get(key, torch.zeros(())) + value.detach().float().cpu()
    return figures


def _step_optimizer(model, optimizer, scheduler, max_grad_norm: float | None, on_nonfinite: str = "skip") -> torch.Tensor:
    """Clip, step, zero; returns the gradient norm before clipping.

    A NaN / inf norm (a NaN loss, an overflow) means no update at all: the optimizer, its moments
    and the schedule stay where they were, the gradient is dropped, and with ``on_nonfinite="stop"``
    :class:`NonFiniteError` is raised. The norm is global (DDP averages gradients, FSDP reduces the
    norm over shards), so every process makes the same choice.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    norm = norm.detach().cpu()
    if not math.isfinite(float(norm)):
        optimizer.zero_grad(set_to_none=True)
        if on_nonfinite == "stop":
            raise NonFiniteError(f"the gradient norm is {float(norm)} (a NaN / inf loss or gradient); "
                                 f"stopped before the optimizer step (optim.on_nonfinite=stop)")
        return norm
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return norm


def nonfinite_weights(model) -> int:
    """How many trainable values of ``model`` on this process are NaN or inf (FSDP: of its shards)."""
    bad = 0
    for p in model.parameters():
        if p.requires_grad:
            t = p.detach()
            t = t.to_local() if hasattr(t, "to_local") else t  # an FSDP DTensor: this process's shard
            bad += int((~torch.isfinite(t)).sum())
    return bad
