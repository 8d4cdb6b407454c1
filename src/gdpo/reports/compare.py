"""`gdpo compare`: several methods x several seeds on one config, then a side-by-side report.

Each (method, seed) pair is an ordinary training run in ``<output_dir>/<method>/seed<k>``,
started as a subprocess (``python -m gdpo train --config <output_dir>/base_config.yaml
--output-dir ... --set method=<m> --set seed=<k>``), so runs can go in parallel and a
crash in one never takes the others down. The trainer seeds the data order, the model
init and sampling from ``seed``, so seed k sees the same prompts under every method.

Resuming is automatic: a run whose final checkpoint and metrics reach ``steps`` is skipped,
a run with a checkpoint is continued with ``--resume``, anything else starts afresh.

Examples::

    gdpo compare --config configs/compare/toy_2rewards.yaml --methods grpo,gdpo --seeds 5
    gdpo compare --config configs/smoke.yaml --methods grpo,gdpo --seeds 3 --parallel 2 \\
        --set steps=30 --output-dir runs/cmp
    gdpo compare --output-dir runs/cmp --report-only          # rebuild the report only

>>> seed_list("3")
[0, 1, 2]
>>> seed_list("0,4")
[0, 4]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from gdpo.jsonio import write_text_atomic
from gdpo.reports.data import MANIFEST, read_manifest

BASE_CONFIG = "base_config.yaml"  # the resolved config every run starts from


class CompareError(ValueError):
    """A bad argument to `gdpo compare`; the message names the value and says how to fix it."""


@dataclass(frozen=True)
class RunSpec:
    """One training run of the comparison."""

    method: str
    seed: int
    output_dir: Path


@dataclass
class RunOutcome:
    """What happened to one run in this invocation."""

    method: str
    seed: int
    output_dir: str
    state_before: str  # "done", "partial" or "new"
    action: str  # "skipped", "resumed", "started"
    returncode: int | None = None  # None when skipped
    wall_s: float = 0.0
    log: str | None = None


@dataclass
class ComparisonResult:
    """The outcome of :func:`compare`: the runs, the report files, and whether all runs finished."""

    output_dir: Path
    report_dir: Path
    runs: list[RunOutcome] = field(default_factory=list)
    report_files: list[Path] = field(default_factory=list)
    wall_s: float = 0.0

    @property
    def failed(self) -> list[RunOutcome]:
        """Runs whose training process exited with an error."""
        return [r for r in self.runs if r.returncode not in (None, 0)]


# ---------------------------------------------------------------- arguments


def seed_list(text: str | int | Sequence[int]) -> list[int]:
    """``"5"`` or ``5`` -> seeds 0..4; ``"0,3,7"`` or ``[0, 3, 7]`` -> those seeds."""
    if isinstance(text, int):
        count = text
    elif isinstance(text, str) and "," not in text:
        try:
            count = int(text)
        except ValueError:
            raise CompareError(f"--seeds {text!r} must be a count (e.g. 5) or a list (e.g. 0,1,2)") from None
    else:
        items = text.split(",") if isinstance(text, str) else list(text)
        try:
            seeds = [int(s) for s in items if str(s).strip() != ""]
        except ValueError:
            raise CompareError(f"--seeds {text!r} must list integers, e.g. 0,1,2") from None
        if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
            raise CompareError(f"--seeds {text!r} must list distinct non-negative integers, e.g. 0,1,2")
        return seeds
    if count < 1:
        raise CompareError(f"--seeds {text!r} must be at least 1 (seeds 0..N-1 are run)")
    return list(range(count))


def method_list(text: str | Sequence[str]) -> list[str]:
    """Comma-separated estimator names, each checked against the estimator registry."""
    from gdpo.advantages import estimator_names

    items = text.split(",") if isinstance(text, str) else list(text)
    methods = [m.strip() for m in items if m.strip()]
    known = estimator_names()
    unknown = [m for m in methods if m not in known]
    if not methods or unknown:
        raise CompareError(f"--methods {text!r}: unknown {unknown or 'empty list'}; choose from {', '.join(known)}")
    if len(set(methods)) != len(methods):
        raise CompareError(f"--methods {text!r} names a method twice; list each once")
    return methods


# ---------------------------------------------------------------- run state


def run_dir(output_dir: Path, method: str, seed: int) -> Path:
    """Where the run of ``method`` with ``seed`` lives."""
    return Path(output_dir) / method / f"seed{seed}"


def last_logged_step(path: Path) -> int:
    """The step of the last complete line of ``metrics.jsonl`` (0 when none)."""
    metrics = path / "metrics.jsonl"
    if not metrics.is_file():
        return 0
    last = 0
    for line in metrics.read_text().splitlines():
        try:
            last = int(json.loads(line).get("step", last))
        except (json.JSONDecodeError, ValueError, TypeError):
            break
    return last


def last_checkpoint_step(path: Path) -> int:
    """The step of the newest complete checkpoint (0 when none)."""
    from gdpo.train.checkpoint import list_checkpoints

    found = list_checkpoints(path)
    return json.loads((found[-1] / "state.json").read_text())["step"] if found else 0


def run_state(path: Path, steps: int) -> str:
    """``"done"`` (final checkpoint and metrics reach ``steps``), ``"partial"`` (a checkpoint to
    resume from) or ``"new"``."""
    ckpt = last_checkpoint_step(path)
    if ckpt >= steps and last_logged_step(path) >= steps:
        return "done"
    return "partial" if ckpt > 0 else "new"


# ---------------------------------------------------------------- config and manifest


def resolve_base_config(config: str | Path | dict | None, overrides: Sequence[str]) -> dict[str, Any]:
    """The full config dict (defaults filled in, overrides applied, validated by the trainer)."""
    from gdpo.train.config import config_from_dict, config_to_dict, load_config

    if isinstance(config, dict):
        cfg = config_from_dict(config, list(overrides))
    else:
        cfg = load_config(None if config is None else str(config), list(overrides))
    data = config_to_dict(cfg)
    data.pop("output_dir", None)  # each run gets its own
    return data


def _as_current(saved: Any) -> dict[str, Any] | None:
    """A saved base config with the fields added to the trainer since then at their defaults
    (so a newer gdpo continues the same experiment); None when it no longer parses."""
    from gdpo.train.config import ConfigError

    try:
        return resolve_base_config(saved, []) if isinstance(saved, dict) else None
    except ConfigError:
        return None


def write_base_config(output_dir: Path, base: dict[str, Any]) -> Path:
    """Write ``base_config.yaml``; refuse when a different one is already there (another experiment)."""
    import yaml

    path = output_dir / BASE_CONFIG
    text = yaml.safe_dump(base, sort_keys=False)
    if path.is_file() and _as_current(yaml.safe_load(path.read_text())) != base:
        raise CompareError(
            f"{path} holds a different config from this call's (config file or --set changed); "
            f"use another --output-dir, or delete {output_dir} to start over")
    output_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, text)
    return path


def machine_description() -> str:
    """CPU count, platform and (when present) GPU: where the numbers were measured."""
    parts = [f"{os.cpu_count()} CPU cores", platform.platform(terse=True), f"Python {platform.python_version()}"]
    try:
        import torch

        parts.append(f"torch {torch.__version__}")
        if torch.cuda.is_available():
            parts.append(torch.cuda.get_device_name(0))
    except ImportError:
        pass
    return ", ".join(parts)


def load_average() -> float | None:
    """The 1-minute load average (None where the OS has none): how busy the machine was."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def update_manifest(output_dir: Path, methods: list[str] | None = None, seeds: list[int] | None = None,
                    invocation: dict[str, Any] | None = None, note: str | None = None) -> None:
    """Record methods, seeds, this invocation (command, wall time, machine) and notes in ``compare.json``."""
    manifest = read_manifest(output_dir)
    manifest["methods"] = list(dict.fromkeys([*manifest.get("methods", []), *(methods or [])]))
    manifest["seeds"] = sorted(set(manifest.get("seeds", [])) | set(seeds or []))
    if invocation:
        manifest.setdefault("invocations", []).append(invocation)
    if note and note not in manifest.get("notes", []):
        manifest.setdefault("notes", []).append(note)
    write_text_atomic(output_dir / MANIFEST, json.dumps(manifest, indent=1))


# ---------------------------------------------------------------- running


def train_command(base_config: Path, spec: RunSpec, resume: bool) -> list[str]:
    """The `gdpo train` command line of one run."""
    cmd = [sys.executable, "-m", "gdpo", "train", "--config", str(base_config),
           "--output-dir", str(spec.output_dir), "--set", f"method={spec.method}", "--set", f"seed={spec.seed}",
           "--set", "logging.progress=lines"]
    return cmd + (["--resume"] if resume else ["--overwrite"])  # no checkpoint yet: start afresh


def child_environment(parallel: int) -> dict[str, str]:
    """The environment of a run: offline hub, and CPU threads shared fairly between parallel runs."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // parallel))
    return env


def _start(base_config: Path, spec: RunSpec, state: str, env: dict[str, str]) -> tuple[subprocess.Popen, Any]:
    spec.output_dir.mkdir(parents=True, exist_ok=True)
    log = open(spec.output_dir / "train.log", "a")
    log.write(f"\n# {_dt.datetime.now().isoformat(timespec='seconds')} state={state}\n")
    log.flush()
    cmd = train_command(base_config, spec, resume=state == "partial")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), log


def execute_runs(base_config: Path, specs: list[RunSpec], steps: int, parallel: int,
                 echo=print) -> list[RunOutcome]:
    """Run every unfinished spec, at most ``parallel`` at a time; finished ones are skipped."""
    env = child_environment(parallel)
    pending, active, outcomes = list(specs), [], []
    while pending or active:
        while pending and len(active) < parallel:
            spec = pending.pop(0)
            state = run_state(spec.output_dir, steps)
            if state == "done":
                outcomes.append(RunOutcome(spec.method, spec.seed, str(spec.output_dir), state, "skipped"))
                echo(f"[compare] {spec.method} seed {spec.seed}: finished earlier, skipped")
                continue
            proc, log = _start(base_config, spec, state, env)
            action = "resumed" if state == "partial" else "started"
            echo(f"[compare] {spec.method} seed {spec.seed}: {action} (log: {spec.output_dir / 'train.log'})")
            active.append((spec, state, action, proc, log, time.perf_counter()))
        time.sleep(0.2)
        still = []
        for spec, state, action, proc, log, t0 in active:
            if proc.poll() is None:
                still.append((spec, state, action, proc, log, t0))
                continue
            log.close()
            wall = time.perf_counter() - t0
            outcomes.append(RunOutcome(spec.method, spec.seed, str(spec.output_dir), state, action,
                                       proc.returncode, wall, str(spec.output_dir / "train.log")))
            status = "ok" if proc.returncode == 0 else f"FAILED (exit {proc.returncode}; see train.log)"
            echo(f"[compare] {spec.method} seed {spec.seed}: {status} in {wall:.0f} s")
        active = still
    return outcomes


def compare(config: str | Path | dict | None, methods: str | Sequence[str], seeds: int | str | Sequence[int],
            output_dir: str | Path, *, overrides: Sequence[str] = (), parallel: int = 1,
            report_dir: str | Path | None = None, report_only: bool = False, command: str | None = None,
            note: str | None = None, echo=print) -> ComparisonResult:
    """Run ``methods`` x ``seeds`` on ``config`` (resuming what is unfinished), then write the report.

    With ``report_only`` nothing is trained: the report is rebuilt from the run folders.
    ``note`` (e.g. "machine shared with other jobs") is kept in ``compare.json`` and shown in the report.
    """
    output_dir = Path(output_dir)
    report_dir = Path(report_dir) if report_dir else output_dir / "report"
    if parallel < 1:
        raise CompareError(f"--parallel {parallel} must be at least 1")
    t0 = time.perf_counter()
    outcomes: list[RunOutcome] = []
    if not report_only:
        method_names, seed_numbers = method_list(methods), seed_list(seeds)
        base = resolve_base_config(config, overrides)
        base_path = write_base_config(output_dir, base)
        update_manifest(output_dir, method_names, seed_numbers)  # method order for reports made mid-way
        specs = [RunSpec(m, s, run_dir(output_dir, m, s)) for s in seed_numbers for m in method_names]
        started, load_before = _dt.datetime.now().isoformat(timespec="seconds"), load_average()
        outcomes = execute_runs(base_path, specs, int(base["steps"]), parallel, echo)
        update_manifest(output_dir, method_names, seed_numbers, {
            "command": command or _api_call_text(config, method_names, seed_numbers, overrides, parallel),
            "started": started, "wall_s": round(time.perf_counter() - t0, 1), "parallel": parallel,
            "machine": machine_description(), "load_average": [load_before, load_average()],
            "runs": [asdict(o) for o in outcomes]}, note)
    elif not output_dir.is_dir():
        raise CompareError(f"--report-only: {output_dir} does not exist; give the --output-dir of an earlier compare")
    elif note:
        update_manifest(output_dir, note=note)
    from gdpo.reports.report import write_report

    files = write_report(output_dir, report_dir)
    result = ComparisonResult(output_dir, report_dir, outcomes, files, time.perf_counter() - t0)
    echo(f"[compare] report: {report_dir / 'report.md'} and {report_dir / 'report.html'}")
    return result


def _api_call_text(config, methods, seeds, overrides, parallel) -> str:
    where = config if not isinstance(config, dict) else "<dict>"
    return f"compare({where!r}, methods={methods}, seeds={seeds}, overrides={list(overrides)}, parallel={parallel})"


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", help="YAML training config shared by every run (default: built-in)")
    parser.add_argument("--methods", default="grpo,gdpo", help="comma-separated estimators (default: grpo,gdpo)")
    parser.add_argument("--seeds", default="3", help="N (seeds 0..N-1) or a list like 0,2,5 (default: 3)")
    parser.add_argument("--output-dir", "-o", default="runs/compare", help="run folders go to DIR/<method>/seed<k>")
    parser.add_argument("--report-dir", help="where report.md/.html, PNGs and summary.json go (default: DIR/report)")
    parser.add_argument("--set", "-s", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override a config field for every run (repeatable)")
    parser.add_argument("--parallel", "-p", type=int, default=1, help="runs at a time (default: 1)")
    parser.add_argument("--report-only", action="store_true", help="train nothing; rebuild the report from DIR")
    parser.add_argument("--note", help="a remark kept with the runs and shown in the report "
                                       "(e.g. 'machine shared with other jobs')")


def command_text(args: argparse.Namespace) -> str:
    """The `gdpo compare` command line that reproduces ``args`` (recorded in the report)."""
    parts = ["gdpo", "compare"]
    if args.config:
        parts += ["--config", args.config]
    parts += ["--methods", args.methods, "--seeds", str(args.seeds), "--output-dir", args.output_dir]
    for item in args.overrides:
        parts += ["--set", item]
    if args.parallel != 1:
        parts += ["--parallel", str(args.parallel)]
    if args.report_dir:
        parts += ["--report-dir", args.report_dir]
    if args.note:
        parts += ["--note", args.note]
    return " ".join(shlex.quote(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from gdpo.reports.data import ReportError
    from gdpo.train.config import ConfigError

    command = command_text(args)
    try:
        result = compare(args.config, args.methods, args.seeds, args.output_dir, overrides=args.overrides,
                         parallel=args.parallel, report_dir=args.report_dir, report_only=args.report_only,
                         command=command, note=args.note)
    except (CompareError, ConfigError, ReportError) as exc:
        print(f"gdpo compare: {exc}", file=sys.stderr)
        return 2
    if result.failed:
        names = ", ".join(f"{r.method}/seed{r.seed}" for r in result.failed)
        print(f"gdpo compare: {len(result.failed)} run(s) failed: {names}; rerun the same command to resume",
              file=sys.stderr)
        return 1
    return 0
