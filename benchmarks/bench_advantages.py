"""Benchmark: vectorized estimators vs a per-sample dict loop, and GDPO's cost over GRPO's.

Prints ratios measured in one run (medians of repeats), so a noisy machine still gives
comparable numbers. Times are process CPU seconds (``time.process_time``): on a loaded
machine a sub-millisecond call is often preempted for a whole time slice, which wall-clock
medians do not survive; CPU time counts only the work done (``--wall`` switches to wall time). Targets (issue 2): >= 50x faster than the loop at N = 65,536, and GDPO
within 3x of GRPO's time at N = 1M, K = 4. Issue 16 adds GDPO's successors (gd2po hard and
snr, saw_gdpo, saw_grpo) beside GDPO at N = 1M, K = 4.

    python benchmarks/bench_advantages.py            # full grid (about a minute)
    python benchmarks/bench_advantages.py --quick    # small grid
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# One BLAS thread: with CPU-time measurement, idle BLAS worker threads spinning on a loaded
# machine would be charged to whichever method happens to call BLAS (GRPO's weighted sum).
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402  (after the thread settings)

from gdpo import compute_advantages  # noqa: E402
from gdpo.reference import reference_advantages  # noqa: E402

G = 8  # rollouts per group
CLOCK = time.process_time  # see the module docstring


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
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
            # vectorized first: the loop's millions of small Python objects leave the heap in a
            # state where the next large numpy buffers fault in fresh pages
            t_vec = median_time(lambda: compute_advantages(rewards, ids, method), repeats)
            t_loop = median_time(lambda: reference_advantages(rows, id_list, method), max(1, repeats // 2))
            print(f"| {method} | {n:,} | {t_loop:.4f} | {t_vec:.5f} | {t_loop / t_vec:.0f}x |")


def gdpo_over_grpo(sizes: list[int], ks: list[int], repeats: int) -> None:
    """GDPO/GRPO time ratio per (N, K); the two alternate so load drifts hit both."""
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


SUCCESSORS = (
    ("grpo", {}),
    ("gdpo", {}),
    ("gd2po", {}),
    ("gd2po", {"variant": "snr"}),
    ("saw_gdpo", {}),
    ("saw_grpo", {}),
)


def successors_vs_gdpo(n: int, k: int, repeats: int) -> None:
    """Each successor's time beside GDPO's on one batch; the methods alternate within a repeat."""
    print(f"\n## GDPO's successors beside GDPO (N = {n:,}, K = {k}, G = {G}; median of {repeats}, interleaved)\n")
    print("| method | options | s | / GDPO |\n|---|---|---:|---:|")
    rewards, ids = batch(n, k)
    times: list[list[float]] = [[] for _ in SUCCESSORS]
    for _ in range(repeats):
        for i, (method, options) in enumerate(SUCCESSORS):
            times[i].append(median_time(lambda: compute_advantages(rewards, ids, method, **options), 1))
    medians = [statistics.median(t) for t in times]
    gdpo_time = medians[[m for m, _ in SUCCESSORS].index("gdpo")]
    for (method, options), t in zip(SUCCESSORS, medians):
        label = ", ".join(f"{key}={value}" for key, value in options.items()) or "defaults"
        print(f"| {method} | {label} | {t:.4f} | {t / gdpo_time:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid for a smoke run")
    parser.add_argument("--wall", action="store_true", help="time wall-clock seconds instead of CPU seconds")
    parser.add_argument("--successors-only", action="store_true", help="only the successors-beside-GDPO table")
    args = parser.parse_args()
    global CLOCK
    if args.wall:
        CLOCK = time.perf_counter
    print(f"clock: {'wall' if args.wall else 'process CPU'} seconds")
    if args.quick:
        loop_vs_vectorized([4096], k=3, repeats=3)
        gdpo_over_grpo([65536], [1, 4], repeats=3)
        successors_vs_gdpo(65536, 4, repeats=3)
        return
    if not args.successors_only:
        loop_vs_vectorized([1024, 8192, 65536], k=3, repeats=5)
        gdpo_over_grpo([65536, 1_048_576], [1, 2, 4, 10], repeats=5)
    successors_vs_gdpo(1_048_576, 4, repeats=7)


if __name__ == "__main__":
    main()
