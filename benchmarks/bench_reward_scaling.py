"""Benchmark: GDPO against GRPO as the number of rewards K grows (K = 2..10).

Three parts, each printed as a Markdown table (ratios measured in this one run):

(a) advantage resolution: random binary rewards (each 0/1 with probability 1/2), G = 8
    rollouts per group; per K, the mean number of distinct advantage values per group and the
    share of distinct advantage vectors (distinct sorted, rounded group advantage vectors /
    distinct reward multisets among the sampled groups), GRPO vs GDPO. GDPO is taken at group
    level (no batch step), as in the paper's count: the batch step is one affine map.
(b) cost of ``compute_advantages`` at N = 65,536 (G = 8): median wall-clock over interleaved
    repeats (the min is the figure least disturbed by other jobs) and peak traced memory (``tracemalloc``, a separate pass), GDPO / GRPO ratios.
(c) cost of a whole training step: the tiny random-init model on the toy task with the toy
    rewards plus extra cheap ones (``gdpo.data.toy_extra``) up to K; median step time over the
    steps after the first two of short in-process runs (three per method, alternated), per
    method, and GDPO / GRPO; "non-generation" = step time minus generation time.

    python benchmarks/bench_reward_scaling.py            # K = 2..10, a few minutes on 2 CPU cores
    python benchmarks/bench_reward_scaling.py --quick    # small smoke run (seconds)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np

from gdpo import compute_advantages
from gdpo.analysis import distinct_values_per_group

METHODS = ("grpo", "gdpo")
GROUP_LEVEL = {"grpo": {}, "gdpo": {"batch_norm": False}}
TOY_REWARDS = ["toy_letter", "toy_short", "toy_starts_lower"]
EXTRA_REWARDS = ["toy_no_upper", "toy_no_digit", "toy_no_space", "toy_no_punct", "toy_ends_lower",
                 "toy_one_char", "toy_nonempty", "toy_exact"]


def binary_batch(num_groups: int, k: int, g: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rewards = rng.integers(0, 2, size=(num_groups * g, k)).astype(np.float64)  # [N, K]
    ids = np.repeat(np.arange(num_groups), g)  # [N]
    return rewards, ids


# -- (a) resolution -------------------------------------------------------------------------
def resolution(ks: list[int], g: int, num_groups: int, seed: int = 0) -> list[dict]:
    """Per K and method: mean distinct advantages per group and share of distinct vectors."""
    rows = []
    for k in ks:
        rewards, ids = binary_batch(num_groups, k, g, seed)
        # Reward multisets: sort each group's G reward rows, so rollout order does not count.
        codes = (rewards * (2 ** np.arange(k))).sum(axis=1).reshape(num_groups, g)  # [B, G]
        reward_sets = np.unique(np.sort(codes, axis=1), axis=0).shape[0]
        row = {"K": k, "groups": num_groups, "distinct_reward_sets": int(reward_sets)}
        for m in METHODS:
            adv = compute_advantages(rewards, ids, m, **GROUP_LEVEL[m])  # [N]
            row[f"{m}_distinct_per_group"] = float(distinct_values_per_group(adv, ids).mean())
            vectors = np.sort(np.round(adv.reshape(num_groups, g), 4) + 0.0, axis=1)  # [B, G]
            row[f"{m}_vector_share"] = np.unique(vectors, axis=0).shape[0] / reward_sets
            row[f"{m}_all_zero_groups"] = float((np.abs(vectors) < 1e-12).all(axis=1).mean())
        rows.append(row)
    return rows


# -- (b) estimator cost -------------------------------------------------------------------------
def estimator_cost(ks: list[int], n: int, g: int, repeats: int) -> list[dict]:
    rows = []
    for k in ks:
        rewards, ids = binary_batch(n // g, k, g)
        times = {m: [] for m in METHODS}
        for _ in range(repeats):  # interleaved, so drifts in machine load hit both methods
            for m in METHODS:
                start = time.perf_counter()
                compute_advantages(rewards, ids, m)
                times[m].append(time.perf_counter() - start)
        peaks = {}
        for m in METHODS:
            tracemalloc.start()
            compute_advantages(rewards, ids, m)
            peaks[m] = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        row = {"K": k, "N": n}
        for m in METHODS:
            row[f"{m}_s"] = statistics.median(times[m])
            row[f"{m}_min_s"] = min(times[m])
            row[f"{m}_peak_bytes"] = peaks[m]
        row["time_ratio"] = row["gdpo_s"] / row["grpo_s"]
        row["min_time_ratio"] = row["gdpo_min_s"] / row["grpo_min_s"]
        row["memory_ratio"] = row["gdpo_peak_bytes"] / row["grpo_peak_bytes"]
        rows.append(row)
    return rows


# -- (c) training step cost -------------------------------------------------------------------------
def reward_list(k: int) -> list[str]:
    names = TOY_REWARDS + EXTRA_REWARDS
    if not 1 <= k <= len(names):
        raise ValueError(f"K={k} must be between 1 and {len(names)} (toy + extra toy rewards)")
    return names[:k]


def step_config(k: int, method: str, steps: int, out: str, seed: int = 0) -> dict:
    return {
        "seed": seed, "steps": steps, "method": method, "output_dir": out,
        "model": {"name": "tiny", "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 4,
                                           "intermediate_size": 128}},
        "task": {"name": "toy", "params": {"num_rewards": 3, "letters": "abcdef", "max_len": 3}},
        "rewards": [{"name": r} for r in reward_list(k)],
        "rollout": {"prompts_per_step": 8, "num_generations": 4, "max_new_tokens": 6},
        "optim": {"lr": 3e-3, "warmup_steps": 0, "lr_schedule": "constant"},
        "update": {"micro_batch_size": 64},
        "checkpoint": {"every": 0, "keep_last": 1, "save_final_model": False},
        "logging": {"tensorboard": False, "samples_every": 0, "progress": "lines"},
        "eval": {"every": 0},
    }


def train_step_cost(ks: list[int], steps: int, skip: int, reps: int = 1) -> list[dict]:
    import contextlib
    import io

    import gdpo.data.toy_extra  # noqa: F401  (registers the extra toy rewards)
    from gdpo.train import train

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in ks:
            row = {"K": k, "steps_timed": (steps - skip) * reps}
            step_s: dict[str, list[float]] = {m: [] for m in METHODS}
            rest_s: dict[str, list[float]] = {m: [] for m in METHODS}
            for rep in range(reps):  # alternate the methods, so drifts in machine load hit both
                for m in METHODS:
                    out = os.path.join(tmp, f"k{k}_{m}_{rep}")
                    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                        train(step_config(k, m, steps, out))
                    lines = [json.loads(x) for x in Path(out, "metrics.jsonl").read_text().splitlines()]
                    if len(lines) != steps:
                        raise RuntimeError(f"run {out} logged {len(lines)} of {steps} steps")
                    step_s[m] += [x["time/step_s"] for x in lines[skip:]]
                    rest_s[m] += [x["time/step_s"] - x["time/generate_s"] for x in lines[skip:]]
            for m in METHODS:
                row[f"{m}_step_s"] = statistics.median(step_s[m])
                row[f"{m}_min_step_s"] = min(step_s[m])
                row[f"{m}_rest_s"] = statistics.median(rest_s[m])
                row[f"{m}_min_rest_s"] = min(rest_s[m])
            row["step_ratio"] = row["gdpo_step_s"] / row["grpo_step_s"]
            row["min_step_ratio"] = row["gdpo_min_step_s"] / row["grpo_min_step_s"]
            rows.append(row)
    return rows


# -- output -------------------------------------------------------------------------------------
def print_tables(res: list[dict], cost: list[dict], steps: list[dict], g: int) -> None:
    if res:
        print(f"\n## (a) Advantage resolution, random binary rewards, G = {g}, {res[0]['groups']:,} groups per K\n")
        print("| K | distinct reward sets | GRPO distinct / group | GDPO distinct / group | GRPO vector share | "
              "GDPO vector share | GRPO all-zero groups | GDPO all-zero groups |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in res:
            print(f"| {r['K']} | {r['distinct_reward_sets']:,} | {r['grpo_distinct_per_group']:.3f} | "
                  f"{r['gdpo_distinct_per_group']:.3f} | {r['grpo_vector_share']:.3f} | {r['gdpo_vector_share']:.3f} | "
                  f"{r['grpo_all_zero_groups']:.4f} | {r['gdpo_all_zero_groups']:.4f} |")
    if cost:
        print(f"\n## (b) compute_advantages at N = {cost[0]['N']:,}, G = {g} (median and min time of "
              f"interleaved repeats; peak traced memory)\n")
        print("| K | GRPO ms median | GDPO ms median | GDPO/GRPO median | GRPO ms min | GDPO ms min | GDPO/GRPO min | "
              "GRPO peak MiB | GDPO peak MiB | memory GDPO/GRPO |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in cost:
            print(f"| {r['K']} | {1e3 * r['grpo_s']:.2f} | {1e3 * r['gdpo_s']:.2f} | {r['time_ratio']:.2f} | "
                  f"{1e3 * r['grpo_min_s']:.2f} | {1e3 * r['gdpo_min_s']:.2f} | {r['min_time_ratio']:.2f} | "
                  f"{r['grpo_peak_bytes'] / 2**20:.2f} | {r['gdpo_peak_bytes'] / 2**20:.2f} | {r['memory_ratio']:.2f} |")
    if steps:
        print(f"\n## (c) Training step, tiny model on the toy task, B = 8, G = 4 "
              f"(median and min over {steps[0]['steps_timed']} steps per method)\n")
        print("| K | GRPO step s median | GDPO step s median | GDPO/GRPO median | GRPO step s min | GDPO step s min | "
              "GDPO/GRPO min | GRPO non-gen. s min | GDPO non-gen. s min |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in steps:
            print(f"| {r['K']} | {r['grpo_step_s']:.3f} | {r['gdpo_step_s']:.3f} | {r['step_ratio']:.2f} | "
                  f"{r['grpo_min_step_s']:.3f} | {r['gdpo_min_step_s']:.3f} | {r['min_step_ratio']:.2f} | "
                  f"{r['grpo_min_rest_s']:.3f} | {r['gdpo_min_rest_s']:.3f} |")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small grid for a smoke run")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    parser.add_argument("--skip-train", action="store_true", help="leave out part (c)")
    parser.add_argument("--only-train", action="store_true", help="run part (c) only")
    parser.add_argument("--train-steps", type=int, default=None, help="steps per training run in (c) (default 8)")
    args = parser.parse_args(argv)
    g = 8
    if args.quick:
        ks, groups, n, repeats, train_ks, steps, skip, reps = [2, 4], 500, 8192, 3, [4], 2, 1, 1
    else:
        ks, groups, n, repeats = list(range(2, 11)), 20_000, 65_536, 25
        train_ks, steps, skip, reps = [2, 4, 6, 8, 10], args.train_steps or 8, 2, 3
    start = time.time()
    result = {
        "resolution": [] if args.only_train else resolution(ks, g, groups),
        "estimator_cost": [] if args.only_train else estimator_cost(ks, n, g, repeats),
        "train_step": [] if args.skip_train else train_step_cost(train_ks, steps, skip, reps),
    }
    print_tables(result["resolution"], result["estimator_cost"], result["train_step"], g)
    result["wall_s"] = time.time() - start
    print(f"\nwall time {result['wall_s']:.0f} s; 1-min load average at the end {os.getloadavg()[0]:.2f}; "
          f"{os.cpu_count()} CPU(s)")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
