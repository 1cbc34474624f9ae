"""The statistics of a comparison, on plain numbers: confidence intervals over seeds,
Welch's t-test with Holm's correction, ranks with ties, and performance profiles.

Nothing here knows about MLflow or the report's layout; ``services.report.tables`` applies
these to a study's records.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

CONFIDENCE = 0.95
# τ of a performance profile: up to 4× the best time, as AlgoPerf scores submissions.
PROFILE_TAUS = np.round(np.linspace(1.0, 4.0, 31), 10)


@dataclass(frozen=True)
class SeedSummary:
    """Mean, sample standard deviation and the ``confidence`` interval of the mean of ``n``
    values (Student's t with n − 1 degrees of freedom); std and interval are NaN for n < 2,
    everything is NaN for n = 0."""

    n: int
    mean: float
    std: float
    ci_low: float
    ci_high: float


def seed_summary(values: Sequence[float], confidence: float = CONFIDENCE) -> SeedSummary:
    """Summarise the finite ``values`` (one per seed): mean ± t_{(1+c)/2, n−1} · s / √n."""
    finite = np.asarray([v for v in values if math.isfinite(v)], dtype=float)
    n = len(finite)
    if n == 0:
        return SeedSummary(0, math.nan, math.nan, math.nan, math.nan)
    mean = float(finite.mean())
    if n == 1:
        return SeedSummary(1, mean, math.nan, math.nan, math.nan)
    std = float(finite.std(ddof=1))
    half_width = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return SeedSummary(n, mean, std, mean - half_width, mean + half_width)


@dataclass(frozen=True)
class WelchTest:
    """Welch's unequal-variance t-test of mean(a) − mean(b): the statistic, the
    Welch–Satterthwaite degrees of freedom and the two-sided p-value."""

    t: float
    df: float
    p_value: float


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> WelchTest:
    """Welch's t-test of the finite values of ``a`` against those of ``b``.

    t = (ā − b̄) / √(s_a²/n_a + s_b²/n_b), ν = (s_a²/n_a + s_b²/n_b)² /
    ((s_a²/n_a)²/(n_a − 1) + (s_b²/n_b)²/(n_b − 1)), p = 2·P(T_ν > |t|). NaN throughout
    when a side has fewer than two values or both have no spread (no test is possible).
    """
    x = np.asarray([v for v in a if math.isfinite(v)], dtype=float)
    y = np.asarray([v for v in b if math.isfinite(v)], dtype=float)
    if len(x) < 2 or len(y) < 2:
        return WelchTest(math.nan, math.nan, math.nan)
    var_x, var_y = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    if var_x + var_y == 0:
        return WelchTest(math.nan, math.nan, math.nan)
    t = (x.mean() - y.mean()) / math.sqrt(var_x + var_y)
    df = (var_x + var_y) ** 2 / (var_x**2 / (len(x) - 1) + var_y**2 / (len(y) - 1))
    return WelchTest(float(t), float(df), float(2 * stats.t.sf(abs(t), df)))


def holm_adjust(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of ``p_values`` for testing them together: sorted
    ascending, p_(i) becomes max_{j ≤ i} min(1, (m − j + 1) · p_(j)) with m the number of
    finite p-values; NaN stays NaN (no test) and does not count in m. Rejecting where the
    adjusted value is below α controls the family-wise error rate at α."""
    p = np.asarray(p_values, dtype=float)
    adjusted = np.full_like(p, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    m = len(tested)
    running = 0.0
    for position, index in enumerate(tested[np.argsort(p[tested], kind="stable")]):
        running = max(running, min(1.0, (m - position) * p[index]))
        adjusted[index] = running
    return adjusted


def rank(scores: pd.Series, direction: str) -> pd.Series:
    """Ranks of ``scores`` (1 = best; "max": higher is better, "min": lower is better).
    Ties share the mean of the ranks they span (1, 2.5, 2.5, 4); missing scores (NaN) tie
    for the ranks after every scored entry."""
    if direction not in ("max", "min"):
        raise ValueError(f"unknown direction {direction!r}; allowed: max, min")
    ordered = -scores if direction == "max" else scores
    scored = ordered.rank(method="average")
    missing = ordered.isna()
    if missing.any():
        first, count = int((~missing).sum()) + 1, int(missing.sum())
        scored[missing] = first + (count - 1) / 2
    return scored


def performance_ratios(times: pd.DataFrame) -> pd.DataFrame:
    """Each entry of ``times`` (rows: workloads, columns: optimizers; time-to-target, NaN or
    inf where the target was not reached) divided by its row's best time; inf where not
    reached, and throughout a row where nobody reached it."""
    filled = times.astype(float).fillna(math.inf)
    best = filled.min(axis=1)
    ratios = filled.div(best.where(np.isfinite(best)), axis=0)
    return ratios.fillna(math.inf)


def performance_profile(
    times: pd.DataFrame, taus: Sequence[float] = tuple(PROFILE_TAUS)
) -> pd.DataFrame:
    """Dolan & Moré's performance profile: for each optimizer (column of ``times``) and τ,
    the fraction of workloads (rows) on which its time-to-target is within τ × the best
    optimizer's; a target never reached counts as infinite time. Indexed by τ."""
    ratios = performance_ratios(times)
    profile = {
        optimizer: [float((ratios[optimizer] <= tau).mean()) for tau in taus]
        for optimizer in ratios.columns
    }
    return pd.DataFrame(profile, index=pd.Index(list(taus), name="tau"))
