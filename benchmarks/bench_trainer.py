"""Benchmark: our trainer (GDPO and GRPO) against TRL's GRPOTrainer, same model, data and lengths.

Every system trains the same fp32 model on CPU on the built-in ``math`` task's prompts:
B prompts x G completions per step, temperature 1, no KL (beta 0), one optimizer step per
rollout batch (no old-logprob pass), the task's three rewards. Each run is its own process
(so peak RSS, from getrusage, is that system's alone); runs of the systems are interleaved
over ``--rounds``, the first step of each run is dropped as warm-up, and medians are reported.

Completion lengths are forced by default (EOS suppressed with ``min_new_tokens``, so every
completion has exactly max_new_tokens tokens in both systems); ``--lengths natural`` lets
them stop at EOS, and the rates are then per completion token actually generated.

The floor of a step is 8 x params x tokens FLOPs (6 for forward + backward, 2 for
generation; tokens = prompt + completion tokens of the batch, padding excluded; attention
ignored) at the fp32 GEMM rate measured in the same process just before training.

    python benchmarks/bench_trainer.py                 # SmolLM2-135M, B=2, G=8, 64 tokens (~15 min)
    python benchmarks/bench_trainer.py --quick         # tiny random-init model, seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SYSTEMS = ("ours-gdpo", "ours-grpo", "trl")
LABELS = {"ours-gdpo": "gdpo trainer, GDPO", "ours-grpo": "gdpo trainer, GRPO", "trl": "TRL GRPOTrainer, GRPO"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a local HF folder")
    p.add_argument("--quick", action="store_true", help="tiny model, short run (a smoke check)")
    p.add_argument("--prompts", type=int, default=2, help="B: prompts per step")
    p.add_argument("--generations", type=int, default=8, help="G: completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64, help="completion length (limit)")
    p.add_argument("--micro", type=int, default=0, help="sequences per forward/backward (0 = all N)")
    p.add_argument("--steps", type=int, default=4, help="steps per run (the first is dropped)")
    p.add_argument("--rounds", type=int, default=2, help="interleaved runs of each system")
    p.add_argument("--lengths", choices=("forced", "natural"), default="forced")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch threads in each run")
    p.add_argument("--systems", default=",".join(SYSTEMS), help=f"comma list from {SYSTEMS}")
    p.add_argument("--json", help="also write all measurements to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.prompts, args.generations, args.max_new_tokens = "tiny", 2, 4, 6
        args.steps, args.rounds = 2, 1
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    bad = [s for s in args.systems if s not in SYSTEMS]
    if bad:
        p.error(f"unknown systems {bad}; choose from {SYSTEMS}")
    if args.steps < 2:
        p.error(f"--steps must be at least 2 (the first is warm-up), got {args.steps}")
    return args


def run_one(system: str, args: argparse.Namespace, workdir: Path, index: int) -> dict:
    """One training run of ``system`` in a fresh Python process; returns its measurements."""
    spec = {"system": system, "method": system.split("-")[-1], "model": args.model, "seed": 0,
            "prompts": args.prompts, "generations": args.generations, "max_new_tokens": args.max_new_tokens,
            "micro": args.micro, "steps": args.steps, "lengths": args.lengths, "threads": args.threads,
            "num_prompts": 64}
    spec_path, out_path = workdir / f"spec{index}.json", workdir / f"out{index}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(HERE / "_trainer_runs.py"), str(spec_path), str(out_path)],
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{system} run failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    out = json.loads(out_path.read_text())
    out["wall_s"] = time.perf_counter() - t0
    return out


def summarize(runs: list[dict]) -> dict:
    """Medians over the steps of all runs of a system, the first step of each run dropped."""
    steps = [s for run in runs for s in run["steps"][1:]]
    step_s = statistics.median(s["step_s"] for s in steps)
    tokens = statistics.median(s["completion_tokens"] for s in steps)
    total = statistics.median(s["prompt_tokens"] + s["completion_tokens"] for s in steps)
    rate = statistics.median(r["matmul_gflops"] for r in runs)
    params = runs[0]["params"]
    floor_s = 8.0 * params * total / (rate * 1e9)
    gen = [s["generate_s"] for s in steps if "generate_s" in s]
    return {
        "steps": len(steps), "step_s": step_s,
        "tokens_per_s": statistics.median(s["completion_tokens"] / s["step_s"] for s in steps),
        "completion_tokens": tokens, "prompt_tokens": statistics.median(s["prompt_tokens"] for s in steps),
        "generate_s": statistics.median(gen) if gen else float("nan"),
        "peak_rss_mib": statistics.median(r["peak_rss_mib"] for r in runs),
        "rss_before_mib": statistics.median(r["rss_before_mib"] for r in runs),
        "matmul_gflops": rate, "params": params, "floor_s": floor_s,
        "over_floor": statistics.median(s["step_s"] for s in steps) / floor_s,
    }


def advantage_cost(n: int, groups: int, k: int = 3, repeats: int = 200) -> dict[str, float]:
    """Seconds per call of the GDPO and GRPO estimators on an [N, K] binary reward batch."""
    from gdpo import compute_advantages

    rng = np.random.default_rng(0)
    rewards = rng.integers(0, 2, size=(n, k)).astype(np.float64)
    ids = np.repeat(np.arange(groups), n // groups)
    out = {}
    for method in ("gdpo", "grpo"):
        compute_advantages(rewards, ids, method)
        t0 = time.perf_counter()
        for _ in range(repeats):
            compute_advantages(rewards, ids, method)
        out[method] = (time.perf_counter() - t0) / repeats
    return out


def machine_state() -> str:
    load = os.getloadavg()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
            f"load average {load[0]:.2f}/{load[1]:.2f}/{load[2]:.2f}")


def report(args: argparse.Namespace, results: dict[str, dict], runs: dict[str, list[dict]]) -> str:
    n = args.prompts * args.generations
    lines = [
        f"# Trainer benchmark ({datetime.datetime.now().isoformat(timespec='minutes')})", "",
        f"model {args.model} ({results[args.systems[0]]['params'] / 1e6:.1f}M params, fp32, CPU, "
        f"{args.threads} threads); B={args.prompts} prompts x G={args.generations} = {n} completions "
        f"per step; max_new_tokens={args.max_new_tokens} ({args.lengths} lengths: "
        + ("EOS suppressed, every completion is max_new_tokens long" if args.lengths == "forced"
           else "stop at EOS; rates per generated token")
        + f"); micro-batch {args.micro or n}; beta 0, one update per batch; "
        f"{args.rounds} interleaved run(s) x {args.steps} steps per system, first step of each dropped, medians.",
        f"machine: {machine_state()}", "",
        "| system | completion tokens/s | step s | generate s | peak RSS MiB | RSS after load MiB "
        "| step / FLOP floor | matmul GFLOP/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for system in args.systems:
        r = results[system]
        lines.append(f"| {LABELS[system]} | {r['tokens_per_s']:.1f} | {r['step_s']:.2f} | {r['generate_s']:.2f} "
                     f"| {r['peak_rss_mib']:.0f} | {r['rss_before_mib']:.0f} | {r['over_floor']:.1f}x "
                     f"| {r['matmul_gflops']:.1f} |")
    lines.append("")
    lines.append("(generate s: not separated for TRL; floor = 8 x params x (prompt + completion tokens) "
                 "/ matmul rate; TRL's generate time is inside its step.)")
    lines.append("")
    ours = "ours-gdpo" if "ours-gdpo" in results else ("ours-grpo" if "ours-grpo" in results else None)
    if ours and "trl" in results:
        a, b = results[ours], results["trl"]
        lines.append(f"- ours ({ours.split('-')[1].upper()}) / TRL completion tokens per second: "
                     f"**{a['tokens_per_s'] / b['tokens_per_s']:.2f}x** (target >= 1.5x)")
        lines.append(f"- ours / TRL peak RSS: **{a['peak_rss_mib'] / b['peak_rss_mib']:.2f}x** (target <= 1.0x)")
    if "ours-gdpo" in results and "ours-grpo" in results:
        g, r = results["ours-gdpo"], results["ours-grpo"]
        lines.append(f"- GDPO / GRPO step time (same trainer, same data): **{g['step_s'] / r['step_s']:.3f}x** "
                     "(target within 1%; end to end, so machine noise is included)")
        cost = advantage_cost(n, args.prompts)
        extra = cost["gdpo"] - cost["grpo"]
        lines.append(f"- estimator alone on this batch: GDPO {cost['gdpo'] * 1e6:.0f} us, GRPO "
                     f"{cost['grpo'] * 1e6:.0f} us per step; the difference is {100 * extra / r['step_s']:.4f}% "
                     "of a GRPO step")
    lines.append("")
    lines.append("per-run step times (s): " + "; ".join(
        f"{s}: " + ", ".join("[" + " ".join(f"{x['step_s']:.2f}" for x in run["steps"]) + "]" for run in runs[s])
        for s in args.systems))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs: dict[str, list[dict]] = {s: [] for s in args.systems}
    with tempfile.TemporaryDirectory(prefix="bench-trainer-") as tmp:
        index = 0
        for rnd in range(args.rounds):
            order = args.systems[rnd % len(args.systems):] + args.systems[:rnd % len(args.systems)]
            for system in order:
                print(f"[bench] round {rnd + 1}/{args.rounds}: {system} ...", file=sys.stderr, flush=True)
                runs[system].append(run_one(system, args, Path(tmp), index))
                index += 1
    results = {s: summarize(r) for s, r in runs.items()}
    print(report(args, results, runs))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
