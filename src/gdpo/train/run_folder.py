"""The run folder (``output_dir``): one run per folder, ``--resume`` / ``--overwrite``, config.yaml.

A folder *holds a run* when it has ``config.yaml``, ``metrics.jsonl`` or ``checkpoints/``.

- A new run in such a folder is refused (two runs would mix their metrics and checkpoints)
  unless ``resume`` (continue it) or ``overwrite`` (first remove what the trainer wrote there:
  :data:`TRAINER_OUTPUTS`; other files, e.g. a `gdpo compare` ``train.log``, stay).
- ``resume`` needs the folder's ``config.yaml``: without it there is nothing to continue.

:func:`check_run_folder` only reads. :func:`prepare_run_folder` changes the folder, and the
session calls it only once the config is validated and every piece of the run (task, model,
rewards, the checkpoint to resume) has been built, so a run that fails to start leaves the
folder as it was. ``config.yaml`` is written atomically.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

from gdpo.jsonio import read_jsonl, write_text_atomic
from gdpo.train.checkpoint import list_checkpoints
from gdpo.train.config_io import ConfigError
from gdpo.train.logging import truncate_jsonl

CONFIG = "config.yaml"
RUN_MARKERS = (CONFIG, "metrics.jsonl", "checkpoints")
JSONL_OUTPUTS = ("metrics.jsonl", "samples.jsonl", "eval.jsonl")
TRAINER_OUTPUTS = (CONFIG, *JSONL_OUTPUTS, "checkpoints", "final", "tb", "summary.md", "curves.png",
                   "vllm_model", "wandb")


class RunFolderError(ConfigError):
    """The output folder does not fit the request (a run is there, or none to resume); exit 2."""


def held_step(out: str | Path) -> int | None:
    """None when ``out`` holds no run; else its last step (newest checkpoint or metrics line)."""
    out = Path(out)
    if not any((out / name).exists() for name in RUN_MARKERS):
        return None
    found = list_checkpoints(out)
    ckpt = json.loads((found[-1] / "state.json").read_text())["step"] if found else 0
    logged = [r.get("step", 0) for r in read_jsonl(out / "metrics.jsonl")]
    return max([int(ckpt), *map(int, logged)])


def check_run_folder(out: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse a request that would mix two runs or resume nothing; reads only."""
    out = Path(out)
    if resume and overwrite:
        raise RunFolderError("--resume continues the run in the folder and --overwrite replaces it; pass one")
    if resume:
        if not (out / CONFIG).is_file():
            where = "does not exist" if not out.exists() else f"has no {CONFIG}"
            raise RunFolderError(f"--resume: {out} {where}, so there is no run to continue; start the run "
                                 f"without --resume, or give the --output-dir of an earlier run")
        return
    step = held_step(out)
    if step is not None and not overwrite:
        raise RunFolderError(f"{out} holds a run (step {step}): continue it with --resume, or pass --overwrite "
                             f"to replace it, or choose another --output-dir")


def prepare_run_folder(out: str | Path, config: dict[str, Any], *, resumed_step: int | None,
                       overwrite: bool) -> list[str]:
    """Make ``out`` ready for the run (main process only); returns the settings a resume changed.

    ``overwrite``: remove the old run's outputs. ``resumed_step`` (not None when resuming): keep
    JSONL lines up to that step. Then write ``config.yaml`` atomically.
    """
    out = Path(out)
    if overwrite:
        remove_trainer_outputs(out)
    changed = []
    if resumed_step is not None:
        old = yaml.safe_load((out / CONFIG).read_text()) if (out / CONFIG).is_file() else None
        changed = changed_settings(old or {}, config)
        for name in JSONL_OUTPUTS:  # drop lines of steps after the checkpoint, and half-written ones
            truncate_jsonl(out / name, resumed_step)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / CONFIG, yaml.safe_dump(config, sort_keys=False))
    return changed


def remove_trainer_outputs(out: Path) -> None:
    """Delete what the trainer writes into ``out`` (and temporary files it may have left)."""
    for name in TRAINER_OUTPUTS:
        for path in (out / name, out / f"{name}.tmp"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()


def changed_settings(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs (nested sections by dotted key).

    >>> changed_settings({"steps": 8, "optim": {"lr": 1.0}}, {"steps": 12, "optim": {"lr": 1.0}})
    ['steps: 8 -> 12']
    """
    lines = []
    for key in [k for k in new if k in old]:  # a field newer than the saved config is not a change
        a, b, name = old[key], new[key], f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines.extend(changed_settings(a, b, f"{name}."))
        elif a != b:
            lines.append(f"{name}: {a!r} -> {b!r}")
    return lines
