"""A run's state and side effects: setup, resume, logging, samples, evaluation, checkpoints."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from gdpo.data.base import Task, get_task
from gdpo.rewards.reward_set import RewardSet
from gdpo.train import checkpoint as ckpt
from gdpo.train import dist
from gdpo.train.build import (
    Policy,
    Reference,
    autocast_for,
    build_optimizer,
    load_policy,
    load_reference,
)
from gdpo.train.config import TrainConfig, config_to_dict
from gdpo.train.fsdp import full_parameters, is_sharded, save_pretrained_full
from gdpo.rollout.backends import Generator, check_backend, make_generator
from gdpo.train.logging import RunLogger, truncate_jsonl
from gdpo.train.progress import Progress
from gdpo.train.sampler import PromptSampler

JSONL_OUTPUTS = ("metrics.jsonl", "samples.jsonl", "eval.jsonl")


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: Path
    steps_done: int  # last step completed (counting steps before a resume)
    history: list[dict[str, Any]] = field(default_factory=list)  # this process's metrics per step
    final_model_dir: Path | None = None


@dataclass
class Session:
    cfg: TrainConfig
    info: dist.DistInfo
    task: Task
    policy: Policy
    reference: Reference | None
    rewards: RewardSet
    optimizer: Any
    scheduler: Any
    sampler: PromptSampler
    logger: RunLogger
    progress: Progress
    output_dir: Path
    start_step: int = 0
    resumed: bool = False
    generator: Generator | None = None  # the rollout backend (rollout.backend)
    autocast: Callable[[], Any] = contextlib.nullcontext  # model.dtype's autocast (gdpo.train.precision)

    def prompts_for_step(self) -> list[dict[str, Any]]:
        """This process's contiguous share of the step's prompts (a group never splits)."""
        indices = self.sampler.next_batch()
        mine = indices[dist.rank_slice(len(indices), self.info)]
        return [self.task.train[i] for i in mine]

    def after_step(self, step: int, metrics: dict[str, float], rollout, scored) -> None:
        """Log, write samples, evaluate and checkpoint as configured."""
        cfg = self.cfg
        if self.info.is_main:
            self.logger.log(step, metrics)
            if cfg.logging.samples_every and step % cfg.logging.samples_every == 0:
                self._write_samples(step, rollout, scored)
        if cfg.eval.every and (step % cfg.eval.every == 0 or step == cfg.steps):
            self.evaluate(step)
        every = cfg.checkpoint.every
        if (every and step % every == 0) or step == cfg.steps:
            self.save(step)
        self.progress.update(step, metrics)

    def _write_samples(self, step: int, rollout, scored) -> None:
        local = np.arange(scored.values.shape[0])[scored.local]
        for i in range(min(self.cfg.logging.num_samples, len(rollout))):
            g = local[i]
            self.logger.write("samples", {
                "step": step, "prompt": rollout.rows[i].get("prompt"), "completion": rollout.completions[i],
                "rewards": dict(zip(scored.names, map(_num, scored.values[g]))),
                "advantage": float(scored.advantages[g]), "group": int(scored.group_ids[g]),
            })

    def evaluate(self, step: int) -> dict[str, float]:
        """Greedy completions on the first test prompts; per-reward means to eval.jsonl (main process)."""
        from gdpo.train.evaluate import evaluate_rows

        core = self.policy.core
        # FSDP: every process gathers the weights and evaluates the same rows, because HF generate
        # on a sharded model keeps the processes in step (synced_gpus); the main one logs.
        if not self.task.test or not (self.info.is_main or is_sharded(core)):
            return {}
        rows = self.task.test[: self.cfg.eval.num_prompts]
        with full_parameters(core):
            result = evaluate_rows(core, self.policy.tokenizer, self.rewards, rows, self.cfg)
        if self.info.is_main:
            self.logger.write("eval", {"step": step, **result})
        return result

    def save(self, step: int) -> None:
        state = {"sampler": self.sampler.state()}
        ckpt.save_checkpoint(self.output_dir, step, model=self.policy.core, optimizer=self.optimizer,
                             scheduler=self.scheduler, state=state, rank=self.info.rank,
                             world_size=self.info.world_size, keep_last=self.cfg.checkpoint.keep_last,
                             barrier=lambda: dist.barrier(self.info))

    def finish(self, history: list[dict[str, Any]]) -> TrainResult:
        self.progress.close()
        self.logger.close()
        final = None
        if self.cfg.checkpoint.save_final_model and self.cfg.steps > self.start_step:
            final = self.output_dir / "final"
            self._save_final_model(final)
        dist.barrier(self.info)
        return TrainResult(self.output_dir, max(self.cfg.steps, self.start_step), history, final)

    def _save_final_model(self, path: Path) -> None:
        """A normal HF folder from the main process (FSDP: every process helps gather the weights)."""
        core, tokenizer = self.policy.core, self.policy.tokenizer
        if is_sharded(core):
            save_pretrained_full(core, tokenizer, path, self.info.is_main)
        elif self.info.is_main:
            core.save_pretrained(path)
            tokenizer.save_pretrained(path)


def _num(x: float) -> float | None:
    return None if np.isnan(x) else float(x)


def open_session(cfg: TrainConfig, info: dist.DistInfo, device: torch.device, resume: bool) -> Session:
    """Build every piece of the run; with ``resume``, restore the latest checkpoint."""
    check_backend(cfg)  # rollout.backend=vllm without vllm or CUDA: fail before loading any model
    autocast = autocast_for(cfg, device)  # model.dtype=bfloat16 on a GPU without bf16: fail here too
    out = Path(cfg.output_dir)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.yaml").write_text(yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    task = get_task(cfg.task.name, **cfg.task.params)  # registers the task's rewards first
    policy = load_policy(cfg, info, device)
    reward_set = RewardSet.from_config(cfg.rewards or task.rewards, extra_params={"tokenizer": policy.tokenizer})
    reference = load_reference(cfg, policy, device)
    optimizer, scheduler = build_optimizer(cfg, policy.core)
    sampler = PromptSampler(len(task.train), cfg.rollout.prompts_per_step, cfg.seed)
    start = _maybe_resume(cfg, info, out, policy, optimizer, scheduler, sampler) if resume else 0
    logger = RunLogger(out, cfg.logging, config_to_dict(cfg), enabled=info.is_main)
    progress = Progress(cfg.steps, start, cfg.logging.progress, enabled=info.is_main)
    generator = make_generator(cfg, info, policy, device, autocast)
    return Session(cfg, info, task, policy, reference, reward_set, optimizer, scheduler, sampler,
                   logger, progress, out, start, resumed=start > 0, generator=generator,
                   autocast=autocast)


def _maybe_resume(cfg, info, out: Path, policy, optimizer, scheduler, sampler) -> int:
    found = ckpt.list_checkpoints(out)
    if not found:
        if info.is_main:
            print(f"[gdpo] --resume: no checkpoint in {out / 'checkpoints'}; starting from step 0")
            for name in JSONL_OUTPUTS:
                truncate_jsonl(out / name, 0)
        return 0
    state = ckpt.load_checkpoint(found[-1], model=policy.core, optimizer=optimizer, scheduler=scheduler,
                                 rank=info.rank)
    if state.get("world_size", 1) != info.world_size:
        raise ValueError(f"checkpoint {found[-1]} was written by {state['world_size']} processes; "
                         f"resume with the same number (now {info.world_size})")
    sampler.load_state(state["sampler"])
    if info.is_main:
        for name in JSONL_OUTPUTS:  # drop lines of steps after the checkpoint, and half-written ones
            truncate_jsonl(out / name, state["step"])
        print(f"[gdpo] resumed from {found[-1]} (step {state['step']})")
    dist.barrier(info)
    return int(state["step"])
