"""Benchmark: the `reward_model` reward's scoring throughput, and its share of a training step.

Two measurements, in one process:

1. **Throughput** (samples/s): the reward scores N distinct (prompt, completion) pairs of the
   built-in math task (few-shot prompts, completions of ``--completion-chars`` characters) at
   each ``--batch-sizes``; the cache is off, every sample is a forward pass. Median of
   ``--repeats`` timed passes after one warm-up pass. A second line per batch size scores the
   same N with groups of G that repeat completions (hit rate printed), cache on.
2. **Share of a step**: ``gdpo train`` steps (GDPO, math task, ``rewards: [reward_model,
   math_format]``, tiny policy) with the time spent inside the reward model's forward passes
   measured by a wrapper around its scorer; share = RM seconds / ``time/step_s``, median over
   the steps after the first.

    python benchmarks/bench_reward_model.py                 # RM = SmolLM2-135M backbone + a score head
    python benchmarks/bench_reward_model.py --rm tiny       # a tiny random RM (seconds)

The SmolLM2 RM is the embedded SmolLM2-135M-Instruct with a fresh 1-label score head: the
cost of a real 135M reward model; its scores are meaningless.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rm", default="smollm2", help="smollm2 (135M backbone, default), tiny, or an RM folder")
    p.add_argument("--samples", type=int, default=64, help="N pairs scored per timed pass")
    p.add_argument("--batch-sizes", default="1,8,32", help="comma-separated batch sizes")
    p.add_argument("--completion-chars", type=int, default=200, help="length of each completion")
    p.add_argument("--group", type=int, default=8, help="G for the cached pass (completions repeat in a group)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per batch size (median)")
    p.add_argument("--steps", type=int, default=4, help="training steps for the share (0: skip)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: on a shared machine more threads oversubscribe)")
    return p.parse_args(argv)


def rm_folder(name: str, work: Path) -> Path:
    """An RM folder: a given path, a tiny random one, or SmolLM2-135M with a fresh score head."""
    from gdpo.rewards.reward_model import save_tiny_reward_model

    if name == "tiny":
        return save_tiny_reward_model(work / "rm-tiny")
    if name != "smollm2":
        return Path(name)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from gdpo.models import smollm2_folder

    src = smollm2_folder()
    tok = AutoTokenizer.from_pretrained(src)
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    out = work / "rm-smollm2"
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


def pairs(n: int, chars: int, group: int = 1):
    """N (prompt, completion) pairs from the math task; with group > 1, completions repeat within a group."""
    from gdpo.data import get_task

    rows = get_task("math").train
    prompts, completions = [], []
    for i in range(n):
        row = rows[i // group if group > 1 else i]
        prompts.append(row["prompt"])
        k = (i % 3) if group > 1 else i  # 3 distinct completions per group
        body = f"<think>{row.get('solution', '')} step {k} " + "x" * chars
        completions.append((body[:chars - 30] + f"</think>\n<answer>{row['answer']}</answer>")[:chars])
    return prompts, completions


def throughput(folder: Path, args) -> list[tuple[int, float, float, float]]:
    """(batch size, samples/s uncached, samples per CPU-second uncached, samples/s cached with groups,
    hit rate) per batch size."""
    import gdpo.rewards

    prompts, completions = pairs(args.samples, args.completion_chars)
    gprompts, gcompletions = pairs(args.samples, args.completion_chars, args.group)
    rows = []
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        fn = gdpo.rewards.get("reward_model", model=str(folder), batch_size=bs, cache=False)
        fn(completions[:bs], prompts=prompts[:bs])  # warm-up
        times, cpu = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            fn(completions, prompts=prompts)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        cached = gdpo.rewards.get("reward_model", model=str(folder), batch_size=bs)
        t0 = time.perf_counter()
        cached(gcompletions, prompts=gprompts)
        t_cached = time.perf_counter() - t0
        rows.append((bs, args.samples / statistics.median(times), args.samples / statistics.median(cpu),
                     args.samples / t_cached, cached.cache.stats().hit_rate))
    return rows


def mean_tokens(folder: Path, args) -> float:
    import gdpo.rewards

    fn = gdpo.rewards.get("reward_model", model=str(folder))
    prompts, completions = pairs(args.samples, args.completion_chars)
    texts = [fn.render(p, c) for p, c in zip(prompts, completions)]
    return statistics.mean(len(fn.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def step_share(folder: Path, args, work: Path):
    """Per step after the first: (step seconds, seconds inside the reward model's call), and the
    RM's cache stats over the whole run."""
    from gdpo.rewards import reward_model
    from gdpo.train import train

    spent: list[float] = []
    seen: list = []
    real = reward_model.RewardModelReward.__call__

    def timed(self, *a, **k):  # the reward set calls it once per step (render, cache, forward passes)
        seen[:] = [self]
        t0 = time.perf_counter()
        try:
            return real(self, *a, **k)
        finally:
            spent.append(time.perf_counter() - t0)

    reward_model.RewardModelReward.__call__ = timed
    cfg = {
        "seed": 0, "steps": args.steps, "method": "gdpo", "output_dir": str(work / "run"),
        "model": {"name": "tiny", "tiny": {"hidden_size": 64, "num_layers": 2, "num_heads": 4,
                                           "intermediate_size": 128, "max_positions": 1024}},
        "task": {"name": "math"},
        "rewards": [{"name": "reward_model", "params": {"model": str(folder), "batch_size": 16}},
                    {"name": "math_format"}],
        "rollout": {"prompts_per_step": 4, "num_generations": 8, "max_new_tokens": 32, "max_prompt_tokens": 512},
        "checkpoint": {"every": 0, "save_final_model": False}, "logging": {"tensorboard": False, "samples_every": 0},
        "eval": {"every": 0},
    }
    try:
        result = train(cfg)
    finally:
        reward_model.RewardModelReward.__call__ = real
    step_s = [row["time/step_s"] for row in result.history]
    if len(spent) != len(step_s):
        raise RuntimeError(f"expected one reward-model call per step, got {len(spent)} for {len(step_s)} steps")
    return step_s[1:], spent[1:], seen[0].cache.stats()


def load_line() -> str:
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unavailable"
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="gdpo-bench-rm-") as tmp:
        work = Path(tmp)
        folder = rm_folder(args.rm, work)
        params = sum(p.numel() for p in __import__("transformers").AutoModelForSequenceClassification
                     .from_pretrained(folder).parameters())
        print(f"RM: {args.rm} ({params / 1e6:.2f} M parameters), {args.threads} torch thread(s); before: {load_line()}")
        print(f"\nthroughput, {args.samples} math prompts x {args.completion_chars}-char completions "
              f"({mean_tokens(folder, args):.0f} tokens per input on average; median of {args.repeats}):\n")
        print("| batch size | samples/s (no cache) | samples per CPU-s (no cache) | samples/s (groups of "
              f"{args.group}, cache on) | hit rate |\n|---:|---:|---:|---:|---:|")
        for bs, rate, per_cpu, cached, hit in throughput(folder, args):
            print(f"| {bs} | {rate:.2f} | {per_cpu:.2f} | {cached:.2f} | {hit:.2f} |")
        if args.steps:
            steps, rm, stats = step_share(folder, args, work)
            shares = [r / s for r, s in zip(rm, steps)]
            print("\ntraining steps (tiny policy, 4 prompts x 8 completions, 32 new tokens, GDPO), "
                  f"steps 2-{args.steps}:")
            print(f"  step {statistics.median(steps):.2f} s, RM {statistics.median(rm):.3f} s, "
                  f"RM share {100 * statistics.median(shares):.1f}% (median; per step: "
                  f"{', '.join(f'{100 * s:.1f}%' for s in shares)})")
            print(f"  RM cache over the run: {stats.hits} hits, {stats.misses} misses (hit rate {stats.hit_rate:.2f})")
        print(f"\nafter: {load_line()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
