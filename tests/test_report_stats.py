"""The report's statistics on fixed numbers: hand-computed values, scipy, every verdict branch.

No MLflow here: ``ModeRuns`` are built by hand, as ``collect`` would build them from runs.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest
from scipy import stats

from lgals.report import CLAIM, ModeRuns, build, compare, csv_text, markdown, summary_stats


def mode_runs(mode: str, accs_pct: dict[int, float], seconds: float = 0.5,
              n_stacked: int | None = None) -> ModeRuns:
    """A mode's runs with final accuracies (given in %) per seed and a flat epoch time."""
    seeds = sorted(accs_pct)
    final = {seed: accs_pct[seed] / 100 for seed in seeds}
    curves = {"epoch_seconds": np.full((len(seeds), 3), seconds)}
    return ModeRuns(mode, f"run-{mode}", n_stacked or len(seeds), final, curves)


# --- summary statistics ---------------------------------------------------------------------

def test_summary_stats_by_hand():
    mean, std, (low, high) = summary_stats(np.array([50.0, 52.0, 54.0, 56.0]))
    assert mean == 53.0
    assert std == pytest.approx(math.sqrt(20 / 3))  # squared deviations 9+1+1+9 over n-1
    half = 3.182446305284263 * math.sqrt(20 / 3) / 2  # t(0.975, 3) * s / sqrt(4)
    assert (low, high) == pytest.approx((53 - half, 53 + half))


def test_summary_stats_of_one_value_has_no_spread():
    mean, std, (low, high) = summary_stats(np.array([51.5]))
    assert mean == 51.5 and math.isnan(std) and math.isnan(low) and math.isnan(high)


# --- tests between modes ----------------------------------------------------------------------

A = {0: 55.0, 1: 57.5, 2: 56.0, 3: 58.0, 4: 54.5}
B = {0: 53.0, 1: 54.0, 2: 55.5, 3: 53.5, 4: 52.0}


def test_compare_matches_scipy_welch_and_paired():
    c = compare(mode_runs("lgals", A), mode_runs("baseline", B))
    a, b = np.array(list(A.values())), np.array(list(B.values()))
    assert c.diff_pp == pytest.approx(a.mean() - b.mean())
    assert c.welch_p == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue)
    assert c.paired_p == pytest.approx(stats.ttest_rel(a / 100, b / 100).pvalue)
    assert (c.n_a, c.n_b) == (5, 5)


def test_no_paired_test_when_the_seeds_differ():
    shifted = {seed + 10: acc for seed, acc in B.items()}
    c = compare(mode_runs("lgals", A), mode_runs("baseline", shifted))
    assert c.paired_p is None
    assert "Welch's t-test p" in c.verdict()


@pytest.mark.parametrize("a, b, expected", [
    (A, B, "significant at α = 0.05: LGALS is better"),
    (B, A, "significant at α = 0.05: LGALS is worse"),
    ({0: 55.0, 1: 53.0, 2: 56.0}, {0: 54.0, 1: 55.0, 2: 54.5}, "not significant at α = 0.05"),
    ({0: 55.0}, {0: 54.0}, "not testable at n = 1 vs 1"),
    ({0: 55.0, 1: 56.0}, {0: 54.0}, "not testable at n = 2 vs 1"),
])
def test_every_verdict_branch(a, b, expected):
    verdict = compare(mode_runs("lgals", a), mode_runs("baseline", b)).verdict()
    assert expected in verdict
    assert verdict.startswith("LGALS − Baseline = ")
    assert verdict.endswith(f"(the claim: {CLAIM['lgals'][0] - CLAIM['baseline'][0]:+.2f} pp)")


def test_two_seeds_paired_is_testable():
    c = compare(mode_runs("lgals", {0: 55.0, 1: 57.0}), mode_runs("baseline", {0: 54.0, 1: 55.5}))
    assert c.paired_p == pytest.approx(stats.ttest_rel([0.55, 0.57], [0.54, 0.555]).pvalue)
    assert "paired t-test" in c.verdict() and "not testable" not in c.verdict()


# --- tables ------------------------------------------------------------------------------------

@pytest.fixture
def report():
    return build({"baseline": mode_runs("baseline", B, seconds=0.5),
                  "fixed_ls": mode_runs("fixed_ls", B | {0: 60.0}, seconds=0.5),
                  "lgals": mode_runs("lgals", A, seconds=0.55)})


def test_rows_hold_the_statistics_and_the_cost(report):
    rows = {row["mode"]: row for row in report.rows()}
    lgals = rows["LGALS"]
    mean, std, (low, high) = summary_stats(np.array(list(A.values())))
    assert (lgals["final_test_acc_mean_pct"], lgals["final_test_acc_std_pct"]) == pytest.approx(
        (mean, std))
    assert (lgals["ci95_low_pct"], lgals["ci95_high_pct"]) == pytest.approx((low, high))
    assert lgals["diff_vs_baseline_pp"] == report.comparison("lgals", "baseline").diff_pp
    assert lgals["seconds_per_epoch_per_seed"] == pytest.approx(0.55 / 5)
    assert lgals["cost_vs_baseline"] == pytest.approx(1.1)
    assert rows["Baseline"]["diff_vs_baseline_pp"] == ""  # no comparison with itself
    assert (lgals["claim_mean_pct"], lgals["claim_std_pct"]) == CLAIM["lgals"]


def test_csv_round_trips_the_rows(report):
    parsed = list(csv.DictReader(io.StringIO(csv_text(report))))
    assert [row["mode"] for row in parsed] == ["Baseline", "FixedLS", "LGALS"]
    for written, row in zip(parsed, report.rows()):
        assert float(written["final_test_acc_mean_pct"]) == pytest.approx(
            row["final_test_acc_mean_pct"])
        assert written["diff_vs_baseline_pp"] == str(row["diff_vs_baseline_pp"])


def test_markdown_rows_and_verdicts(report):
    text = markdown(report)
    c = report.comparison("lgals", "baseline")
    line = next(line for line in text.splitlines() if line.startswith("| LGALS |"))
    mean, std, (low, high) = summary_stats(np.array(list(A.values())))
    assert line.startswith(f"| LGALS | 5 | {mean:.2f} ± {std:.2f} | [{low:.2f}, {high:.2f}] | "
                           f"{c.diff_pp:+.2f}, p = {c.paired_p:.3g} |")
    assert line.endswith("| 57.15 ± 1.17 | 0.1100 | 1.10x |")
    baseline = next(line for line in text.splitlines() if line.startswith("| Baseline |"))
    assert "| — | — |" in baseline  # no comparison with itself nor with FixedLS
    assert text.count("\n- ") == 3  # one verdict per comparison


def test_no_baseline_present():
    report = build({"fixed_ls": mode_runs("fixed_ls", B), "lgals": mode_runs("lgals", A)})
    assert [(c.a, c.b) for c in report.comparisons] == [("lgals", "fixed_ls")]
    rows = {row["mode"]: row for row in report.rows()}
    assert rows["LGALS"]["diff_vs_baseline_pp"] == "" and rows["LGALS"]["cost_vs_baseline"] == ""
    assert "— | —" in next(line for line in markdown(report).splitlines()
                           if line.startswith("| LGALS |"))
