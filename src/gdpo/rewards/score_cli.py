"""`gdpo score`: score a JSONL of completions with named rewards.

Each input line is a JSON object with the completion (key ``completion`` by default) and the
dataset columns the rewards read (``answer``, ``tests``, ...). Writes one JSON line of
per-reward scores per input line (``null`` = not applicable) and prints a summary table.

    gdpo score --rewards math_correctness,math_format --input completions.jsonl
    gdpo score --rewards math_length --param math_length.max_tokens=200 --input c.jsonl
    gdpo score --rewards math_format --input c.jsonl --on-error skip   # bad lines counted, reported

Bad input (an unknown reward or parameter, a bad line without ``--on-error skip``) is a
:class:`gdpo.errors.UserError`: one line, exit code 2, checked before any reward is built.
With more than one batch, a progress line per batch goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import numpy as np

from gdpo.errors import InputError, MissingFileError
from gdpo.jsonio import write_text_atomic
from gdpo.rewards.reward_set import RewardScores, RewardSet, RewardSpec


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rewards", required=True, help="comma-separated reward names (or module:function paths)")
    parser.add_argument("--input", required=True, help="JSONL file: one object per completion, with its columns")
    parser.add_argument("--output", help="where the per-completion scores go: a file, or an existing folder "
                                         "(then INPUT-NAME.scores.jsonl in it); default: INPUT with .scores.jsonl")
    parser.add_argument("--completion-key", default="completion", help="the key holding the completion text")
    parser.add_argument("--param", action="append", default=[], metavar="REWARD.KEY=VALUE",
                        help="a parameter of a configurable reward, e.g. math_length.max_tokens=200 (repeatable)")
    parser.add_argument("--batch-size", type=int, default=256, help="completions scored per call")
    parser.add_argument("--on-error", choices=["raise", "skip"], default="raise",
                        help="a bad input line: stop with its line number (raise, default) or skip it "
                             "(skip: the skipped lines are counted and reported)")


def run(args: argparse.Namespace) -> int:
    from gdpo.schema import check_reward_names, check_reward_params

    names = [n.strip() for n in args.rewards.split(",") if n.strip()]
    check_reward_names(names, "--rewards")  # every name before any input is read or reward built
    params = parse_params(args.param, names)
    for name in names:
        check_reward_params(name, params.get(name, {}), f"--param {name}.{{}}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size = {args.batch_size}: must be >= 1")
    out = output_path(Path(args.input), args.output)
    reward_set = RewardSet([RewardSpec(n, params=params.get(n, {})) for n in names])
    data = read_completions(Path(args.input), args.completion_key, args.on_error)
    scores = score_in_batches(reward_set, data.completions, data.columns, args.batch_size,
                              progress=batch_reporter(len(data.completions), args.batch_size))
    write_scores(out, scores)
    print(summary_table(scores))
    errors = scores.error_summary()
    for name, info in errors.items():
        print(f"reward {name!r} raised on {info['count']} completion(s); first: {info['first']}")
    if data.skipped:
        print(f"skipped {data.skipped} of {data.skipped + len(data.completions)} input line(s) (--on-error skip); "
              f"first: {data.first_skip}")
    print(f"\nwrote {len(data.completions)} score lines to {out}")
    return 0


def output_path(source: Path, output: str | None) -> Path:
    """The scores file: ``--output`` (a folder: ``<folder>/<input stem>.scores.jsonl``) or next to the input."""
    if output is None:
        return source.with_suffix(".scores.jsonl")
    out = Path(output)
    if out.is_dir() or output.endswith(("/", os.sep)):
        return out / source.with_suffix(".scores.jsonl").name
    if not out.parent.is_dir():
        raise MissingFileError(f"--output = {output!r}: folder {str(out.parent)!r} does not exist; create it "
                               "or give another path")
    return out


def parse_params(items: list[str], names: list[str]) -> dict[str, dict[str, Any]]:
    """``["math_length.max_tokens=200"]`` -> ``{"math_length": {"max_tokens": 200}}``."""
    from gdpo.schema import unknown

    params: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        reward, dot, field = key.partition(".")
        if not sep or not dot or not field:
            raise InputError(f"--param = {item!r}: write it as REWARD.KEY=VALUE, e.g. math_length.max_tokens=200")
        if reward not in names:
            raise unknown("--param", item, f"reward {reward!r} is not in --rewards", reward, names)
        params.setdefault(reward, {})[field] = _parse_value(raw)
    return params


def _parse_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


class Completions(NamedTuple):
    """The input rows that were read, and how many lines were skipped (``--on-error skip``)."""

    completions: list[str]
    columns: dict[str, list]  # column -> one value per completion
    skipped: int = 0
    first_skip: str = ""  # why the first skipped line was skipped


def read_completions(path: Path, key: str, on_error: str = "raise") -> Completions:
    """Read the JSONL; every line must hold ``key`` (a string) and the same set of columns.

    ``on_error="skip"``: a line that breaks a rule is left out and counted instead.
    """
    if on_error not in ("raise", "skip"):
        raise InputError(f"--on-error = {on_error!r}: use 'raise' or 'skip'")
    if not path.is_file():
        raise MissingFileError(f"--input = {str(path)!r}: no such file; give a JSONL of completions")
    completions: list[str] = []
    columns: dict[str, list] = {}
    skipped, first = 0, ""
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            row, problem = _parse_row(line, key, columns if completions else None)
            if problem:
                if on_error == "raise":
                    raise InputError(f"{path}:{lineno}: {problem} (or --on-error skip to leave such lines out)")
                skipped += 1
                first = first or f"{path}:{lineno}: {problem}"
                continue
            for k, v in row.items():
                if k != key:
                    columns.setdefault(k, []).append(v)
            completions.append(row[key])
    if not completions:
        why = f"; {skipped} line(s) skipped, first: {first}" if skipped else ""
        raise InputError(f"--input = {str(path)!r} holds no completions{why}")
    return Completions(completions, columns, skipped, first)


def _parse_row(line: str, key: str, columns: dict[str, list] | None) -> tuple[dict[str, Any], str]:
    """(row, "") or ({}, what is wrong with the line); ``columns``: the first line's, if read."""
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        return {}, f"not valid JSON ({exc.msg}); each line must be one JSON object"
    if not isinstance(row, dict) or not isinstance(row.get(key), str):
        got = sorted(row) if isinstance(row, dict) else type(row).__name__
        return {}, f"expected an object with a string {key!r}; got keys {got} (use --completion-key)"
    cols = sorted(k for k in row if k != key)
    if columns is not None and cols != sorted(columns):
        return {}, f"columns {cols} differ from the first line's {sorted(columns)}"
    return row, ""


def batch_reporter(total: int, batch_size: int, stream: Any = None) -> Callable[[int], None] | None:
    """A per-batch progress line on stderr (``scored 256/1000 completions, 1.2 s``), when there is more
    than one batch: rewritten in place on a terminal, one plain line per batch otherwise."""
    if total <= batch_size:
        return None
    stream = stream or sys.stderr
    start = time.perf_counter()
    live = stream.isatty()

    def report(done: int) -> None:
        text = f"scored {done}/{total} completions, {time.perf_counter() - start:.1f} s"
        if live:
            stream.write("\r" + text + ("\n" if done >= total else ""))
        else:
            stream.write(text + "\n")
        stream.flush()

    return report


def score_in_batches(reward_set: RewardSet, completions: list[str], columns: dict[str, list],
                     batch_size: int, progress: Callable[[int], None] | None = None) -> RewardScores:
    parts = []
    for start in range(0, len(completions), batch_size):
        stop = start + batch_size
        parts.append(reward_set.score(completions[start:stop], **{k: v[start:stop] for k, v in columns.items()}))
        if progress is not None:
            progress(min(stop, len(completions)))
    errors = parts[0].errors
    for part in parts[1:]:
        for name, err in part.errors.items():
            errors[name].count += err.count
            errors[name].first_message = errors[name].first_message or err.first_message
    return RewardScores(np.concatenate([p.values for p in parts]), parts[0].names, parts[0].weights, errors)


def write_scores(path: Path, scores: RewardScores) -> None:
    """One line per completion, written to a temp file and renamed: never half-written, no temp left."""
    lines = []
    for i, row in enumerate(scores.values):
        values = {n: (None if math.isnan(v) else float(v)) for n, v in zip(scores.names, row)}
        lines.append(json.dumps({"index": i, "scores": values}) + "\n")
    try:
        write_text_atomic(path, "".join(lines))
    except IsADirectoryError:
        raise InputError(f"--output = {str(path)!r} is a folder; give a file path, or the folder itself") from None


def summary_table(scores: RewardScores) -> str:
    lines = ["| reward | mean | std | min | max | n/a | errors |", "|---|---:|---:|---:|---:|---:|---:|"]
    for k, name in enumerate(scores.names):
        col = scores.values[:, k]
        ok = col[~np.isnan(col)]
        stats = (f"{ok.mean():.4f} | {ok.std():.4f} | {ok.min():.4f} | {ok.max():.4f}" if ok.size
                 else "- | - | - | -")
        lines.append(f"| {name} | {stats} | {int(np.isnan(col).sum())} | {scores.errors[name].count} |")
    return "\n".join(lines)
