"""Coverage of the report's 95% intervals at the sizes they are used with, by simulation.

The report printed a hierarchical percentile bootstrap interval (repetitions, then seeds) for
paired differences, AUROCs and epsilon gaps, beside a t-test on the independent units (the
seeds of one repetition, else the repetition means). At 5 units a percentile bootstrap is
known to undercover; this measures by how much, next to the t interval over the units and a
BCa bootstrap over the units, for the note's protocol (1 x 5), one repetition of 10 seeds and
the robust protocol (5 x 10). Since issue 24 the card prints the t interval
(``lgals.statistics.t_interval``) and quotes its coverage here (``T_COVERAGE``, which a test
holds to ``docs/benchmarks/interval_coverage.json``); the sweep's table still prints the
bootstrap, whose names below keep the document's.

Paired differences are drawn as ``mu + a_r + e_rs``, ``a_r ~ N(0, var_repeat)`` and
``e_rs ~ N(0, var_seed)``, with the variance components the robust protocol measured for the
note's comparisons (``docs/robust/results.md``) and one with no repetition effect. Every
draw comes from ``--seed``.
"""

from __future__ import annotations

import math

import numpy as np
from common import emit_json, parser
from scipy import stats

from lgals.statistics import ALPHA, hierarchical_bootstrap

DESIGNS = ((1, 5), (1, 10), (5, 10))  # (repetitions, seeds)
# (name, var_repeat, var_seed) in pp^2: the robust protocol's paired differences
SCENARIOS = (("LGALS - FixedLS", 2.077, 3.478), ("LGALS - Baseline", 0.576, 5.062),
             ("no repetition effect", 0.0, 4.0))
TRUE_MEAN = 1.82  # the note's claimed LGALS - FixedLS gain (any value would do)


def units(values: np.ndarray) -> np.ndarray:
    """The independent units of ``[R, S]``: the seeds of one repetition, else the
    repetition means (what ``lgals.statistics.paired_test`` tests)."""
    return values[0] if len(values) == 1 else values.mean(axis=1)


def t_interval(values: np.ndarray) -> tuple[float, float]:
    x = units(values)
    half = stats.t.ppf(1 - ALPHA / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean() - half, x.mean() + half


def bca_interval(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    found = stats.bootstrap((units(values),), np.mean, n_resamples=resamples,
                            confidence_level=1 - ALPHA, method="BCa", random_state=seed)
    return found.confidence_interval.low, found.confidence_interval.high


def percentile_interval(values: np.ndarray, resamples: int, seed: int) -> tuple[float, float]:
    _, low, high = hierarchical_bootstrap(values, resamples=resamples, seed=seed)
    return low, high


def coverage(repeats: int, seeds: int, var_repeat: float, var_seed: float, simulations: int,
             resamples: int, seed: int) -> dict[str, dict[str, float]]:
    """Each interval's share of simulated studies whose interval holds the mean over noise
    draws, splits and tunings (``population``), and the mean given the repetitions the study
    drew (``given_draws``, ``mu + mean(a_r)``: all that seeds within them can speak for), with
    the Monte Carlo standard error at 95% and the interval's mean width."""
    rng = np.random.default_rng(seed)
    intervals = {"hierarchical percentile bootstrap (the report's)": percentile_interval,
                 "t over the units (the report's test)": lambda v, r, s: t_interval(v),
                 "BCa bootstrap over the units": bca_interval}
    hits = {name: 0 for name in intervals}
    hits_given = {name: 0 for name in intervals}
    widths = {name: 0.0 for name in intervals}
    for simulation in range(simulations):
        effects = rng.normal(0.0, math.sqrt(var_repeat), (repeats, 1))
        values = TRUE_MEAN + effects + rng.normal(0.0, math.sqrt(var_seed), (repeats, seeds))
        given = TRUE_MEAN + effects.mean()
        for name, interval in intervals.items():
            low, high = interval(values, resamples, seed + simulation)
            hits[name] += low <= TRUE_MEAN <= high
            hits_given[name] += low <= given <= high
            widths[name] += high - low
    return {name: {"coverage": hits[name] / simulations,
                   "coverage_given_draws": hits_given[name] / simulations,
                   "mc_se": math.sqrt(0.95 * 0.05 / simulations),
                   "mean_width_pp": widths[name] / simulations} for name in intervals}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--simulations", type=int, default=2000, help="studies per cell")
    cli.add_argument("--resamples", type=int, default=2000,
                     help="bootstrap resamples per interval (the report uses 10000)")
    cli.add_argument("--seed", type=int, default=0)
    args = cli.parse_args()
    rows = []
    for repeats, seeds in DESIGNS:
        for name, var_repeat, var_seed in SCENARIOS:
            found = coverage(repeats, seeds, var_repeat, var_seed, args.simulations,
                             args.resamples, args.seed)
            for interval, figures in found.items():
                rows.append({"repeats": repeats, "seeds": seeds, "scenario": name,
                             "var_repeat": var_repeat, "var_seed": var_seed,
                             "interval": interval, **figures})
    if args.json:
        emit_json({"simulations": args.simulations, "resamples": args.resamples,
                   "seed": args.seed, "nominal": 1 - ALPHA, "rows": rows})
        return
    print(f"Coverage of 95% intervals, {args.simulations} simulated studies per cell "
          f"(Monte Carlo SE {rows[0]['mc_se']:.3f} at 0.95)")
    print("| R x S | scenario (var_repeat, var_seed pp^2) | interval | coverage: population "
          "| coverage: given the draws | mean width pp |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['repeats']} x {row['seeds']} | {row['scenario']} ({row['var_repeat']:g}, "
              f"{row['var_seed']:g}) | {row['interval']} | {row['coverage']:.3f} | "
              f"{row['coverage_given_draws']:.3f} | {row['mean_width_pp']:.2f} |")


if __name__ == "__main__":
    main()
