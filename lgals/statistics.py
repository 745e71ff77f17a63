"""Statistics for comparing modes over repeated studies (Bouthillier et al. 2021).

Results come as ``[R, S]`` arrays: R repetitions of the whole protocol (each with its own
noise draw, split and tuning), S seeds (initialisation and batch order) within each. Modes
share each repetition's noise draw and seeds, so a comparison works on paired differences.
Pure functions on arrays: no MLflow, no training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

ALPHA = 0.05
POWER = 0.80


def hierarchical_bootstrap(values: np.ndarray, resamples: int = 10_000, seed: int = 0,
                           level: float = 1 - ALPHA) -> tuple[float, float, float]:
    """The mean of ``values [R, S]`` and its percentile bootstrap interval, resampling the
    repetitions, then the seeds within each resampled repetition."""
    values = np.asarray(values, dtype=float)
    n_repeats, n_seeds = values.shape
    rng = np.random.default_rng(seed)
    repeats = rng.integers(0, n_repeats, size=(resamples, n_repeats))
    seeds = rng.integers(0, n_seeds, size=(resamples, n_repeats, n_seeds))
    means = values[repeats[..., None], seeds].mean(axis=(1, 2))
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return float(values.mean()), float(low), float(high)


def units(values: np.ndarray) -> np.ndarray:
    """The independent units of ``values [R, S]``: the seeds of one repetition, else the
    repetition means (a repetition's seeds share its noise draw, split and tuning)."""
    values = np.asarray(values, dtype=float)
    return values[0] if len(values) == 1 else values.mean(axis=1)


def t_interval(values: np.ndarray, level: float = 1 - ALPHA) -> tuple[float, float, float]:
    """The mean of ``values [R, S]`` and its Student t interval over the units (:func:`units`):
    the interval of :func:`paired_test`, so it excludes 0 exactly when p < 1 - ``level``.
    A percentile bootstrap undercovers at the 5 units the note has (83.5% at 1 x 5, against
    94.8% for this; benchmarks/interval_coverage.py). NaN bounds below two units."""
    x = units(values)
    mean = float(x.mean())
    if len(x) < 2:
        return mean, math.nan, math.nan
    half = float(stats.t.ppf((1 + level) / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return mean, mean - half, mean + half


@dataclass(frozen=True)
class Coverage:
    """How often :func:`t_interval` held the true mean in benchmarks/interval_coverage.py's
    simulated studies of one size (docs/benchmarks/interval_coverage.json), lowest and
    highest over its scenarios: the mean given the study's own repetitions (their noise
    draws, splits and tunings; all one repetition can speak for), and the mean over draws."""

    given_draws: tuple[float, float]
    over_draws: tuple[float, float]


# (repetitions, seeds) -> the t interval's coverage there, as the benchmark measured it.
T_COVERAGE = {(1, 5): Coverage((0.9476, 0.9476), (0.7614, 0.9476)),
              (1, 10): Coverage((0.9514, 0.9514), (0.5847, 0.9514)),
              (5, 10): Coverage((0.9466, 0.9979), (0.9466, 0.9543))}


def probability_of_improvement(a: np.ndarray, b: np.ndarray) -> float:
    """P(A > B) over paired runs, a tie counting half."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.mean(a > b) + 0.5 * np.mean(a == b))


@dataclass(frozen=True)
class Variance:
    """One-way random-effects decomposition of ``[R, S]`` results: the variance between
    repetitions (noise draw, split, tuning) and between seeds within a repetition."""

    repeat: float
    seed: float

    @property
    def repeat_share(self) -> float:
        total = self.repeat + self.seed
        return self.repeat / total if total > 0 else math.nan


def variance_components(values: np.ndarray) -> Variance:
    """Method-of-moments estimates: the seeds' variance is the mean within-repetition
    variance; the repetitions' is what the spread of the repetition means adds beyond it
    (``(MS_between - MS_within) / S``, floored at 0)."""
    values = np.asarray(values, dtype=float)
    n_repeats, n_seeds = values.shape
    within = float(values.var(axis=1, ddof=1).mean()) if n_seeds > 1 else math.nan
    if n_repeats < 2:
        return Variance(math.nan, within)
    between = n_seeds * float(values.mean(axis=1).var(ddof=1))
    return Variance(max(0.0, (between - (within if n_seeds > 1 else 0.0)) / n_seeds), within)


def minimum_detectable_difference(variance: Variance, repeats: int = 1, seeds: int = 5,
                                  alpha: float = ALPHA, power: float = POWER) -> float:
    """The smallest mean paired difference a protocol of ``repeats`` x ``seeds`` detects
    with ``power`` at two-sided level ``alpha``, given the variance components of the paired
    differences (normal approximation): ``(z_{1-alpha/2} + z_power) * SE``, with
    ``SE^2 = var_repeat / R + var_seed / (R S)``."""
    se = math.sqrt(variance.repeat / repeats + variance.seed / (repeats * seeds))
    return (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power)) * se


def paired_test(differences: np.ndarray) -> float:
    """Two-sided p-value that the mean of the paired differences ``[R, S]`` is 0. With one
    repetition the seeds are the units (the paired t-test); with more, the repetition is the
    independent unit (its noise draw, split and tuning are shared by its seeds), so the test
    is a one-sample t-test on the R repetition means. NaN when there are too few units."""
    x = units(differences)
    if len(x) < 2:
        return math.nan
    return float(stats.ttest_1samp(x, 0.0).pvalue)


def equivalence_test(differences: np.ndarray, margin: float) -> float:
    """TOST (Schuirmann's two one-sided tests): the p-value that the mean of the paired
    ``differences [R, S]`` lies outside ``±margin``, over the units of :func:`units`. Below
    ``ALPHA``, the two are equivalent within the margin: the ``1 - 2 ALPHA`` t interval lies
    inside it. NaN when there are too few units."""
    x = units(differences)
    if len(x) < 2:
        return math.nan
    lower = stats.ttest_1samp(x, -margin, alternative="greater").pvalue
    upper = stats.ttest_1samp(x, margin, alternative="less").pvalue
    return float(max(lower, upper))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error rate), in the input's order."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.minimum(1.0, np.maximum.accumulate(scaled))
    result = np.empty_like(adjusted)
    result[order] = adjusted
    return result.tolist()
