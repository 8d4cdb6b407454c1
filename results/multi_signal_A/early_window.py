"""Setting A, early window: per-seed mean training reward over steps 1..N (default 20, the steps in
which two or more rewards vary in most groups), GDPO vs GRPO with the report's Welch test.
Reads the run folders (not committed): python results/multi_signal_A/early_window.py runs/compare/multi_signal_A 20
"""

import json
import sys
from pathlib import Path

import numpy as np

from gdpo.reports.stats import welch_test

root, last = Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 20
summary = json.loads((root / "base_config.yaml").with_name("compare.json").read_text())
rewards = None
per = {}
for method in ("grpo", "gdpo"):
    for run in sorted((root / method).glob("seed*"), key=lambda p: int(p.name[4:])):
        rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()][:last]
        rewards = rewards or [k.split("/")[1] for k in rows[0] if k.startswith("rewards/") and k.endswith("/mean")
                              and "/total/" not in k]
        for r in rewards + ["multi_signal_frac"]:
            key = f"rewards/{r}/mean" if r != "multi_signal_frac" else "rewards/multi_signal_frac"
            per.setdefault((r, method), []).append(float(np.mean([x[key] for x in rows])))
print(f"steps 1-{last}, mean over steps per seed, then over {len(per[(rewards[0], 'gdpo')])} seeds")
print("| reward | gdpo | grpo | gap | p | d |")
print("|---|---|---|---|---|---|")
for r in rewards + ["multi_signal_frac"]:
    a, b = per[(r, "gdpo")], per[(r, "grpo")]
    w = welch_test(a, b)
    print(f"| {r} | {np.mean(a):.3f} | {np.mean(b):.3f} | {w.diff:+.3f} | {w.p:.3f} | {w.effect_size:+.2f} |")
