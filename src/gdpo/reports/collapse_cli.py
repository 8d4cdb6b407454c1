"""`gdpo collapse`: print the distinct-advantage-groups table and plot it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gdpo.analysis import CollapseTable, collapse_table
from gdpo.jsonio import atomic_path, write_text_atomic


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", default="grpo,grpo_no_std,gdpo,gd2po,saw_gdpo,saw_grpo",
                        help="comma-separated estimator names (the SAW methods are counted with their batch-level "
                             "weights held fixed, see docs/estimators.md)")
    parser.add_argument("--max-rollouts", type=int, default=16, help="G axis: 2..this, with K=2 rewards")
    parser.add_argument("--max-rewards", type=int, default=8, help="K axis: 1..this, with G=4 rollouts")
    parser.add_argument("--output-dir", default="outputs/collapse", help="where the PNG and JSON go")
    parser.set_defaults(_module=__name__)


def run(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    table = collapse_table(methods, rollouts=list(range(2, args.max_rollouts + 1)),
                           rewards=list(range(1, args.max_rewards + 1)))
    print(format_table(table))
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out / "collapse.json", json.dumps(table._asdict(), indent=1))
    plot_path = plot_table(table, out / "collapse.png")
    print(f"\nwrote {out / 'collapse.json'} and {plot_path}")
    return 0


def format_table(table: CollapseTable) -> str:
    """Two Markdown tables: counts against G (K fixed) and against K (G fixed)."""
    lines = [f"Distinct advantage groups, K = {table.rewards_fixed} binary rewards, against G rollouts", ""]
    lines += _markdown("G", table.rollouts, table.methods, table.by_rollouts)
    lines += ["", f"Distinct advantage groups, G = {table.rollouts_fixed} rollouts, against K binary rewards", ""]
    lines += _markdown("K", table.rewards, table.methods, table.by_rewards)
    lines += ["", "('-': too many reward assignments to enumerate; batch-wide normalization left out)"]
    return "\n".join(lines)


def _markdown(axis: str, xs: list[int], methods: list[str], counts: dict) -> list[str]:
    header = f"| method | " + " | ".join(f"{axis}={x}" for x in xs) + " |"
    rule = "|---|" + "---:|" * len(xs)
    rows = [f"| {m} | " + " | ".join("-" if c is None else str(c) for c in counts[m]) + " |" for m in methods]
    return [header, rule, *rows]


def plot_table(table: CollapseTable, path: Path) -> Path:
    """Two log-scale panels: counts against G and against K, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    panels = (
        (axes[0], table.rollouts, table.by_rollouts, "rollouts per group G", f"K = {table.rewards_fixed} rewards"),
        (axes[1], table.rewards, table.by_rewards, "number of rewards K", f"G = {table.rollouts_fixed} rollouts"),
    )
    for ax, xs, counts, xlabel, title in panels:
        for i, method in enumerate(table.methods):
            pts = [(x, c) for x, c in zip(xs, counts[method]) if c is not None]
            # a method whose counts equal an earlier one's would hide under it: dashed, named as equal
            same = next((m for m in table.methods[:i] if counts[m] == counts[method]), None)
            label, style = (f"{method} (= {same})", dict(linestyle="--", marker="x", ms=8)) if same else (
                method, dict(marker="o"))
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label, **style)
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("distinct advantage groups")
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper left")
    fig.suptitle("Advantage resolution: distinct advantage groups over all binary reward assignments")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return path
