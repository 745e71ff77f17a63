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

from lgals.claim import note
from lgals.report.analysis import build, compare, mode_stats
from lgals.report.collect import DIAGNOSIS_KEYS, Diagnosis, ModeRuns
from lgals.report.render import csv_text, markdown


def mode_runs(mode: str, accs_pct: dict, seconds: float = 0.5,
              n_stacked: int | None = None) -> ModeRuns:
    """A mode's runs with final accuracies (given in %) per seed (repetition 0) or per
    (repetition, seed), and a flat epoch time."""
    final = {key if isinstance(key, tuple) else (0, key): acc / 100
             for key, acc in accs_pct.items()}
    curves = {"epoch_seconds": np.full((len(final), 3), seconds)}
    repeats = sorted({r for r, _ in final})
    return ModeRuns(mode, [f"run-{mode}-{r}" for r in repeats],
                    n_stacked or len(final) // len(repeats), dict(sorted(final.items())), curves)


# --- summary statistics ---------------------------------------------------------------------

ACCURACY = note().accuracy


def test_mode_stats_by_hand():
    mean, std, (low, high) = mode_stats(np.array([[50.0, 52.0, 54.0, 56.0]]))
    assert mean == 53.0
    assert std == pytest.approx(math.sqrt(20 / 3))  # squared deviations 9+1+1+9 over n-1
    half = 3.182446305284263 * math.sqrt(20 / 3) / 2  # t(0.975, 3) * s / sqrt(4)
    assert (low, high) == pytest.approx((53 - half, 53 + half))


def test_mode_stats_of_one_value_has_no_spread():
    mean, std, (low, high) = mode_stats(np.array([[51.5]]))
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
    assert "Welch's t-test p" in c.verdict(note())


@pytest.mark.parametrize("a, b, expected", [
    (A, B, "significant at α = 0.05: LGALS is better"),
    (B, A, "significant at α = 0.05: LGALS is worse"),
    ({0: 55.0, 1: 53.0, 2: 56.0}, {0: 54.0, 1: 55.0, 2: 54.5}, "not significant at α = 0.05"),
    ({0: 55.0}, {0: 54.0}, "not testable at n = 1 vs 1"),
    ({0: 55.0, 1: 56.0}, {0: 54.0}, "not testable at n = 2 vs 1"),
])
def test_every_verdict_branch(a, b, expected):
    verdict = compare(mode_runs("lgals", a), mode_runs("baseline", b)).verdict(note())
    assert expected in verdict
    assert verdict.startswith("LGALS − Baseline = ")
    claimed = ACCURACY["lgals"][0] - ACCURACY["baseline"][0]
    assert verdict.endswith(f"(the claim: {claimed:+.2f} pp)")


def test_two_seeds_paired_is_testable():
    c = compare(mode_runs("lgals", {0: 55.0, 1: 57.0}), mode_runs("baseline", {0: 54.0, 1: 55.5}))
    assert c.paired_p == pytest.approx(stats.ttest_rel([0.55, 0.57], [0.54, 0.555]).pvalue)
    assert "paired t-test" in c.verdict(note()) and "not testable" not in c.verdict(note())


# --- tables ------------------------------------------------------------------------------------

@pytest.fixture
def report():
    return build({"baseline": mode_runs("baseline", B, seconds=0.5),
                  "fixed_ls": mode_runs("fixed_ls", B | {0: 60.0}, seconds=0.5),
                  "lgals": mode_runs("lgals", A, seconds=0.55)})


def test_rows_hold_the_statistics_and_the_cost(report):
    rows = {row["mode"]: row for row in report.rows()}
    lgals = rows["LGALS"]
    mean, std, (low, high) = mode_stats(np.array([list(A.values())]))
    assert (lgals["final_test_acc_mean_pct"], lgals["final_test_acc_std_pct"]) == pytest.approx(
        (mean, std))
    assert (lgals["ci95_low_pct"], lgals["ci95_high_pct"]) == pytest.approx((low, high))
    assert lgals["diff_vs_baseline_pp"] == report.comparison("lgals", "baseline").diff_pp
    assert lgals["seconds_per_epoch_per_seed"] == pytest.approx(0.55 / 5)
    assert lgals["cost_vs_baseline"] == pytest.approx(1.1)
    assert rows["Baseline"]["diff_vs_baseline_pp"] == ""  # no comparison with itself
    assert (lgals["claim_mean_pct"], lgals["claim_std_pct"]) == ACCURACY["lgals"]


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
    mean, std, (low, high) = mode_stats(np.array([list(A.values())]))
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


# --- the controls and peers, and noise detection ---------------------------------------------

SHUFFLED = {0: 54.0, 1: 56.5, 2: 55.5, 3: 56.5, 4: 53.5}  # A - 1.0 pp on average
GCE = {0: 58.0, 1: 58.5, 2: 57.0, 3: 59.0, 4: 57.5}


def with_detection(runs: ModeRuns, peaks: dict[str, tuple[float, int]]) -> ModeRuns:
    """Detection curves over 4 epochs that reach ``peak`` at ``epoch`` for every seed."""
    for name, (peak, epoch) in peaks.items():
        curve = np.full(4, 0.5)
        curve[epoch - 1] = peak
        runs.curves[name] = np.tile(curve, (len(runs.final_acc), 1))
    return runs


@pytest.fixture
def extended():
    peaks = {"noise_auroc": (0.52, 1), "noise_auroc_loss": (0.9, 2),
             "noise_auroc_confidence": (0.9, 2), "noise_auroc_el2n": (0.88, 3),
             "noise_auroc_aum": (0.95, 4)}
    modes = {"baseline": with_detection(mode_runs("baseline", B), peaks),
             "fixed_ls": mode_runs("fixed_ls", {s: a + 1 for s, a in B.items()}),
             "lgals": with_detection(mode_runs("lgals", A), {"noise_auroc": (0.6, 2)}),
             "shuffled_lgals": mode_runs("shuffled_lgals", SHUFFLED),
             "gce": mode_runs("gce", GCE)}
    return build(modes)


def test_every_other_mode_is_compared_with_each_reference(extended):
    pairs = [(c.a, c.b) for c in extended.comparisons]
    assert pairs[:3] == [("lgals", "baseline"), ("lgals", "fixed_ls"), ("fixed_ls", "baseline")]
    assert pairs[3:] == [(m, r) for m in ("shuffled_lgals", "gce")
                         for r in ("baseline", "fixed_ls", "lgals")]
    c = extended.comparison("shuffled_lgals", "lgals")
    assert c.diff_pp == pytest.approx(-1.0)
    assert c.paired_p == pytest.approx(stats.ttest_rel(
        [SHUFFLED[s] / 100 for s in range(5)], [A[s] / 100 for s in range(5)]).pvalue)


def test_the_report_answers_the_ablation_and_peer_questions_in_words(extended):
    text = markdown(extended)
    assert "## Every mode against Baseline, FixedLS and LGALS" in text
    c = extended.comparison("shuffled_lgals", "lgals")
    assert (f"- Shuffling LGALS's epsilons within each batch (the same amount of smoothing, no "
            f"per-sample information) changes final test accuracy by -1.00 pp against LGALS "
            f"(p = {c.paired_p:.3g}, Holm-adjusted over the report's 9 comparisons "
            f"p = {c.holm_p:.3g}): ") in text
    gce = extended.comparison("gce", "lgals")
    assert f"changes final test accuracy by {gce.diff_pp:+.2f} pp against LGALS" in text
    # the paper's table still has exactly the paper's three modes
    paper_table = text.split("## Verdicts")[0]
    assert "ShuffledLGALS" not in paper_table and "| LGALS |" in paper_table


def test_the_report_says_which_score_detects_best(extended):
    text = markdown(extended)
    assert "| −AUM (area under the margin) | 0.950 (4) | — | — | 0.950 (Baseline, epoch 4) |" in (
        text)
    assert "| 1 − s_i (LGALS's alignment) | 0.520 (1) | — | 0.600 (2) | 0.600 (LGALS, " \
           "epoch 2) |" in text
    assert ("On Baseline's training, −AUM (area under the margin) detects best (AUROC 0.950 at "
            "epoch 4); 1 − s_i (LGALS's alignment) ranks 5 of 5 (AUROC 0.520 at epoch 1).") in text


def test_csv_has_every_mode_with_its_family_and_the_lgals_comparison(extended):
    rows = list(csv.DictReader(io.StringIO(csv_text(extended))))
    assert [r["mode"] for r in rows] == ["Baseline", "FixedLS", "LGALS", "ShuffledLGALS", "GCE"]
    assert [r["family"] for r in rows] == ["paper", "paper", "paper", "ablation", "peer"]
    assert float(rows[3]["diff_vs_lgals_pp"]) == pytest.approx(-1.0)
    assert rows[3]["claim_mean_pct"] == ""


def test_the_report_quotes_the_note_beside_the_measured_alignment_correlation(extended):
    values = {key: {1: 0.1, 20: 0.2} for key in DIAGNOSIS_KEYS}
    values["all.pearson"] = {1: 0.774, 20: 0.823}
    values["layer1.pearson"][20] = 0.315
    values["layer3.pearson"][20] = 0.936
    values["weight.layer3"][20] = 0.284
    extended.diagnosis = Diagnosis("run-d", "lgals", values)
    text = markdown(extended)
    assert "the note says 0.75" in text
    assert "| 20 | 0.823 | 0.315 | 0.200 | 0.936 | 0.284 | 0.200 | 0.200 |" in text
    assert ("At epoch 20 layer3 carries 0.28 of the all-layer cosine (its weight w_3 averaged "
            "over samples) and correlates r = 0.936; the first layer, whose gradient is "
            "furthest from g_i, correlates r = 0.315.") in text


def test_verdicts_are_holm_adjusted_over_every_comparison_of_the_report(extended):
    """3 paper comparisons + 2 other modes x 3 references: 9 p-values, one family."""
    ps = [c.p for c in extended.comparisons]
    order = np.argsort(ps)
    for rank, index in enumerate(order):
        c = extended.comparisons[index]
        expected = max(min(1.0, (9 - r) * ps[order[r]]) for r in range(rank + 1))
        assert c.family == 9 and c.holm_p == pytest.approx(expected)
        assert ("significant at α = 0.05:" in c.significance()) == (c.holm_p < 0.05)
