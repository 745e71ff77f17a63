"""Repeated studies in the report: collecting repetitions from a real MLflow store, paired
comparisons over repetitions x seeds, the claim card's verdicts, the MDD line, the sweep.

MLflow runs are made by hand with ``MlflowClient`` in a sqlite store in a tmp dir, shaped as
``lgals evaluate`` makes them (an evaluate run per mode, one child run per seed).

The process-level and seconds-long tests: ``tests/system/test_report_repeats.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from support.reports import EPOCHS, NOISY, evaluate

from lgals.claim import note
from lgals.data import NoiseRecipe
from lgals.report.analysis import (
    INCONCLUSIVE,
    NOT_SUPPORTED,
    SUPPORTED,
    Report,
    build,
    claim_alignment,
    claim_cost,
    claim_mechanism,
    claim_ordering,
    compare,
)
from lgals.report.collect import Diagnosis, collect, collect_diagnosis
from lgals.report.publish import report_from_mlflow
from lgals.report.render import markdown
from lgals.report.sweep import sweep_markdown, sweep_rows
from lgals.statistics import (
    ALPHA,
    Variance,
    hierarchical_bootstrap,
    holm,
    minimum_detectable_difference,
    t_interval,
)
from unit.test_report_stats import mode_runs

NOTE = note()

# --- a real store with hand-made evaluate runs ---------------------------------------------


def test_a_missing_repeat_tag_is_repetition_0_and_repetitions_stack(store):
    first = evaluate(store, "baseline", {0: 0.50, 1: 0.52}, repeat=None)
    second = evaluate(store, "baseline", {0: 0.60, 1: 0.62}, repeat=1)
    runs = collect(store.experiment_id)["baseline"]
    assert runs.run_ids == [first, second]
    assert runs.final_acc == {(0, 0): 0.50, (0, 1): 0.52, (1, 0): 0.60, (1, 1): 0.62}
    np.testing.assert_array_equal(runs.matrix(), [[0.50, 0.52], [0.60, 0.62]])
    np.testing.assert_array_equal(runs.curves["test_acc"][:, 0], [0.50, 0.52, 0.60, 0.62])
    assert runs.n_stacked == 2  # seeds per stacked run, not runs in all
    assert runs.eps_counts.sum() == 4 * EPOCHS * 2 * 3  # four seed runs' histograms summed


def test_the_latest_run_per_mode_and_repetition_and_repeats_limits_them(store):
    evaluate(store, "lgals", {0: 0.50, 1: 0.50}, repeat=0)
    newer = evaluate(store, "lgals", {0: 0.55, 1: 0.56}, repeat=0)
    later = evaluate(store, "lgals", {0: 0.70, 1: 0.71}, repeat=2)
    assert collect(store.experiment_id)["lgals"].run_ids == [newer, later]
    only = collect(store.experiment_id, repeats=2)["lgals"]  # repetitions 0 and 1: 1 absent
    assert only.run_ids == [newer] and only.final_acc == {(0, 0): 0.55, (0, 1): 0.56}


def test_the_noise_filter_and_settings_never_mix(store):
    older = evaluate(store, "baseline", {0: 0.5, 1: 0.5}, noise=NoiseRecipe(0.2))
    evaluate(store, "lgals", {0: 0.6, 1: 0.6}, noise=NoiseRecipe(0.2))
    pair = evaluate(store, "baseline", {0: 0.4, 1: 0.4}, noise=NoiseRecipe(0.4, "pair"))
    clean = evaluate(store, "fixed_ls", {0: 0.9, 1: 0.9}, noise=NoiseRecipe(0.0))
    assert collect(store.experiment_id, noise=NoiseRecipe(0.2))["baseline"].run_ids == [older]
    # no noise given: the first mode's (Baseline's) latest setting, pair 0.4, and only it
    assert {m: r.run_ids for m, r in collect(store.experiment_id).items()} == {
        "baseline": [pair]}
    # a rate of 0 is the same data for every noise type
    assert {m: r.run_ids for m, r in collect(store.experiment_id,
                                             noise=NoiseRecipe(0.0, "pair")).items()} == {
        "fixed_ls": [clean]}


def test_a_report_never_mixes_datasets(store):
    """mnist1d's runs from before datasets had names, and digits' runs at the same setting:
    a setting is one dataset's; without one, the latest run's dataset (or the one asked)."""
    old = evaluate(store, "baseline", {0: 0.5, 1: 0.5})
    digits = NoiseRecipe(0.2, dataset="digits")
    baseline = evaluate(store, "baseline", {0: 0.8, 1: 0.8}, noise=digits)
    lgals = evaluate(store, "lgals", {0: 0.9, 1: 0.9}, noise=digits)

    def found(**kwargs) -> dict:
        modes = collect(store.experiment_id, **kwargs)
        return {m: (r.dataset, r.run_ids) for m, r in modes.items()}

    assert found(noise=NoiseRecipe(0.2)) == {"baseline": ("mnist1d", [old])}
    assert found(noise=digits) == found() == {"baseline": ("digits", [baseline]),
                                              "lgals": ("digits", [lgals])}
    assert found(dataset="mnist1d") == {"baseline": ("mnist1d", [old])}
    assert found(dataset="mnist1d_hard") == {}
    report = build(collect(store.experiment_id))
    assert markdown(report).startswith("# Claims of the note (made on mnist1d) on digits with "
                                       "20% symmetric label noise")
    assert "53.12" not in markdown(report)  # the note's accuracies are mnist1d's


def test_a_report_never_mixes_precisions(store, tmp_path):
    """fp32 runs (from before precisions had names) and later bf16 runs of the same modes
    at the same setting: one precision per report, the latest's unless one is asked, and one
    line saying what was left out."""
    fp32 = {m: evaluate(store, m, {0: 0.5, 1: 0.5}) for m in ("baseline", "lgals")}
    bf16 = {m: evaluate(store, m, {0: 0.7, 1: 0.7}, precision="bf16")
            for m in ("baseline", "lgals")}

    def found(**kwargs) -> dict:
        modes = collect(store.experiment_id, ["baseline", "lgals"], **kwargs)
        return {m: (r.precision, r.run_ids) for m, r in modes.items()}

    assert found() == found(precision="bf16") == {m: ("bf16", [bf16[m]]) for m in bf16}
    assert found(precision="fp32") == {m: ("fp32", [fp32[m]]) for m in fp32}
    lines: list[str] = []
    report = report_from_mlflow(store.experiment_id, tmp_path / "out",
                                modes=["baseline", "lgals"], echo=lines.append)
    assert report.precision == "bf16"
    assert markdown(report).splitlines()[0].endswith(
        "our measurement (bf16 matrix products, float32 elsewhere)")
    assert ("left out 2 evaluate runs at another precision (2 at fp32): this report is of "
            "the bf16 runs; `lgals report --precision fp32` reports those") in lines
    report = report_from_mlflow(store.experiment_id, tmp_path / "out",
                                modes=["baseline", "lgals"], echo=lines.append,
                                precision="fp32")
    assert report.precision == "fp32" and "matrix products" not in markdown(report)


def test_a_run_logged_as_pair_at_rate_0_is_the_clean_setting(store):
    clean = evaluate(store, "baseline", {0: 0.9, 1: 0.9}, noise=NoiseRecipe(0.0, "pair"))
    evaluate(store, "baseline", {0: 0.5, 1: 0.5}, noise=NoiseRecipe(0.2, "pair"))
    assert collect(store.experiment_id, noise=NoiseRecipe(0.0))["baseline"].run_ids == [clean]
    assert collect(store.experiment_id, noise=NoiseRecipe(0.2)) == {}  # pair 0.2 is not it


def test_seeds_prefer_the_latest_run_that_covers_them_and_use_only_those(store):
    three = evaluate(store, "baseline", {0: 0.50, 1: 0.51, 2: 0.52})
    two = evaluate(store, "baseline", {0: 0.60, 1: 0.61})
    assert collect(store.experiment_id, seeds=3)["baseline"].run_ids == [three]
    assert collect(store.experiment_id, seeds=2)["baseline"].run_ids == [two]
    evaluate(store, "lgals", {0: 0.7, 1: 0.71, 2: 0.72})
    runs = collect(store.experiment_id, seeds=2)["lgals"]
    assert runs.final_acc == {(0, 0): 0.7, (0, 1): 0.71}
    assert runs.curves["test_acc"].shape == (2, EPOCHS)
    assert runs.n_stacked == 3  # the run stacked three seeds, whatever the report uses


def diagnosis(store, r: float, noise: NoiseRecipe | None = NOISY,
              source_run: str | None = None, precision: str | None = None) -> str:
    """A finished diagnose run, all-layer Pearson ``r`` at epochs 1 and 3, of ``noise``'s
    data (None: it names no data, as ``lgals diagnose --run SOURCE_RUN`` logs none), at
    ``precision`` (None: it names none, as before precisions had names: fp32)."""
    tags = {"lgals.stage": "diagnose", **({"lgals.source_run": source_run} if source_run
                                          else {})}
    run_id = store.client.create_run(store.experiment_id, start_time=next(store.clock),
                                     tags=tags).info.run_id
    if noise is not None:
        store.client.log_param(run_id, "noise_type", noise.noise_type)
        store.client.log_param(run_id, "noise_rate", str(noise.noise_rate))
    if precision is not None:
        store.client.log_param(run_id, "precision", precision)
    for step in (1, 3):
        store.client.log_metric(run_id, "all.pearson", r, step=step)
    store.client.set_terminated(run_id, "FINISHED")
    return run_id


def test_the_card_quotes_the_diagnosis_it_is_given_else_the_latest_of_its_data(store):
    evaluate(store, "lgals", {0: 0.5, 1: 0.5})  # at 20% symmetric noise
    runs = collect(store.experiment_id)
    own = diagnosis(store, 0.8)
    latest = diagnosis(store, 0.6)
    diagnosis(store, 0.5, precision="bf16")  # of other training
    diagnosis(store, 0.3, NoiseRecipe(0.4, "pair"))
    pair_run = evaluate(store, "baseline", {0: 0.4}, noise=NoiseRecipe(0.4, "pair"))
    diagnosis(store, 0.2, None, source_run=pair_run)  # a reloaded model of other data
    found = collect_diagnosis(store.experiment_id, runs, own)
    assert (found.run_id, found.values["all.pearson"]) == (own, {1: 0.8, 3: 0.8})
    assert collect_diagnosis(store.experiment_id, runs).run_id == latest
    reloaded = diagnosis(store, 0.7, None, source_run=runs["lgals"].run_ids[0])
    assert collect_diagnosis(store.experiment_id, runs).run_id == reloaded
    pair = collect(store.experiment_id, noise=NoiseRecipe(0.4, "pair"))
    assert collect_diagnosis(store.experiment_id, pair).values["all.pearson"] == {1: 0.2,
                                                                                 3: 0.2}


# --- comparisons over repetitions x seeds ----------------------------------------------------

def test_paired_comparison_of_one_repetition_by_hand():
    """Differences 2, 3.5, 0.5, 4.5, 2.5 pp (A − B): all positive, P(A > B) = 1."""
    a, b = {0: 55.0, 1: 57.5, 2: 56.0, 3: 58.0, 4: 54.5}, {0: 53.0, 1: 54.0, 2: 55.5, 3: 53.5,
                                                           4: 52.0}
    c = compare(mode_runs("lgals", a), mode_runs("baseline", b))
    diffs = np.array([[2.0, 3.5, 0.5, 4.5, 2.5]])
    assert c.diff_pp == pytest.approx(2.6)
    assert c.ci == pytest.approx(t_interval(diffs)[1:])
    assert c.p_improve == 1.0 and (c.n_repeats, c.n_seeds) == (1, 5)
    assert c.paired_p == pytest.approx(stats.ttest_rel(list(a.values()), list(b.values())).pvalue)
    assert "paired t-test p = " in c.verdict(note())


A2 = {(0, 0): 50.0, (0, 1): 52.0, (1, 0): 54.0, (1, 1): 57.0}
B2 = {(0, 0): 49.0, (0, 1): 52.0, (1, 0): 51.0, (1, 1): 55.0}  # A − B: [[1, 0], [3, 2]]


def test_paired_comparison_of_two_repetitions_tests_the_repetition_means():
    """Repetition means of A − B: 0.5 and 2.5: mean 1.5, sd √2, t = 1.5 / (√2 / √2) = 1.5 at
    1 df (Cauchy): p = 1 − 2 atan(1.5) / π. Pairs: 3 wins and 1 tie of 4, P(A > B) = 0.875."""
    c = compare(mode_runs("lgals", A2), mode_runs("baseline", B2))
    assert c.diff_pp == pytest.approx(1.5) and c.n_repeats == 2
    assert c.paired_p == pytest.approx(1 - 2 * math.atan(1.5) / math.pi)
    assert c.p_improve == 0.875
    # t over the repetition means 0.5, 2.5 at 1 df: 1.5 ± t(0.975, 1) · √2 / √2
    assert c.ci == pytest.approx((1.5 - 12.706204736174707, 1.5 + 12.706204736174707))
    assert c.welch_p == pytest.approx(stats.ttest_ind(list(A2.values()), list(B2.values()),
                                                      equal_var=False).pvalue)
    assert f"t-test on the 2 repetition means of the paired differences p = {c.p:.3g}" in (
        c.verdict(note()))


def test_only_the_shared_runs_pair():
    """B ran repetition 0 only: the paired test is the seeds' of repetition 0."""
    b = {key: acc for key, acc in B2.items() if key[0] == 0} | {(0, 2): 50.0}
    a = A2 | {(0, 2): 51.0}
    c = compare(mode_runs("lgals", a), mode_runs("baseline", b))
    assert c.n_repeats == 1 and c.diff_pp == pytest.approx((1 + 0 + 1) / 3)
    assert c.paired_p == pytest.approx(stats.ttest_rel([50, 52, 51], [49, 52, 50]).pvalue)
    assert (c.n_a, c.n_b) == (5, 3)


# --- the claim card ----------------------------------------------------------------------

def paper(baseline: list[float], fixed_ls: list[float], lgals: list[float]) -> Report:
    return build({mode: mode_runs(mode, dict(enumerate(accs)))
                  for mode, accs in (("baseline", baseline), ("fixed_ls", fixed_ls),
                                     ("lgals", lgals))})


BASE = [50.0, 52.0, 51.0, 53.0, 50.5, 52.5, 51.5, 49.5]


def shifted(values: list[float], deltas: list[float]) -> list[float]:
    return [v + d for v, d in zip(values, deltas)]


def test_an_ordering_is_supported_when_significant_upwards():
    fixed = shifted(BASE, [2.0, 2.1, 1.9, 2.2, 2.0, 1.8, 2.1, 2.0])
    report = paper(BASE, fixed, shifted(fixed, [1.8, 1.9, 1.7, 2.0, 1.8, 1.9, 1.6, 1.9]))
    verdicts = [claim_ordering(report, a, b) for a, b in NOTE.orderings]
    assert [v.status for v in verdicts] == [SUPPORTED] * 3
    assert [v.claim for v in verdicts] == ["LGALS beats Baseline", "LGALS beats FixedLS",
                                           "FixedLS beats Baseline"]
    c = report.comparison("lgals", "fixed_ls")
    assert (f"LGALS − FixedLS = {c.diff_pp:+.2f} pp [95% CI {c.ci[0]:+.2f}, {c.ci[1]:+.2f}] "
            f"(claimed +1.82), P(LGALS > FixedLS) = 1.00, Holm p = {c.holm_p:.3g}.") in (
        verdicts[1].evidence)
    assert "Significant after Holm, in the claimed direction." in verdicts[1].evidence
    # LGALS − Baseline = +3.9 ± 0.1: significant, but its CI excludes the claimed +4.03
    assert "The claimed +4.03 pp lies outside its 95% CI." in verdicts[0].evidence
    assert verdicts[1].line(2).endswith("(see “Verdicts”)")


def test_an_ordering_is_not_supported_when_significantly_reversed():
    fixed = shifted(BASE, [-2.0, -2.1, -1.9, -2.2, -2.0, -1.8, -2.1, -2.0])
    report = paper(BASE, fixed, shifted(fixed, [1.8, 1.9, 1.7, 2.0, 1.8, 1.9, 1.6, 1.9]))
    verdict = claim_ordering(report, "fixed_ls", "baseline")
    assert verdict.status == NOT_SUPPORTED
    assert "Significantly reversed after Holm." in verdict.evidence
    assert claim_ordering(report, "lgals", "fixed_ls").status == SUPPORTED


def test_an_ordering_is_not_supported_when_its_ci_excludes_the_claimed_difference():
    """LGALS − FixedLS within ±0.1 pp of 0: not significant, CI far below +1.82."""
    fixed = shifted(BASE, [3.0, -1.0, 4.0, -2.0, 2.0, -1.0, 3.0, 0.0])
    report = paper(BASE, fixed, shifted(fixed, [0.1, -0.1, 0.1, -0.1, 0.0, 0.1, -0.1, 0.0]))
    c = report.comparison("lgals", "fixed_ls")
    assert c.holm_p >= ALPHA and c.ci[1] < NOTE.claimed("lgals", "fixed_ls")
    verdict = claim_ordering(report, "lgals", "fixed_ls")
    assert verdict.status == NOT_SUPPORTED
    assert "Its 95% CI excludes the claimed +1.82 pp." in verdict.evidence
    # FixedLS − Baseline: +1 ± 2.4 pp, its CI contains +2.21
    assert claim_ordering(report, "fixed_ls", "baseline").status == INCONCLUSIVE


def test_an_ordering_is_inconclusive_when_noisy_and_when_a_mode_is_missing():
    fixed = shifted(BASE, [6.0, -2.0, 5.0, -3.0, 4.0, -1.0, 5.0, 4.0])
    report = paper(BASE, fixed, shifted(fixed, [5.0, -3.0, 4.0, -2.0, 3.0, 1.0, -1.0, 7.0]))
    assert claim_ordering(report, "lgals", "fixed_ls").status == INCONCLUSIVE
    report.modes.pop("baseline")
    lonely = build(report.modes)
    verdict = claim_ordering(lonely, "lgals", "baseline")
    assert verdict.status == INCONCLUSIVE
    assert verdict.evidence == "Needs LGALS and Baseline evaluated."


def lgals_with(auroc: np.ndarray, noisy: np.ndarray, clean: np.ndarray) -> Report:
    """A report whose LGALS runs (2 repetitions x 2 seeds) have these [runs, epochs] curves."""
    runs = mode_runs("lgals", {(r, s): 55.0 for r in range(2) for s in range(2)})
    runs.curves |= {"noise_auroc": auroc, "eps_noisy_mean": noisy, "eps_clean_mean": clean}
    return build({"lgals": runs})


def test_claim_2_uses_each_runs_mean_over_epochs():
    """AUROC 0.4 then 0.9 (mean 0.65) in every run; noisy ε 0.2 over clean in every run."""
    auroc = np.tile([0.4, 0.9], (4, 1))
    verdict = claim_mechanism(lgals_with(auroc, np.full((4, 2), 0.7), np.full((4, 2), 0.5)))
    assert verdict.status == SUPPORTED
    assert ("AUROC of 1 − s_i for flipped labels is 0.650 [95% CI 0.650, 0.650] and "
            "ε(noisy) − ε(clean) = +0.2000 [95% CI +0.2000, +0.2000]") in verdict.evidence


def test_claim_2_every_branch():
    runs = 4
    at_chance = np.array([[0.45], [0.55], [0.5], [0.5]])  # repetition means 0.5, 0.5
    mean, low, high = t_interval(np.array([[0.45, 0.55], [0.5, 0.5]]))
    assert (mean, low, high) == (0.5, 0.5, 0.5)  # two equal units: no spread
    assert low <= NOTE.detection.auroc_above
    report = lgals_with(at_chance, np.full((runs, 1), 0.7), np.full((runs, 1), 0.5))
    verdict = claim_mechanism(report)
    assert verdict.status == NOT_SUPPORTED
    assert f"is {mean:.3f} [95% CI {low:.3f}, {high:.3f}]" in verdict.evidence
    below = lgals_with(np.full((runs, 1), 0.3), np.full((runs, 1), 0.7), np.full((runs, 1), 0.5))
    assert claim_mechanism(below).status == NOT_SUPPORTED
    no_gap = lgals_with(np.full((runs, 1), 0.8), np.full((runs, 1), 0.5), np.full((runs, 1), 0.5))
    assert claim_mechanism(no_gap).status == INCONCLUSIVE
    clean_data = lgals_with(np.full((runs, 1), np.nan), np.full((runs, 1), 0.5),
                            np.full((runs, 1), 0.5))
    assert claim_mechanism(clean_data).status == INCONCLUSIVE
    assert claim_mechanism(paper(BASE, BASE, BASE)).status == INCONCLUSIVE  # no curves


def with_diagnosis(r: dict[int, float]) -> Report:
    report = paper(BASE, BASE, BASE)
    report.diagnosis = Diagnosis("run-d", "lgals", {
        "all.pearson": r, "layer1.pearson": {1: 0.1, 20: 0.3}, "layer3.pearson": {1: 0.9}})
    return report


@pytest.mark.parametrize("r, status", [
    ({1: 0.5, 20: 0.82}, SUPPORTED),  # every checkpoint at least 0.5
    ({1: 0.2, 20: 0.49}, NOT_SUPPORTED),  # none reaches 0.5
    ({1: 0.3, 20: 0.7}, INCONCLUSIVE),
])
def test_claim_3_every_branch(r, status):
    verdict = claim_alignment(with_diagnosis(r))
    assert verdict.status == status
    assert (f"all layers {min(r.values()):.3f}–{max(r.values()):.3f} (layer1 0.100–0.300, "
            f"layer3 0.900–0.900)") in verdict.evidence


def test_claim_3_without_a_diagnose_run():
    verdict = claim_alignment(paper(BASE, BASE, BASE))
    assert verdict.status == INCONCLUSIVE and "run `lgals diagnose`" in verdict.evidence


@pytest.mark.parametrize("seconds, status", [(1.05, SUPPORTED), (NOTE.cost.ratio_max, SUPPORTED),
                                             (1.2, NOT_SUPPORTED)])
def test_claim_4_every_branch(seconds, status):
    report = build({"baseline": mode_runs("baseline", {0: 50.0, 1: 51.0}, seconds=1.0),
                    "lgals": mode_runs("lgals", {0: 50.0, 1: 51.0}, seconds=seconds)})
    verdict = claim_cost(report)
    assert verdict.status == status
    assert f"{seconds:.2f}x Baseline's 0.5000 s" in verdict.evidence  # 1 s / 2 stacked seeds


def test_claim_4_without_epoch_times():
    report = paper(BASE, BASE, BASE)
    report.modes["lgals"].curves.clear()
    assert claim_cost(report).status == INCONCLUSIVE


def test_the_card_opens_the_report_and_every_line_points_to_its_evidence():
    lines = markdown(paper(BASE, BASE, BASE)).splitlines()
    assert lines[0] == ("# Claims of the note on mnist1d with 20% symmetric label noise: our "
                        "measurement")
    assert lines[2] == "## The claim card"
    card = lines[4:10]  # three orderings, then detection, alignment and cost
    assert [line[:3] for line in card] == ["1. ", "2. ", "3. ", "4. ", "5. ", "6. "]
    assert all(line.endswith(")") and "(see " in line for line in card)
    assert lines[11].startswith("**Intervals.** ") and lines[13].startswith("**Selection.** ")
    assert lines[15].startswith("## ")  # the card is followed by the tables


# --- what the card rests on: the interval method and the selection rule --------------------

def test_the_card_prints_the_t_interval_and_says_how_it_was_made():
    """LGALS − Baseline per seed 2, 3.5, 0.5, 4.5, 2.5 (tests/unit/test_statistics.py: the t
    interval [+0.72, +4.48] by hand)."""
    a = {0: 55.0, 1: 57.5, 2: 56.0, 3: 58.0, 4: 54.5}
    b = {0: 53.0, 1: 54.0, 2: 55.5, 3: 53.5, 4: 52.0}
    report = build({"baseline": mode_runs("baseline", b), "lgals": mode_runs("lgals", a)})
    lines = markdown(report).splitlines()
    card = next(line for line in lines if line.startswith("1. **LGALS beats Baseline"))
    assert "LGALS − Baseline = +2.60 pp [95% CI +0.72, +4.48] (claimed +4.03)" in card
    verdict = next(line for line in lines if line.startswith("- LGALS − Baseline"))
    assert verdict.startswith("- LGALS − Baseline = +2.60 pp [95% CI +0.72, +4.48], ")
    method = next(line for line in lines if line.startswith("**Intervals.** "))
    assert method == (
        "**Intervals.** Each difference's 95% CI (and those of the AUROC and ε gap) is a "
        "Student t interval over the 5 paired seed differences (one repetition: its seeds are "
        "the units); by simulation at 1 × 5 it covers the mean for this repetition's noise "
        "draw, split and tuning 94.8% of the time, and the mean over draws only 76.1–94.8%: "
        "one repetition speaks for its own draw (benchmarks/interval_coverage.py). It is the "
        "interval of the t-test beside it: the CI excludes 0 exactly when that test's "
        "p < 0.05. Verdicts are stated at α = 0.05 on p Holm-adjusted over the report's 1 "
        "comparisons, so a CI that excludes 0 may still be not significant. P(A > B) is the "
        "share of paired runs in which A beat B, ties counting half: counted, not "
        "bootstrapped.")


@pytest.mark.parametrize("repeats, seeds, said", [
    (5, 10, "over the 5 repetition means of the paired differences (a repetition's 10 seeds "
            "share its noise draw, split and tuning); by simulation at 5 × 10 it covers the "
            "mean over noise draws, splits and tunings 94.7–95.4% of the time"),
    (1, 10, "over the 10 paired seed differences (one repetition: its seeds are the units); "
            "by simulation at 1 × 10 it covers the mean for this repetition's noise draw, "
            "split and tuning 95.1% of the time, and the mean over draws only 58.5–95.1%"),
    (3, 2, "over the 3 repetition means of the paired differences (a repetition's 2 seeds "
           "share its noise draw, split and tuning); exact for normal units, not simulated "
           "at 3 × 2"),
])
def test_the_card_says_the_intervals_coverage_at_the_size_it_has(repeats, seeds, said):
    rng = np.random.default_rng(0)
    grid = [(r, s) for r in range(repeats) for s in range(seeds)]
    base = {key: 50 + rng.normal() for key in grid}
    report = build({"baseline": mode_runs("baseline", base),
                    "lgals": mode_runs("lgals", {k: v + rng.normal() for k, v in base.items()})})
    assert f"is a Student t interval {said}" in markdown(report)


def tuned_evaluation(store, mode: str, accs: dict[int, float], epochs: int, n_trials: int,
                     val_fraction: float = 0.1) -> None:
    """An evaluate run as ``lgals reproduce`` leaves it: its epochs, and the tune run whose
    best params it used, with that tune's trials, validation share and labels."""
    tune = store.client.create_run(store.experiment_id, tags={
        "lgals.stage": "tune", "lgals.mode": mode, "lgals.val_labels": "noisy"}).info.run_id
    store.client.log_param(tune, "n_trials", str(n_trials))
    store.client.log_param(tune, "val_fraction", str(val_fraction))
    store.client.set_terminated(tune, "FINISHED")
    run = evaluate(store, mode, accs)
    for key, value in {"epochs": str(epochs), "params_source": "tune",
                       "tune_run_id": tune}.items():
        store.client.log_param(run, key, value)


def test_the_card_states_the_selection_rule_from_the_runs_it_used(store):
    tuned_evaluation(store, "baseline", {0: 0.5, 1: 0.52, 2: 0.51}, epochs=100, n_trials=20)
    tuned_evaluation(store, "lgals", {0: 0.55, 1: 0.56, 2: 0.54}, epochs=100, n_trials=20)
    tuned_evaluation(store, "early_stop", {0: 0.53, 1: 0.53, 2: 0.55}, epochs=37, n_trials=20)
    evaluate(store, "fixed_ls", {0: 0.52, 1: 0.53, 2: 0.54})  # no tune: hyperparameters unknown
    modes = collect(store.experiment_id, ("baseline", "fixed_ls", "lgals", "early_stop"))
    assert modes["baseline"].selections[0].n_trials == 20
    assert modes["early_stop"].selections[0].epochs == 37
    assert modes["fixed_ls"].selections[0].source == ""
    text = markdown(build(modes))
    selection = next(line for line in text.splitlines() if line.startswith("**Selection.** "))
    assert selection == (
        "**Selection.** Each run's test accuracy after its last epoch (100 epochs; EarlyStop "
        "37, as many as its tuning picked), never its best epoch's. Hyperparameters: Optuna, "
        "20 trials per mode and repetition, each scored by its last epoch's accuracy "
        "(EarlyStop: its best epoch's) on a stratified validation split of 10% of the noisy "
        "training set with its noisy labels (never the test set), then retrained on the full "
        "noisy training set; FixedLS's not recorded. Runs per mode: 1 repetition × 3 seeds; a "
        "repetition has its own "
        "noise draw, validation split and tuning.")


# --- how large a difference the claim's protocol detects -----------------------------------

def test_the_mdd_needs_two_repetitions():
    text = markdown(paper(BASE, BASE, BASE))
    assert ("With one repetition the variance between repetitions (noise draw, split, tuning) "
            "is not estimable") in text
    assert "| MDD (pp) |" not in text


def test_the_mdd_line_by_hand():
    """LGALS − FixedLS per run [[1, 3], [5, 7]]: repetition variance 7, seed variance 2
    (tests/test_statistics.py); one repetition of 5 seeds: SE = √(7 + 2 / 5)."""
    fixed = {(r, s): 50.0 for r in range(2) for s in range(2)}
    lgals = {(0, 0): 51.0, (0, 1): 53.0, (1, 0): 55.0, (1, 1): 57.0}
    report = build({"fixed_ls": mode_runs("fixed_ls", fixed), "lgals": mode_runs("lgals", lgals)})
    mdd = (1.959964 + 0.841621) * math.sqrt(7.4)
    assert report.detectable("lgals", "fixed_ls")[1] == pytest.approx(mdd, rel=1e-5)
    assert minimum_detectable_difference(Variance(7.0, 2.0)) == pytest.approx(mdd, rel=1e-5)
    text = markdown(report)
    assert f"| LGALS − FixedLS | 7.000 | 2.000 | {mdd:.2f} | +1.82 |" in text
    assert (f"The claim's protocol detects an LGALS − FixedLS difference of {mdd:.2f} pp or "
            "more; its claimed gain is 1.82 pp (LGALS 57.15 − FixedLS 55.33), so it could not "
            "reliably have detected it (power below 80%).") in text
    assert (f"the claim's protocol (1 × 5) detects {mdd:.2f} pp or more") in text  # on the card
    assert "## Where the variance comes from" in text


# --- the sweep -----------------------------------------------------------------------------

LOW = {(r, s): 50.0 + s for r in range(3) for s in range(3)}


def setting_report(lgals_gain: float) -> Report:
    """3 repetitions x 3 seeds. FixedLS − Baseline: repetition means −0.1, 0, 0.1 (mean 0);
    LGALS − Baseline: gain + 0.2, gain, gain + 0.2 (mean gain + 0.4 / 3)."""
    fixed = {(r, s): v + 0.1 * (r - 1) + (0.2 if s == 1 else -0.1) for (r, s), v in LOW.items()}
    lgals = {(r, s): v + lgals_gain + 0.2 * (r - 1) ** 2 for (r, s), v in LOW.items()}
    return build({"baseline": mode_runs("baseline", LOW), "fixed_ls": mode_runs("fixed_ls", fixed),
                  "lgals": mode_runs("lgals", lgals)})


def test_sweep_rows_are_holm_adjusted_over_the_whole_sweep_and_count_rate_0_once():
    clean, noisy = setting_report(0.0), setting_report(3.0)
    reports = {NoiseRecipe(0.0): clean, NoiseRecipe(0.2): noisy, NoiseRecipe(0.0, "pair"): clean}
    rows = sweep_rows(reports)
    assert [(r["noise_type"], r["noise_rate"], r["mode"]) for r in rows][:4] == [
        ("symmetric", 0.0, "Baseline"), ("symmetric", 0.0, "FixedLS"),
        ("symmetric", 0.0, "LGALS"), ("symmetric", 0.2, "Baseline")]
    family = [c.p for report in (clean, noisy) for c in report.comparisons]  # 3 + 3, not 9
    adjusted = holm(family)
    lgals = rows[5]
    assert lgals["holm_p_vs_baseline"] == pytest.approx(adjusted[3])
    assert lgals["holm_p_vs_fixed_ls"] == pytest.approx(adjusted[4])
    assert lgals["diff_vs_baseline_pp"] == pytest.approx(3 + 0.4 / 3)
    assert lgals["holm_p_vs_baseline"] < ALPHA and lgals["verdict_vs_baseline"] == "better"
    fixed = rows[4]
    assert fixed["diff_vs_baseline_pp"] == pytest.approx(0.0, abs=1e-12)
    assert fixed["p_vs_baseline"] == pytest.approx(1.0)  # t = 0
    assert fixed["verdict_vs_baseline"] == "n.s." and fixed["verdict_vs_fixed_ls"] == ""
    assert rows[0]["diff_vs_baseline_pp"] == "" and rows[0]["verdict_vs_fixed_ls"] == ""
    assert rows[6:] == [r | {"noise_type": "pair"} for r in rows[:3]]
    mean, low, high = hierarchical_bootstrap(np.array([[50.0, 51.0, 52.0]] * 3))
    assert (rows[0]["final_test_acc_mean_pct"], rows[0]["ci95_low_pct"],
            rows[0]["ci95_high_pct"]) == (mean, low, high)


def test_sweep_verdict_cells():
    rows = sweep_rows({NoiseRecipe(0.2): setting_report(-3.0)})
    line = next(li for li in sweep_markdown(rows).splitlines() if "| LGALS |" in li)
    lgals = rows[2]
    assert lgals["verdict_vs_baseline"] == "worse" and lgals["holm_p_vs_baseline"] < ALPHA
    assert lgals["diff_vs_baseline_pp"] == pytest.approx(-3 + 0.4 / 3)
    assert line.startswith(f"| symmetric | 20% | LGALS | 3 × 3 | "
                           f"{lgals['final_test_acc_mean_pct']:.2f} | ")
    assert line.endswith(f"| -2.87 pp, Holm p = {lgals['holm_p_vs_baseline']:.3g}: worse | "
                         f"{lgals['diff_vs_fixed_ls_pp']:+.2f} pp, Holm p = "
                         f"{lgals['holm_p_vs_fixed_ls']:.3g}: "
                         f"{lgals['verdict_vs_fixed_ls']} |")
    assert "Holm-adjusted over all 3 comparisons of this table" in sweep_markdown(rows)
