"""torch.distributed in a few helpers; a single process works with no setup at all.

Launch with ``torchrun --nproc_per_node 2 -m gdpo train ...`` (or ``accelerate launch``):
the usual RANK / WORLD_SIZE / MASTER_ADDR variables select the process group; gloo on CPU,
nccl on CUDA.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


INIT_METHOD_ENV = "GDPO_DIST_INIT_METHOD"


def setup() -> DistInfo:
    """Join the process group the launcher describes (no-op for a single process).

    torchrun / accelerate set RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT (``env://``).
    Setting ``GDPO_DIST_INIT_METHOD=file:///shared/path`` (plus RANK and WORLD_SIZE) meets at a
    file instead of a TCP port, so processes started by hand cannot collide on a port.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        _init_process_group(world)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local)


def _init_process_group(world: int) -> None:
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    init_method = os.environ.get(INIT_METHOD_ENV)
    if not init_method:
        dist.init_process_group(backend=backend)
        return
    if "RANK" not in os.environ:
        raise ValueError(f"{INIT_METHOD_ENV}={init_method!r} needs RANK (0..{world - 1}) in the environment "
                         f"of each process; set it, or unset {INIT_METHOD_ENV} to use torchrun's env://")
    dist.init_process_group(backend=backend, init_method=init_method, rank=int(os.environ["RANK"]),
                            world_size=world)


def teardown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        # Free what still refers to the group (FSDP state in reference cycles) before destroying it:
        # otherwise a process sometimes aborts at exit ("terminate called without an active exception").
        gc.collect()
        dist.destroy_process_group()


def all_gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order (a one-element list without distribution)."""
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Sum of ``x`` over processes (a copy, on ``x``'s device)."""
    return _all_reduce(x, info, dist.ReduceOp.SUM) if info.enabled else x.detach().clone()


def all_reduce_max(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Elementwise maximum of ``x`` over processes (a copy, on ``x``'s device)."""
    return _all_reduce(x, info, dist.ReduceOp.MAX) if info.enabled else x.detach().clone()


def _all_reduce(x: torch.Tensor, info: DistInfo, op) -> torch.Tensor:
    y = x.detach().clone()
    if dist.get_backend() == "nccl" and not y.is_cuda:  # nccl reduces CUDA tensors only
        y = y.to(f"cuda:{info.local_rank}")
    dist.all_reduce(y, op=op)
    return y.to(x.device)


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def rank_slice(total: int, info: DistInfo) -> slice:
    """This process's contiguous share of ``total`` items (total must divide evenly)."""
    if total % info.world_size:
        raise ValueError(
            f"rollout.prompts_per_step={total} must be divisible by the number of processes "
            f"({info.world_size}) so that every group stays on one process"
        )
    per = total // info.world_size
    return slice(info.rank * per, (info.rank + 1) * per)
