"""FSDP2 for the policy: shard, gather for generation, full state for checkpoints.

``distributed.strategy: fsdp`` shards every transformer decoder layer, then the root
(embeddings, final norm, LM head), with :func:`torch.distributed.fsdp.fully_shard`. Each
process then holds 1 / world_size of the parameters, gradients and AdamW state; a layer's
full weights exist only while it runs (all-gathered before, freed after).

Generation is the exception: HF ``generate`` runs as many forward passes as the longest
sequence on *this* process needs, and ranks sample different lengths, so per-layer
collectives would no longer pair up and the processes would hang. :func:`full_parameters`
gathers every layer once, keeps it gathered through generation or evaluation (resharding
after forward is switched off meanwhile), then frees it again.

Two more places depend on FSDP: the update encodes each sample's prompt itself instead of
sharing one prompt cache per group (``rollout.completion_logits``: that cache's gradient
arrives after FSDP has freed the layer's weights), and checkpoints / the final HF folder
gather full tensors (:func:`full_model_state`, :func:`full_optimizer_state`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch


def is_sharded(model: Any) -> bool:
    """True for a model wrapped by :func:`shard_policy` (FSDP2 swaps the class in place)."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:  # pragma: no cover - torch < 2.6
        return False
    return isinstance(model, FSDPModule)


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # pragma: no cover - torch < 2.6
        raise ImportError(f"distributed.strategy=fsdp needs torch>=2.6 (torch.distributed.fsdp.fully_shard); "
                          f"this is torch {torch.__version__}. Upgrade torch or set distributed.strategy=ddp") from None
    return fully_shard


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks: modules whose class HF lists in ``_no_split_modules``."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in names]
    if not layers:
        raise ValueError(f"distributed.strategy=fsdp found no decoder layers in {type(model).__name__} "
                         f"(its _no_split_modules is {sorted(names)}); use distributed.strategy=ddp for this model")
    return layers


def shard_policy(model: torch.nn.Module) -> torch.nn.Module:
    """Shard ``model`` in place over all processes: each decoder layer, then the root.

    Every unit, the root included, frees its gathered weights after each forward. (With the
    root kept gathered after forward, as FSDP does by default, a no-grad forward such as the
    old-logprob pass left it gathered, and after the next optimizer step the root's weights
    were off by about one learning-rate step: seen with torch 2.13 on gloo, caught by
    tests/train/test_train_distributed.py.)
    """
    fully_shard = _fully_shard()
    for layer in decoder_layers(model):
        fully_shard(layer, reshard_after_forward=True)
    fully_shard(model, reshard_after_forward=True)
    return model


def _fsdp_modules(model: torch.nn.Module) -> list[Any]:
    """Every FSDP unit below and including ``model``, in the same order on every process."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in model.modules() if isinstance(m, FSDPModule)]


@contextlib.contextmanager
def full_parameters(model: Any) -> Iterator[None]:
    """Gather all parameters for the block (generate, evaluate); every process must enter it.

    Inside, forward passes run no collectives, so processes may run different numbers of them.
    (HF ``generate`` still adds one small all-reduce per token on a sharded model, its
    ``synced_gpus`` mode, so every process must call ``generate`` as often as the others.)
    A no-op for a model that is not sharded.
    """
    if not is_sharded(model):
        yield
        return
    units = _fsdp_modules(model)
    for unit in units:
        unit.set_reshard_after_forward(False, recurse=False)
        unit.unshard()
    try:
        yield
    finally:
        for unit in units:
            unit.reshard()
            unit.set_reshard_after_forward(True, recurse=False)  # as shard_policy left it


def _state_dict_options(**kw: Any):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **kw)


def full_model_state(model: Any) -> dict[str, torch.Tensor]:
    """Full (unsharded) trainable weights on CPU; a collective: every process calls it.

    Rank 0 gets the tensors; other ranks may get an empty dict.
    """
    state = full_model_state_all(model)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v for k, v in state.items() if k in trainable}


def full_optimizer_state(model: Any, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Full optimizer state keyed by parameter name, on CPU; a collective (rank 0 gets it)."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_state_dict_options())


def load_full_state(model: Any, optimizer: torch.optim.Optimizer, weights: dict[str, torch.Tensor],
                    optimizer_state: dict[str, Any]) -> None:
    """Scatter full weights and optimizer state (as saved above) into the shards; a collective."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict, set_optimizer_state_dict

    missing = set(weights).symmetric_difference(n for n, p in model.named_parameters() if p.requires_grad)
    if missing:
        raise ValueError(f"checkpoint weights do not match the sharded model: {sorted(missing)[:5]}; "
                         f"was it written for another model?")
    set_model_state_dict(model, weights, options=_state_dict_options(strict=False))
    set_optimizer_state_dict(model, optimizer, optimizer_state, options=_state_dict_options())


def save_pretrained_full(model: Any, tokenizer: Any, path: Any, is_main: bool) -> None:
    """Write a normal HF folder (full weights + tokenizer) from rank 0; every process calls it."""
    state = full_model_state_all(model)
    if is_main:
        model.save_pretrained(path, state_dict=state)
        tokenizer.save_pretrained(path)


def full_model_state_all(model: Any) -> dict[str, torch.Tensor]:
    """Every weight (trainable or not, buffers included), full and on CPU; a collective."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(model, options=_state_dict_options())
