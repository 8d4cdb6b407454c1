"""Benchmark: the cost of one trainer step under GDPO against GRPO, paired, in one process.

The only code that differs between the two methods is the advantage estimator, so this
benchmark holds everything else fixed and measures whether the whole step notices it:

* one model and batch shape; every trial starts from the same initial weights and a fresh
  optimizer, and seeds the sampler with the round number, so the two methods of a round
  generate *identical tokens* (checked) and do identical floating-point work apart from
  the estimator;
* a trial is one full step of the trainer's recipe: generate (HF, KV cache, lengths forced
  to max_new_tokens) -> score with the task's rewards -> advantages -> clipped update;
* rounds alternate the order (GRPO first, then GDPO first) so that drift in machine load
  falls on both; each round gives one paired ratio GDPO / GRPO of step time (wall clock
  and this process's CPU time). Reported: median ratio with a bootstrap 95% interval.

    python benchmarks/bench_method_step.py                  # SmolLM2-135M, B=2, G=8, 64 tokens
    python benchmarks/bench_method_step.py --quick          # tiny random-init model, seconds
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

METHODS = ("grpo", "gdpo")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="smollm2", help="smollm2 (default), tiny, or a local HF folder")
    p.add_argument("--quick", action="store_true", help="tiny model, few rounds (a smoke check)")
    p.add_argument("--prompts", type=int, default=2, help="B: prompts per step")
    p.add_argument("--generations", type=int, default=8, help="G: completions per prompt")
    p.add_argument("--max-new-tokens", type=int, default=64, help="completion length (forced)")
    p.add_argument("--rounds", type=int, default=10, help="paired rounds (each runs both methods once)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is cleanest)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write all measurements to this file")
    args = p.parse_args(argv)
    if args.quick:
        args.model, args.prompts, args.generations, args.max_new_tokens, args.rounds = "tiny", 2, 4, 6, 4
    if args.rounds < 2:
        p.error(f"--rounds {args.rounds}: need at least 2 to alternate the order")
    return args


def config_for(args: argparse.Namespace):
    """A TrainConfig with the benchmark's shape: one optimizer step per batch, no KL."""
    from gdpo.train.loop import as_config

    n = args.prompts * args.generations
    return as_config({
        "seed": args.seed, "steps": 1, "method": "gdpo", "model": {"name": args.model},
        "task": {"name": "math", "params": {"num_train": 64, "num_test": 0, "seed": args.seed}},
        "rollout": {"prompts_per_step": args.prompts, "num_generations": args.generations,
                    "max_new_tokens": args.max_new_tokens, "temperature": 1.0},
        "loss": {"beta": 0.0, "aggregation": "token_mean"},
        "optim": {"lr": 1e-6, "max_grad_norm": 1.0},
        "update": {"ppo_epochs": 1, "num_minibatches": 1, "micro_batch_size": n},
    })


class Bench:
    """The fixed pieces of a trial: model, initial weights, prompts, rewards, settings."""

    def __init__(self, args: argparse.Namespace):
        from gdpo.data.base import get_task
        from gdpo.models import load_model_and_tokenizer
        from gdpo.rewards.reward_set import RewardSet
        from gdpo.train.build import update_settings

        self.args, self.cfg = args, config_for(args)
        self.model, self.tok, _ = load_model_and_tokenizer(args.model, seed=args.seed)
        self.model.eval()
        self.model.generation_config.min_new_tokens = args.max_new_tokens  # EOS suppressed: fixed lengths
        self.initial = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        task = get_task("math", num_train=64, num_test=0, seed=args.seed)
        self.rows = task.train[:args.prompts]
        self.rewards = RewardSet.from_config(task.rewards)
        self.settings = update_settings(self.cfg)

    def trial(self, method: str, round_index: int) -> dict:
        """One full step from the initial weights; returns phase timings and the tokens made."""
        from gdpo.train.build import build_optimizer
        from gdpo.rollout.hf import generate
        from gdpo.train.scoring import score_and_normalize
        from gdpo.train.update import UpdateBatch, update_policy

        self.model.load_state_dict(self.initial)
        optimizer, scheduler = build_optimizer(self.cfg, self.model)
        torch.manual_seed(self.args.seed * 1000 + round_index)
        c0, w0 = time.process_time(), time.perf_counter()
        r = generate(self.model, self.tok, self.rows, num_generations=self.args.generations,
                     max_new_tokens=self.args.max_new_tokens, max_prompt_tokens=1024)
        w1 = time.perf_counter()
        scored = score_and_normalize(self.rewards, r.completions, r.rows, r.lengths.numpy(),
                                     self.args.generations, method=method, method_options={},
                                     token_weighted=False, dynamic_sampling=False)
        w2 = time.perf_counter()
        batch = UpdateBatch(r.prompt_ids, r.prompt_mask, r.completion_ids, r.completion_mask,
                            torch.as_tensor(scored.advantages, dtype=torch.float32))
        update_policy(self.model, optimizer, scheduler, batch, self.settings)
        w3, c3 = time.perf_counter(), time.process_time()
        return {"method": method, "round": round_index, "step_s": w3 - w0, "cpu_s": c3 - c0,
                "generate_s": w1 - w0, "score_s": w2 - w1, "update_s": w3 - w2,
                "tokens": r.completion_ids.clone(), "completion_tokens": int(r.completion_mask.sum())}


def bootstrap_median_ci(values: list[float], reps: int = 4000, seed: int = 0) -> tuple[float, float]:
    """95% percentile-bootstrap interval of the median of ``values``."""
    rng = np.random.default_rng(seed)
    arr = np.asarray(values)
    medians = np.median(rng.choice(arr, size=(reps, len(arr)), replace=True), axis=1)
    return float(np.percentile(medians, 2.5)), float(np.percentile(medians, 97.5))


def run(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    bench.trial("grpo", -1)  # warm-up (allocations, kernels, the math-verify worker)
    trials, identical = [], True
    for k in range(args.rounds):
        order = METHODS if k % 2 == 0 else METHODS[::-1]
        pair = {m: bench.trial(m, k) for m in order}
        identical &= torch.equal(pair["grpo"]["tokens"], pair["gdpo"]["tokens"])
        for m in order:
            pair[m].pop("tokens")
            trials.append(pair[m])
        print(f"round {k + 1}/{args.rounds}: grpo {pair['grpo']['step_s']:.3f} s, gdpo {pair['gdpo']['step_s']:.3f} s "
              f"(ratio {pair['gdpo']['step_s'] / pair['grpo']['step_s']:.4f})", flush=True)
    return {"trials": trials, "identical_tokens": bool(identical)}


def summarize(result: dict) -> dict:
    by = {m: [t for t in result["trials"] if t["method"] == m] for m in METHODS}
    out = {m: {key: statistics.median(t[key] for t in by[m])
               for key in ("step_s", "cpu_s", "generate_s", "score_s", "update_s")} for m in METHODS}
    for key in ("step_s", "cpu_s"):
        ratios = [g[key] / r[key] for g, r in zip(by["gdpo"], by["grpo"], strict=True)]
        lo, hi = bootstrap_median_ci(ratios)
        out[f"ratio_{key}"] = {"median": statistics.median(ratios), "ci95": [lo, hi], "all": ratios}
    return out


def print_report(args: argparse.Namespace, result: dict, summary: dict) -> None:
    print(f"\n{args.model}, B={args.prompts}, G={args.generations}, {args.max_new_tokens} tokens, "
          f"{args.rounds} paired rounds, {args.threads} thread(s); identical tokens in every pair: "
          f"{result['identical_tokens']}\n")
    print("| method | step (s) | CPU (s) | generate (s) | score + advantages (s) | update (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in METHODS:
        s = summary[m]
        print(f"| {m} | {s['step_s']:.3f} | {s['cpu_s']:.3f} | {s['generate_s']:.3f} | {s['score_s']:.4f} | "
              f"{s['update_s']:.3f} |")
    for key, label in (("step_s", "wall clock"), ("cpu_s", "process CPU time")):
        r = summary[f"ratio_{key}"]
        print(f"\nGDPO / GRPO step, {label}: median of paired ratios {r['median']:.4f} "
              f"(bootstrap 95% interval {r['ci95'][0]:.4f}-{r['ci95'][1]:.4f}); target: within 1% (0.99-1.01)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    result = run(args)
    summary = summarize(result)
    print_report(args, result, summary)
    if args.json:
        meta = {"started": started, "args": vars(args), "machine": platform.platform(),
                "cpus": os.cpu_count(), "load_average": os.getloadavg()}
        Path(args.json).write_text(json.dumps({"meta": meta, **result, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
