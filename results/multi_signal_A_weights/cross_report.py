"""Cross-report: each method's per-seed learning speed and final score in report B against report A (Welch).
Run from the repository root: PYTHONPATH=src python results/multi_signal_A_weights/cross_report.py multi_signal_A multi_signal_A_weights
"""
import json, sys
from gdpo.reports.stats import welch_test
a, b = sys.argv[1], sys.argv[2]
A = json.load(open(f"results/{a}/summary.json")); B = json.load(open(f"results/{b}/summary.json"))
for r in ["toy_letter", "toy_short", "toy_no_digit"]:
    for m in ["grpo", "gdpo"]:
        x, y = B["learning_speed"][r][m], A["learning_speed"][r][m]
        w = welch_test(x, y)
        fx, fy = B["scores"][r][m]["final"], A["scores"][r][m]["final"]
        wf = welch_test(fx, fy)
        print(f"{r} {m}: speed {sum(y)/len(y):.3f} -> {sum(x)/len(x):.3f} (p={w.p:.3f}, d={w.effect_size:.2f}); final {sum(fy)/len(fy):.3f} -> {sum(fx)/len(fx):.3f} (p={wf.p:.3f})")
