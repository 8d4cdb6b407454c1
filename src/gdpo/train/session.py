"""A run's state and side effects: setup, resume, logging, samples, evaluation, checkpoints."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gdpo.data.base import Task, get_task
from gdpo.models import load_tokenizer
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
from gdpo.rollout.multi_turn import is_multi_turn
from gdpo.train.logging import RunLogger
from gdpo.train.progress import Progress
from gdpo.train.run_folder import check_run_folder, prepare_run_folder
from gdpo.train.sampler import PromptSampler
from gdpo.train.update import NonFiniteError, nonfinite_weights


@dataclass
class TrainResult:
    """What a run produced."""

    output_dir: Path
    steps_done: int  # last step completed (counting steps before a resume)
    history: list[dict[str, Any]] = field(default_factory=list)  # this process's metrics per step
    final_model_dir: Path | None = None
    stopped_by: int = 0  # the signal (SIGTERM, SIGINT) that stopped the run after steps_done; 0 = ran to the end


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
    saved_step: int = 0  # the step of the newest checkpoint (written or resumed from)
    closed: bool = False

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
        """Checkpoint ``step``; weights with a NaN / inf are never written (NonFiniteError instead)."""
        bad = int(dist.all_reduce_sum(torch.tensor(nonfinite_weights(self.policy.core)), self.info))
        if bad:
            raise NonFiniteError(f"{bad} trainable weights are NaN or inf; checkpoint step {step} was not written "
                                 f"({self.checkpoint_note()})")
        state = {"sampler": self.sampler.state()}
        ckpt.save_checkpoint(self.output_dir, step, model=self.policy.core, optimizer=self.optimizer,
                             scheduler=self.scheduler, state=state, rank=self.info.rank,
                             world_size=self.info.world_size, keep_last=self.cfg.checkpoint.keep_last,
                             barrier=lambda: dist.barrier(self.info))
        self.saved_step = step

    def checkpoint_note(self) -> str:
        """For stop messages: which checkpoint a resume would start from."""
        if self.saved_step:
            return f"the newest checkpoint (step {self.saved_step}) is intact"
        return "no checkpoint was written yet"

    def close(self) -> None:
        """Flush and close the outputs (also when the run stops with an error); once."""
        if not self.closed:
            self.closed = True
            self.progress.close()
            self.logger.close()

    def finish(self, history: list[dict[str, Any]]) -> TrainResult:
        self.close()
        final = None
        if self.cfg.checkpoint.save_final_model and self.cfg.steps > self.start_step:
            final = self.output_dir / "final"
            self._save_final_model(final)
        dist.barrier(self.info)
        return TrainResult(self.output_dir, max(self.cfg.steps, self.start_step), history, final)

    def stop(self, step: int, signum: int, history: list[dict[str, Any]]) -> TrainResult:
        """End early after ``step`` (a signal): checkpoint it unless just done; no final model."""
        if self.saved_step != step:
            self.save(step)
        self.close()
        dist.barrier(self.info)
        return TrainResult(self.output_dir, step, history, None, stopped_by=signum)

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


def open_session(cfg: TrainConfig, info: dist.DistInfo, device: torch.device, resume: bool,
                 overwrite: bool = False) -> Session:
    """Build every piece of the run; with ``resume``, restore the latest checkpoint.

    The output folder changes only after all of it is built (see :mod:`gdpo.train.run_folder`):
    a run that fails to start (a bad task parameter, a checkpoint of another model) leaves it as
    it was.
    """
    check_backend(cfg)  # rollout.backend=vllm without vllm or CUDA: fail before loading any model
    autocast = autocast_for(cfg, device)  # model.dtype=bfloat16 on a GPU without bf16: fail here too
    out = Path(cfg.output_dir)
    check_run_folder(out, resume=resume, overwrite=overwrite)  # a run there already / none to resume
    dist.barrier(info)  # every process looked before the main one changes the folder
    task = get_task(cfg.task.name, **cfg.task.params)  # registers the task's rewards first
    is_multi_turn(task.train)  # a task mixing single- and multi-turn rows: refused before any model loads
    tokenizer = load_tokenizer(cfg.model.name)  # the policy's, without the model (cheap)
    reward_set = build_rewards(cfg, task, tokenizer)  # bad reward values, estimator options, sandbox
    check_prompts(cfg, task, tokenizer, announce=info.is_main)  # prompts over the limit: counted, named
    policy = load_policy(cfg, info, device)
    reference = load_reference(cfg, policy, device)
    optimizer, scheduler = build_optimizer(cfg, policy.core)
    sampler = PromptSampler(len(task.train), cfg.rollout.prompts_per_step, cfg.seed)
    start, found = _restore(info, out, policy, optimizer, scheduler, sampler) if resume else (0, None)
    if info.is_main:
        changed = prepare_run_folder(out, config_to_dict(cfg), resumed_step=start if resume else None,
                                     overwrite=overwrite)
        _announce(out, resume, found, start, changed)
    dist.barrier(info)
    logger = RunLogger(out, cfg.logging, config_to_dict(cfg), enabled=info.is_main)
    progress = Progress(cfg.steps, start, cfg.logging.progress, enabled=info.is_main)
    generator = make_generator(cfg, info, policy, device, autocast, rows=task.train)
    return Session(cfg, info, task, policy, reference, reward_set, optimizer, scheduler, sampler,
                   logger, progress, out, start, resumed=start > 0, generator=generator,
                   autocast=autocast, saved_step=start)


def check_prompts(cfg: TrainConfig, task: Task, tokenizer, announce: bool = True) -> None:
    """Name the data the task read, and count the training prompts ``render_prompts`` would cut
    (``rollout.long_prompts``: warn prints the count, error stops the run before any model loads)."""
    from gdpo.rollout.hf import count_long_prompts
    from gdpo.train.config_io import ConfigError

    source = task.info.get("path") or task.info.get("source") or task.info.get("data")
    if announce and source:
        print(f"[gdpo] task {task.name!r} read {source}", file=sys.stderr)
    rows = [row for row in task.train if isinstance(row.get("prompt"), list)]
    long = count_long_prompts(tokenizer, rows, cfg.rollout.max_prompt_tokens)
    if not long.count:
        return
    if cfg.rollout.long_prompts == "error":
        raise ConfigError(f"rollout.max_prompt_tokens = {cfg.rollout.max_prompt_tokens}: {long.message()}; raise "
                          f"it to {long.longest}, or set rollout.long_prompts=warn to train on the cut prompts")
    if announce:
        print(f"[gdpo] warning: {long.message()}; raise rollout.max_prompt_tokens to {long.longest} to keep "
              f"them whole (rollout.long_prompts=error stops instead)", file=sys.stderr)


def build_rewards(cfg: TrainConfig, task: Task, tokenizer=None) -> RewardSet:
    """The run's reward set, built and checked before any model loads.

    Rewards that count tokens get the policy's tokenizer (loaded alone when not given: cheap). The
    estimator's options are checked against the real reward count K (SAW's ``offsets`` need it),
    and a run with code rewards refuses a sandbox weaker than ``sandbox_min_level``.
    """
    from gdpo.advantages import check_options
    from gdpo.train.config_io import ConfigError

    entries = cfg.rewards or task.rewards
    try:
        check_options(cfg.method, cfg.method_options, num_rewards=len(entries))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"method_options ({cfg.method}, {len(entries)} rewards): {exc}") from exc
    tokenizer = load_tokenizer(cfg.model.name) if tokenizer is None else tokenizer
    reward_set = RewardSet.from_config(entries, extra_params={"tokenizer": tokenizer})
    if any(_runs_programs(fn) for fn in reward_set.fns):
        _require_sandbox(cfg.sandbox_min_level)
    return reward_set


def _runs_programs(fn) -> bool:
    """A reward whose callable lives in the code-reward module (or wraps one) runs sandboxed programs."""
    seen = 0
    while fn is not None and seen < 8:  # transforms (noisy, negated) keep the wrapped reward
        if getattr(fn, "__module__", "") == "gdpo.rewards.code":
            return True
        fn, seen = getattr(fn, "__wrapped__", None), seen + 1
    return False


def _require_sandbox(min_level: str) -> None:
    from gdpo.rewards import code
    from gdpo.rewards.sandbox import SandboxError, require_level
    from gdpo.train.config_io import ConfigError

    try:
        require_level(min_level)
    except SandboxError as exc:
        raise ConfigError(f"sandbox_min_level = {min_level!r}: {exc}") from exc
    code.configure(min_level=min_level)


def _restore(info, out: Path, policy, optimizer, scheduler, sampler) -> tuple[int, Path | None]:
    """Load the newest checkpoint into the run's pieces (reads only); (its step, its path) or (0, None)."""
    found = ckpt.list_checkpoints(out)
    if not found:
        return 0, None
    state = ckpt.load_checkpoint(found[-1], model=policy.core, optimizer=optimizer, scheduler=scheduler,
                                 rank=info.rank)
    if state.get("world_size", 1) != info.world_size:
        raise ValueError(f"checkpoint {found[-1]} was written by {state['world_size']} processes; "
                         f"resume with the same number (now {info.world_size})")
    sampler.load_state(state["sampler"])
    return int(state["step"]), found[-1]


def _announce(out: Path, resume: bool, found: Path | None, start: int, changed: list[str]) -> None:
    if not resume:
        return
    if found is None:
        print(f"[gdpo] --resume: no checkpoint in {out / 'checkpoints'}; starting from step 0")
    else:
        print(f"[gdpo] resumed from {found} (step {start})")
    if changed:
        print(f"[gdpo] settings changed since the run's config.yaml: {'; '.join(changed)}")
