"""Can GDPO differ from GRPO in these runs at all? The multi-signal regime and the power of a report.

``rewards/multi_signal_frac`` (metrics.jsonl, per step) is the share of groups in which two or
more rewards vary. Where at most one reward varies in every group, GDPO's advantages are GRPO's
times one positive number per step (per group, normalizing the only varying reward equals
normalizing the sum; the batch step then only rescales), and Adam's update does not change
under a positive scale of the loss: the two methods must make the same update. Below
:data:`MUST_COINCIDE` (10%) of groups, a "level" verdict is no evidence either way.

Power: with ``n_a`` and ``n_b`` seeds, Welch's test at ``alpha`` detects an effect of size
``d`` (gap / pooled std) with probability ``power`` when
``d >= (t_{1-alpha/2, df} + t_{power, df}) * sqrt(1/n_a + 1/n_b)``, ``df = n_a + n_b - 2``
(the usual shifted-central-t approximation of the noncentral t).

>>> round(min_detectable_d(10, 10), 2), round(min_detectable_d(5, 5), 2)
(1.33, 2.02)
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from gdpo.reports.stats import student_t_sf2

KEY = "rewards/multi_signal_frac"
MUST_COINCIDE = 0.10  # below this share of multi-signal groups the methods (nearly) coincide
MULTI_SIGNAL = 0.50  # at or above: the paper's regime (most groups carry two or more signals)
FIRST_STEPS = 10


class RegimeFigures(NamedTuple):
    """Multi-signal fractions of one method: per seed, first ``FIRST_STEPS`` steps and whole run."""

    method: str
    first: list[float]  # per seed, mean over steps 1..FIRST_STEPS
    whole: list[float]  # per seed, mean over all steps

    def as_dict(self) -> dict[str, Any]:
        def stats(xs: list[float]) -> dict[str, Any]:
            arr = np.asarray(xs, dtype=np.float64)
            return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
                    "per_seed": [float(x) for x in arr]}

        return {f"first_{FIRST_STEPS}_steps": stats(self.first), "whole_run": stats(self.whole)}


def regime_figures(runs_by_method: dict[str, list[Any]]) -> list[RegimeFigures] | None:
    """Per method, from each run's metrics (``RunData``); None when no run logged ``KEY`` (older runs)."""
    out = []
    for method, runs in runs_by_method.items():
        first, whole = [], []
        for run in runs:
            steps, values = run.column(KEY)
            ok = ~np.isnan(values)
            if not ok.any():
                continue
            first.append(float(np.mean(values[ok & (steps <= FIRST_STEPS)])) if (ok & (steps <= FIRST_STEPS)).any()
                         else float("nan"))
            whole.append(float(np.mean(values[ok])))
        if whole:
            out.append(RegimeFigures(method, first, whole))
    return out or None


def _shares(figures: list[RegimeFigures]) -> tuple[float, float]:
    """(first ``FIRST_STEPS`` steps, whole run): means over every run of every method."""
    return (float(np.nanmean([x for f in figures for x in f.first])),
            float(np.mean([x for f in figures for x in f.whole])))


def regime_of(figures: list[RegimeFigures]) -> str:
    """``"must_coincide"`` (under 10% both at the start and over the whole run), ``"multi_signal"``
    (>= 50% over the first 10 steps) or ``"partial"``.

    The start counts on its own: once two rewards vary together the methods' updates differ, and
    the runs stay apart even when the rewards later saturate.
    """
    first, whole = _shares(figures)
    if max(first, whole) < MUST_COINCIDE:
        return "must_coincide"
    return "multi_signal" if first >= MULTI_SIGNAL else "partial"


def regime_sentence(figures: list[RegimeFigures], where: str = "report") -> str:
    """The regime in words: ``where="report"`` for a comparison, ``"run"`` for `gdpo train`'s summary of one run.

    >>> print(regime_sentence([RegimeFigures("gdpo", [0.05], [0.02])], where="run")[:60])
    **The methods must coincide here.** Two or more rewards vari
    """
    first, whole = _shares(figures)
    shares = f"{100 * first:.0f}% of groups over the first {FIRST_STEPS} steps ({100 * whole:.0f}% over the whole run)"
    kind = regime_of(figures)
    if kind == "must_coincide":
        tail = ("a level verdict in this report is no evidence against GDPO (nor for it)" if where == "report" else
                "GDPO and GRPO would train this run (nearly) identically, so a comparison in this regime says "
                "nothing about GDPO")
        return (f"**The methods must coincide here.** Two or more rewards varied together in only {shares}. "
                f"Where at most one reward varies in a group, GDPO's advantages are GRPO's times one positive "
                f"number per step, and Adam cancels that scale, so both make the same update: {tail}.")
    if kind == "multi_signal":
        verdicts = "the verdicts below" if where == "report" else "GDPO vs GRPO comparisons of this setup"
        later = (f" The share fell to {100 * whole:.0f}% over the whole run as the rewards saturated, but the "
                 f"runs had already diverged." if whole < MUST_COINCIDE else "")
        return (f"**Multi-signal regime at the start**: two or more rewards varied together in {shares}, so "
                f"GDPO's per-reward normalization gave different advantages from GRPO's normalized sum in most "
                f"groups; {verdicts} test a real difference in the estimators.{later}")
    return (f"Two or more rewards varied together in {shares}: GDPO can differ from GRPO only in those groups "
            f"(elsewhere the two coincide up to a positive scale per step, which Adam cancels).")


# ---------------------------------------------------------------- power


def t_quantile(q: float, df: float) -> float:
    """The ``q`` quantile (q in (0.5, 1)) of Student's t with ``df`` degrees of freedom, by bisection."""
    if not 0.5 < q < 1:
        raise ValueError(f"q={q!r} must be in (0.5, 1)")
    lo, hi = 0.0, 1.0
    while student_t_sf2(hi, df) / 2 > 1 - q:
        hi *= 2
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if student_t_sf2(mid, df) / 2 > 1 - q else (lo, mid)
    return (lo + hi) / 2


def min_detectable_d(n_a: int, n_b: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest effect size d that Welch's two-sided test at ``alpha`` detects with ``power``."""
    if min(n_a, n_b) < 2:
        return math.inf
    df = n_a + n_b - 2
    return (t_quantile(1 - alpha / 2, df) + t_quantile(power, df)) * math.sqrt(1 / n_a + 1 / n_b)


def run_regime_sentence(history: list[dict[str, Any]], method: str = "") -> str | None:
    """The regime sentence for one run's metrics rows (``gdpo train``'s summary); None without ``KEY``.

    >>> rows = [{"step": s, KEY: 0.0} for s in range(1, 21)]
    >>> run_regime_sentence(rows).startswith("**The methods must coincide here.**")
    True
    """
    pairs = [(int(r["step"]), float(r[KEY])) for r in history if r.get(KEY) is not None]
    if not pairs:
        return None
    values = np.asarray([v for _, v in pairs])
    early = [v for s, v in pairs if s <= FIRST_STEPS] or [float("nan")]
    return regime_sentence([RegimeFigures(method, [float(np.mean(early))], [float(values.mean())])], where="run")
