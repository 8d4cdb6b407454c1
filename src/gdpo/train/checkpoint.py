"""Atomic checkpoints: trainable weights, optimizer, scheduler, RNG states, data position.

With FSDP (``distributed.strategy: fsdp``) the weights and optimizer state are gathered into
full tensors first, so ``weights.pt`` has the same layout either way (``optimizer.pt`` is keyed
by parameter name instead of index) and ``state.json`` records which strategy wrote it.

Layout: ``<output_dir>/checkpoints/step-000012/`` with ``weights.pt``, ``optimizer.pt``,
``scheduler.pt``, ``rng-rank<r>.pt`` (one per process) and ``state.json``. A checkpoint is
written into a temporary folder, every file fsync'ed, then renamed into place, so a process
killed at any moment leaves either the whole checkpoint or none.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gdpo.train import fsdp

PREFIX = "step-"
TRASH = ".trash-"  # an old checkpoint being deleted (see prune_checkpoints)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (all of them, or the LoRA adapters), on CPU."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _save(obj: Any, path: Path) -> None:
    with open(path, "wb") as fh:
        torch.save(obj, fh)
        fh.flush()
        os.fsync(fh.fileno())


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def list_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoints, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / "state.json").is_file()]
    return sorted(found, key=lambda p: int(p.name[len(PREFIX):]))


def save_checkpoint(output_dir: str | Path, step: int, *, model, optimizer, scheduler,
                    state: dict[str, Any], rank: int = 0, world_size: int = 1, keep_last: int = 2,
                    barrier=lambda: None) -> Path:
    """Write checkpoint ``step`` atomically; every process calls it (each saves its RNG)."""
    root = checkpoint_root(output_dir)
    final = root / f"{PREFIX}{step:06d}"
    tmp = root / f".tmp-{PREFIX}{step:06d}"
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    barrier()
    weights, optimizer_state = _states_to_save(model, optimizer, rank)
    _save(rng_state(), tmp / f"rng-rank{rank}.pt")
    if rank == 0:
        _save(weights, tmp / "weights.pt")
        _save(optimizer_state, tmp / "optimizer.pt")
        _save(scheduler.state_dict(), tmp / "scheduler.pt")
    barrier()
    if rank == 0:
        with open(tmp / "state.json", "w") as fh:
            json.dump({**state, "step": step, "world_size": world_size, "fsdp": fsdp.is_sharded(model)}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        _fsync_dir(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.rename(tmp, final)
        _fsync_dir(root)
        prune_checkpoints(output_dir, keep_last)
    barrier()
    return final


def prune_checkpoints(output_dir: str | Path, keep_last: int) -> None:
    """Delete all but the newest ``keep_last`` complete checkpoints, crash-safely.

    Each old checkpoint is first renamed to ``.trash-<name>`` (atomic), then deleted; a kill
    while deleting leaves only a ``.trash-`` folder, which the next save removes. Deleting in
    place instead could leave a half-deleted ``step-`` folder without ``state.json``, which no
    later prune would see as a checkpoint and so would never remove.
    """
    root = checkpoint_root(output_dir)
    for leftover in root.glob(f"{TRASH}*"):  # from a run killed while pruning
        shutil.rmtree(leftover, ignore_errors=True)
    for old in list_checkpoints(output_dir)[:-keep_last]:
        trash = root / f"{TRASH}{old.name}"
        os.rename(old, trash)
        shutil.rmtree(trash, ignore_errors=True)


def _states_to_save(model, optimizer, rank: int) -> tuple[dict | None, dict | None]:
    """(weights, optimizer state) for rank 0 to write; with FSDP every process helps gather them."""
    if fsdp.is_sharded(model):
        return fsdp.full_model_state(model), fsdp.full_optimizer_state(model, optimizer)
    if rank != 0:
        return None, None
    return trainable_state(model), optimizer.state_dict()


def load_checkpoint(path: Path, *, model, optimizer, scheduler, rank: int = 0) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this process's RNG; returns ``state.json``."""
    state = json.loads((path / "state.json").read_text())
    sharded = fsdp.is_sharded(model)
    if state.get("fsdp", False) != sharded:
        written, now = ("fsdp" if state.get("fsdp") else "ddp"), ("fsdp" if sharded else "ddp")
        raise ValueError(f"checkpoint {path} was written with distributed.strategy={written} (over "
                         f"{state.get('world_size', 1)} processes) and this run uses {now}; resume with "
                         f"--set distributed.strategy={written} and the same number of processes")
    weights = torch.load(path / "weights.pt", map_location="cpu", weights_only=True)
    optimizer_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
    if sharded:
        fsdp.load_full_state(model, optimizer, weights, optimizer_state)
    else:
        _load_plain_state(path, model, optimizer, weights, optimizer_state)
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", map_location="cpu", weights_only=False))
    rng_file = path / f"rng-rank{rank}.pt"
    if not rng_file.exists():
        raise ValueError(f"checkpoint {path} has no RNG state for rank {rank}; resume with the same number of processes")
    set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    return state


def _load_plain_state(path: Path, model, optimizer, weights: dict, optimizer_state: dict) -> None:
    params = dict(model.named_parameters())
    unknown = [k for k in weights if k not in params]
    if unknown:
        raise ValueError(f"checkpoint {path} has weights the model lacks: {unknown[:5]}; was it another model?")
    with torch.no_grad():
        for name, value in weights.items():
            params[name].copy_(value.to(params[name].device))
    optimizer.load_state_dict(optimizer_state)
