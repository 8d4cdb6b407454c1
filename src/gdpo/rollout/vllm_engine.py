"""Rollouts with a colocated vLLM engine (``rollout.backend: vllm``); imported only when selected.

Each process owns one engine on its own GPU, for its own prompts (tensor parallel size 1,
vLLM's ``external_launcher`` executor, so the engine runs inside this process and shares
the process group torchrun set up). Per rollout:

    wake the engine (if rollout.vllm_sleep)
    push the policy's current weights into it (LoRA merged), drop its prefix cache
    sample G completions per prompt: n=G, the run's temperature / top_p / top_k /
        max_new_tokens, a seed per prompt derived from (seed, rank, step)
    put the engine to sleep (if rollout.vllm_sleep): weights to CPU RAM, KV cache freed
    -> a Rollout padded and masked exactly like the HF path's (gdpo.rollout.vllm_io)

The weights pushed before a rollout are those after the previous step's last optimizer
step, so every rollout samples from the current policy. The loss never uses vLLM's
logprobs: the HF policy recomputes them, as with the HF backend.

Not run in this project's CI or dev machines (no GPU there); see docs/training.md.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Any

import torch

from gdpo.train import dist
from gdpo.train.checkpoint import rng_state, set_rng_state
from gdpo.train.config import TrainConfig
from gdpo.train.precision import compute_dtype
from gdpo.rollout.hf import Rollout, render_prompts
from gdpo.rollout.vllm_io import (
    engine_dtype,
    engine_folder,
    policy_weights,
    prompt_seeds,
    rollout_from_samples,
)


class VLLMGenerator:
    """The ``vllm`` rollout backend: one engine per process, weights synced before each rollout."""

    def __init__(self, cfg: TrainConfig, info: dist.DistInfo, policy, device: torch.device):
        self.cfg, self.info, self.policy, self.device = cfg, info, policy, device
        dtype = engine_dtype(cfg.model.dtype, compute_dtype(cfg.model.dtype, device))
        self.llm = build_engine(engine_folder(cfg, info.rank), cfg, info, dtype, self._max_model_len())
        self.asleep = False

    def _max_model_len(self) -> int:
        r = self.cfg.rollout
        limit = getattr(self.policy.core.config, "max_position_embeddings", None) or r.max_prompt_tokens + r.max_new_tokens
        return min(r.max_prompt_tokens + r.max_new_tokens, int(limit))

    def generate(self, rows: list[dict[str, Any]], step: int) -> Rollout:
        r, tok = self.cfg.rollout, self.policy.tokenizer
        prompt_ids, prompt_mask = render_prompts(tok, rows, r.max_prompt_tokens)  # [B, P] left-padded
        self.wake()
        push_weights(self.llm, policy_weights(self.policy.core))
        seeds = prompt_seeds(self.cfg.seed, self.info.rank, step, len(rows))
        samples = sample(self.llm, prompt_ids, prompt_mask, [self._params(s) for s in seeds])  # N lists
        self.sleep()
        return rollout_from_samples(prompt_ids.to(self.device), prompt_mask.to(self.device), samples, rows,
                                    r.num_generations, tok)

    def _params(self, seed: int):
        from vllm import SamplingParams

        r = self.cfg.rollout
        return SamplingParams(n=r.num_generations, temperature=r.temperature, top_p=r.top_p,
                              top_k=r.top_k if r.top_k > 0 else -1, max_tokens=r.max_new_tokens, seed=seed,
                              stop_token_ids=[self.policy.tokenizer.eos_token_id], detokenize=False)

    def wake(self) -> None:
        if self.asleep:
            torch.cuda.empty_cache()  # return the update's cached blocks before the engine re-allocates
            self.llm.wake_up()
            self.asleep = False

    def sleep(self) -> None:
        if self.cfg.rollout.vllm_sleep:
            self.llm.sleep(level=1)  # level 1 keeps the weights (in CPU RAM); level 2 would discard them
            self.asleep = True


def build_engine(folder: Path, cfg: TrainConfig, info: dist.DistInfo, dtype: str, max_model_len: int):
    """A ``vllm.LLM`` on this process's GPU, inside this process (external_launcher, TP 1)."""
    from vllm import LLM

    r = cfg.rollout
    set_launcher_env(info)
    with preserved_rng():  # vLLM seeds python / numpy / torch globally; the run keeps its own streams
        return LLM(model=str(folder), tokenizer=str(folder), dtype=dtype, seed=cfg.seed + info.rank,
                   tensor_parallel_size=1, distributed_executor_backend="external_launcher",
                   gpu_memory_utilization=r.vllm_gpu_memory_utilization, enable_sleep_mode=r.vllm_sleep,
                   max_model_len=max_model_len, generation_config="vllm", enable_prefix_caching=True)


def set_launcher_env(info: dist.DistInfo) -> None:
    """external_launcher reads torchrun's variables; a single process sets them for itself."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # the engine core in this process
    for key, value in (("RANK", info.rank), ("LOCAL_RANK", info.local_rank), ("WORLD_SIZE", info.world_size),
                       ("MASTER_ADDR", "127.0.0.1")):
        os.environ.setdefault(key, str(value))
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(_free_port())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def preserved_rng():
    """Python, numpy, torch (and CUDA) RNG states as they were before the block."""
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def push_weights(llm, weights) -> None:
    """Copy (HF name, tensor) pairs into the engine's model in place, then drop stale prefix KV."""
    llm.collective_rpc(_load_on_worker, args=(list(weights),))
    llm.reset_prefix_cache()  # cached prompt KV was computed with the old weights


def _load_on_worker(worker, weights: list[tuple[str, torch.Tensor]]) -> None:
    """Runs on the engine's worker (this process): vLLM's loader maps HF names (fused qkv, ...)."""
    model = worker.get_model() if hasattr(worker, "get_model") else worker.model_runner.model
    model.load_weights(weights)


def sample(llm, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: list) -> list[list[int]]:
    """Token ids of the G samples of each prompt, prompt by prompt (EOS included where hit)."""
    prompts = [{"prompt_token_ids": ids[m.bool()].tolist()} for ids, m in zip(prompt_ids, prompt_mask)]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [list(c.token_ids) for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]
