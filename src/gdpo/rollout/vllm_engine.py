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

Multi-turn rows (an ``env`` column) run the same episode loop as the HF backend
(:func:`gdpo.rollout.multi_turn.generate_multi_turn`: parse calls, execute, append the tool
messages, mask them), with each model turn sampled by the engine (:class:`VLLMTurns`): one
request per running sample, its whole context (prompt + trajectory so far) as token ids, a
seed per (step, turn, sample). The prefix cache keeps earlier turns' KV, so a turn costs
about its new tokens. ``max_model_len`` covers the longest trajectory budget of the task's
rows (:func:`gdpo.rollout.vllm_io.engine_context`).

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
from gdpo.rollout.multi_turn import eos_ids, generate_multi_turn, is_multi_turn, until_eos
from gdpo.rollout.vllm_io import (
    engine_context,
    engine_dtype,
    engine_folder,
    policy_weights,
    prompt_seeds,
    rollout_from_samples,
    turn_seeds,
)


class VLLMGenerator:
    """The ``vllm`` rollout backend: one engine per process, weights synced before each rollout."""

    def __init__(self, cfg: TrainConfig, info: dist.DistInfo, policy, device: torch.device,
                 rows: list[dict[str, Any]] | None = None):
        """``rows``: the task's training rows, to size ``max_model_len`` (multi-turn budgets)."""
        self.cfg, self.info, self.policy, self.device = cfg, info, policy, device
        dtype = engine_dtype(cfg.model.dtype, compute_dtype(cfg.model.dtype, device))
        model_limit = getattr(policy.core.config, "max_position_embeddings", None)
        self.max_model_len = engine_context(cfg, rows or [], model_limit)
        self.llm = build_engine(engine_folder(cfg, info.rank), cfg, info, dtype, self.max_model_len)
        self.asleep = False

    def generate(self, rows: list[dict[str, Any]], step: int) -> Rollout:
        self.wake()
        push_weights(self.llm, policy_weights(self.policy.core))
        try:
            if is_multi_turn(rows):
                return self._multi_turn(rows, step)
            return self._single_turn(rows, step)
        finally:
            self.sleep()

    def _single_turn(self, rows: list[dict[str, Any]], step: int) -> Rollout:
        r, tok = self.cfg.rollout, self.policy.tokenizer
        prompt_ids, prompt_mask = render_prompts(tok, rows, r.max_prompt_tokens)  # [B, P] left-padded
        seeds = prompt_seeds(self.cfg.seed, self.info.rank, step, len(rows))
        params = [self._params(seed, r.num_generations, r.max_new_tokens) for seed in seeds]
        samples = sample(self.llm, prompt_ids, prompt_mask, params)  # N lists
        return rollout_from_samples(prompt_ids.to(self.device), prompt_mask.to(self.device), samples, rows,
                                    r.num_generations, tok)

    def _multi_turn(self, rows: list[dict[str, Any]], step: int) -> Rollout:
        r = self.cfg.rollout
        turns = VLLMTurns(self.llm, self._params, eos_ids(self.policy.tokenizer), self.max_model_len,
                          lambda turn, n: turn_seeds(self.cfg.seed, self.info.rank, step, turn, n))
        return generate_multi_turn(self.policy.core, self.policy.tokenizer, rows, num_generations=r.num_generations,
                                   max_new_tokens=r.max_new_tokens, max_prompt_tokens=r.max_prompt_tokens,
                                   turns=turns, max_context=self.max_model_len)

    def _params(self, seed: int, n: int, max_tokens: int):
        from vllm import SamplingParams

        r = self.cfg.rollout
        return SamplingParams(n=n, temperature=r.temperature, top_p=r.top_p,
                              top_k=r.top_k if r.top_k > 0 else -1, max_tokens=max_tokens, seed=seed,
                              stop_token_ids=eos_ids(self.policy.tokenizer), detokenize=False)

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


class VLLMTurns:
    """Model turns of multi-turn episodes from the engine (a ``TurnSampler``, see multi_turn).

    One request per running sample: its context (prompt + trajectory so far) as token ids,
    ``n = 1``, at most ``limit`` new tokens (and no more than the context leaves of
    ``max_model_len``), the seed ``seeds(turn, N)[sample index]``. Every running sample is at
    the same turn (episodes advance together), so ``turn`` is the number of turns taken.
    """

    def __init__(self, llm, params, eos_ids: list[int], max_model_len: int, seeds):
        self.llm, self.params, self.eos_ids, self.max_model_len, self.seeds = llm, params, eos_ids, max_model_len, seeds

    def __call__(self, active: list, limit: int) -> list[list[int]]:
        turn = len(active[0].episode.turns)
        seeds = self.seeds(turn, 1 + max(s.index for s in active))
        contexts = [s.prompt + s.ids for s in active]
        prompts = [{"prompt_token_ids": c} for c in contexts]
        params = [self.params(seeds[s.index], 1, max(1, min(limit, self.max_model_len - len(c))))
                  for s, c in zip(active, contexts)]
        outputs = self.llm.generate(prompts, params, use_tqdm=False)
        return [until_eos(list(out.outputs[0].token_ids), self.eos_ids) for out in outputs]


def sample(llm, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, params: list) -> list[list[int]]:
    """Token ids of the G samples of each prompt, prompt by prompt (EOS included where hit)."""
    prompts = [{"prompt_token_ids": ids[m.bool()].tolist()} for ids, m in zip(prompt_ids, prompt_mask)]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    return [list(c.token_ids) for out in outputs for c in sorted(out.outputs, key=lambda c: c.index)]
