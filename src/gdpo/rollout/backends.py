"""Rollout backends behind one small interface, chosen once per run (``rollout.backend``).

    generator = make_generator(cfg, info, policy, device)   # in open_session
    rollout = generator.generate(rows, step)                # each step of the loop

* ``hf`` (:class:`HFGenerator`): HF ``generate`` on the policy itself (:func:`gdpo.rollout.hf.generate`).
* ``vllm`` (:class:`gdpo.rollout.vllm_engine.VLLMGenerator`): a colocated vLLM engine on this
  process's GPU, imported only when selected.
* Multi-turn: rows that name an environment (an ``env`` column, :mod:`gdpo.envs`) are rolled
  out turn by turn (:func:`gdpo.rollout.multi_turn.generate_multi_turn`) on either backend:
  HF ``generate`` or the vLLM engine samples each model turn. :func:`check_backend` runs before
  any model is loaded, so a machine without vLLM or CUDA fails at once with the fix in the message.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable
from typing import Any, Protocol

import torch

from gdpo.train import dist
from gdpo.train.config import TrainConfig
from gdpo.train.config_io import ConfigError
from gdpo.rollout.hf import Rollout, generate
from gdpo.rollout.multi_turn import generate_multi_turn, is_multi_turn


class Generator(Protocol):
    """Samples ``rollout.num_generations`` completions for each row with the current policy."""

    def generate(self, rows: list[dict[str, Any]], step: int) -> Rollout: ...


class HFGenerator:
    """HF ``generate`` on the policy (torch's RNG; ``step`` is not used)."""

    def __init__(self, cfg: TrainConfig, policy, autocast: Callable[[], Any] = contextlib.nullcontext):
        self.cfg, self.policy, self.autocast = cfg, policy, autocast

    def generate(self, rows: list[dict[str, Any]], step: int) -> Rollout:
        r = self.cfg.rollout
        if is_multi_turn(rows):
            with self.autocast():
                return generate_multi_turn(self.policy.core, self.policy.tokenizer, rows,
                                           num_generations=r.num_generations, max_new_tokens=r.max_new_tokens,
                                           max_prompt_tokens=r.max_prompt_tokens, temperature=r.temperature,
                                           top_p=r.top_p, top_k=r.top_k)
        with self.autocast():  # the same numerics as the logprobs of the update
            return generate(self.policy.core, self.policy.tokenizer, rows, num_generations=r.num_generations,
                            max_new_tokens=r.max_new_tokens, max_prompt_tokens=r.max_prompt_tokens,
                            temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)


VLLM_FIX = "pip install vllm on a CUDA machine, or set rollout.backend=hf"


def check_backend(cfg: TrainConfig) -> None:
    """Fail before loading models when ``rollout.backend`` cannot run here."""
    if cfg.rollout.backend == "hf":
        return
    if not vllm_installed():
        raise ConfigError(f"rollout.backend = 'vllm' but vllm is not installed: {VLLM_FIX}")
    if not torch.cuda.is_available():
        raise ConfigError(f"rollout.backend = 'vllm' needs a CUDA GPU and torch sees none "
                          f"(torch {torch.__version__}): {VLLM_FIX}")


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_generator(cfg: TrainConfig, info: dist.DistInfo, policy, device: torch.device,
                   autocast: Callable[[], Any] = contextlib.nullcontext,
                   rows: list[dict[str, Any]] | None = None) -> Generator:
    """The run's rollout backend (call :func:`check_backend` first, before loading models).

    ``rows``: the task's training rows (all single- or all multi-turn, as the session checks);
    the vLLM engine sizes its context from them (a multi-turn task's trajectory budgets).
    """
    if cfg.rollout.backend == "hf":
        return HFGenerator(cfg, policy, autocast)
    from gdpo.rollout.vllm_engine import VLLMGenerator  # vllm is imported only here

    return VLLMGenerator(cfg, info, policy, device, rows)
