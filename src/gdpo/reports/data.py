"""Reading a comparison's run folders into numbers: curves over seeds and per-seed scores.

Layout read (what `gdpo compare` writes): ``<output_dir>/<method>/seed<k>/`` holding the
trainer's ``metrics.jsonl`` (one line per step), optionally ``eval.jsonl`` and ``config.yaml``.
Nothing here trains or plots.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gdpo.jsonio import read_jsonl
from gdpo.train.metrics import reward_components

MANIFEST = "compare.json"  # what `gdpo compare` was asked for, and each invocation's wall time


def read_manifest(output_dir: Path) -> dict[str, Any]:
    """``compare.json`` of an output dir ({} when absent)."""
    path = Path(output_dir) / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else {}

SEED_DIR = re.compile(r"^seed(\d+)$")


class ReportError(ValueError):
    """The run folders cannot make a report; the message says what is missing and how to fix it."""


@dataclass
class RunData:
    """One finished or unfinished training run."""

    method: str
    seed: int
    path: Path
    metrics: list[dict[str, Any]]
    evals: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def steps_done(self) -> int:
        return int(self.metrics[-1]["step"]) if self.metrics else 0

    def column(self, key: str, source: str = "train") -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of ``key`` in metrics (``source="train"``) or eval records; None -> NaN."""
        records = self.metrics if source == "train" else self.evals
        rows = [(r["step"], r.get(key)) for r in records if key in r]
        steps = np.array([s for s, _ in rows], dtype=np.int64)
        values = np.array([np.nan if v is None else float(v) for _, v in rows], dtype=np.float64)
        return steps, values


@dataclass
class Band:
    """A curve over seeds: mean, sample std and min/max at each step."""

    steps: np.ndarray  # [S]
    mean: np.ndarray  # [S]
    std: np.ndarray  # [S] (ddof=1; 0 with one seed)
    low: np.ndarray  # [S] min over seeds
    high: np.ndarray  # [S] max over seeds
    num_seeds: int


@dataclass
class SeedScores:
    """Per-seed final and best scores of one method on one reward, and their mean/std over seeds."""

    method: str
    reward: str
    source: str  # "eval" (test split) or "train" (last-k training means)
    seeds: list[int]
    final: list[float]
    best: list[float]

    @property
    def final_mean(self) -> float:
        return float(np.mean(self.final))

    @property
    def final_std(self) -> float:
        return sample_std(self.final)

    @property
    def best_mean(self) -> float:
        return float(np.mean(self.best))

    @property
    def best_std(self) -> float:
        return sample_std(self.best)


def sample_std(values: list[float] | np.ndarray) -> float:
    """Standard deviation with ddof=1 (0.0 for a single value)."""
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.std(ddof=1)) if arr.size > 1 else 0.0


# ---------------------------------------------------------------- loading


def load_runs(output_dir: str | Path, method_order: list[str] | None = None) -> list[RunData]:
    """Every ``<method>/seed<k>`` folder with at least one metrics line, methods in ``method_order``."""
    import yaml

    root = Path(output_dir)
    if not root.is_dir():
        raise ReportError(f"{root} does not exist; give the --output-dir of a `gdpo compare` call")
    runs = []
    for method_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for seed_dir in sorted(p for p in method_dir.iterdir() if p.is_dir() and SEED_DIR.match(p.name)):
            metrics = read_jsonl(seed_dir / "metrics.jsonl")
            if not metrics:
                continue
            cfg_path = seed_dir / "config.yaml"
            config = yaml.safe_load(cfg_path.read_text()) if cfg_path.is_file() else {}
            runs.append(RunData(method_dir.name, int(SEED_DIR.match(seed_dir.name).group(1)), seed_dir,
                                metrics, read_jsonl(seed_dir / "eval.jsonl"), config or {}))
    if not runs:
        raise ReportError(f"no run folders with metrics.jsonl under {root} (expected <method>/seed<k>/); "
                          f"run `gdpo compare` first")
    order = {m: i for i, m in enumerate(method_order or [])}
    runs.sort(key=lambda r: (order.get(r.method, len(order)), r.method, r.seed))
    return runs


def methods_of(runs: list[RunData]) -> list[str]:
    """Method names in the order of ``runs``."""
    return list(dict.fromkeys(r.method for r in runs))


def runs_of(runs: list[RunData], method: str) -> list[RunData]:
    return [r for r in runs if r.method == method]


def reward_names(runs: list[RunData]) -> list[str]:
    """Reward components logged as ``rewards/<name>/mean`` (the weighted ``total`` left out)."""
    return reward_components(runs[0].metrics[0])


def has_eval(runs: list[RunData], reward: str) -> bool:
    """True when every run logged ``eval/<reward>/mean`` at least once."""
    return all(any(f"eval/{reward}/mean" in e for e in r.evals) for r in runs)


# ---------------------------------------------------------------- curves


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` values (fewer at the start); NaNs are skipped."""
    if window <= 1:
        return values.astype(np.float64)
    out = np.empty(len(values), dtype=np.float64)
    for i in range(len(values)):
        chunk = values[max(0, i - window + 1): i + 1]
        ok = chunk[~np.isnan(chunk)]
        out[i] = ok.mean() if ok.size else np.nan
    return out


def band(runs: list[RunData], key: str, source: str = "train", window: int = 1) -> Band | None:
    """``key`` of each run (smoothed by a trailing ``window``) on the steps all runs share."""
    columns = [r.column(key, source) for r in runs]
    columns = [c for c in columns if c[0].size]
    if not columns:
        return None
    common = columns[0][0]
    for steps, _ in columns[1:]:
        common = np.intersect1d(common, steps)
    if common.size == 0:
        return None
    matrix = np.stack([moving_average(v, window)[np.isin(s, common)] for s, v in columns])  # [seeds, S]
    with np.errstate(all="ignore"):
        std = np.nanstd(matrix, axis=0, ddof=1) if len(columns) > 1 else np.zeros(common.size)
        return Band(common, np.nanmean(matrix, axis=0), std, np.nanmin(matrix, axis=0),
                    np.nanmax(matrix, axis=0), len(columns))


def default_window(runs: list[RunData]) -> int:
    """Smoothing window for training curves: about 5% of the steps, at least 1."""
    return max(1, round(max(r.steps_done for r in runs) / 20))


# ---------------------------------------------------------------- scores


def score_source(runs: list[RunData], rewards: list[str]) -> str:
    """``"eval"`` when every run has test-split evaluations of every reward, else ``"train"``."""
    return "eval" if all(has_eval(runs, name) for name in rewards) else "train"


def seed_score(run: RunData, reward: str, source: str, last_k: int) -> tuple[float, float]:
    """(final, best) of one run: last / max eval value, or mean of the last ``last_k`` training
    steps / max of the trailing ``last_k``-step mean."""
    if source == "eval":
        _, values = run.column(f"eval/{reward}/mean", "eval")
        return float(values[-1]), float(np.nanmax(values))
    _, values = run.column(f"rewards/{reward}/mean", "train")
    smooth = moving_average(values, last_k)
    return float(np.nanmean(values[-last_k:])), float(np.nanmax(smooth[min(last_k, len(smooth)) - 1:]))


def method_scores(runs: list[RunData], reward: str, source: str, last_k: int) -> list[SeedScores]:
    """One :class:`SeedScores` per method."""
    out = []
    for method in methods_of(runs):
        mine = runs_of(runs, method)
        pairs = [seed_score(r, reward, source, last_k) for r in mine]
        out.append(SeedScores(method, reward, source, [r.seed for r in mine],
                              [p[0] for p in pairs], [p[1] for p in pairs]))
    return out


def training_area(runs: list[RunData], reward: str) -> list[SeedScores]:
    """Per method, each seed's mean training reward over all steps (area under the curve / steps):
    how fast a reward was learned, not only where it ended. ``final`` and ``best`` both hold it."""
    out = []
    for method in methods_of(runs):
        mine = runs_of(runs, method)
        means = [float(np.nanmean(r.column(f"rewards/{reward}/mean")[1])) for r in mine]
        out.append(SeedScores(method, reward, "train-area", [r.seed for r in mine], means, list(means)))
    return out


def mean_over_training(runs: list[RunData], key: str) -> tuple[float, float]:
    """Mean over steps of ``key`` per run, then (mean, sample std) over runs."""
    per_run = [float(np.nanmean(r.column(key)[1])) for r in runs if r.column(key)[0].size]
    return (float(np.mean(per_run)), sample_std(per_run)) if per_run else (float("nan"), float("nan"))
