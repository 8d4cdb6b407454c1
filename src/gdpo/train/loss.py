"""The policy loss as pure functions on tensors (no model, no config objects).

Shapes: N sequences (a micro-batch), L response tokens, V vocabulary. ``mask`` [N, L] is 1 on
response tokens (up to and including EOS) and 0 on padding.

The per-token loss is the PPO clipped surrogate with separate low/high clips (DAPO's
"clip-higher"), plus ``beta`` x KL to a reference, minus ``entropy_coef`` x entropy:

    ratio = exp(logp - old_logp)
    pg    = -min(ratio * A, clip(ratio, 1 - eps_low, 1 + eps_high) * A)

and is then aggregated with one of three modes (:func:`aggregate`). The aggregation takes
an explicit ``denominator`` so that gradient accumulation over micro-batches and data
parallel processes gives exactly the loss of the whole minibatch (:func:`loss_denominator`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

AGGREGATIONS = ("token_mean", "seq_mean", "constant")


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Log-probability of each ``tokens`` [N, L] under ``logits`` [N, L, V] -> [N, L] (fp32)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [N, L, V]
    return logp.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # [N, L]


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of each next-token distribution: [N, L, V] -> [N, L] (fp32)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # [N, L, V]
    return -(logp.exp() * logp).sum(-1)  # [N, L]


_CHUNK_ELEMENTS = 1 << 24  # logits elements per chunk in selected_logprobs (64 MiB of fp32)


class _SelectedLogprobs(torch.autograd.Function):
    """logp[t] = logits[t, tokens[t]] - logsumexp(logits[t]), plus the (detached) entropy.

    Rows of the flattened [N*L, V] logits are processed in chunks, so that no [N, L, V]
    log-softmax is kept: the forward keeps only the logits, and the backward recomputes the
    softmax chunk by chunk (d logp / d logits = onehot(token) - softmax).
    """

    @staticmethod
    def forward(ctx, logits, tokens, with_entropy):
        vocab = logits.shape[-1]
        flat, flat_tokens = logits.reshape(-1, vocab), tokens.reshape(-1, 1)  # [M, V], [M, 1]
        logp = torch.empty(flat.shape[0], dtype=torch.float32, device=logits.device)  # [M]
        ent = torch.empty_like(logp) if with_entropy else None
        step = max(1, _CHUNK_ELEMENTS // vocab)
        for start in range(0, flat.shape[0], step):
            x = flat[start:start + step].float()  # [m, V]
            lse = torch.logsumexp(x, dim=-1)  # [m]
            logp[start:start + step] = x.gather(-1, flat_tokens[start:start + step]).squeeze(-1) - lse
            if ent is not None:  # H = lse - sum_v p_v x_v
                ent[start:start + step] = lse - (torch.softmax(x, dim=-1) * x).sum(-1)
        ctx.save_for_backward(logits, tokens)
        shape = tokens.shape
        if ent is None:
            return logp.view(shape), torch.zeros(shape, dtype=torch.float32, device=logits.device)
        ctx.mark_non_differentiable(ent)
        return logp.view(shape), ent.view(shape)

    @staticmethod
    def backward(ctx, grad_logp, grad_ent):
        logits, tokens = ctx.saved_tensors
        vocab = logits.shape[-1]
        flat, flat_tokens = logits.reshape(-1, vocab), tokens.reshape(-1, 1)  # [M, V], [M, 1]
        g = grad_logp.reshape(-1, 1).float()  # [M, 1]
        grad = torch.empty_like(flat)  # [M, V]
        step = max(1, _CHUNK_ELEMENTS // vocab)
        for start in range(0, flat.shape[0], step):
            gi = g[start:start + step]
            chunk = torch.softmax(flat[start:start + step].float(), dim=-1).mul_(-gi)  # [m, V]
            chunk.scatter_add_(-1, flat_tokens[start:start + step], gi)
            grad[start:start + step] = chunk
        return grad.view_as(logits), None, None


def selected_logprobs(logits: torch.Tensor, tokens: torch.Tensor,
                      with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`token_logprobs` (differentiable) and, if asked, :func:`token_entropy` (detached),
    computed together in chunks without materializing an [N, L, V] log-softmax -> [N, L] each."""
    logp, ent = _SelectedLogprobs.apply(logits, tokens, with_entropy)
    return logp, (ent if with_entropy else None)


class Surrogate(NamedTuple):
    loss: torch.Tensor  # [N, L] per-token clipped surrogate loss
    clipped: torch.Tensor  # [N, L] bool: the clip was active (gradient is zero there)
    ratio: torch.Tensor  # [N, L]


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                      eps_low: float, eps_high: float) -> Surrogate:
    """PPO clipped surrogate per token; ``advantages`` [N] is broadcast over tokens."""
    adv = advantages.unsqueeze(-1).to(logp.dtype)  # [N, 1]
    ratio = torch.exp(logp - old_logp)  # [N, L]
    unclipped = ratio * adv  # [N, L]
    clipped = torch.clamp(ratio, 1.0 - eps_low, 1.0 + eps_high) * adv  # [N, L]
    loss = -torch.minimum(unclipped, clipped)  # [N, L]
    return Surrogate(loss, clipped < unclipped, ratio)


def kl_penalty(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy -> [N, L].

    k1 = logp - ref_logp (unbiased, can be negative); k3 = exp(d) - d - 1 with
    d = ref_logp - logp (unbiased, always >= 0; Schulman's "Approximating KL divergence").
    """
    if estimator == "k1":
        return logp - ref_logp
    if estimator == "k3":
        d = ref_logp - logp
        return torch.exp(d) - d - 1.0
    raise ValueError(f"unknown KL estimator {estimator!r}; use 'k1' or 'k3'")


def loss_denominator(mask: torch.Tensor, mode: str, constant: float | None = None) -> torch.Tensor:
    """The normalizer of :func:`aggregate` for a whole minibatch ``mask`` [N, L] -> scalar.

    token_mean: number of response tokens; seq_mean: number of sequences with at least one
    token; constant: that number of sequences x ``constant`` (tokens per sequence).
    """
    _check_mode(mode)
    if mode == "token_mean":
        return mask.sum().float()
    num_seqs = (mask.sum(-1) > 0).sum().float()
    if mode == "seq_mean":
        return num_seqs
    if constant is None or constant <= 0:
        raise ValueError(f"aggregation 'constant' needs a positive constant, got {constant!r}")
    return num_seqs * float(constant)


def aggregate(values: torch.Tensor, mask: torch.Tensor, mode: str,
              denominator: torch.Tensor | float | None = None, constant: float | None = None) -> torch.Tensor:
    """Reduce per-token ``values`` [N, L] to a scalar.

    The numerator is the masked token sum (token_mean, constant) or the sum over sequences of
    each sequence's token mean (seq_mean). ``denominator`` defaults to
    :func:`loss_denominator` of this ``mask``; pass the whole minibatch's to accumulate.
    """
    _check_mode(mode)
    mask = mask.to(values.dtype)
    if mode == "seq_mean":
        per_seq = (values * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)  # [N]
        numerator = per_seq.sum()
    else:
        numerator = (values * mask).sum()
    if denominator is None:
        denominator = loss_denominator(mask, mode, constant)
    return numerator / torch.clamp(torch.as_tensor(denominator, dtype=values.dtype), min=1e-8)


def _check_mode(mode: str) -> None:
    if mode not in AGGREGATIONS:
        raise ValueError(f"unknown loss aggregation {mode!r}; use one of {AGGREGATIONS}")


class PolicyLoss(NamedTuple):
    loss: torch.Tensor  # scalar to backpropagate
    pg_loss: torch.Tensor  # scalar, surrogate part (detached)
    kl: torch.Tensor  # scalar, token-mean KL (detached; 0 without reference)
    entropy: torch.Tensor  # scalar, token-mean entropy (detached)
    clip_frac: torch.Tensor  # scalar, token-mean fraction of clipped tokens (detached)


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                mask: torch.Tensor, *, eps_low: float, eps_high: float, mode: str = "token_mean",
                denominator: torch.Tensor | float | None = None, constant: float | None = None,
                ref_logp: torch.Tensor | None = None, beta: float = 0.0, kl_estimator: str = "k3",
                entropy: torch.Tensor | None = None, entropy_coef: float = 0.0) -> PolicyLoss:
    """Clipped surrogate + beta x KL - entropy_coef x entropy, aggregated by ``mode``.

    ``logp``, ``old_logp``, ``ref_logp``, ``entropy``, ``mask``: [N, L]; ``advantages``: [N].
    The reported pg_loss/kl/entropy/clip_frac use the same aggregation and denominator.
    """
    surrogate = clipped_surrogate(logp, old_logp, advantages, eps_low, eps_high)
    per_token = surrogate.loss  # [N, L]
    kl = torch.zeros_like(logp)
    if ref_logp is not None and beta > 0:
        kl = kl_penalty(logp, ref_logp, kl_estimator)  # [N, L]
        per_token = per_token + beta * kl
    ent = entropy if entropy is not None else torch.zeros_like(logp)
    if entropy_coef > 0:
        if entropy is None:
            raise ValueError("entropy_coef > 0 needs the per-token entropy; pass entropy=")
        per_token = per_token - entropy_coef * ent
    agg = lambda x: aggregate(x, mask, mode, denominator, constant)
    return PolicyLoss(
        loss=agg(per_token),
        pg_loss=agg(surrogate.loss).detach(),
        kl=agg(kl).detach(),
        entropy=agg(ent).detach(),
        clip_frac=agg(surrogate.clipped.to(logp.dtype)).detach(),
    )
