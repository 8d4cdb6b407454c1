"""A finished run at a glance: per-reward curves (PNG) and a table of start vs end scores.

Reads only the run folder (``metrics.jsonl``, ``eval.jsonl``), so it also works on a run
that another process wrote: ``python -m gdpo.train.summary RUN_DIR``.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gdpo.jsonio import atomic_path, read_jsonl, write_text_atomic
from gdpo.reports.regime import run_regime_sentence
from gdpo.train.metrics import reward_components

WINDOW = 5  # steps averaged at the start and at the end of the run


@dataclass
class RunSummary:
    """Where the summary went, and its table as Markdown."""

    table: str
    curves_png: Path | None
    markdown_path: Path


def reward_names(rows: list[dict]) -> list[str]:
    """The run's reward components (the weighted total is not one of them)."""
    return reward_components(rows[0] if rows else {})


def summarize_run(run_dir: str | Path) -> RunSummary:
    """Write ``curves.png`` and ``summary.md`` into ``run_dir`` and return the table."""
    run_dir = Path(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    if not rows:
        raise ValueError(f"{run_dir / 'metrics.jsonl'} has no steps; is {str(run_dir)!r} a training run folder?")
    evals = read_jsonl(run_dir / "eval.jsonl")
    table = score_table(rows, evals)
    regime = run_regime_sentence(rows, _method(run_dir))  # says when the methods must coincide (< 10%)
    if regime:
        table += "\n\n" + regime
    png = plot_curves(rows, evals, run_dir / "curves.png")
    text = f"# Run summary: {run_dir}\n\n{table}\n\n![per-reward curves](curves.png)\n"
    md = run_dir / "summary.md"
    write_text_atomic(md, text)
    return RunSummary(table, png, md)


def _method(run_dir: Path) -> str:
    """The run's estimator, from its config.yaml ('' when absent)."""
    import yaml

    path = run_dir / "config.yaml"
    config = yaml.safe_load(path.read_text()) if path.is_file() else None
    return str(config.get("method", "")) if isinstance(config, dict) else ""


def score_table(rows: list[dict], evals: list[dict]) -> str:
    """Per reward: mean over the first and the last WINDOW steps, and the last evaluation."""
    n = max(1, min(WINDOW, len(rows) // 2))  # the two windows never overlap
    first_steps, last_steps = rows[:n], rows[-n:]
    lines = [
        f"Training reward means, first {n} vs last {n} of {len(rows)} steps"
        + (f"; test split at step {evals[-1].get('step')}" if evals else "") + ":",
        "",
        "| reward | first steps | last steps | change |" + (" test |" if evals else ""),
        "|---|---:|---:|---:|" + ("---:|" if evals else ""),
    ]
    for name in reward_names(rows):
        key = f"rewards/{name}/mean"
        start, end = _mean(first_steps, key), _mean(last_steps, key)
        row = f"| {name} | {start:.3f} | {end:.3f} | {end - start:+.3f} |"
        if evals:
            row += f" {_fmt(_eval_value(evals[-1], name))} |"
        lines.append(row)
    return "\n".join(lines)


def _eval_value(row: dict, name: str) -> float:
    for key in (f"eval/rewards/{name}/mean", f"eval/{name}/mean", f"rewards/{name}/mean"):
        if key in row:
            return float(row[key])
    return math.nan


def _mean(rows: list[dict], key: str) -> float:
    values = [float(r[key]) for r in rows if key in r and r[key] is not None]
    return float(np.mean(values)) if values else math.nan


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3f}"


def plot_curves(rows: list[dict], evals: list[dict], path: Path) -> Path | None:
    """One panel per reward (and the weighted total): raw per-step means, a moving average."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a core dependency
        return None
    names = reward_names(rows) + (["total"] if rows and "rewards/total/mean" in rows[0] else [])
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    steps = np.array([r["step"] for r in rows])
    for ax, name in zip(axes[0], names):
        values = np.array([r.get(f"rewards/{name}/mean", np.nan) for r in rows], dtype=float)
        ax.plot(steps, values, color="tab:blue", alpha=0.3, lw=1, label="per step")
        window = max(1, min(WINDOW, len(values) // 3))
        smooth = np.convolve(values, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1:], smooth, color="tab:blue", lw=2, label=f"mean of {window}")
        if evals:
            ev_steps = [e.get("step") for e in evals]
            ax.plot(ev_steps, [_eval_value(e, name) for e in evals], "o-", color="tab:orange", label="test split")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("reward mean")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return path


if __name__ == "__main__":  # pragma: no cover
    summary = summarize_run(sys.argv[1] if len(sys.argv) > 1 else ".")
    print(summary.table)
