"""Setting C: GDPO's gap to GRPO against the number of rewards K, from the committed reports.

Reads ``results/multi_signal_C/k<K>/summary.json`` (written by `gdpo compare`), and for each K
computes gap = mean(gdpo) - mean(grpo) over seeds, with a 95% Welch interval
(gap +- t_{0.975, df} * se), of each seed's learning speed (mean training reward over all
steps) for the rewards present at every K (toy_letter, toy_short) and for the mean of all K
rewards; writes ``gap_vs_k.png`` and ``gap_vs_k.json`` beside this file and prints a Markdown
table.  Run from the repository root:  python results/multi_signal_C/gap_vs_k.py
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from gdpo.reports.regime import t_quantile
from gdpo.reports.stats import welch_test

HERE = Path(__file__).resolve().parent
KS = (2, 4, 6, 8)


def _gap(a: list[float], b: list[float]) -> dict[str, float]:
    w = welch_test(a, b)
    se = math.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
    half = t_quantile(0.975, w.df) * se if se > 0 else 0.0
    return {"gap": w.diff, "low": w.diff - half, "high": w.diff + half, "p": w.p, "d": w.effect_size}


def series() -> dict[str, dict[int, dict[str, float]]]:
    out: dict[str, dict[int, dict[str, float]]] = {"toy_letter": {}, "toy_short": {}, "mean of K rewards": {},
                                                   "multi_signal_first_10": {}}
    for k in KS:
        path = HERE / f"k{k}" / "summary.json"
        if not path.is_file():
            continue
        s = json.loads(path.read_text())
        speed = s["learning_speed"]
        for name in ("toy_letter", "toy_short"):
            out[name][k] = _gap(speed[name]["gdpo"], speed[name]["grpo"])
        mean_k = {m: list(np.mean([speed[r][m] for r in s["rewards"]], axis=0)) for m in ("gdpo", "grpo")}
        out["mean of K rewards"][k] = _gap(mean_k["gdpo"], mean_k["grpo"])
        ms = s["multi_signal_frac"]
        out["multi_signal_first_10"][k] = {m: ms[m]["first_10_steps"]["mean"] for m in ("gdpo", "grpo")}
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["toy_letter", "toy_short", "mean of K rewards"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for ax, name in zip(axes, names):
        ks = sorted(data[name])
        gap = [data[name][k]["gap"] for k in ks]
        ax.fill_between(ks, [data[name][k]["low"] for k in ks], [data[name][k]["high"] for k in ks], alpha=0.25)
        ax.plot(ks, gap, "o-")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_title(f"{name}: gdpo - grpo")
        ax.set_xlabel("K (rewards)")
        ax.set_xticks(list(KS))
    axes[0].set_ylabel("gap in learning speed\n(mean training reward)")
    fig.suptitle("Setting C: GDPO's gap to GRPO vs K (line: gap of means over seeds; band: 95% Welch interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    data = series()
    (HERE / "gap_vs_k.json").write_text(json.dumps(data, indent=1))
    plot(data, HERE / "gap_vs_k.png")
    print("| K | multi-signal first 10 (gdpo / grpo) | toy_letter gap [95%] p | toy_short gap [95%] p | "
          "mean-of-K gap [95%] p |")
    print("|---|---|---|---|---|")
    for k in sorted(data["mean of K rewards"]):
        cells = [f"{data[n][k]['gap']:+.3f} [{data[n][k]['low']:+.3f}, {data[n][k]['high']:+.3f}] "
                 f"p = {data[n][k]['p']:.3f}" for n in ("toy_letter", "toy_short", "mean of K rewards")]
        ms = data["multi_signal_first_10"][k]
        print(f"| {k} | {ms['gdpo']:.2f} / {ms['grpo']:.2f} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
