"""How different are GDPO's advantages from GRPO's when several rewards vary? (simulation, no training)

Independent binary rewards with success rates p (one column per reward), B = 8 prompts x G = 8
rollouts per batch; per batch, the Pearson correlation of the two methods' advantage vectors [N];
mean and 5th percentile over 2,000 batches (batches where either vector is constant are skipped).
Run from the repository root:  PYTHONPATH=src python results/multi_signal_A/advantage_correlation.py
"""

import numpy as np

from gdpo.advantages import compute_advantages

B, G, TRIALS = 8, 8, 2000
CASES = [("setting A at the start", [0.30, 0.60, 0.82], None),
         ("setting A, weights 2:1:1", [0.30, 0.60, 0.82], [2.0, 1.0, 1.0]),
         ("K = 2", [0.30, 0.60], None),
         ("K = 3, all 0.5", [0.5] * 3, None),
         ("K = 8, all 0.5", [0.5] * 8, None),
         ("a rare reward (0.1, 0.5, 0.5)", [0.1, 0.5, 0.5], None),
         ("a rare reward (0.05, 0.5)", [0.05, 0.5], None)]


def correlations(p, weights, rng):
    ids = np.repeat(np.arange(B), G)
    out = []
    for _ in range(TRIALS):
        rewards = (rng.random((B * G, len(p))) < np.asarray(p)).astype(float)  # [N, K]
        a = compute_advantages(rewards, ids, "gdpo", weights=weights)  # [N]
        b = compute_advantages(rewards, ids, "grpo", weights=weights)  # [N]
        if a.std() > 0 and b.std() > 0:
            out.append(np.corrcoef(a, b)[0, 1])
    return np.asarray(out)


def main():
    rng = np.random.default_rng(0)
    print("| case | success rates | corr(gdpo, grpo) mean | 5th percentile |")
    print("|---|---|---|---|")
    for name, p, w in CASES:
        c = correlations(p, w, rng)
        print(f"| {name} | {p} | {c.mean():.3f} | {np.percentile(c, 5):.3f} |")


if __name__ == "__main__":
    main()
