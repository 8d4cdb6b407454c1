"""Start N CPU processes that form a gloo process group through a file, not a TCP port.

``run_ranks(fn, 2, tmp_path, *args)`` calls ``fn(rank, *args)`` in 2 fresh processes with
RANK / WORLD_SIZE / LOCAL_RANK set and ``GDPO_DIST_INIT_METHOD=file://...`` pointing at a file
in ``tmp_path``: ``gdpo.train.dist.setup()`` then meets there, so concurrent tests cannot race
for a free port. A process that hangs or dies fails the test instead of stalling the suite.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import torch
import torch.multiprocessing as mp

from gdpo.train.dist import INIT_METHOD_ENV


def rendezvous_file(workdir: Path) -> str:
    """A fresh ``file://`` init method in ``workdir`` (the file must not exist yet)."""
    return f"file://{Path(workdir).resolve() / f'rendezvous-{uuid.uuid4().hex}'}"


def _entry(rank: int, world: int, init_method: str, fn, args: tuple) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), OMP_NUM_THREADS="1",
                      HF_HUB_OFFLINE="1", **{INIT_METHOD_ENV: init_method})
    torch.set_num_threads(1)
    fn(rank, *args)


def run_ranks(fn, world: int, workdir: Path, *args, timeout_s: float = 240.0) -> None:
    """Run ``fn(rank, *args)`` on ``world`` processes; raise if one fails or the group outlives ``timeout_s``."""
    ctx = mp.start_processes(_entry, args=(world, rendezvous_file(workdir), fn, args), nprocs=world,
                             join=False, start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not ctx.join(timeout=1.0):  # raises ProcessRaisedException / ProcessExitedException on failure
        if time.monotonic() > deadline:
            for proc in ctx.processes:
                if proc.is_alive():
                    proc.kill()
            raise TimeoutError(f"{world} processes running {fn.__name__} did not finish in {timeout_s:.0f} s "
                               f"(a collective that not every rank reached?)")
