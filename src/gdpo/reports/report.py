"""The comparison report: built from the run folders only, written as Markdown and as one HTML page.

``write_report(output_dir, report_dir)`` reads ``<output_dir>/<method>/seed<k>/`` (metrics,
eval, config) and ``compare.json`` (command, machine, wall time), and writes to ``report_dir``:
``report.md`` (+ PNGs beside it), ``report.html`` (the same content, images embedded as
base64, no external assets) and ``summary.json`` (every number of the tables and verdicts).

The report is a list of blocks (:class:`Heading`, :class:`Para`, :class:`Table`, ...) that two
small renderers turn into Markdown and HTML, so both always say the same thing.
"""

from __future__ import annotations

import base64
import html
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gdpo.reports.data import (ReportError, read_manifest, RunData, SeedScores, default_window, has_eval, load_runs,
                              mean_over_training, method_scores, methods_of, reward_names, runs_of, score_source,
                              training_area)
from gdpo.reports.plots import plot_curves, plot_scores
from gdpo.reports.regime import FIRST_STEPS, RegimeFigures, min_detectable_d, regime_figures, regime_of, \
    regime_sentence
from gdpo.jsonio import write_text_atomic
from gdpo.reports.stats import ALPHA, Verdict, choose_baseline, verdict

__all__ = ["ReportError", "ReportData", "build_report", "write_report", "to_markdown", "to_html"]

LAST_K_FRACTION = 0.1  # training-mean scores: mean of the last 10% of steps (at least 1)


# ---------------------------------------------------------------- document blocks


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str  # inline Markdown: **bold**, `code`


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Code:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Figure:
    path: Path  # a PNG in the report folder
    caption: str


Block = Heading | Para | Bullets | Code | Table | Figure


# ---------------------------------------------------------------- the numbers


@dataclass
class ReportData:
    """Everything the report states, computed from the run folders."""

    runs: list[RunData]
    methods: list[str]
    rewards: list[str]
    baseline: str
    source: str  # "eval" or "train"
    last_k: int
    window: int
    scores: dict[str, list[SeedScores]]  # reward -> one per method
    verdicts: list[Verdict]  # on final scores
    area_verdicts: list[Verdict]  # on mean training reward over all steps (learning speed)
    areas: dict[str, list[SeedScores]] = field(default_factory=dict)  # reward -> per-seed learning speed, per method
    manifest: dict[str, Any] = field(default_factory=dict)
    regime: list[RegimeFigures] | None = None  # multi-signal fractions per method (None: not logged)

    @property
    def config(self) -> dict[str, Any]:
        return self.runs[0].config

    @property
    def expected_steps(self) -> int | None:
        steps = self.config.get("steps")
        return int(steps) if steps is not None else None

    @property
    def unfinished(self) -> list[RunData]:
        target = self.expected_steps
        return [r for r in self.runs if target is not None and r.steps_done < target]


def compute_report_data(output_dir: Path, alpha: float = ALPHA) -> ReportData:
    """Load the runs and compute scores and verdicts."""
    manifest = read_manifest(output_dir)
    runs = load_runs(output_dir, manifest.get("methods"))
    methods, rewards = methods_of(runs), reward_names(runs)
    baseline = choose_baseline(methods)
    source = score_source(runs, rewards)
    last_k = max(1, round(min(r.steps_done for r in runs) * LAST_K_FRACTION))
    scores = {name: method_scores(runs, name, source, last_k) for name in rewards}
    areas = {name: training_area(runs, name) for name in rewards}
    regime = regime_figures({m: runs_of(runs, m) for m in methods})
    return ReportData(runs, methods, rewards, baseline, source, last_k, default_window(runs), scores,
                      _verdicts(scores, baseline, alpha), _verdicts(areas, baseline, alpha), areas, manifest, regime)


def _verdicts(scores: dict[str, list[SeedScores]], baseline: str, alpha: float) -> list[Verdict]:
    """Each non-baseline method against the baseline, reward by reward, on per-seed ``final`` scores."""
    out = []
    for name, per_method in scores.items():
        base = next(s for s in per_method if s.method == baseline)
        out += [verdict(name, s.method, baseline, s.final, base.final, s.source, alpha)
                for s in per_method if s.method != baseline]
    return out


# ---------------------------------------------------------------- sections


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def setup_section(data: ReportData) -> list[Block]:
    """What ran: task, model, sizes, methods, seeds, command, machine, wall time."""
    cfg = data.config
    task, rollout, optim = cfg.get("task", {}), cfg.get("rollout", {}), cfg.get("optim", {})
    model = cfg.get("model", {})
    seeds = sorted({r.seed for r in data.runs})
    items = [
        f"task `{task.get('name')}` {json.dumps(task.get('params', {}))}; rewards: "
        + ", ".join(f"`{r}`" for r in data.rewards),
        f"model `{model.get('name')}`" + (f" {json.dumps(model.get('tiny'))}" if model.get("name") == "tiny" else ""),
        f"{data.expected_steps} steps, B = {rollout.get('prompts_per_step')} prompts x G = "
        f"{rollout.get('num_generations')} rollouts per step, max {rollout.get('max_new_tokens')} new tokens, "
        f"lr {optim.get('lr')}",
        f"methods: {', '.join(f'`{m}`' for m in data.methods)}; seeds: {', '.join(map(str, seeds))} "
        f"(seed k: same data order and same initial model under every method)",
    ]
    items += provenance_items(data)
    blocks: list[Block] = [Heading("Setup"), Bullets(items)]
    if data.unfinished:
        names = ", ".join(f"{r.method}/seed{r.seed} ({r.steps_done}/{data.expected_steps})" for r in data.unfinished)
        blocks.append(Para(f"**Warning: {len(data.unfinished)} run(s) unfinished**: {names}. "
                           f"Rerun the same `gdpo compare` command to resume them."))
    return blocks


def provenance_items(data: ReportData) -> list[str]:
    """Command(s), machine and wall time from ``compare.json``; per-run training time from metrics."""
    items = []
    for inv in data.manifest.get("invocations", []):
        ran = sum(1 for r in inv.get("runs", []) if r.get("action") != "skipped")
        load = inv.get("load_average")
        busy = f", 1-min load average {load[0]} at start / {load[1]} at end" if load and None not in load else ""
        items.append(f"command: `{inv.get('command')}` (started {inv.get('started')}, wall time "
                     f"{inv.get('wall_s', float('nan')) / 60:.1f} min, {ran} run(s) trained, "
                     f"parallel {inv.get('parallel')}{busy}) on {inv.get('machine')}")
    items += [f"note: {n}" for n in data.manifest.get("notes", [])]
    per_run = [sum(m.get("time/step_s", 0.0) or 0.0 for m in r.metrics) for r in data.runs]
    items.append(f"training time per run (sum of step times, without process start-up): median "
                 f"{np.median(per_run):.0f} s, total {sum(per_run) / 60:.1f} min over {len(per_run)} runs")
    return items


def verdict_section(data: ReportData) -> list[Block]:
    """The computed verdicts, the rule that made them, and the paper's direction."""
    what = "test-split evaluation at the last step" if data.source == "eval" else \
        f"mean training reward over the last {data.last_k} steps"
    rule = (f"Rule: per reward, each method's per-seed final score ({what}) is compared with "
            f"`{data.baseline}`'s. Gap = difference of means over seeds. The gap **exceeds the seed-to-seed "
            f"spread** when Welch's two-sided t test gives p < {ALPHA} (unequal variances, Welch–Satterthwaite "
            f"df); otherwise the methods are level within seed noise. d = gap / pooled sample std. "
            f"Higher reward is better for every reward here.")
    nothing = ["only one method ran; nothing to compare"]
    blocks: list[Block] = [Heading("Verdict (computed from the runs)"), *regime_section(data), Para(rule),
                           Bullets([v.sentence() for v in data.verdicts] or nothing),
                           Para("**Learning speed**: the same rule on each seed's mean training reward over all "
                                "steps (area under the training curve / steps), which separates methods that "
                                "end at the same score but reach it at different times:"),
                           Bullets([v.sentence() for v in data.area_verdicts] or nothing),
                           *power_section(data)]
    return blocks + paper_section(data)


def regime_section(data: ReportData) -> list[Block]:
    """Whether GDPO can differ from GRPO in these runs: the share of groups where >= 2 rewards vary."""
    if data.regime is None:
        return [Para("The runs did not log `rewards/multi_signal_frac` (older runs), so this report cannot say "
                     "whether two or more rewards varied together, the only case where GDPO and GRPO differ.")]
    rows = [[f"`{f.method}`", _pm(np.nanmean(f.first), _std(f.first)), _pm(np.mean(f.whole), _std(f.whole))]
            for f in data.regime]
    caption = (f"Share of groups in which two or more rewards vary (`rewards/multi_signal_frac`), mean over the "
               f"first {FIRST_STEPS} steps and over the whole run per seed, then mean ± sample std over seeds.")
    return [Para(regime_sentence(data.regime)),
            Table(["method", f"first {FIRST_STEPS} steps", "whole run"], rows, caption)]


def _std(values: list[float]) -> float:
    arr = np.asarray(values, dtype=np.float64)
    arr = arr[~np.isnan(arr)]
    return float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def power_numbers(data: ReportData) -> dict[str, Any]:
    """The smallest effect each comparison could detect (80% power, alpha 0.05), as d and in reward units."""
    out: dict[str, Any] = {"power": 0.8, "alpha": ALPHA, "comparisons": []}
    for v, a in zip(data.verdicts, data.area_verdicts):
        n_m = len(next(s for s in data.scores[v.reward] if s.method == v.method).final)
        n_b = len(next(s for s in data.scores[v.reward] if s.method == v.baseline).final)
        if min(n_m, n_b) < 2:
            continue  # untested: no power to speak of
        d = min_detectable_d(n_m, n_b, ALPHA, 0.8)
        out["comparisons"].append({
            "reward": v.reward, "method": v.method, "baseline": v.baseline, "n": [n_m, n_b],
            "min_detectable_d": _json_num(d),
            "min_detectable_gap_final": _json_num(d * v.test.pooled_std) if v.test else None,
            "min_detectable_gap_learning_speed": _json_num(d * a.test.pooled_std) if a.test else None})
    return out


def power_section(data: ReportData) -> list[Block]:
    numbers = power_numbers(data)["comparisons"]
    if not numbers:
        return []
    items = []
    for c in numbers:
        gaps = [(f"{label} gap >= {c[key]:.3f}" if c[key] > 0 else f"{label}: no seed-to-seed spread (every "
                 f"seed scored the same, so any gap at all would show)")
                for key, label in (("min_detectable_gap_final", "final"),
                                   ("min_detectable_gap_learning_speed", "learning-speed"))
                if isinstance(c[key], float)]
        items.append(f"`{c['reward']}`, {c['method']} vs {c['baseline']} ({c['n'][0]} vs {c['n'][1]} seeds): "
                     f"|d| >= {c['min_detectable_d']:.2f}" + (f", i.e. {', '.join(gaps)}" if gaps else ""))
    return [Para("**Power** (smallest effect this report detects with 80% probability at p < 0.05; "
                 "d = gap / pooled std, shifted-t approximation; gaps in reward units use the observed spread):"),
            Bullets(items)]


def paper_section(data: ReportData) -> list[Block]:
    """Direction check against the paper, which reports GDPO >= GRPO on every headline metric."""
    mine = [v for v in data.verdicts if v.method == "gdpo" and v.baseline == "grpo"]
    speed = {v.reward: v for v in data.area_verdicts if v.method == "gdpo" and v.baseline == "grpo"}
    if not mine:
        return []
    words = {"ahead": "agrees (GDPO ahead beyond seed noise)", "level": "no clear direction (within seed noise)",
             "behind": "**disagrees** (GRPO ahead beyond seed noise)", "untested": "not tested (too few seeds)"}
    return [Heading("Against the paper's direction", 3),
            Para("The paper (PAPER.md, headline table) reports GDPO at or above GRPO on every reward-specific "
                 "metric it lists. Here, per reward:"),
            Bullets([f"`{v.reward}`: final score {words[v.outcome]}; learning speed "
                     f"{words[speed[v.reward].outcome]}" for v in mine])]


def scores_section(data: ReportData, figure: Path | None) -> list[Block]:
    """Final and best per-reward scores, mean ± std over seeds, per method."""
    if data.source == "eval":
        caption = ("Test-split scores (greedy decoding on the task's test prompts, eval.jsonl): final = last "
                   "evaluation, best = best evaluation of each seed; mean ± sample std over seeds.")
    else:
        caption = (f"No eval.jsonl in every run, so these are **training** reward means: final = mean of the "
                   f"last {data.last_k} steps, best = best {data.last_k}-step trailing mean of each seed; "
                   f"mean ± sample std over seeds.")
    header = ["reward"] + [f"{m} {kind}" for m in data.methods for kind in ("final", "best")]
    rows = []
    for name in data.rewards:
        by_method = {s.method: s for s in data.scores[name]}
        rows.append([f"`{name}`"] + [cell for m in data.methods
                                     for cell in (_pm(by_method[m].final_mean, by_method[m].final_std),
                                                  _pm(by_method[m].best_mean, by_method[m].best_std))])
    blocks: list[Block] = [Heading("Scores"), Table(header, rows, caption)]
    if figure:
        blocks.append(Figure(figure, "Final score per reward: bar = mean over seeds, black bar = ± sample std, "
                                     "dots = individual seeds."))
    return blocks


def curves_section(data: ReportData, report_dir: Path) -> list[Block]:
    """Training reward curves, and test-split curves when evaluations exist."""
    blocks: list[Block] = [Heading("Curves")]
    panels = [(f"rewards/{r}/mean", r, "batch mean reward") for r in data.rewards]
    train_png = plot_curves(data.runs, panels, report_dir / "train_rewards.png", source="train",
                            window=data.window, suptitle="Training rewards (line: mean over seeds; band: min–max over seeds)")
    if train_png:
        blocks.append(Figure(train_png, f"Per-reward mean over each step's rollouts, smoothed by a trailing "
                                        f"{data.window}-step mean per seed; line = mean over seeds, "
                                        f"shaded band = min–max over seeds."))
    evaluated = [r for r in data.rewards if has_eval(data.runs, r)]
    if evaluated:
        eval_png = plot_curves(data.runs, [(f"eval/{r}/mean", r, "test mean reward") for r in evaluated],
                               report_dir / "eval_rewards.png", source="eval", window=1,
                               suptitle="Test-split rewards (line: mean over seeds; band: min–max over seeds)")
        if eval_png:
            blocks.append(Figure(eval_png, "Per-reward mean on the test prompts (greedy), unsmoothed; line = "
                                           "mean over seeds, band = min–max over seeds."))
    return blocks


def collapse_section(data: ReportData, report_dir: Path) -> list[Block]:
    """Distinct advantage values per group and zero-spread groups per reward, over training."""
    group_size = data.config.get("rollout", {}).get("num_generations")
    panels = [("advantages/distinct_per_group", f"distinct advantages per group (G = {group_size})",
               "distinct values")]
    panels += [(f"rewards/{r}/zero_std_frac", f"zero-spread groups: {r}", "fraction of groups") for r in data.rewards]
    png = plot_curves(data.runs, panels, report_dir / "collapse.png", source="train", window=data.window,
                      suptitle="Collapse diagnostics (line: mean over seeds; band: min–max over seeds)",
                      ylims={f"rewards/{r}/zero_std_frac": (-0.02, 1.02) for r in data.rewards},
                      hlines={"advantages/distinct_per_group": group_size} if group_size else None)
    header = ["method", "distinct advantages / group"] + [f"zero-spread `{r}`" for r in data.rewards]
    rows = []
    for m in data.methods:
        mine = runs_of(data.runs, m)
        cells = [_pm(*mean_over_training(mine, "advantages/distinct_per_group"))]
        cells += [_pm(*mean_over_training(mine, f"rewards/{r}/zero_std_frac")) for r in data.rewards]
        rows.append([f"`{m}`", *cells])
    caption = (f"Means over all training steps, then mean ± sample std over seeds. Distinct advantages: how many "
               f"different advantage values a group of G = {group_size} rollouts gets (rounded to 4 decimals; "
               f"at most G, dashed line in the plot); more = finer learning signal. Zero-spread: share of groups "
               f"in which that reward is the same for every rollout (that reward gives no signal there).")
    blocks: list[Block] = [Heading("Collapse diagnostics"), Table(header, rows, caption)]
    if png:
        blocks.append(Figure(png, f"Same figures per step (trailing {data.window}-step mean per seed)."))
    return blocks


def runs_section(data: ReportData) -> list[Block]:
    """One row per run: steps done, training time, final training means."""
    header = ["method", "seed", "steps", "train time (s)"] + [f"`{r}` (last {data.last_k})" for r in data.rewards]
    rows = []
    for r in data.runs:
        cells = [f"{np.nanmean(r.column(f'rewards/{name}/mean')[1][-data.last_k:]):.3f}" for name in data.rewards]
        seconds = sum(m.get("time/step_s", 0.0) or 0.0 for m in r.metrics)
        rows.append([r.method, str(r.seed), str(r.steps_done), f"{seconds:.0f}", *cells])
    return [Heading("Runs"), Table(header, rows, "Every run folder read; reward columns are training means.")]


def build_report(data: ReportData, report_dir: Path) -> list[Block]:
    """All blocks of the report (writes the PNGs into ``report_dir``)."""
    title = " vs ".join(data.methods) + f" on `{data.config.get('task', {}).get('name')}`"
    score_png = plot_scores(data.scores, report_dir / "scores.png",
                            "Final scores per seed (" + ("test split" if data.source == "eval" else
                                                         f"training, last {data.last_k} steps") + ")")
    return [Heading(f"Comparison: {title}", 1), *setup_section(data), *verdict_section(data),
            *scores_section(data, score_png), *curves_section(data, report_dir), *collapse_section(data, report_dir),
            *runs_section(data)]


# ---------------------------------------------------------------- renderers


def to_markdown(blocks: list[Block]) -> str:
    """Markdown with images referenced by file name (they sit beside report.md)."""
    out = []
    for b in blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            out.append(b.text)
        elif isinstance(b, Bullets):
            out.append("\n".join(f"- {item}" for item in b.items))
        elif isinstance(b, Code):
            out.append(f"```\n{b.text}\n```")
        elif isinstance(b, Table):
            lines = ["| " + " | ".join(b.header) + " |", "|" + "---|" * len(b.header)]
            lines += ["| " + " | ".join(row) + " |" for row in b.rows]
            out.append(("*" + b.caption + "*\n\n" if b.caption else "") + "\n".join(lines))
        elif isinstance(b, Figure):
            out.append(f"![{b.path.stem}]({b.path.name})\n\n*{b.caption}*")
    return "\n\n".join(out) + "\n"


def _inline_html(text: str) -> str:
    """Escape, then turn **bold** and `code` into tags."""
    text = html.escape(text, quote=False)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", text)


CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.5}table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}figure{margin:1em 0 2em}img{max-width:100%}
figcaption,caption{color:#555;font-size:.92em;caption-side:top;text-align:left;padding-bottom:.4em}
code{background:#f3f3f3;padding:0 .2em;border-radius:3px}"""


def to_html(blocks: list[Block], title: str) -> str:
    """One self-contained page: inline CSS, images as base64 data URIs."""
    body = []
    for b in blocks:
        if isinstance(b, Heading):
            body.append(f"<h{b.level}>{_inline_html(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f"<p>{_inline_html(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{_inline_html(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Code):
            body.append(f"<pre>{html.escape(b.text)}</pre>")
        elif isinstance(b, Table):
            head = "".join(f"<th>{_inline_html(h)}</th>" for h in b.header)
            rows = "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in b.rows)
            body.append(f"<table><caption>{_inline_html(b.caption)}</caption><tr>{head}</tr>{rows}</table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            body.append(f'<figure><img alt="{html.escape(b.path.stem)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{_inline_html(b.caption)}</figcaption></figure>")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


# ---------------------------------------------------------------- summary and entry point


def summary_dict(data: ReportData) -> dict[str, Any]:
    """Every number of the tables and verdicts, for machines."""
    return {
        "methods": data.methods, "rewards": data.rewards, "baseline": data.baseline, "score_source": data.source,
        "last_k": data.last_k, "alpha": ALPHA,
        "seeds": {m: [r.seed for r in runs_of(data.runs, m)] for m in data.methods},
        "steps_done": {f"{r.method}/seed{r.seed}": r.steps_done for r in data.runs},
        "scores": {name: {s.method: {"final": s.final, "best": s.best, "final_mean": s.final_mean,
                                     "final_std": s.final_std, "best_mean": s.best_mean, "best_std": s.best_std}
                          for s in data.scores[name]} for name in data.rewards},
        "learning_speed": {name: {s.method: s.final for s in data.areas[name]} for name in data.rewards},
        "verdicts": [_verdict_dict(v) for v in data.verdicts],
        "learning_speed_verdicts": [_verdict_dict(v) for v in data.area_verdicts],
        "collapse": {m: {key: mean_over_training(runs_of(data.runs, m), key)
                         for key in ["advantages/distinct_per_group",
                                     *[f"rewards/{r}/zero_std_frac" for r in data.rewards]]}
                     for m in data.methods},
        "invocations": [{k: v for k, v in inv.items() if k != "runs"} for inv in data.manifest.get("invocations", [])],
        "multi_signal_frac": None if data.regime is None else {f.method: f.as_dict() for f in data.regime},
        "regime": None if data.regime is None else regime_of(data.regime),
        "power": power_numbers(data),
    }


def _verdict_dict(v: Verdict) -> dict[str, Any]:
    return {"reward": v.reward, "method": v.method, "baseline": v.baseline, "outcome": v.outcome,
            "source": v.source, "method_mean": v.method_mean, "baseline_mean": v.baseline_mean,
            "welch": None if v.test is None else {k: _json_num(x) for k, x in vars(v.test).items()}}


def _json_num(x: float) -> float | str:
    return x if np.isfinite(x) else str(x)


def write_report(output_dir: str | Path, report_dir: str | Path | None = None) -> list[Path]:
    """Build the report of the runs in ``output_dir``; returns the files written."""
    output_dir = Path(output_dir)
    report_dir = Path(report_dir) if report_dir else output_dir / "report"
    report_dir.mkdir(parents=True, exist_ok=True)
    data = compute_report_data(output_dir)
    blocks = build_report(data, report_dir)
    title = next(b.text for b in blocks if isinstance(b, Heading))
    files = [write_text_atomic(report_dir / "report.md", to_markdown(blocks)),
             write_text_atomic(report_dir / "report.html", to_html(blocks, title.replace("`", ""))),
             write_text_atomic(report_dir / "summary.json", json.dumps(summary_dict(data), indent=1))]
    return files + [b.path for b in blocks if isinstance(b, Figure)]
