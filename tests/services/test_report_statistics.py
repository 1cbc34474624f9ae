"""The report's statistics against hand-computed values and scipy: confidence intervals over
seeds, Welch's t-test, Holm's correction, ranks with ties, performance profiles with
targets never reached."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from services.report.statistics import (
    PROFILE_TAUS,
    holm_adjust,
    performance_profile,
    performance_ratios,
    rank,
    seed_summary,
    welch_t_test,
)

# ---- confidence intervals ------------------------------------------------------------------


def test_seed_summary_is_the_t_interval_computed_by_hand() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    summary = seed_summary(values)
    # mean 2.5, s = √(5/3), t_{0.975, 3} = 3.182446305284263 (any t-table).
    std = math.sqrt(5 / 3)
    half_width = 3.182446305284263 * std / math.sqrt(4)
    assert summary.n == 4
    assert summary.mean == pytest.approx(2.5, rel=1e-15)
    assert summary.std == pytest.approx(std, rel=1e-15)
    assert summary.ci_low == pytest.approx(2.5 - half_width, rel=1e-12)
    assert summary.ci_high == pytest.approx(2.5 + half_width, rel=1e-12)


def test_seed_summary_uses_the_t_quantile_of_n_minus_one_degrees_of_freedom() -> None:
    values = [0.912, 0.905, 0.921, 0.899, 0.915]
    summary = seed_summary(values, confidence=0.9)
    quantile = stats.t.ppf(0.95, df=4)
    half_width = quantile * np.std(values, ddof=1) / math.sqrt(5)
    assert summary.ci_high - summary.mean == pytest.approx(half_width, rel=1e-12)
    assert summary.mean - summary.ci_low == pytest.approx(half_width, rel=1e-12)
    # Wider at 99%, never a normal-quantile interval.
    assert seed_summary(values, 0.99).ci_high > summary.ci_high


def test_seed_summary_ignores_missing_values_and_needs_two_for_a_spread() -> None:
    assert seed_summary([0.5, math.nan, 0.7, math.inf]) == seed_summary([0.5, 0.7])
    one = seed_summary([0.8])
    assert (one.n, one.mean) == (1, 0.8)
    assert math.isnan(one.std) and math.isnan(one.ci_low) and math.isnan(one.ci_high)
    none = seed_summary([])
    assert none.n == 0 and math.isnan(none.mean)


# ---- Welch's t-test ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ([0.91, 0.92, 0.90, 0.93], [0.88, 0.89, 0.87]),
        ([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 2.1, 1.9]),
        ([0.5, 0.52], [0.40, 0.7, 0.55, 0.61, 0.3, 0.45]),
    ],
)
def test_welch_t_test_matches_scipy(a: list[float], b: list[float]) -> None:
    ours = welch_t_test(a, b)
    reference = stats.ttest_ind(a, b, equal_var=False)
    assert ours.t == pytest.approx(reference.statistic, rel=1e-12)
    assert ours.p_value == pytest.approx(reference.pvalue, rel=1e-10)
    assert ours.df == pytest.approx(reference.df, rel=1e-12)


def test_welch_degrees_of_freedom_by_hand() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    # s_a² = 5/3 over 4, s_b² = 10 over 5: v_a = 5/12, v_b = 2.
    v_a, v_b = 5 / 12, 2.0
    t = (2.5 - 6.0) / math.sqrt(v_a + v_b)
    df = (v_a + v_b) ** 2 / (v_a**2 / 3 + v_b**2 / 4)
    result = welch_t_test(a, b)
    assert result.t == pytest.approx(t, rel=1e-14)
    assert result.df == pytest.approx(df, rel=1e-14)
    assert result.p_value == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-12)


def test_welch_needs_two_values_a_side_and_some_spread() -> None:
    assert math.isnan(welch_t_test([0.9], [0.8, 0.7]).p_value)
    assert math.isnan(welch_t_test([0.9, math.nan], [0.8, 0.7]).p_value)
    assert math.isnan(welch_t_test([0.5, 0.5], [0.5, 0.5]).p_value)


# ---- Holm ----------------------------------------------------------------------------------


def test_holm_adjustment_by_hand() -> None:
    # Sorted: 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → kept at 0.06.
    adjusted = holm_adjust([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-15)


def test_holm_caps_at_one_and_skips_missing_tests() -> None:
    np.testing.assert_allclose(holm_adjust([0.5, 0.6]), [1.0, 1.0])
    adjusted = holm_adjust([0.02, math.nan, 0.04])  # m = 2
    assert adjusted[0] == pytest.approx(0.04) and adjusted[2] == pytest.approx(0.04)
    assert math.isnan(adjusted[1])
    assert holm_adjust([]).shape == (0,)


def test_holm_rejects_no_more_than_bonferroni_allows_and_at_least_as_much() -> None:
    rng = np.random.default_rng(0)
    p = rng.uniform(0, 0.1, size=8)
    adjusted = holm_adjust(p)
    bonferroni = np.minimum(1, p * len(p))
    assert np.all(adjusted <= bonferroni + 1e-15)
    assert np.all(adjusted >= p)


# ---- ranks ---------------------------------------------------------------------------------


def test_ranks_share_the_mean_rank_on_ties() -> None:
    scores = pd.Series({"adam": 0.9, "sgd": 0.8, "nadam": 0.9, "adagrad": 0.7})
    assert rank(scores, "max").to_dict() == {"adam": 1.5, "sgd": 3.0, "nadam": 1.5, "adagrad": 4.0}
    assert rank(scores, "min").to_dict() == {"adam": 3.5, "sgd": 2.0, "nadam": 3.5, "adagrad": 1.0}


def test_missing_scores_tie_for_last() -> None:
    scores = pd.Series({"a": 0.5, "b": math.nan, "c": 0.7, "d": math.nan})
    assert rank(scores, "max").to_dict() == {"a": 2.0, "b": 3.5, "c": 1.0, "d": 3.5}


def test_rank_rejects_an_unknown_direction() -> None:
    with pytest.raises(ValueError, match=r"unknown direction 'up'; allowed: max, min"):
        rank(pd.Series({"a": 1.0}), "up")


# ---- performance profiles ------------------------------------------------------------------


@pytest.fixture
def times() -> pd.DataFrame:
    """Time-to-target: w1 a=10 b=20 c=never; w2 a=never b=30 c=60; w3 nobody (NaN: no
    final runs counts as never)."""
    return pd.DataFrame(
        {
            "a": [10.0, math.inf, math.inf],
            "b": [20.0, 30.0, math.nan],
            "c": [math.inf, 60.0, math.inf],
        },
        index=["w1", "w2", "w3"],
    )


def test_performance_ratios_divide_by_the_best_and_keep_infinity(times: pd.DataFrame) -> None:
    ratios = performance_ratios(times)
    assert ratios.loc["w1"].tolist() == [1.0, 2.0, math.inf]
    assert ratios.loc["w2"].tolist() == [math.inf, 1.0, 2.0]
    assert ratios.loc["w3"].tolist() == [math.inf] * 3


def test_performance_profile_counts_workloads_within_tau(times: pd.DataFrame) -> None:
    profile = performance_profile(times, taus=[1.0, 1.5, 2.0, 4.0])
    third = 1 / 3
    assert profile["a"].tolist() == pytest.approx([third, third, third, third])
    assert profile["b"].tolist() == pytest.approx([third, third, 2 * third, 2 * third])
    assert profile["c"].tolist() == pytest.approx([0.0, 0.0, third, third])
    assert list(profile.index) == [1.0, 1.5, 2.0, 4.0]


def test_default_profile_spans_tau_one_to_four(times: pd.DataFrame) -> None:
    profile = performance_profile(times)
    assert profile.index[0] == 1.0 and profile.index[-1] == 4.0
    assert len(profile) == len(PROFILE_TAUS) == 31
    # Non-decreasing in τ, and never above the share of workloads an optimizer solved.
    assert (profile.diff().dropna() >= 0).all().all()
    assert profile.max().to_dict() == pytest.approx({"a": 1 / 3, "b": 2 / 3, "c": 1 / 3})
