"""Rollout backends behind one small interface, chosen once per run (``rollout.backend``).

    generator = make_generator(cfg, info, policy, device)   # in open_session
    rollout = generator.generate(rows, step)                # each step of the loop

* ``hf`` (:class:`HFGenerator`): HF ``generate`` on the policy itself (:func:`gdpo.rollout.hf.generate`).
* ``vllm`` (:class:`gdpo.rollout.vllm_engine.VLLMGenerator`): a colocated vLLM engine on this
  process's GPU, imported only when selected.
* Multi-turn: rows that name an environment (an ``env`` column, :mod:`gdpo.envs`) are rolled
  out turn by turn (:func:`gdpo.rollout.multi_turn.generate_multi_turn`) on HF ``generate``;
  the vLLM backend refuses them (:func:`check_rows`). :func:`check_backend` runs before any model is
  loaded, so a machine without vLLM or CUDA fails at once with the fix in the message.
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
            from gdpo.rollout.multi_turn import generate_multi_turn

            with self.autocast():
                return generate_multi_turn(self.policy.core, self.policy.tokenizer, rows,
                                           num_generations=r.num_generations, max_new_tokens=r.max_new_tokens,
                                           max_prompt_tokens=r.max_prompt_tokens, temperature=r.temperature,
                                           top_p=r.top_p, top_k=r.top_k)
        with self.autocast():  # the same numerics as the logprobs of the update
            return generate(self.policy.core, self.policy.tokenizer, rows, num_generations=r.num_generations,
                            max_new_tokens=r.max_new_tokens, max_prompt_tokens=r.max_prompt_tokens,
                            temperature=r.temperature, top_p=r.top_p, top_k=r.top_k)


def is_multi_turn(rows: list[dict[str, Any]]) -> bool:
    """Rows that name an environment get multi-turn episodes (all or none of a batch)."""
    flags = {bool(row.get("env")) for row in rows}
    if len(flags) > 1:
        raise ValueError("a rollout batch mixes rows with and without an 'env' column; a task's rows "
                         "must all be multi-turn (env set) or all single-turn")
    return flags == {True}


def check_rows(cfg: TrainConfig, rows: list[dict[str, Any]]) -> None:
    """Fail before loading models when the task's rows need what the backend lacks."""
    if rows and cfg.rollout.backend != "hf" and is_multi_turn(rows[:1]):
        raise ConfigError(f"task {cfg.task.name!r} is multi-turn (its rows set 'env') and rollout.backend = "
                          f"{cfg.rollout.backend!r} runs single turns only: set rollout.backend=hf")


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
                   autocast: Callable[[], Any] = contextlib.nullcontext) -> Generator:
    """The run's rollout backend (call :func:`check_backend` first, before loading models)."""
    if cfg.rollout.backend == "hf":
        return HFGenerator(cfg, policy, autocast)
    from gdpo.rollout.vllm_engine import VLLMGenerator  # vllm is imported only here

    return SingleTurnOnly(cfg, VLLMGenerator(cfg, info, policy, device))


class SingleTurnOnly:
    """A backend without multi-turn episodes: refuses rows that name an environment."""

    def __init__(self, cfg: TrainConfig, inner: Generator):
        self.cfg, self.inner = cfg, inner

    def generate(self, rows: list[dict[str, Any]], step: int) -> Rollout:
        check_rows(self.cfg, rows)
        return self.inner.generate(rows, step)

    def __getattr__(self, name: str) -> Any:  # the engine's other methods (sleep, weights sync, ...)
        return getattr(self.inner, name)
