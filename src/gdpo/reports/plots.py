"""The report's figures: reward curves, test-split curves, final scores, collapse diagnostics.

Every figure uses the same colour per method (:func:`method_colours`), a mean line over
seeds and a shaded min-max band over seeds, readable fonts and one panel per reward.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gdpo.jsonio import atomic_path
from gdpo.reports.data import (Band, RunData, SeedScores, band, methods_of, runs_of)

# Fixed colours for the estimators people compare most; others take the next free colour.
KNOWN_COLOURS = {
    "grpo": "#1f77b4",  # blue
    "gdpo": "#d62728",  # red
    "grpo_no_std": "#17becf",  # teal
    "gdpo_no_bn": "#ff7f0e",  # orange
    "gdpo_no_std": "#9467bd",  # purple
}
SPARE_COLOURS = ["#2ca02c", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]

STYLE = {
    "font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "legend.fontsize": 10,
    "xtick.labelsize": 10, "ytick.labelsize": 10, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "figure.dpi": 110,
}


def method_colours(methods: list[str]) -> dict[str, str]:
    """A colour per method: the fixed one when known, else the next spare one."""
    spare = iter(SPARE_COLOURS * (1 + len(methods) // len(SPARE_COLOURS)))
    return {m: KNOWN_COLOURS.get(m) or next(spare) for m in methods}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update(STYLE)
    return plt


def _panels(plt, count: int, width: float = 4.6, height: float = 3.6):
    cols = 2 if count == 4 else min(count, 3)
    rows = (count + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(width * cols, height * rows + 0.6), squeeze=False)
    for ax in axes.flat[count:]:
        ax.set_visible(False)
    return fig, list(axes.flat[:count])


def _save(fig, plt, path: Path, header_in: float = 0.0) -> Path:
    """Lay out (leaving ``header_in`` inches on top for title and legend) and write atomically."""
    fig.tight_layout(rect=(0, 0, 1, 1 - header_in / fig.get_figheight()))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path


def _draw_band(ax, b: Band, colour: str, label: str) -> None:
    ax.fill_between(b.steps, b.low, b.high, color=colour, alpha=0.15, linewidth=0)
    ax.plot(b.steps, b.mean, color=colour, linewidth=2.0, label=label)


def _title_and_legend(fig, axes, title: str) -> float:
    """Figure title on top, the methods' legend under it; returns the inches they take."""
    height = fig.get_figheight()
    fig.suptitle(title, fontsize=13, y=1 - 0.08 / height, va="top")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 5), frameon=False,
                   bbox_to_anchor=(0.5, 1 - 0.4 / height))
    return 0.38 if handles else 0.0  # tight_layout already keeps room for the suptitle


def plot_curves(runs: list[RunData], panels: list[tuple[str, str, str]], path: Path, *, source: str, window: int,
                suptitle: str, ylims: dict[str, tuple[float, float]] | None = None,
                hlines: dict[str, float] | None = None) -> Path | None:
    """One panel per (key, title, y label), methods overlaid: mean over seeds, min-max band over seeds.

    Returns None (and writes nothing) when no run logged any of the keys.
    """
    plt = _pyplot()
    colours = method_colours(methods_of(runs))
    fig, axes = _panels(plt, len(panels))
    drawn = False
    for ax, (key, title, ylabel) in zip(axes, panels):
        for method, colour in colours.items():
            b = band(runs_of(runs, method), key, source, window)
            if b is not None:
                _draw_band(ax, b, colour, f"{method} ({b.num_seeds} seeds)")
                drawn = True
        if hlines and key in hlines:
            ax.axhline(hlines[key], color="black", linestyle="--", linewidth=1, alpha=0.6)
        ax.set_title(title)
        ax.set_xlabel("training step")
        ax.set_ylabel(ylabel)
        if ylims and key in ylims:
            ax.set_ylim(*ylims[key])
    if not drawn:
        plt.close(fig)
        return None
    return _save(fig, plt, path, _title_and_legend(fig, axes, suptitle))


def plot_scores(scores: dict[str, list[SeedScores]], path: Path, title: str) -> Path:
    """Per reward: a bar per method (mean of final scores), an error bar (sample std), a dot per seed."""
    plt = _pyplot()
    rewards = list(scores)
    methods = [s.method for s in scores[rewards[0]]]
    colours = method_colours(methods)
    fig, axes = _panels(plt, len(rewards), width=min(4.8, max(3.2, 0.9 * len(methods) + 1.4)), height=3.6)
    rng = np.random.default_rng(0)  # horizontal jitter of the seed dots only
    for ax, reward in zip(axes, rewards):
        for i, s in enumerate(scores[reward]):
            ax.bar(i, s.final_mean, width=0.65, color=colours[s.method], alpha=0.35, edgecolor=colours[s.method])
            ax.errorbar(i, s.final_mean, yerr=s.final_std, color="black", capsize=5, linewidth=1.2)
            ax.scatter(i + rng.uniform(-0.15, 0.15, len(s.final)), s.final, color=colours[s.method], s=22,
                       zorder=3, edgecolor="white", linewidth=0.5)
        ax.set_xticks(range(len(methods)), methods, rotation=20 if len(methods) > 2 else 0)
        ax.set_title(reward)
        ax.set_ylabel("final score")
        ax.grid(axis="x", visible=False)
        values = [v for s in scores[reward] for v in s.final]
        if min(values) >= 0 and max(values) <= 1:  # rewards in [0, 1]: show the whole range
            ax.set_ylim(0, 1.05)
    return _save(fig, plt, path, _title_and_legend(fig, axes, title))
