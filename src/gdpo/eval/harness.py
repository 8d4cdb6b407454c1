"""The evaluation loop: generate n samples per test prompt in batches, score, append, resume.

Output folder::

    results.jsonl   one line per prompt: index, prompt key, completions, lengths, metrics
    summary.json    settings + aggregated metrics
    summary.md      the Markdown table

A rerun with the same folder skips prompts already in ``results.jsonl`` (matched by index
and a hash of the prompt, so a different task or order is an error, not a silent mix).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from gdpo.data.bfcl import CATEGORIES as BFCL_ORDER
from gdpo.data.bfcl import UNANSWERABLE
from gdpo.eval import metrics as M
from gdpo.eval.episodes import DOMAIN as EPISODE_DOMAIN
from gdpo.eval.episodes import hook_of as episode_hook
from gdpo.eval.episodes import run_episodes
from gdpo.jsonio import write_text_atomic
from gdpo.eval.reference import REFERENCE_MODEL, reference_completions

RESULTS = "results.jsonl"


@dataclass
class EvalSettings:
    """What to evaluate and how (the ``gdpo eval`` options)."""

    model: str = "tiny"
    task: str = "toolcall"
    task_params: dict[str, Any] = field(default_factory=dict)
    split: str = "test"
    samples: int = 1  # n completions per prompt
    temperature: float = 0.0  # 0 = greedy (then samples must be 1)
    top_p: float = 1.0
    max_new_tokens: int = 512
    max_prompt_tokens: int = 2048  # longer prompts are cut from the left: a warning (or an error, see long_prompts)
    long_prompts: str = "warn"  # "warn": log how many prompts are cut; "error": refuse to run
    length_limit: int | None = None  # tokens; default: the task's, else 4000 (the paper's l)
    limit: int | None = None  # first k prompts
    batch_size: int = 8  # prompts per generate call
    seed: int = 0
    threads: int | str = "auto"  # CPU threads for torch; auto: 1 when the machine is oversubscribed (see cpu_threads)
    breakdown: str | None = "auto"  # column to split metrics by (BFCL live/non-live...); auto: see BREAKDOWN_COLUMNS
    rewards: list[Any] = field(default_factory=list)  # extra reward entries (--reward-config), beside the task's

    def check(self) -> None:
        """Raise ValueError naming a bad setting and how to fix it."""
        if self.samples < 1:
            raise ValueError(f"--samples {self.samples}: need at least 1 completion per prompt")
        if self.temperature < 0:
            raise ValueError(f"--temperature {self.temperature}: must be >= 0 (0 = greedy)")
        if self.temperature == 0 and self.samples > 1:
            raise ValueError(f"--samples {self.samples} with --temperature 0: greedy decoding gives the same "
                             "completion every time; use a temperature > 0 (the paper: 0.6) or --samples 1")
        if self.threads != "auto":
            cpu_threads(self.threads)  # raises on a bad value
        if self.long_prompts not in ("warn", "error"):
            raise ValueError(f"--long-prompts {self.long_prompts!r}: use 'warn' (cut from the left, counted) "
                             "or 'error'")
        for name in ("max_new_tokens", "batch_size", "max_prompt_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} {getattr(self, name)}: must be >= 1")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit}: must be >= 1 (or leave it out for all prompts)")
        if self.split not in ("test", "train"):
            raise ValueError(f"--split {self.split!r}: use 'test' or 'train'")


@dataclass
class EvalResult:
    """The aggregated metrics of a run, and where they were written."""

    domain: str
    metrics: dict[str, float]  # metric key -> mean in [0, 1] (or the reward's scale)
    num_prompts: int
    num_new: int  # prompts generated in this call (the rest were resumed)
    output_dir: Path
    seconds: float
    breakdown: str | None = None  # the column the per-group metrics are split by
    by_group: dict[str, dict[str, float]] = field(default_factory=dict)  # its value -> metrics
    samples_per_second: float | None = None  # completions generated and scored per second in this call
    by_category: dict[str, dict[str, float]] = field(default_factory=dict)  # BFCL: category -> metrics
    bfcl: dict[str, float] = field(default_factory=dict)  # BFCL's summary figures (metrics.bfcl_summary)
    long_prompts: int = 0  # prompts cut from the left in this call


# Columns that say which slice of a benchmark a prompt belongs to, tried in this order when
# the breakdown is "auto": BFCL-style live / non-live, a category, a subset, the built-in kind.
BREAKDOWN_COLUMNS = ("live", "category", "subset", "kind")


def breakdown_column(rows: list[dict[str, Any]], requested: str | None) -> str | None:
    """The column to split the metrics by, or None (auto: the first of BREAKDOWN_COLUMNS present)."""
    if requested in (None, "none", ""):
        return None
    if requested != "auto":
        if rows and requested not in rows[0]:
            raise ValueError(f"--breakdown {requested!r} is not a column of this task; columns: {sorted(rows[0])}")
        return requested
    return next((c for c in BREAKDOWN_COLUMNS if rows and c in rows[0]), None)


def metrics_by_group(rows: list[dict[str, Any]], per_prompt: list[dict[str, list[float]]],
                     column: str | None) -> dict[str, dict[str, float]]:
    """Aggregate the per-prompt metrics separately for each value of ``column``."""
    if column is None:
        return {}
    groups: dict[str, list[dict[str, list[float]]]] = {}
    for row, metrics in zip(rows, per_prompt):
        value = row.get(column)
        label = {True: "live", False: "non-live"}.get(value, str(value)) if column == "live" else str(value)
        groups.setdefault(label, []).append(metrics)
    return {label: M.aggregate(items) | {"prompts": float(len(items))} for label, items in sorted(groups.items())}


def prompt_key(row: dict[str, Any]) -> str:
    """A short stable hash of a row (prompt and columns), to detect a changed task on resume."""
    blob = json.dumps(row, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_done(path: Path, rows: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Results already in ``results.jsonl``, by prompt index; checks they belong to these rows."""
    done: dict[int, dict[str, Any]] = {}
    if not path.exists():
        return done
    with path.open() as fh:
        for number, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by an interrupted run: that prompt is redone
            index = record.get("index")
            if not isinstance(index, int) or index >= len(rows) or record.get("key") != prompt_key(rows[index]):
                raise ValueError(
                    f"{path}:{number} holds prompt {index!r}, which is not prompt {index!r} of this task/split; "
                    "the folder belongs to another evaluation. Use another --output or delete the file."
                )
            done[index] = record
    return done


def score_prompt_batch(domain: str, reward_set: Any, completions: list[str], rows: list[dict[str, Any]],
                       lengths: list[int], limit: int, ended: list[bool] | None = None) -> list[dict[str, float]]:
    """Per-sample metrics of a batch (samples of a prompt contiguous) -> one dict of lists per sample."""
    columns = {k: [row.get(k) for row in rows] for k in sorted({k for r in rows for k in r if k != "prompt"})}
    if domain == "bfcl":
        scores = M.bfcl_metrics(completions, columns)
    elif domain == "toolcall":
        scores = M.toolcall_metrics(completions, columns)
    elif domain == "math":
        scores = M.math_metrics(completions, columns, lengths, limit)
    elif domain == "code":
        scores = M.code_metrics(completions, columns, lengths, limit, ended)
    else:
        scores = {}
    values = reward_set.score(completions, **{**columns, "prompts": [r.get("prompt") for r in rows]}).values  # [n, K]
    for k, name in enumerate(reward_set.names):
        scores[f"reward/{name}"] = [float(v) for v in values[:, k]]
    return [{key: vals[i] for key, vals in scores.items()} for i in range(len(completions))]


def evaluate(settings: EvalSettings, output_dir: str | Path, *, model_and_tokenizer: Any = None,
             log: Callable[[str], None] = print) -> EvalResult:
    """Evaluate ``settings.model`` on ``settings.task``; resumable through ``output_dir``."""
    from gdpo.data import get_task
    from gdpo.rewards.reward_set import RewardSet

    settings.check()
    start = time.perf_counter()
    task = get_task(settings.task, **settings.task_params)
    rows = select_rows(task, settings)
    names = [e if isinstance(e, str) else e["name"] for e in task.rewards]
    domain = M.domain_of(names)
    limit = settings.length_limit or _task_length_limit(task)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS
    done = read_done(results_path, rows)
    todo = [i for i in range(len(rows)) if i not in done]
    source = _source(task)
    log(f"{settings.task}/{settings.split}: {len(rows)} prompts{f' from {source}' if source else ''}, "
        f"{len(done)} done, {len(todo)} to go ({settings.samples} sample(s) each)")
    rate, cut = None, 0
    hook = episode_hook(task)  # multi-turn tasks are scored by their own episode runner
    if hook is not None:
        domain = EPISODE_DOMAIN
    if todo:
        reference = settings.model == REFERENCE_MODEL and model_and_tokenizer is None
        model, tokenizer = (None, None) if reference else (model_and_tokenizer or _load(settings))
    if todo and hook is not None:
        progress = Progress(len(todo), log)
        with results_path.open("a") as fh, (contextlib.nullcontext() if reference else torch_threads(settings, log)):
            def write(i: int, line: dict[str, Any]) -> None:
                line = {"index": i, "key": prompt_key(rows[i]), **line}
                fh.write(json.dumps(line, default=str) + "\n")
                fh.flush()
                done[i] = line

            run_episodes(hook, rows, todo, settings, model, tokenizer, write, progress)
        rate = progress.rate()
    elif todo:
        if not reference:
            todo, cut = _order_and_check_prompts(tokenizer, rows, todo, settings, log)
        reward_set = RewardSet.from_config([*task.rewards, *settings.rewards], extra_params={"tokenizer": tokenizer})
        progress = Progress(len(todo) * settings.samples, log)
        with results_path.open("a") as fh, (contextlib.nullcontext() if reference else torch_threads(settings, log)):
            for first in range(0, len(todo), settings.batch_size):
                batch = todo[first:first + settings.batch_size]
                records = (reference_batch(reward_set, domain, rows, batch, settings, limit) if reference else
                           run_batch(model, tokenizer, reward_set, domain, rows, batch, settings, limit))
                for record in records:
                    fh.write(json.dumps(record) + "\n")
                    done[record["index"]] = record
                fh.flush()
                progress.step(len(batch) * settings.samples, f"{len(done)}/{len(rows)} prompts")
        rate = progress.rate()
    per_prompt = [done[i]["metrics"] for i in range(len(rows))]
    column = breakdown_column(rows, settings.breakdown)
    result = EvalResult(domain, M.aggregate(per_prompt), len(rows), len(todo), out, time.perf_counter() - start,
                        column, metrics_by_group(rows, per_prompt, column), rate, long_prompts=cut)
    if domain == "bfcl":
        groups = metrics_by_group(rows, per_prompt, "category")
        result.by_category = {c: groups[c] for c in BFCL_ORDER if c in groups}
        result.bfcl = M.bfcl_summary({c: (m["accuracy"], int(m["prompts"])) for c, m in result.by_category.items()})
    write_summary(result, settings, limit)
    return result


def _source(task: Any) -> str:
    """The file(s) a task read, from its info (logged so that a default path is never silent)."""
    info = task.info or {}
    parts = [str(info[k]) for k in ("path", "test_path", "source", "data") if info.get(k)]
    return ", ".join(dict.fromkeys(parts))


def _order_and_check_prompts(tokenizer: Any, rows: list[dict[str, Any]], todo: list[int], settings: EvalSettings,
                             log: Callable[[str], None]) -> tuple[list[int], int]:
    """Longest prompts first (batches of similar length pad little); warn or stop on prompts over the limit."""
    from gdpo.rollout.hf import count_long_prompts

    long = count_long_prompts(tokenizer, [rows[i] for i in todo], settings.max_prompt_tokens)
    if long.count:
        if settings.long_prompts == "error":
            raise ValueError(f"{long.message()}; raise --max-prompt-tokens (to at least {long.longest}) or pass "
                             "--long-prompts warn to run anyway")
        log(f"warning: {long.message()}; raise --max-prompt-tokens to keep them whole")
    order = sorted(range(len(todo)), key=lambda j: -long.lengths[j])
    return [todo[j] for j in order], long.count


class Progress:
    """Plain progress lines: samples done, samples/s, time left; at most one per ``every`` seconds (and the last)."""

    def __init__(self, total: int, log: Callable[[str], None], every: float = 2.0):
        self.total, self.done, self.log, self.every = total, 0, log, every
        self.start = self.last = time.perf_counter()

    def step(self, samples: int, what: str) -> None:
        self.done += samples
        now = time.perf_counter()
        if now - self.last < self.every and self.done < self.total:
            return
        self.last = now
        elapsed = now - self.start
        rate = self.done / elapsed if elapsed > 0 else float("inf")
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        self.log(f"  {self.done}/{self.total} samples ({what}), {rate:.2f} samples/s, {elapsed:.0f} s elapsed, "
                 f"~{left:.0f} s left")

    def rate(self) -> float | None:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if self.done and elapsed > 0 else None


def select_rows(task: Any, settings: EvalSettings) -> list[dict[str, Any]]:
    rows = task.test if settings.split == "test" else task.train
    if not rows:
        other = "train" if settings.split == "test" else "test"
        raise ValueError(f"task {settings.task!r} has no {settings.split} rows; try --split {other}")
    return list(rows[:settings.limit] if settings.limit else rows)


def _task_length_limit(task: Any) -> int:
    for entry in task.rewards:
        if isinstance(entry, dict) and "max_tokens" in (entry.get("params") or {}):
            return int(entry["params"]["max_tokens"])
    return 4000


def cpu_threads(requested: int | str, log: Callable[[str], None] = print) -> int | None:
    """Torch CPU threads to use: ``requested``, or for "auto" 1 when the 1-minute load average is at
    least the number of cores (else None: torch's default).

    Measured on this 2-core machine at load ~13: SmolLM2-135M, 8 HumanEval prompts x 32 new
    tokens took 18.7 s with 1 thread and did not finish in 300 s with torch's default 2 (its
    threads spin waiting for each other when they do not get a core each).
    """
    import os

    if requested != "auto":
        if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
            raise ValueError(f"--threads {requested!r}: give a positive integer or 'auto'")
        return requested
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if load >= cores:
        log(f"load average {load:.1f} on {cores} cores: generating with 1 CPU thread (--threads N to choose)")
        return 1
    return None


@contextlib.contextmanager
def torch_threads(settings: EvalSettings, log: Callable[[str], None]) -> Iterator[None]:
    """Run the generation with :func:`cpu_threads` torch threads (CPU only), then restore the count."""
    import torch

    threads = None if torch.cuda.is_available() else cpu_threads(settings.threads, log)
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _load(settings: EvalSettings) -> tuple[Any, Any]:
    import torch

    from gdpo.models import load_model_and_tokenizer


    loaded = load_model_and_tokenizer(settings.model, seed=settings.seed)
    model = loaded.model.to("cuda" if torch.cuda.is_available() else "cpu").eval()
    return model, loaded.tokenizer


def run_batch(model: Any, tokenizer: Any, reward_set: Any, domain: str, rows: list[dict[str, Any]],
              indices: list[int], settings: EvalSettings, limit: int) -> list[dict[str, Any]]:
    """Generate ``samples`` completions for each prompt in ``indices``, score them -> one record each."""
    import torch

    from gdpo.rollout.hf import generate

    torch.manual_seed(settings.seed + indices[0])  # a resumed run samples the same as an uninterrupted one
    chosen = [rows[i] for i in indices]
    greedy = settings.temperature == 0
    out = generate(model, tokenizer, chosen, num_generations=settings.samples, max_new_tokens=settings.max_new_tokens,
                   max_prompt_tokens=settings.max_prompt_tokens, temperature=settings.temperature or 1.0,
                   top_p=settings.top_p, greedy=greedy)
    lengths = [int(n) for n in out.lengths.tolist()]
    eos = tokenizer.eos_token_id
    hit_eos = (out.completion_ids == eos).any(dim=1).tolist()
    per_sample = score_prompt_batch(domain, reward_set, out.completions, out.rows, lengths, limit,
                                    [bool(h) for h in hit_eos])
    return _records(rows, indices, out.completions, lengths, per_sample, [bool(h) for h in hit_eos], settings.samples)


def reference_batch(reward_set: Any, domain: str, rows: list[dict[str, Any]], indices: list[int],
                    settings: EvalSettings, limit: int) -> list[dict[str, Any]]:
    """The ``--model reference`` answers of ``indices``, scored like generated ones -> one record each."""
    chosen = [rows[i] for i in indices]
    completions, lengths = reference_completions(chosen, domain, settings.samples)
    expanded = [row for row in chosen for _ in range(settings.samples)]
    per_sample = score_prompt_batch(domain, reward_set, completions, expanded, lengths, limit)
    return _records(rows, indices, completions, lengths, per_sample, [True] * len(completions), settings.samples)


def _records(rows: list[dict[str, Any]], indices: list[int], completions: list[str], lengths: list[int],
             per_sample: list[dict[str, float]], hit_eos: list[bool], n: int) -> list[dict[str, Any]]:
    records = []
    for j, index in enumerate(indices):
        span = slice(j * n, (j + 1) * n)
        samples = per_sample[span]
        metric_lists = {key: [s[key] for s in samples] for key in samples[0]}
        metric_lists["truncated"] = [0.0 if h else 1.0 for h in hit_eos[span]]
        records.append({"index": index, "key": prompt_key(rows[index]), "completions": completions[span],
                        "lengths": lengths[span], "metrics": metric_lists})
    return records


def markdown_table(result: EvalResult, settings: EvalSettings) -> str:
    """The summary as Markdown: the domain's metrics first (in %), then the rest."""
    specs = M.DOMAIN_METRICS[result.domain]
    shown = {s.key for s in specs}
    rows = [(s.label, _pct(result.metrics.get(s.key))) for s in specs]
    rows.append(("hit max-new-tokens %", _pct(result.metrics.get("truncated"))))
    shown.add("truncated")
    rows += [(f"{key} (mean)", _num(value)) for key, value in sorted(result.metrics.items()) if key not in shown]
    header = (f"**{settings.task}** ({settings.split}, {result.num_prompts} prompts x {settings.samples} sample(s), "
              f"temperature {settings.temperature}, max {settings.max_new_tokens} new tokens) — model `{settings.model}`")
    lines = [header, "", "| metric | value |", "|---|---|"] + [f"| {label} | {value} |" for label, value in rows]
    if result.by_group:
        groups = list(result.by_group)
        lines += ["", f"By `{result.breakdown}`:", "", "| metric | " + " | ".join(groups) + " |",
                  "|---|" + "---|" * len(groups)]
        lines.append("| prompts | " + " | ".join(str(int(result.by_group[g]["prompts"])) for g in groups) + " |")
        lines += [f"| {s.label} | " + " | ".join(_pct(result.by_group[g].get(s.key)) for g in groups) + " |"
                  for s in specs]
    lines += _bfcl_lines(result)
    speed = f"{result.samples_per_second:.2f} samples/s" if result.samples_per_second else "nothing generated"
    lines += ["", f"Speed (this call): {speed}; {result.seconds:.1f} s in all."]
    if result.long_prompts:
        lines.append(f"Warning: {result.long_prompts} prompt(s) over --max-prompt-tokens "
                     f"{settings.max_prompt_tokens} were cut from the left.")
    return "\n".join(lines) + "\n"


BFCL_FIGURES = (("overall", "overall (single-turn: mean of non-live, live, irrelevance)"),
                ("non_live", "non-live AST (BFCL: unweighted mean)"), ("live", "live AST (BFCL: weighted by count)"),
                ("simple", "simple AST (python, java, javascript: unweighted)"),
                ("irrelevance", "irrelevance (mean of non-live and live)"), ("relevance", "live relevance"))


def _bfcl_lines(result: EvalResult) -> list[str]:
    """BFCL's summary figures and the per-category accuracy, next to the leaderboard's columns."""
    if not result.by_category:
        return []
    lines = ["", "BFCL summary (over the categories run):", "", "| figure | accuracy % |", "|---|---|"]
    lines += [f"| {label} | {_pct(result.bfcl[key])} |" for key, label in BFCL_FIGURES if key in result.bfcl]
    lines += ["", "By BFCL category:", "", "| category | entries | accuracy % | format % |", "|---|---|---|---|"]
    lines += [f"| {c} | {int(m['prompts'])} | {_pct(m.get('accuracy'))} | {_pct(m.get('format'))} |"
              for c, m in result.by_category.items()]
    return lines + ["", f"No answer passes BFCL's checker on {len(UNANSWERABLE)} BFCL entries (simple_java 2, "
                        "live_simple 2, live_multiple 3: gdpo.data.bfcl.UNANSWERABLE); they count as failures, as in "
                        "BFCL."]


def write_summary(result: EvalResult, settings: EvalSettings, limit: int) -> None:
    summary = {"settings": asdict(settings), "domain": result.domain, "length_limit": limit,
               "num_prompts": result.num_prompts, "metrics": result.metrics,
               "breakdown": result.breakdown, "by_group": result.by_group,
               "samples_per_second": result.samples_per_second, "seconds": result.seconds,
               "long_prompts_cut": result.long_prompts, "by_category": result.by_category, "bfcl": result.bfcl}
    write_text_atomic(result.output_dir / "summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    write_text_atomic(result.output_dir / "summary.md", markdown_table(result, settings))


def _pct(value: float | None) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{100 * value:.2f}"


def _num(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.4f}"
