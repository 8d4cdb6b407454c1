"""`gdpo eval`: evaluate a model on a task's test split with the paper's metrics.

Examples::

    gdpo eval --model tiny --task toolcall --limit 8 --max-new-tokens 64
    gdpo eval --model runs/gdpo/final --task deepscaler --task-param subset=aime \\
        --samples 16 --temperature 0.6 --max-new-tokens 8000 --output runs/eval-aime
    gdpo eval --model smollm2 --task code --output runs/eval-code   # rerun: resumes
    gdpo eval --model reference --task bfcl --output runs/eval-bfcl-ref  # end-to-end check: 100%
    gdpo eval --model smollm2 --task bfcl --task-param categories=simple_python,multiple,live_simple

Writes ``results.jsonl`` (one line per prompt; a rerun skips prompts already there),
``summary.json`` and ``summary.md`` to ``--output``.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="local HF folder, 'tiny' (random init), 'smollm2', or 'reference' (answers every row with "
                             "its reference answer: the end-to-end check, must score 100%%)")
    parser.add_argument("--task", required=True,
                        help="task name: bfcl, toolcall, toolrl, humaneval, code, math, gsm8k, deepscaler, ...")
    parser.add_argument("--task-param", action="append", default=[], metavar="KEY=VALUE",
                        help="task builder parameter, e.g. subset=aime or path=DIR (repeatable; value is YAML)")
    parser.add_argument("--split", default="test", choices=["test", "train"], help="which rows (default test)")
    parser.add_argument("--samples", "-n", type=int, default=1, help="completions per prompt (pass@1 averages them)")
    parser.add_argument("--temperature", "-t", type=float, default=0.0, help="0 = greedy (default); paper: 0.6")
    parser.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling mass")
    parser.add_argument("--max-new-tokens", "-m", type=int, default=512, help="generation limit per completion")
    parser.add_argument("--length-limit", type=int, help="tokens counted as 'over the limit' (default: the task's, "
                                                         "else 4000)")
    parser.add_argument("--max-prompt-tokens", type=int, default=2048,
                        help="prompt tokens kept (default 2048); longer prompts are cut from the left, with a warning")
    parser.add_argument("--long-prompts", default="warn", choices=["warn", "error"],
                        help="a prompt over --max-prompt-tokens: warn and cut it (default) or stop with an error")
    parser.add_argument("--limit", "-k", type=int, help="evaluate only the first k prompts")
    parser.add_argument("--batch-size", type=int, default=8, help="prompts per generate call")
    parser.add_argument("--threads", default="auto",
                        help="CPU threads for generation (default auto: 1 when the load average is at least the number "
                             "of cores, where more threads spin and slow down; else torch's default)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed (and the tiny model's init)")
    parser.add_argument("--output", "-o", default="runs/eval", help="output folder (reused to resume)")
    parser.add_argument("--reward-config", metavar="FILE", help="YAML list of extra reward entries scored beside "
                                                                "the task's, e.g. a reward_model or a judge")
    parser.add_argument("--breakdown", default="auto",
                        help="column to split the metrics by (e.g. live: BFCL live/non-live); auto = the first of "
                             "live, category, subset, kind that the task has; none = no split")


def parse_task_params(items: list[str]) -> dict[str, Any]:
    """``["subset=aime", "num_test=20"]`` -> ``{"subset": "aime", "num_test": 20}``."""
    params = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--task-param {item!r}: write it as KEY=VALUE, e.g. subset=aime")
        params[key] = yaml.safe_load(raw)
    return params


def _threads(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"--threads {value!r}: give a positive integer or 'auto'") from None


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # model hubs are never contacted
    from gdpo.eval.harness import EvalSettings, evaluate, markdown_table
    from gdpo.rewards.learned import load_reward_config

    try:
        settings = EvalSettings(
            model=args.model, task=args.task, task_params=parse_task_params(args.task_param), split=args.split,
            samples=args.samples, temperature=args.temperature, top_p=args.top_p,
            max_new_tokens=args.max_new_tokens, max_prompt_tokens=args.max_prompt_tokens,
            long_prompts=args.long_prompts, length_limit=args.length_limit, limit=args.limit,
            batch_size=args.batch_size, seed=args.seed, threads=_threads(args.threads), breakdown=args.breakdown,
            rewards=load_reward_config(args.reward_config))
        result = evaluate(settings, args.output, log=lambda msg: print(msg, file=sys.stderr))
    except (ValueError, KeyError, FileNotFoundError, ImportError) as exc:
        print(f"gdpo eval: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(result, settings))
    print(f"wrote {result.output_dir}/summary.md, summary.json and results.jsonl "
          f"({result.num_new} new prompt(s), {result.seconds:.1f} s)", file=sys.stderr)
    return 0
