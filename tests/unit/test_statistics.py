"""The repeated-study statistics on hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from support.mlflow_fixtures import PROJECT

from lgals.statistics import (
    T_COVERAGE,
    Variance,
    equivalence_test,
    hierarchical_bootstrap,
    holm,
    minimum_detectable_difference,
    paired_test,
    probability_of_improvement,
    t_interval,
    units,
    variance_components,
)


def test_hierarchical_bootstrap_of_two_repetitions_by_hand():
    """R = 2 repetitions of one seed, differences 0 and 1: a resample's mean is 0, 0.5 or 1
    with chances 1/4, 1/2, 1/4, so the 95% interval is [0, 1] and the mean 0.5."""
    mean, low, high = hierarchical_bootstrap(np.array([[0.0], [1.0]]), resamples=4000)
    assert (mean, low, high) == (0.5, 0.0, 1.0)


def test_hierarchical_bootstrap_of_constant_differences_is_a_point():
    assert hierarchical_bootstrap(np.full((3, 4), 1.5)) == (1.5, 1.5, 1.5)


def test_hierarchical_bootstrap_resamples_repetitions_first():
    """Seeds agree within each repetition, repetitions disagree: the interval is as wide as
    the repetitions make it (resampling the 12 runs as if independent would be narrower)."""
    values = np.repeat(np.array([[-2.0], [0.0], [2.0]]), 4, axis=1)
    _, low, high = hierarchical_bootstrap(values, seed=1)
    flat = stats.bootstrap((values.ravel(),), np.mean, n_resamples=10_000,
                           method="percentile", rng=np.random.default_rng(1))
    assert high - low > flat.confidence_interval.high - flat.confidence_interval.low
    assert low == pytest.approx(-2 / 3 * 2, abs=0.7) and high == pytest.approx(4 / 3, abs=0.7)


def test_hierarchical_bootstrap_is_seeded():
    values = np.random.default_rng(0).normal(size=(5, 10))
    assert hierarchical_bootstrap(values, seed=3) == hierarchical_bootstrap(values, seed=3)


def test_probability_of_improvement_by_hand():
    """Pairs (3 > 1), (2 = 2), (1 < 3), (5 > 4): (2 + 0.5) / 4."""
    assert probability_of_improvement([3, 2, 1, 5], [1, 2, 3, 4]) == 0.625


def test_variance_components_by_hand():
    """[[1, 3], [5, 7]]: repetition means 2 and 6 (variance 8, so MS_between = 2 x 8 = 16),
    within-repetition variances 2 and 2 (MS_within = 2): seed 2, repetition (16 - 2) / 2 = 7,
    share 7 / 9."""
    found = variance_components(np.array([[1.0, 3.0], [5.0, 7.0]]))
    assert (found.repeat, found.seed) == (7.0, 2.0)
    assert found.repeat_share == pytest.approx(7 / 9)


def test_variance_components_floor_the_repetition_at_zero():
    """Repetition means closer than the seeds' spread implies: no repetition variance."""
    found = variance_components(np.array([[0.0, 4.0], [1.0, 3.0]]))
    assert found.repeat == 0.0 and found.seed == pytest.approx(5.0)
    assert math.isnan(variance_components(np.array([[1.0, 2.0, 3.0]])).repeat)


def test_minimum_detectable_difference_by_hand():
    """var_repeat 1, var_seed 5, one repetition of 5 seeds: SE = sqrt(1 + 1);
    z_0.975 + z_0.8 = 1.959964 + 0.841621."""
    mdd = minimum_detectable_difference(Variance(1.0, 5.0), repeats=1, seeds=5)
    assert mdd == pytest.approx((1.959964 + 0.841621) * math.sqrt(2), rel=1e-5)
    # five repetitions of ten seeds: SE = sqrt(1 / 5 + 5 / 50)
    assert minimum_detectable_difference(Variance(1.0, 5.0), repeats=5, seeds=10) == (
        pytest.approx((1.959964 + 0.841621) * math.sqrt(0.3), rel=1e-5))


def test_paired_test_of_one_repetition_is_the_paired_t_test_over_seeds():
    a, b = np.array([55.0, 57.5, 56.0, 58.0]), np.array([53.0, 54.0, 55.5, 53.5])
    assert paired_test((a - b)[None]) == pytest.approx(stats.ttest_rel(a, b).pvalue)


def test_paired_test_of_repetitions_tests_their_means_by_hand():
    """Repetition means 0.5 and 2.5: t = 1.5 / (sqrt(2) / sqrt(2)) at 1 df, a Cauchy
    variable: p = 1 - 2 atan(1.5) / pi; the four runs as if independent would differ."""
    differences = np.array([[1.0, 0.0], [3.0, 2.0]])
    assert paired_test(differences) == pytest.approx(1 - 2 * math.atan(1.5) / math.pi)
    assert paired_test(differences) != pytest.approx(
        stats.ttest_1samp(differences.ravel(), 0).pvalue)
    assert math.isnan(paired_test(np.array([[1.0]])))  # one unit: nothing to test


def test_holm_by_hand():
    """Sorted 0.01, 0.03, 0.04 times 3, 2, 1: 0.03, 0.06, 0.04 -> running max 0.03, 0.06, 0.06;
    back in the input's order."""
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 2 x 0.5 caps at 1, and adjusted p never fall
    assert holm([]) == []


def test_t_interval_of_one_repetition_by_hand():
    """Differences 2, 3.5, 0.5, 4.5, 2.5: mean 2.6, variance 9.2 / 4 = 2.3, so the half
    width is t(0.975, 4) · √(2.3 / 5), t(0.975, 4) = 2.776445105 (tables)."""
    values = np.array([[2.0, 3.5, 0.5, 4.5, 2.5]])
    half = 2.7764451051977987 * math.sqrt(2.3 / 5)
    assert t_interval(values) == pytest.approx((2.6, 2.6 - half, 2.6 + half))
    assert t_interval(values)[1:] == pytest.approx(
        stats.t.interval(0.95, 4, loc=2.6, scale=stats.sem(values[0])))
    assert (round(2.6 - half, 2), round(2.6 + half, 2)) == (0.72, 4.48)


def test_t_interval_of_repetitions_is_over_their_means_and_agrees_with_the_test():
    """Repetition means 0.5, 2.5, 1.0: the t interval over them, whatever the seeds; it
    excludes 0 exactly when the t-test's p < 0.05 (at any level: p = 1 − level on a bound)."""
    values = np.array([[1.0, 0.0], [3.0, 2.0], [1.5, 0.5]])
    np.testing.assert_array_equal(units(values), [0.5, 2.5, 1.0])
    mean, low, high = t_interval(values)
    assert (low, high) == pytest.approx(stats.t.interval(
        0.95, 2, loc=4 / 3, scale=stats.sem([0.5, 2.5, 1.0])))
    p = paired_test(values)
    assert t_interval(values, level=1 - p)[1] == pytest.approx(0.0, abs=1e-9)
    assert (low > 0) == (p < 0.05)


def test_t_interval_needs_two_units():
    mean, low, high = t_interval(np.array([[1.5], [1.5]]))
    assert (mean, low, high) == (1.5, 1.5, 1.5)  # two equal units: no spread
    mean, low, high = t_interval(np.array([[2.0]]))
    assert mean == 2.0 and math.isnan(low) and math.isnan(high)


def test_the_coverage_the_card_quotes_is_the_benchmarks():
    """T_COVERAGE is docs/benchmarks/interval_coverage.json's t interval, lowest and highest
    over its scenarios: given the draws, and over them."""
    document = json.loads((PROJECT / "docs" / "benchmarks" / "interval_coverage.json").read_text())
    found: dict[tuple[int, int], list[tuple[float, float]]] = {}
    for row in document["rows"]:
        if row["interval"].startswith("t over the units"):
            found.setdefault((row["repeats"], row["seeds"]), []).append(
                (row["coverage_given_draws"], row["coverage"]))
    assert set(found) == set(T_COVERAGE)
    for size, pairs in found.items():
        given, over = zip(*pairs)
        assert T_COVERAGE[size].given_draws == (min(given), max(given))
        assert T_COVERAGE[size].over_draws == (min(over), max(over))


def test_equivalence_test_by_hand():
    """Repetition means 0.1, 0.2, 0.3, 0.0, -0.1: mean 0.1, standard error sqrt(0.025 / 5);
    against a margin of 0.5 the upper one-sided test is the weaker, t = (0.1 - 0.5) / SE."""
    differences = np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3], [0.0, 0.0], [-0.1, -0.1]])
    se = math.sqrt(0.025 / 5)
    expected = stats.t.cdf((0.1 - 0.5) / se, df=4)
    assert equivalence_test(differences, 0.5) == pytest.approx(expected, rel=1e-9)
    assert expected < 0.01


@pytest.mark.parametrize("margin", [0.2, 0.3, 0.45, 0.6])
def test_equivalence_is_the_90_percent_interval_inside_the_margin(margin):
    differences = np.array([[0.1], [0.2], [0.3], [0.0], [-0.1]]).repeat(3, axis=1)
    _, low, high = t_interval(differences, level=0.90)
    inside = -margin < low and high < margin
    assert (equivalence_test(differences, margin) < 0.05) == inside
    assert math.isnan(equivalence_test(np.array([[0.1]]), margin))  # one unit: no test
