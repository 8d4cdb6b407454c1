"""Supervised warm start: TRL's ``SFTTrainer`` on our config, model loading, metrics and layout.

    cfg   = load_sft_config(...)          # every check before any model loads
    data  = load_sft_data(cfg)            # prompt-completion chat examples (gdpo.train.sft_data)
    model = gdpo.models.load_model_and_tokenizer(cfg.model.name)   # 'tiny', 'smollm2', a folder
    SFTTrainer(completion_only_loss=True) # loss on the assistant reply's tokens only
    <output_dir>/final                    # a plain HF folder (LoRA merged): model.name for gdpo train/eval

Outputs: ``config.yaml``; ``metrics.jsonl`` (one line per ``logging.every`` optimizer steps:
``loss`` = mean token NLL of the completion tokens, ``lr``, ``grad_norm``, ``tokens_per_s`` =
tokens (prompt + reply, no padding) processed per wall second since the previous line,
``num_tokens``, ``mean_token_accuracy``, and ``eval_loss`` when data is held out);
``checkpoints/checkpoint-<step>/`` (TRL's layout: model, optimizer, scheduler, RNG, trainer
state); ``summary.json``; ``final/``.

Checkpoints: TRL writes ``trainer_state.json`` last, so a checkpoint counts as complete when
that file parses; every file is fsync'ed after the save. ``--resume`` continues from the newest
complete checkpoint (incomplete ones, from a killed process, are deleted) and drops
metrics.jsonl lines past it. The final folder is written to a temporary name and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import yaml

from gdpo.jsonio import write_text_atomic
from gdpo.train.sft_config import SFTConfig, config_to_dict, load_sft_config
from gdpo.train.sft_data import load_sft_data

CKPT_PREFIX = "checkpoint-"


class SFTResult(NamedTuple):
    output_dir: Path
    final_model_dir: Path
    steps_done: int
    final_loss: float | None
    wall_s: float
    tokens_per_s: float | None  # train tokens (no padding) / train wall time


# --------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------
def _is_complete(path: Path) -> bool:
    try:
        json.loads((path / "trainer_state.json").read_text())
        return True
    except (OSError, ValueError):
        return False


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete TRL checkpoints under ``root``, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.startswith(CKPT_PREFIX) and p.name[len(CKPT_PREFIX):].isdigit()]
    return sorted((p for p in found if _is_complete(p)), key=lambda p: int(p.name[len(CKPT_PREFIX):]))


def _drop_incomplete(root: Path) -> None:
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(CKPT_PREFIX) and not _is_complete(p):
                shutil.rmtree(p, ignore_errors=True)


def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------
# Metrics and progress (a TRL callback)
# --------------------------------------------------------------------------------------
_RENAME = {"learning_rate": "lr"}


def _callback(out: Path, total: int, lines: bool):
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        """metrics.jsonl rows, tokens/s, progress lines; fsync after each checkpoint; save at the end."""

        def __init__(self):
            self.offset = 0.0  # tokens counted before this process (a resumed run); TRL counts from 0 per process
            self.tokens = 0.0  # tokens this process has trained on (TRL's count)
            self.last = (time.perf_counter(), 0.0)

        def on_train_begin(self, args, state, control, **kw):
            self.offset = next((float(e["num_tokens"]) for e in reversed(state.log_history) if "num_tokens" in e), 0.0)
            self.last = (time.perf_counter(), 0.0)

        def on_step_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:  # a checkpoint at the end, to resume or extend from
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kw):
            path = Path(args.output_dir) / f"{CKPT_PREFIX}{state.global_step}"
            if path.is_dir():
                _fsync_tree(path)

        def on_log(self, args, state, control, logs=None, **kw):
            logs = dict(logs or {})
            if "train_runtime" in logs or not state.is_world_process_zero:
                return
            row: dict[str, Any] = {"step": state.global_step}
            row.update({_RENAME.get(k, k): v for k, v in logs.items()})
            if "num_tokens" in logs and "loss" in logs:
                now, (t0, tok0) = time.perf_counter(), self.last
                self.tokens = float(logs["num_tokens"])
                row["tokens_per_s"] = (self.tokens - tok0) / max(now - t0, 1e-9)
                row["num_tokens"] = self.offset + self.tokens  # over the whole run, resumes included
                if state.log_history and "num_tokens" in state.log_history[-1]:
                    state.log_history[-1]["num_tokens"] = row["num_tokens"]  # saved in the next checkpoint
                self.last = (now, self.tokens)
            elif "eval_num_tokens" in row:
                row.pop("eval_num_tokens")
            with open(out / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")
            if lines and "loss" in logs:
                tps = row.get("tokens_per_s")
                print(f"sft step {state.global_step}/{total} loss={logs['loss']:.4f} "
                      f"lr={logs.get('learning_rate', float('nan')):.2e} "
                      f"tok/s={tps if tps is None else round(tps)}", flush=True)
            elif lines and "eval_loss" in logs:
                print(f"sft step {state.global_step}/{total} eval_loss={logs['eval_loss']:.4f}", flush=True)

    return MetricsCallback()


def _truncate_metrics(path: Path, max_step: int) -> None:
    from gdpo.train.logging import truncate_jsonl

    truncate_jsonl(path, max_step)


# --------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------
def _trl_args(cfg: SFTConfig, ckpt_root: Path, has_eval: bool, use_bar: bool):
    import torch
    from trl import SFTConfig as TRLConfig

    from gdpo.train.precision import compute_dtype

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    bf16 = compute_dtype(cfg.model.dtype, device) == torch.bfloat16
    t, c = cfg.train, cfg.checkpoint
    return TRLConfig(
        output_dir=str(ckpt_root), seed=cfg.seed, data_seed=cfg.seed,
        max_steps=cfg.steps if cfg.steps > 0 else -1, num_train_epochs=cfg.epochs,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum, learning_rate=t.lr, weight_decay=t.weight_decay,
        warmup_steps=t.warmup_steps, lr_scheduler_type=t.lr_schedule, max_grad_norm=t.max_grad_norm,
        max_length=t.max_length, packing=t.packing,
        train_sampling_strategy="group_by_length" if t.group_by_length and not t.packing else "random",
        completion_only_loss=True, gradient_checkpointing=cfg.model.gradient_checkpointing,
        bf16=bf16, fp16=False, use_cpu=device.type == "cpu",
        logging_steps=cfg.logging.every, logging_first_step=False,
        eval_strategy="steps" if has_eval else "no", eval_steps=cfg.logging.every if has_eval else None,
        save_strategy="steps" if c.every else "no", save_steps=c.every or 500, save_total_limit=c.keep_last,
        report_to=[], disable_tqdm=not use_bar, dataloader_num_workers=0, dataset_num_proc=None,
    )


def _load_model(cfg: SFTConfig):
    from gdpo.train.build import _add_lora, load_base_model

    model, tok = load_base_model(cfg.model, cfg.seed)
    if cfg.model.lora is not None:
        model = _add_lora(model, cfg.model.lora)
    return model, tok


def _save_final(model, tokenizer, out: Path) -> Path:
    """A plain HF folder: LoRA merged into the weights, tokenizer padding on the left (generation)."""
    final, tmp = out / "final", out / ".final-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    model.config.use_cache = True
    model.save_pretrained(tmp)
    tokenizer.padding_side = "left"
    tokenizer.save_pretrained(tmp)
    _fsync_tree(tmp)
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    return final


def make_trainer(cfg: SFTConfig, data, out: Path):
    """TRL's SFTTrainer over our model, tokenizer and examples (tokenized, completion masks built)."""
    import warnings

    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import PrinterCallback
    from transformers.utils import logging as hf_logging
    from trl import SFTTrainer

    from gdpo.train.build import seed_everything

    hf_logging.set_verbosity_error()
    use_bar = cfg.logging.progress == "bar" or (cfg.logging.progress == "auto" and sys.stderr.isatty())
    if not use_bar:
        disable_progress_bar()
        hf_logging.disable_progress_bar()
    seed_everything(cfg.seed)
    model, tok = _load_model(cfg)
    tok.padding_side = "right"
    with warnings.catch_warnings():  # TRL's base config still sets the deprecated gradient_checkpointing name
        warnings.simplefilter("ignore", FutureWarning)
        args = _trl_args(cfg, out / "checkpoints", bool(data.test), use_bar)
    trainer = SFTTrainer(model=model, args=args, processing_class=tok, train_dataset=Dataset.from_list(data.train),
                         eval_dataset=Dataset.from_list(data.test) if data.test else None)
    trainer.remove_callback(PrinterCallback)  # our callback prints the lines
    return trainer, use_bar


def run_sft(cfg: SFTConfig, *, resume: bool = False) -> SFTResult:
    """Fine-tune ``cfg.model`` on ``cfg.data``; returns where the HF folder went."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    data = load_sft_data(cfg)  # ConfigError here: before any model loads
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "config.yaml", yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
    ckpt_root = out / "checkpoints"
    start_from = None
    if resume:
        _drop_incomplete(ckpt_root)
        found = complete_checkpoints(ckpt_root)
        if found:
            start_from = found[-1]
            _truncate_metrics(out / "metrics.jsonl", int(found[-1].name[len(CKPT_PREFIX):]))
            print(f"[gdpo sft] resuming from {start_from}", flush=True)
        else:
            print(f"[gdpo sft] --resume: no checkpoint in {ckpt_root}; starting from step 0", flush=True)
            _truncate_metrics(out / "metrics.jsonl", 0)
    else:
        (out / "metrics.jsonl").unlink(missing_ok=True)

    trainer, use_bar = make_trainer(cfg, data, out)
    total = trainer.args.max_steps if trainer.args.max_steps > 0 else "?"
    metrics = _callback(out, total, lines=not use_bar)
    trainer.add_callback(metrics)
    print(f"[gdpo sft] {len(data.train)} examples from {data.description}; model {cfg.model.name}; "
          f"{'LoRA' if cfg.model.lora else 'all weights'}; output {out}", flush=True)
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=str(start_from) if start_from else None)
    wall = time.perf_counter() - t0
    final = _save_final(trainer.model, trainer.processing_class, out)
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    tokens = metrics.offset + metrics.tokens
    tps = metrics.tokens / wall if metrics.tokens and wall > 0 else None  # this process's tokens / its wall time
    summary = {"steps": trainer.state.global_step, "final_loss": losses[-1] if losses else None,
               "first_loss": losses[0] if losses else None, "train_loss": result.training_loss,
               "num_tokens": tokens, "wall_s": wall, "tokens_per_s": tps,
               "examples": len(data.train), "held_out": len(data.test),
               "data": data.description, "model": cfg.model.name, "final_model": str(final)}
    write_text_atomic(out / "summary.json", json.dumps(summary, indent=1))
    return SFTResult(out, final, trainer.state.global_step, summary["final_loss"], wall, tps)


def load_and_sft(path: str | None, overrides: list[str], output_dir: str | None, resume: bool) -> SFTResult:
    """The CLI's entry: a config file (or the saved one when resuming), overrides, output dir."""
    if output_dir:
        overrides = [*overrides, f"output_dir={output_dir}"]
    if path is None and resume and output_dir and (Path(output_dir) / "config.yaml").is_file():
        path = str(Path(output_dir) / "config.yaml")
    return run_sft(load_sft_config(path, overrides), resume=resume)
