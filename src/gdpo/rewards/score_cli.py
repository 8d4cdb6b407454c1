"""`gdpo score`: score a JSONL of completions with named rewards.

Each input line is a JSON object with the completion (key ``completion`` by default) and the
dataset columns the rewards read (``answer``, ``tests``, ...). Writes one JSON line of
per-reward scores per input line (``null`` = not applicable) and prints a summary table.

    gdpo score --rewards math_correctness,math_format --input completions.jsonl
    gdpo score --rewards math_length --param math_length.max_tokens=200 --input c.jsonl
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from gdpo.jsonio import write_text_atomic
from gdpo.rewards.reward_set import RewardScores, RewardSet, RewardSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rewards", required=True, help="comma-separated reward names (or module:function paths)")
    parser.add_argument("--input", required=True, help="JSONL file: one object per completion, with its columns")
    parser.add_argument("--output", help="where the per-completion scores go (default: INPUT with .scores.jsonl)")
    parser.add_argument("--completion-key", default="completion", help="the key holding the completion text")
    parser.add_argument("--param", action="append", default=[], metavar="REWARD.KEY=VALUE",
                        help="a parameter of a configurable reward, e.g. math_length.max_tokens=200 (repeatable)")
    parser.add_argument("--batch-size", type=int, default=256, help="completions scored per call")


def run(args: argparse.Namespace) -> int:
    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    params = parse_params(args.param, names)
    reward_set = RewardSet([RewardSpec(n, params=params.get(n, {})) for n in names])
    completions, columns = read_completions(Path(args.input), args.completion_key)
    scores = score_in_batches(reward_set, completions, columns, args.batch_size)
    out = Path(args.output) if args.output else Path(args.input).with_suffix(".scores.jsonl")
    write_scores(out, scores)
    print(summary_table(scores))
    errors = scores.error_summary()
    for name, info in errors.items():
        print(f"reward {name!r} raised on {info['count']} completion(s); first: {info['first']}")
    print(f"\nwrote {len(completions)} score lines to {out}")
    return 0


def parse_params(items: list[str], names: list[str]) -> dict[str, dict[str, Any]]:
    """``["math_length.max_tokens=200"]`` -> ``{"math_length": {"max_tokens": 200}}``."""
    params: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        reward, dot, field = key.partition(".")
        if not sep or not dot or not field:
            raise SystemExit(f"--param {item!r}: write it as REWARD.KEY=VALUE, e.g. math_length.max_tokens=200")
        if reward not in names:
            raise SystemExit(f"--param {item!r}: reward {reward!r} is not in --rewards {names}")
        params.setdefault(reward, {})[field] = _parse_value(raw)
    return params


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def read_completions(path: Path, key: str) -> tuple[list[str], dict[str, list]]:
    """Read the JSONL; every line must hold ``key`` (a string) and the same set of columns."""
    if not path.is_file():
        raise SystemExit(f"--input {str(path)!r} does not exist")
    completions: list[str] = []
    columns: dict[str, list] = {}
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{lineno}: not valid JSON ({exc.msg}); each line must be one JSON object")
            if not isinstance(row, dict) or not isinstance(row.get(key), str):
                raise SystemExit(
                    f"{path}:{lineno}: expected an object with a string {key!r}; got keys "
                    f"{sorted(row) if isinstance(row, dict) else type(row).__name__} (use --completion-key)"
                )
            cols = {k: v for k, v in row.items() if k != key}
            if completions and set(cols) != set(columns):
                raise SystemExit(f"{path}:{lineno}: columns {sorted(cols)} differ from the first line's {sorted(columns)}")
            for k, v in cols.items():
                columns.setdefault(k, []).append(v)
            completions.append(row[key])
    if not completions:
        raise SystemExit(f"{path} holds no completions")
    return completions, columns


def score_in_batches(reward_set: RewardSet, completions: list[str], columns: dict[str, list],
                     batch_size: int) -> RewardScores:
    parts = []
    for start in range(0, len(completions), batch_size):
        stop = start + batch_size
        parts.append(reward_set.score(completions[start:stop], **{k: v[start:stop] for k, v in columns.items()}))
    errors = parts[0].errors
    for part in parts[1:]:
        for name, err in part.errors.items():
            errors[name].count += err.count
            errors[name].first_message = errors[name].first_message or err.first_message
    return RewardScores(np.concatenate([p.values for p in parts]), parts[0].names, parts[0].weights, errors)


def write_scores(path: Path, scores: RewardScores) -> None:
    """One line per completion, written to a temp file and renamed: never half-written."""
    lines = []
    for i, row in enumerate(scores.values):
        values = {n: (None if math.isnan(v) else float(v)) for n, v in zip(scores.names, row)}
        lines.append(json.dumps({"index": i, "scores": values}) + "\n")
    write_text_atomic(path, "".join(lines))


def summary_table(scores: RewardScores) -> str:
    lines = ["| reward | mean | std | min | max | n/a | errors |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k, name in enumerate(scores.names):
        col = scores.values[:, k]
        ok = col[~np.isnan(col)]
        stats = (f"{ok.mean():.4f} | {ok.std():.4f} | {ok.min():.4f} | {ok.max():.4f}" if ok.size
                 else "- | - | - | -")
        lines.append(f"| {name} | {stats} | {int(np.isnan(col).sum())} | {scores.errors[name].count} |")
    return "\n".join(lines)
