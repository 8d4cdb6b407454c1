"""Run outputs: metrics.jsonl (always), TensorBoard, W&B, MLflow, samples.jsonl, eval.jsonl.

JSONL files get one complete line per record, flushed at once; after a crash
:func:`truncate_jsonl` drops half-written lines and records past the resumed step.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from gdpo.jsonio import write_text_atomic


def _clean(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else value
    return value


def append_jsonl(path: Path, record: dict[str, Any]) -> None:
    """Append one JSON line and flush it to the OS."""
    line = json.dumps({k: _clean(v) for k, v in record.items()}, allow_nan=True) + "\n"
    with open(path, "a") as fh:
        fh.write(line)
        fh.flush()


def truncate_jsonl(path: Path, max_step: int) -> int:
    """Keep complete lines whose ``step`` <= ``max_step``; rewrite atomically. Returns lines kept."""
    if not path.exists():
        return 0
    kept = []
    for line in path.read_text().splitlines(keepends=True):
        if not line.endswith("\n"):
            break  # half-written last line
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            break
        if record.get("step", 0) <= max_step:
            kept.append(line)
    write_text_atomic(path, "".join(kept))
    return len(kept)


class RunLogger:
    """Sends each step's metrics to every configured sink (main process only)."""

    def __init__(self, output_dir: Path, cfg: Any, config_dict: dict[str, Any], enabled: bool = True):
        self.dir = Path(output_dir)
        self.enabled = enabled
        self.tb = self.wandb = self.mlflow = None
        if not enabled:
            return
        if cfg.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(self.dir / "tb"))
            except ImportError:
                print("[gdpo] tensorboard is not installed; `pip install tensorboard` or set logging.tensorboard: false")
        if cfg.wandb:
            self.wandb = _lazy("wandb", "logging.wandb")
            self.wandb.init(project=cfg.project, config=config_dict, dir=str(self.dir), resume="allow")
        if cfg.mlflow:
            self.mlflow = _lazy("mlflow", "logging.mlflow")
            self.mlflow.set_experiment(cfg.project)
            self.mlflow.start_run()
            self.mlflow.log_params(_flatten(config_dict))

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_jsonl(self.dir / "metrics.jsonl", {"step": step, **metrics})
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)}
        if self.tb is not None:
            for key, value in scalars.items():
                self.tb.add_scalar(key, value, step)
        if self.wandb is not None:
            self.wandb.log(scalars, step=step)
        if self.mlflow is not None:
            self.mlflow.log_metrics({k.replace("/", "."): v for k, v in scalars.items()}, step=step)

    def write(self, name: str, record: dict[str, Any]) -> None:
        """Append a record to ``<output_dir>/<name>.jsonl`` (samples, eval)."""
        if self.enabled:
            append_jsonl(self.dir / f"{name}.jsonl", record)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()
        if self.mlflow is not None:
            self.mlflow.end_run()


def _lazy(module: str, key: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ImportError(f"{key}: true needs the {module} package; `pip install {module}` or set {key}: false") from None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, key) if isinstance(v, dict) else {key: str(v)[:250]})
    return out
