"""The verdict rule: is one method's per-seed score ahead of another's by more than seed noise?

Rule (stated in every report): for each reward, each method is compared with the baseline
(``grpo`` when present, else the first method) on its per-seed final scores. The gap is the
difference of means; Welch's t = gap / sqrt(s_a^2/n_a + s_b^2/n_b) with Welch–Satterthwaite
degrees of freedom; the gap **exceeds the seed-to-seed spread** when the two-sided p-value
is below ``alpha`` (0.05). Otherwise the methods are "level within seed noise". The effect
size d = gap / pooled std is reported too.

>>> w = welch_test([1.0, 1.1, 0.9], [0.0, 0.1, -0.1])
>>> round(w.t, 2), round(w.df, 1), w.p < 0.01
(12.25, 4.0, True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05


@dataclass
class WelchResult:
    """Welch's unequal-variance t test of mean(a) - mean(b)."""

    diff: float  # mean(a) - mean(b)
    t: float  # NaN when both samples have no spread
    df: float
    p: float  # two-sided; 0 when the means differ and neither sample varies, 1 when identical
    pooled_std: float  # sqrt((s_a^2 + s_b^2) / 2)
    effect_size: float  # diff / pooled_std (inf when pooled_std = 0 and diff != 0)


@dataclass
class Verdict:
    """One reward, one method against the baseline, as the rule decides."""

    reward: str
    method: str
    baseline: str
    method_mean: float
    baseline_mean: float
    test: WelchResult | None  # None with fewer than 2 seeds on either side
    alpha: float
    source: str

    @property
    def significant(self) -> bool:
        return self.test is not None and self.test.p < self.alpha

    @property
    def leader(self) -> str | None:
        """The method ahead (by mean), None on an exact tie."""
        if self.method_mean == self.baseline_mean:
            return None
        return self.method if self.method_mean > self.baseline_mean else self.baseline

    @property
    def outcome(self) -> str:
        """``"ahead"``, ``"behind"``, ``"level"`` (within seed noise) or ``"untested"`` (too few seeds)."""
        if self.test is None:
            return "untested"
        if not self.significant:
            return "level"
        return "ahead" if self.method_mean > self.baseline_mean else "behind"

    def sentence(self) -> str:
        """The verdict in words, with the numbers that decide it."""
        gap = self.method_mean - self.baseline_mean
        head = (f"**{self.reward}**: {self.method} {self.method_mean:.3f} vs {self.baseline} "
                f"{self.baseline_mean:.3f} (gap {gap:+.3f})")
        if self.test is None:
            return f"{head}: not tested, fewer than 2 seeds per method."
        stats = f"Welch t = {_fmt(self.test.t)}, df = {_fmt(self.test.df, 1)}, p = {format_p(self.test.p)}, " \
                f"d = {_fmt(self.test.effect_size)}"
        if self.significant:
            return f"{head}: **{self.leader} ahead**, the gap exceeds the seed-to-seed spread ({stats})."
        if self.leader is None:
            return f"{head}: **level**, identical mean scores ({stats})."
        return f"{head}: {self.leader} ahead by mean, but **within seed-to-seed spread** ({stats})."


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def format_p(p: float) -> str:
    """p-values as people read them: '<0.001' below a thousandth."""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def student_t_sf2(t: float, df: float, points: int = 4001) -> float:
    """Two-sided tail P(|T| >= |t|) of Student's t with ``df`` degrees of freedom (df >= 1).

    Substituting t = sqrt(df) tan(theta) turns the density into cos(theta)^(df-1), bounded for
    df >= 1; the tail is its integral from theta_t to pi/2 (Simpson's rule) over the whole
    integral, which is sqrt(pi) Gamma(df/2) / (2 Gamma((df+1)/2)).
    """
    if df < 1:
        raise ValueError(f"df={df!r}: the t tail here needs df >= 1 (Welch's df is >= 1 for n >= 2 per side)")
    theta_t = math.atan(abs(t) / math.sqrt(df))
    grid = np.linspace(theta_t, math.pi / 2, points)
    values = np.cos(grid) ** (df - 1)
    h = (grid[-1] - grid[0]) / (points - 1)
    tail = h / 3 * (values[0] + values[-1] + 4 * values[1:-1:2].sum() + 2 * values[2:-1:2].sum())
    whole = math.sqrt(math.pi) * math.exp(math.lgamma(df / 2) - math.lgamma((df + 1) / 2)) / 2
    return float(min(1.0, max(0.0, tail / whole)))


def welch_test(a: list[float], b: list[float]) -> WelchResult:
    """Welch's t test of mean(a) - mean(b); both samples need at least 2 values."""
    a_arr, b_arr = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a_arr.size < 2 or b_arr.size < 2:
        raise ValueError(f"welch_test needs at least 2 values per side, got {a_arr.size} and {b_arr.size}; "
                         f"run more seeds")
    diff = float(a_arr.mean() - b_arr.mean())
    va, vb = a_arr.var(ddof=1) / a_arr.size, b_arr.var(ddof=1) / b_arr.size
    pooled = math.sqrt((a_arr.var(ddof=1) + b_arr.var(ddof=1)) / 2)
    effect = diff / pooled if pooled > 0 else (0.0 if diff == 0 else math.copysign(math.inf, diff))
    if va + vb == 0:  # neither side varies: the gap is exact (or there is none)
        return WelchResult(diff, float("nan"), float("nan"), 1.0 if diff == 0 else 0.0, pooled, effect)
    t = float(diff / math.sqrt(va + vb))
    df = float((va + vb) ** 2 / (va**2 / (a_arr.size - 1) + vb**2 / (b_arr.size - 1)))
    return WelchResult(diff, t, df, student_t_sf2(t, df), pooled, effect)


def choose_baseline(methods: list[str], preferred: str = "grpo") -> str:
    """``preferred`` when it ran, else the first method."""
    if not methods:
        raise ValueError("no methods to compare; the run folders hold no <method>/seed<k> runs")
    return preferred if preferred in methods else methods[0]


def verdict(reward: str, method: str, baseline: str, method_scores: list[float], baseline_scores: list[float],
            source: str, alpha: float = ALPHA) -> Verdict:
    """Apply the rule to one reward's per-seed scores of ``method`` and ``baseline``."""
    test = welch_test(method_scores, baseline_scores) if min(len(method_scores), len(baseline_scores)) >= 2 else None
    return Verdict(reward, method, baseline, float(np.mean(method_scores)), float(np.mean(baseline_scores)),
                   test, alpha, source)
