"""Benchmark: vectorized estimators vs a per-sample dict loop, and GDPO's cost over GRPO's.

Prints ratios measured in one run (medians of repeats), so a noisy machine still gives
comparable numbers. Targets (issue 2): >= 50x faster than the loop at N = 65,536, and GDPO
within 3x of GRPO's time at N = 1M, K = 4.

    python benchmarks/bench_advantages.py            # full grid (about a minute)
    python benchmarks/bench_advantages.py --quick    # small grid
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from gdpo import compute_advantages
from gdpo.reference import reference_advantages

G = 8  # rollouts per group


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def batch(n: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 2, size=(n, k)).astype(np.float64)  # binary rewards [N, K]
    ids = np.repeat(np.arange(n // G), G)  # [N]
    return rewards, ids


def loop_vs_vectorized(sizes: list[int], k: int, repeats: int) -> None:
    print(f"\n## Vectorized vs per-sample dict loop (K = {k}, G = {G}; median of {repeats})\n")
    print("| method | N | loop s | vectorized s | speed-up |\n|---|---:|---:|---:|---:|")
    for n in sizes:
        rewards, ids = batch(n, k)
        rows, id_list = rewards.tolist(), ids.tolist()
        for method in ("grpo", "gdpo"):
            t_loop = median_time(lambda: reference_advantages(rows, id_list, method), max(1, repeats // 2))
            t_vec = median_time(lambda: compute_advantages(rewards, ids, method), repeats)
            print(f"| {method} | {n:,} | {t_loop:.4f} | {t_vec:.5f} | {t_loop / t_vec:.0f}x |")


def gdpo_over_grpo(sizes: list[int], ks: list[int], repeats: int) -> None:
    print(f"\n## GDPO time / GRPO time (G = {G}; median of {repeats}, interleaved)\n")
    print("| N | K | GRPO s | GDPO s | GDPO/GRPO |\n|---:|---:|---:|---:|---:|")
    for n in sizes:
        for k in ks:
            rewards, ids = batch(n, k)
            t_grpo, t_gdpo = [], []
            for _ in range(repeats):  # interleave so drifts in machine load hit both
                t_grpo.append(median_time(lambda: compute_advantages(rewards, ids, "grpo"), 1))
                t_gdpo.append(median_time(lambda: compute_advantages(rewards, ids, "gdpo"), 1))
            a, b = statistics.median(t_grpo), statistics.median(t_gdpo)
            print(f"| {n:,} | {k} | {a:.4f} | {b:.4f} | {b / a:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid for a smoke run")
    args = parser.parse_args()
    if args.quick:
        loop_vs_vectorized([4096], k=3, repeats=3)
        gdpo_over_grpo([65536], [1, 4], repeats=3)
        return
    loop_vs_vectorized([1024, 8192, 65536], k=3, repeats=5)
    gdpo_over_grpo([65536, 1_048_576], [1, 2, 4, 10], repeats=5)


if __name__ == "__main__":
    main()
