"""The training recipe, top to bottom: rollout -> rewards -> advantages -> loss -> optimizer.

    for step in 1..steps:
        rows        = this process's share of the step's prompts
        rollout     = G sampled completions per prompt (rollout.backend: HF generate or vLLM)
        scored      = rewards [N, K] of the global batch -> advantages [N] (gdpo, grpo, ...)
        batch       = our block of samples, old / reference logprobs when needed
        figures     = update_policy(...)   # epochs x minibatches of clipped-surrogate steps
        log, sample, evaluate, checkpoint
        SIGTERM / SIGINT seen by any process -> checkpoint this step and return (stopped_by)
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import torch

from gdpo.rewards.score_cache import cache_metrics
from gdpo.train import dist
from gdpo.train.build import (
    device_for,
    reproducible_mode,
    seed_everything,
    update_settings,
)
from gdpo.train.config import TrainConfig, config_from_dict, config_to_dict, load_config
from gdpo.train.fsdp import full_parameters
from gdpo.train.metrics import advantage_metrics, length_metrics, reward_metrics
from gdpo.rollout.hf import Rollout
from gdpo.train.scoring import ScoredBatch, score_and_normalize
from gdpo.train.run_folder import check_run_folder
from gdpo.train.session import Session, TrainResult, open_session
from gdpo.train.stop import StopSignals
from gdpo.train.update import NonFiniteError, UpdateBatch, batched_logprobs, update_policy


def as_config(config: TrainConfig | dict | str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config_from_dict(config_to_dict(config), overrides) if overrides else config
    if isinstance(config, dict):
        return config_from_dict(config, overrides)
    return load_config(None if config is None else str(config), overrides)


def train(config: TrainConfig | dict | str | Path | None = None, *, overrides: list[str] | None = None,
          resume: bool = False, overwrite: bool = False) -> TrainResult:
    """Train as ``config`` says (a TrainConfig, a dict, a YAML path, or None = defaults).

    An ``output_dir`` that holds a run is refused (RunFolderError) unless ``resume`` continues
    it or ``overwrite`` replaces it. SIGTERM / SIGINT stop the run after the current step with a
    checkpoint (``TrainResult.stopped_by``); a NaN / inf it cannot skip raises NonFiniteError.
    """
    cfg = as_config(config, overrides)
    info = dist.setup()
    try:
        with reproducible_mode(cfg.reproducible), StopSignals() as signals:
            return _run(cfg, info, resume, overwrite, signals)
    finally:
        dist.teardown(info)


def _run(cfg: TrainConfig, info: dist.DistInfo, resume: bool, overwrite: bool, signals: StopSignals) -> TrainResult:
    seed_everything(cfg.seed)
    device = device_for(info)
    s = open_session(cfg, info, device, resume, overwrite)  # task, policy, rewards, optimizer, logger, restored state
    try:
        return _steps(cfg, info, s, signals)
    finally:
        s.close()


def _steps(cfg: TrainConfig, info: dist.DistInfo, s: Session, signals: StopSignals) -> TrainResult:
    seed_offset_rng(cfg, info, s.resumed)
    settings = update_settings(cfg)
    autocast = s.autocast  # chosen once by the session (model.dtype)
    history, skipped_in_a_row = [], 0
    for step in range(s.start_step + 1, cfg.steps + 1):
        t0 = time.perf_counter()
        rows = s.prompts_for_step()
        with full_parameters(s.policy.core):  # FSDP: gathered, so ranks may sample different lengths
            rollout = s.generator.generate(rows, step)  # gdpo.rollout.backends
        t_gen = time.perf_counter() - t0
        scored = score_and_normalize(s.rewards, rollout.completions, rollout.rows, rollout.lengths.numpy(),
                                     cfg.rollout.num_generations, method=cfg.method,
                                     method_options=cfg.method_options,
                                     token_weighted=cfg.token_weighted_batch_norm,
                                     dynamic_sampling=cfg.update.dynamic_sampling, info=info)
        batch = make_update_batch(cfg, s, rollout, scored, autocast)
        if scored.keep.any():
            figures = update(s, batch, settings, info, autocast, step)
        else:
            figures = {"update/skipped": 1.0}  # dynamic sampling dropped every group
        figures.update(cache_metrics(s.rewards))  # learned rewards' score-cache hit rate (cumulative)
        skipped_in_a_row = check_nonfinite(figures, step, cfg, s, skipped_in_a_row)
        elapsed = time.perf_counter() - t0
        metrics = step_metrics(scored, rollout, figures, elapsed, t_gen, cfg)
        history.append({"step": step, **metrics})
        s.after_step(step, metrics, rollout, scored)
        signum = signals.agreed(info) if step < cfg.steps else 0  # every process stops after the same step
        if signum:
            return s.stop(step, signum, history)
    return s.finish(history)


def update(s: Session, batch: UpdateBatch, settings, info: dist.DistInfo, autocast, step: int) -> dict[str, float]:
    """The policy update of ``step``; a NaN / inf that stops the run is reported with the step."""
    try:
        return update_policy(s.policy.model, s.optimizer, s.scheduler, batch, settings, info, autocast)
    except NonFiniteError as exc:
        raise NonFiniteError(f"step {step}: {exc}; {s.checkpoint_note()}") from None


def check_nonfinite(figures: dict[str, float], step: int, cfg: TrainConfig, s: Session, in_a_row: int) -> int:
    """Count steps whose every optimizer step was skipped (NaN / inf); stop after nonfinite_patience."""
    skipped = figures.get("update/nonfinite_skipped", 0.0)
    if not skipped:
        return 0
    total = cfg.update.ppo_epochs * cfg.update.num_minibatches
    if s.info.is_main:
        print(f"[gdpo] step {step}: gradient norm not finite; {int(skipped)} of {total} optimizer steps "
              f"skipped (optim.on_nonfinite=skip)", file=sys.stderr, flush=True)
    in_a_row = in_a_row + 1 if skipped == total else 0
    if in_a_row >= cfg.optim.nonfinite_patience:
        raise NonFiniteError(
            f"step {step}: every optimizer step of the last {in_a_row} steps had a NaN / inf gradient norm "
            f"(optim.nonfinite_patience={cfg.optim.nonfinite_patience}); the run stopped, {s.checkpoint_note()}; "
            f"lower optim.lr or check the rewards")
    return in_a_row


def seed_offset_rng(cfg: TrainConfig, info: dist.DistInfo, resumed: bool) -> None:
    """Give each process its own sampling stream (unless the RNG came from a checkpoint)."""
    if info.rank and not resumed:
        seed_everything(cfg.seed + 1000 * info.rank)


def make_update_batch(cfg: TrainConfig, s: Session, rollout: Rollout, scored: ScoredBatch, autocast) -> UpdateBatch:
    """Our block of the batch; old logprobs only when a batch gets several optimizer steps."""
    keep = torch.as_tensor(scored.keep[scored.local])  # [N_local]
    batch = UpdateBatch(
        prompt_ids=rollout.prompt_ids, prompt_mask=rollout.prompt_mask,
        completion_ids=rollout.completion_ids,
        completion_mask=rollout.completion_mask * keep[:, None].to(rollout.completion_mask.dtype),
        advantages=torch.as_tensor(scored.advantages[scored.local], dtype=torch.float32,
                                   device=rollout.completion_ids.device),
    )
    micro, temp = cfg.update.micro_batch_size, cfg.rollout.temperature
    if cfg.update.ppo_epochs * cfg.update.num_minibatches > 1:
        batch.old_logp = batched_logprobs(s.policy.model, batch, micro, temp, autocast)
    if s.reference is not None:
        with s.reference.context():
            batch.ref_logp = batched_logprobs(s.reference.model, batch, micro, temp, autocast)
    return batch


def step_metrics(scored: ScoredBatch, rollout: Rollout, figures: dict[str, float], elapsed: float,
                 t_gen: float, cfg: TrainConfig) -> dict[str, float]:
    """The step's row of metrics.jsonl (global batch figures; timing of this process)."""
    truncated = scored.lengths >= cfg.rollout.max_new_tokens
    out = reward_metrics(scored.values, scored.names, scored.weights, scored.group_ids, scored.errors)
    kept = scored.keep
    out.update(advantage_metrics(scored.advantages[kept], scored.group_ids[kept]) if kept.any() else {})
    out.update(length_metrics(scored.lengths, truncated))
    out.update(figures)
    out.update(rollout.metrics)  # backend figures: multi-turn episodes (gdpo.rollout.multi_turn)
    out["kl"] = out.get("loss/kl", 0.0)
    out["clip_frac"] = out.get("loss/clip_frac", 0.0)
    out["entropy"] = out.get("loss/entropy", float("nan"))
    out["groups/kept_frac"] = float(kept.mean())
    out["time/step_s"] = elapsed
    out["time/generate_s"] = t_gen
    out["tokens_per_s"] = float(scored.lengths.sum()) / max(elapsed, 1e-9)
    return out


def load_and_train(path: str | None, overrides: list[str], output_dir: str | None, resume: bool,
                   overwrite: bool = False) -> TrainResult:
    """The CLI's entry: a config file (or, resuming without one, the run's config.yaml), overrides,
    output dir. Resuming a folder without config.yaml is refused before anything loads."""
    if output_dir:
        overrides = [*overrides, f"output_dir={output_dir}"]
    if path is None and resume:
        folder = Path(output_dir or TrainConfig().output_dir)
        check_run_folder(folder, resume=True, overwrite=overwrite)
        path = str(folder / "config.yaml")
    return train(load_config(path, overrides), resume=resume, overwrite=overwrite)


__all__ = ["TrainResult", "as_config", "load_and_train", "train"]
