"""The results report, rebuilt from MLflow alone: the note's claims with a verdict each,
tables, statistics, plots, cost; and the noise sweep's report.

Runs come as repetitions (each its own noise draw, split and tuning) x seeds. Statistics are
stated from our numbers: mean ± sample std, a t-based 95% interval over the independent
units, and, on the runs two modes share, the paired differences' hierarchical bootstrap
interval, P(A > B) and a paired test (over seeds with one repetition, over repetition means
with more), Holm-adjusted over the report; Welch's t-test beside it. The claim's numbers
stand beside ours, unchanged, for comparison only.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from lgals.diagnose import NOTE_CORRELATION
from lgals.losses import MODES, SUITES
from lgals.schema import repeat_of
from lgals.statistics import (
    ALPHA,
    POWER,
    Variance,
    hierarchical_bootstrap,
    holm,
    minimum_detectable_difference,
    paired_test,
    probability_of_improvement,
    variance_components,
)
from lgals.tracking.runs import in_run, source_info
from lgals.tracking.store import mlflow_client

# The claim under test (docs/claim.md): % test accuracy, mean ± std, 5 seeds.
CLAIM = {"baseline": (53.12, 0.54), "fixed_ls": (55.33, 0.65), "lgals": (57.15, 1.17)}
COMPARISONS = [("lgals", "baseline"), ("lgals", "fixed_ls"), ("fixed_ls", "baseline")]
REFERENCES = ("baseline", "fixed_ls", "lgals")  # every other mode is compared with these
# Per-sample scores for detecting flipped labels: the metric each logs per epoch, its name.
DETECTORS = {"noise_auroc": "1 − s_i (LGALS's alignment)", "noise_auroc_loss": "training loss",
             "noise_auroc_confidence": "1 − p_y", "noise_auroc_el2n": "‖g_i‖ (EL2N)",
             "noise_auroc_aum": "−AUM (area under the margin)"}
CURVES = ("test_acc", "eps_clean_mean", "eps_noisy_mean", "epoch_seconds", *DETECTORS)
# What each ablation and peer asks, as the report's sentence about it: (mode, the mode it is
# compared with, what the difference means).
QUESTIONS = [
    ("shuffled_lgals", "lgals", "Shuffling LGALS's epsilons within each batch (the same "
                                "amount of smoothing, no per-sample information)"),
    ("confidence_ls", "lgals", "Smoothing by the model's doubt 1 − p_y instead of alignment"),
    ("el2n_ls", "lgals", "Smoothing by the logit gradient's magnitude ‖g_i‖ instead of its "
                         "direction"),
    ("nls", "fixed_ls", "Negative instead of positive label smoothing"),
    ("gce", "lgals", "Generalized cross-entropy instead of LGALS"),
    ("sce", "lgals", "Symmetric cross-entropy instead of LGALS"),
    ("bootstrap", "lgals", "Soft bootstrapping instead of LGALS"),
    ("elr", "lgals", "Early-learning regularisation instead of LGALS"),
    ("early_stop", "lgals", "Stopping Baseline at the epoch the noisy validation split picks, "
                            "instead of LGALS"),
]


Key = tuple[int, int]  # (repetition, seed)


def grid(keys: Iterable[Key]) -> tuple[list[int], list[int]]:
    """The repetitions among ``keys`` and the seeds every one of them ran: the full
    ``[R, S]`` grid (a ragged one would weigh repetitions unequally)."""
    keys = set(keys)
    repeats = sorted({repeat for repeat, _ in keys})
    seeds = set.intersection(*({s for r, s in keys if r == repeat} for repeat in repeats)) \
        if repeats else set()
    return repeats, sorted(seeds)


def matrix(values: Mapping[Key, float], keys: Iterable[Key]) -> np.ndarray:
    """``values`` on the full grid of ``keys`` as ``[R, S]``."""
    repeats, seeds = grid(keys)
    return np.array([[values[(r, s)] for s in seeds] for r in repeats],
                    dtype=float).reshape(len(repeats), len(seeds))


@dataclass
class ModeRuns:
    """One mode's latest evaluate run per repetition: final accuracy per (repetition, seed)
    and per-epoch curves."""

    mode: str
    run_ids: list[str]  # the evaluate runs used, one per repetition
    n_stacked: int  # seeds trained in one stacked computation (epoch_seconds covers them all)
    final_acc: dict[Key, float]  # (repetition, seed) -> final test accuracy (fraction)
    curves: dict[str, np.ndarray]  # name -> [runs, epochs], rows in sorted(final_acc) order
    eps_counts: np.ndarray | None = None  # [epochs, 2, bins], summed over runs
    eps_edges: np.ndarray | None = None

    def matrix(self, keys: Iterable[Key] | None = None) -> np.ndarray:
        """Final accuracies ``[R, S]`` (fractions) on ``keys`` (default: all of them)."""
        return matrix(self.final_acc, self.final_acc if keys is None else keys)

    def curve_matrix(self, name: str) -> np.ndarray:
        """Each run's curve ``name`` averaged over epochs, as ``[R, S]``."""
        per_run = dict(zip(sorted(self.final_acc), self.curves[name].mean(axis=1)))
        return matrix(per_run, per_run)


def paired(a: ModeRuns, b: ModeRuns) -> tuple[np.ndarray, np.ndarray]:
    """Both modes' accuracies (%) on the full grid of the runs they share: the same noise
    draw, split and seed, so their differences pair."""
    shared = a.final_acc.keys() & b.final_acc.keys()
    return 100 * a.matrix(shared), 100 * b.matrix(shared)


@dataclass
class Comparison:
    a: str
    b: str
    diff_pp: float  # mean paired difference when paired, else difference of the means
    welch_p: float
    paired_p: float | None  # None when the modes share fewer than two units
    n_a: int
    n_b: int
    ci: tuple[float, float] = (math.nan, math.nan)  # hierarchical bootstrap, paired diffs
    p_improve: float = math.nan  # P(A > B) over the paired runs
    n_repeats: int = 1  # repetitions in the paired test
    holm_p: float = math.nan  # adjusted over every comparison of the report (build sets it)
    family: int = 1  # how many comparisons the report makes

    @property
    def p(self) -> float:
        """The paired p-value when there is one, else Welch's."""
        return self.paired_p if self.paired_p is not None else self.welch_p

    @property
    def test(self) -> str:
        if self.paired_p is None:
            return "Welch's t-test"
        if self.n_repeats == 1:
            return "paired t-test"
        return f"t-test on the {self.n_repeats} repetition means of the paired differences"

    def significance(self) -> str:
        """The verdict at α on the Holm-adjusted p-value."""
        if math.isnan(self.p):
            return f"not testable at n = {self.n_a} vs {self.n_b}"
        if self.holm_p < ALPHA:
            direction = "better" if self.diff_pp > 0 else "worse"
            return f"significant at α = {ALPHA}: {MODES[self.a].label} is {direction}"
        return f"not significant at α = {ALPHA}"

    def verdict(self) -> str:
        label = f"{MODES[self.a].label} − {MODES[self.b].label}"
        claim = CLAIM[self.a][0] - CLAIM[self.b][0]
        return (f"{label} = {self.diff_pp:+.2f} pp{self.interval()}, {self.test} p = "
                f"{self.p:.3g} (Welch p = {self.welch_p:.3g}; {self.adjusted()}): "
                f"{self.significance()} at n = {self.n_a} vs {self.n_b} (the claim: "
                f"{claim:+.2f} pp)")

    def interval(self) -> str:
        """`` [95% CI …], P(A > B) = …`` for a paired comparison, else nothing."""
        if self.paired_p is None:
            return ""
        return (f" [95% CI {self.ci[0]:+.2f}, {self.ci[1]:+.2f}], P({MODES[self.a].label} > "
                f"{MODES[self.b].label}) = {self.p_improve:.2f}")

    def adjusted(self) -> str:
        if self.family == 1:
            return "a single comparison, nothing to correct"
        return f"Holm-adjusted over the report's {self.family} comparisons p = {self.holm_p:.3g}"

    def answer(self, question: str) -> str:
        """The comparison as a sentence answering ``question``."""
        return (f"{question} changes final test accuracy by {self.diff_pp:+.2f} pp against "
                f"{MODES[self.b].label} (p = {self.p:.3g}, {self.adjusted()}): "
                f"{self.significance()}.")


@dataclass
class Diagnosis:
    """The latest ``lgals diagnose`` run: per statistic, its value at each checkpoint epoch."""

    run_id: str
    mode: str
    values: dict[str, dict[int, float]]  # metric key -> epoch -> value


@dataclass
class Report:
    modes: dict[str, ModeRuns]
    comparisons: list[Comparison] = field(default_factory=list)
    diagnosis: Diagnosis | None = None

    def rows(self) -> list[dict]:
        base_cost = self.cost_per_epoch("baseline")
        rows = []
        for mode, runs in self.modes.items():
            accs = 100 * runs.matrix()
            mean, std, (lo, hi) = mode_stats(accs)
            variance = variance_components(accs)
            row = {"mode": MODES[mode].label, "n_seeds": accs.shape[1],
                   "final_test_acc_mean_pct": mean, "final_test_acc_std_pct": std,
                   "ci95_low_pct": lo, "ci95_high_pct": hi}
            row["family"] = MODES[mode].family
            for other in REFERENCES:
                c = self.comparison(mode, other)
                row[f"diff_vs_{other}_pp"] = c.diff_pp if c else ""
                row[f"welch_p_vs_{other}"] = c.welch_p if c else ""
                row[f"paired_p_vs_{other}"] = c.paired_p if c and c.paired_p is not None else ""
                row[f"holm_p_vs_{other}"] = c.holm_p if c else ""
                row[f"diff_ci95_low_vs_{other}_pp"] = c.ci[0] if c else ""
                row[f"diff_ci95_high_vs_{other}_pp"] = c.ci[1] if c else ""
                row[f"p_improve_vs_{other}"] = c.p_improve if c else ""
            row["claim_mean_pct"], row["claim_std_pct"] = CLAIM.get(mode, ("", ""))
            cost = self.cost_per_epoch(mode)
            row["seconds_per_epoch_per_seed"] = cost
            row["cost_vs_baseline"] = cost / base_cost if base_cost else ""
            row["n_repeats"] = accs.shape[0]
            row["var_repeat_pp2"], row["var_seed_pp2"] = variance.repeat, variance.seed
            rows.append(row)
        return rows

    def comparison(self, a: str, b: str) -> Comparison | None:
        return next((c for c in self.comparisons if (c.a, c.b) == (a, b)), None)

    def cost_per_epoch(self, mode: str) -> float | None:
        runs = self.modes.get(mode)
        if runs is None or "epoch_seconds" not in runs.curves:
            return None
        # epoch_seconds is the wall time of the whole stack; every seed run of a repetition
        # logs the same, so the mean over runs is the mean over repetitions.
        return float(np.mean(runs.curves["epoch_seconds"]) / runs.n_stacked)

    def repeats(self) -> int:
        """The most repetitions any mode has."""
        return max((runs.matrix().shape[0] for runs in self.modes.values()), default=0)

    def detectable(self, a: str, b: str) -> tuple[Variance, float] | None:
        """The variance components of A − B's paired differences and the smallest
        difference the note's protocol detects with them; None below two repetitions (the
        repetitions' variance is then not estimable)."""
        if a not in self.modes or b not in self.modes:
            return None
        xa, xb = paired(self.modes[a], self.modes[b])
        if len(xa) < 2:
            return None
        variance = variance_components(xa - xb)
        return variance, minimum_detectable_difference(variance, *CLAIM_PROTOCOL)


def summary_stats(values: np.ndarray) -> tuple[float, float, tuple[float, float]]:
    """Mean, sample standard deviation and t-based 95% confidence interval."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, float("nan"), (float("nan"), float("nan"))
    std = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n))
    return mean, std, (mean - half, mean + half)


def mode_stats(values: np.ndarray) -> tuple[float, float, tuple[float, float]]:
    """Mean and std over all runs of ``values [R, S]``, and the t-based 95% interval over
    the independent units: the seeds of one repetition, else the repetition means."""
    if len(values) == 1:
        return summary_stats(values[0])
    mean, _, interval = summary_stats(values.mean(axis=1))
    return float(values.mean()), float(np.std(values, ddof=1)), interval


def compare(a: ModeRuns, b: ModeRuns) -> Comparison:
    """Welch's t-test over all runs always; on the runs both modes share, the paired
    differences' mean, hierarchical bootstrap interval, P(A > B) and paired test."""
    xa = 100 * np.array(list(a.final_acc.values()))
    xb = 100 * np.array(list(b.final_acc.values()))
    welch = (stats.ttest_ind(xa, xb, equal_var=False).pvalue
             if len(xa) > 1 and len(xb) > 1 else float("nan"))
    comparison = Comparison(a.mode, b.mode, float(xa.mean() - xb.mean()), float(welch), None,
                            len(xa), len(xb))
    pa, pb = paired(a, b)
    units = pa.shape[1] if len(pa) == 1 else len(pa)
    if units >= 2:
        diff = pa - pb
        mean, low, high = hierarchical_bootstrap(diff)
        comparison.diff_pp, comparison.ci, comparison.n_repeats = mean, (low, high), len(diff)
        comparison.paired_p = paired_test(diff)
        comparison.p_improve = probability_of_improvement(pa, pb)
    comparison.holm_p = comparison.p  # alone, a comparison is its own family
    return comparison


def build(modes: dict[str, ModeRuns]) -> Report:
    """The claim's comparisons, then every other mode against each reference mode."""
    pairs = COMPARISONS + [(mode, reference) for mode in modes if mode not in REFERENCES
                           for reference in REFERENCES]
    comparisons = [compare(modes[a], modes[b]) for a, b in pairs if a in modes and b in modes]
    for comparison, adjusted in zip(comparisons, holm([c.p for c in comparisons])):
        comparison.holm_p, comparison.family = adjusted, len(comparisons)
    return Report(modes, comparisons)


def detection(modes: dict[str, ModeRuns]) -> dict[str, dict[str, tuple[float, int]]]:
    """Per detector and mode: the best AUROC over epochs (mean over runs) and its epoch."""
    table: dict[str, dict[str, tuple[float, int]]] = {}
    for name in DETECTORS:
        for mode, runs in modes.items():
            if name in runs.curves:
                mean = runs.curves[name].mean(axis=0)
                best = int(np.argmax(mean))
                table.setdefault(name, {})[mode] = (float(mean[best]), best + 1)
    return table


# --- the note's claims, one verdict each ------------------------------------------------------

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
AUROC_CHANCE = 0.5  # claim 2: 1 − s_i must find flipped labels better than chance ...
EPS_GAP_MIN = 0.0  # ... and LGALS must give them more ε than clean samples
ALIGNMENT_R_MIN = 0.5  # claim 3: Pearson's r every checkpoint must reach
COST_RATIO_MAX = 1.10  # claim 4: LGALS's time per epoch over Baseline's, "negligible"
CLAIM_PROTOCOL = (1, 5)  # the note's study: one repetition of 5 seeds
# Section titles the claim card points to.
VERDICTS = "Verdicts"
POWER_SECTION = "Could the note's protocol detect its claimed gain?"
DETECTION_SECTION = "Which per-sample score detects the flipped labels?"
DIAGNOSIS_SECTION = "Does s_i track the weight-gradient alignment?"


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim of the note, our verdict on it, the numbers and where they come from."""

    claim: str
    status: str
    evidence: str
    where: str

    def line(self, number: int) -> str:
        return f"{number}. **{self.claim}: {self.status}.** {self.evidence} ({self.where})"


def claim_ranking(report: Report) -> ClaimVerdict:
    """LGALS > FixedLS > Baseline: both steps significant (Holm) in the claimed direction."""
    claim = "LGALS beats tuned FixedLS, which beats Baseline"
    where = f"see “{VERDICTS}”"
    steps = [report.comparison("lgals", "fixed_ls"), report.comparison("fixed_ls", "baseline")]
    if None in steps:
        return ClaimVerdict(claim, INCONCLUSIVE, "Needs Baseline, FixedLS and LGALS evaluated.",
                            where)
    evidence = "; ".join(_step(c) for c in steps) + "."
    significant = [c.holm_p < ALPHA for c in steps]
    if all(significant) and all(c.diff_pp > 0 for c in steps):
        return ClaimVerdict(claim, SUPPORTED, f"{evidence} Both steps are significant after "
                            "Holm, in the claimed direction.", where)
    against = [_label(c) + " is significantly negative" for c, s in zip(steps, significant)
               if s and c.diff_pp < 0]
    against += [f"{_label(c)}'s 95% CI excludes the claimed {_claimed(c):+.2f} pp"
                for c in steps if not c.ci[0] <= _claimed(c) <= c.ci[1]
                and not math.isnan(c.ci[0])]
    if against:
        return ClaimVerdict(claim, NOT_SUPPORTED, f"{evidence} {'; '.join(against)}.", where)
    return ClaimVerdict(claim, INCONCLUSIVE, f"{evidence} Not both steps are significant after "
                        "Holm, and neither contradicts the claim.", where)


def _label(c: Comparison) -> str:
    return f"{MODES[c.a].label} − {MODES[c.b].label}"


def _claimed(c: Comparison) -> float:
    return CLAIM[c.a][0] - CLAIM[c.b][0]


def _step(c: Comparison) -> str:
    interval = (f"[95% CI {c.ci[0]:+.2f}, {c.ci[1]:+.2f}]" if not math.isnan(c.ci[0])
                else "[no paired CI]")
    return (f"{_label(c)} = {c.diff_pp:+.2f} pp {interval} (claimed {_claimed(c):+.2f}), "
            f"P({MODES[c.a].label} > {MODES[c.b].label}) = {c.p_improve:.2f}, "
            f"Holm p = {c.holm_p:.3g}")


def claim_mechanism(report: Report) -> ClaimVerdict:
    """Flipped labels have low s_i (AUROC of 1 − s_i above chance) and so get more ε."""
    claim = "Noisy samples get misaligned logit gradients, so LGALS smooths them more"
    where = f"see “{DETECTION_SECTION}” and epsilon_plot.png"
    runs = report.modes.get("lgals")
    names = ("noise_auroc", "eps_noisy_mean", "eps_clean_mean")
    if runs is None or any(name not in runs.curves for name in names):
        return ClaimVerdict(claim, INCONCLUSIVE, "LGALS's runs logged no AUROC or ε curves "
                            "of flipped labels (none flipped, or no LGALS runs).", where)
    auroc = runs.curve_matrix("noise_auroc")
    gap = runs.curve_matrix("eps_noisy_mean") - runs.curve_matrix("eps_clean_mean")
    if not (np.isfinite(auroc).all() and np.isfinite(gap).all()):
        return ClaimVerdict(claim, INCONCLUSIVE, "No flipped labels to detect in these runs.",
                            where)
    a_mean, a_low, a_high = hierarchical_bootstrap(auroc)
    g_mean, g_low, g_high = hierarchical_bootstrap(gap)
    evidence = (f"In LGALS's runs (mean over epochs), the AUROC of 1 − s_i for flipped labels "
                f"is {a_mean:.3f} [95% CI {a_low:.3f}, {a_high:.3f}] and ε(noisy) − ε(clean) "
                f"= {g_mean:+.4f} [95% CI {g_low:+.4f}, {g_high:+.4f}].")
    if a_low > AUROC_CHANCE and g_low > EPS_GAP_MIN:
        return ClaimVerdict(claim, SUPPORTED, f"{evidence} Flipped labels are less aligned and "
                            "get more smoothing.", where)
    if a_low <= AUROC_CHANCE:
        place = "lies below" if a_high < AUROC_CHANCE else "contains"
        return ClaimVerdict(claim, NOT_SUPPORTED, f"{evidence} The AUROC's CI {place} chance "
                            f"({AUROC_CHANCE}): s_i does not single out flipped labels.", where)
    return ClaimVerdict(claim, INCONCLUSIVE, f"{evidence} s_i detects flipped labels, but "
                        f"their extra ε is not above {EPS_GAP_MIN}.", where)


def claim_alignment(report: Report) -> ClaimVerdict:
    """s_i stands in for the weight-gradient alignment: r ≥ ALIGNMENT_R_MIN at every
    checkpoint of the latest diagnose run."""
    claim = f"Logit-gradient alignment tracks weight-gradient alignment (r ≈ {NOTE_CORRELATION})"
    where = f"see “{DIAGNOSIS_SECTION}”"
    diagnosis = report.diagnosis
    if diagnosis is None or not diagnosis.values["all.pearson"]:
        return ClaimVerdict(claim, INCONCLUSIVE, "Not measured: run `lgals diagnose`.", where)
    r = diagnosis.values["all.pearson"]
    evidence = (f"Pearson's r over {len(r)} checkpoints: all layers {_range(r)} (layer1 "
                f"{_range(diagnosis.values['layer1.pearson'])}, layer3 "
                f"{_range(diagnosis.values['layer3.pearson'])}).")
    if min(r.values()) >= ALIGNMENT_R_MIN:
        return ClaimVerdict(claim, SUPPORTED, f"{evidence} Every checkpoint reaches "
                            f"{ALIGNMENT_R_MIN}.", where)
    if max(r.values()) < ALIGNMENT_R_MIN:
        return ClaimVerdict(claim, NOT_SUPPORTED, f"{evidence} No checkpoint reaches "
                            f"{ALIGNMENT_R_MIN}.", where)
    return ClaimVerdict(claim, INCONCLUSIVE, f"{evidence} Some checkpoints reach "
                        f"{ALIGNMENT_R_MIN}, some do not.", where)


def _range(values: dict[int, float]) -> str:
    return f"{min(values.values()):.3f}–{max(values.values()):.3f}" if values else "—"


def claim_cost(report: Report) -> ClaimVerdict:
    """LGALS's seconds per epoch at most COST_RATIO_MAX times Baseline's."""
    claim = "LGALS adds negligible cost"
    where = "see the cost columns of the table below"
    lgals, baseline = report.cost_per_epoch("lgals"), report.cost_per_epoch("baseline")
    if not lgals or not baseline:
        return ClaimVerdict(claim, INCONCLUSIVE, "No epoch_seconds for LGALS and Baseline.",
                            where)
    ratio = lgals / baseline
    evidence = (f"LGALS takes {lgals:.4f} s per epoch per seed, {ratio:.2f}x Baseline's "
                f"{baseline:.4f} s")
    if ratio <= COST_RATIO_MAX:
        return ClaimVerdict(claim, SUPPORTED, f"{evidence}, within {COST_RATIO_MAX:.2f}x.",
                            where)
    return ClaimVerdict(claim, NOT_SUPPORTED, f"{evidence}, above {COST_RATIO_MAX:.2f}x.",
                        where)


def claim_card(report: Report) -> list[ClaimVerdict]:
    return [claim_ranking(report), claim_mechanism(report), claim_alignment(report),
            claim_cost(report)]


# --- collecting from MLflow ----------------------------------------------------------------

Setting = tuple[str, float]  # (noise_type, noise_rate)
SEARCH_PAGE = 1000  # runs per search request; collect pages through all of them


def same_setting(a: Setting | None, b: Setting | None) -> bool:
    """Whether two noise settings give the same data: a rate of 0 flips nothing whatever
    the type (a sweep runs it once, as ``symmetric``)."""
    if a is None or b is None:
        return a == b
    return a[1] == b[1] and (a[0] == b[0] or a[1] == 0)


def collect(experiment_id: str, suite: str = "paper", noise: Setting | None = None,
            repeats: int | None = None, seeds: int | None = None) -> dict[str, ModeRuns]:
    """For each of the suite's modes and each repetition, the latest finished evaluate run
    and its seed runs, from MLflow only.

    ``noise``: only runs of that (noise_type, noise_rate); without it, the setting of the
    first mode's latest run, so settings never mix. ``repeats``: repetitions 0..repeats-1
    only. ``seeds``: per (mode, repetition) prefer the latest run that ran seeds
    0..seeds-1, and use only those. A run without an ``lgals.repeat`` tag is repetition 0.
    """
    client = mlflow_client()
    runs = _search(client, experiment_id,
                   "tags.`lgals.stage` = 'evaluate' and attributes.status = 'FINISHED'")
    children: dict[str, list] = {}
    for run in runs:
        if "lgals.seed" in run.data.tags and "final_test_acc" in run.data.metrics:
            children.setdefault(run.data.tags.get("mlflow.parentRunId"), []).append(run)
    parents = [r for r in runs if "lgals.seed" not in r.data.tags
               and r.data.tags.get("lgals.mode") in SUITES[suite]
               and r.info.run_id in children
               and (repeats is None or repeat_of(r) < repeats)]
    if noise is None:
        latest = next((r for mode in SUITES[suite] for r in parents
                       if r.data.tags["lgals.mode"] == mode), None)
        noise = _setting(latest) if latest else None
    parents = [r for r in parents if same_setting(_setting(r), noise)]
    wanted = set(range(seeds)) if seeds is not None else None
    modes = {}
    for mode in SUITES[suite]:
        chosen = []
        of_mode = [r for r in parents if r.data.tags["lgals.mode"] == mode]
        for repeat in sorted({repeat_of(r) for r in of_mode}):
            candidates = [r for r in of_mode if repeat_of(r) == repeat]
            parent = next((r for r in candidates if wanted is None or wanted <= {
                int(c.data.tags["lgals.seed"]) for c in children[r.info.run_id]}), candidates[0])
            members = [c for c in children[parent.info.run_id]
                       if wanted is None or int(c.data.tags["lgals.seed"]) in wanted]
            chosen.append((repeat, parent, members, len(children[parent.info.run_id])))
        if chosen:
            modes[mode] = _mode_runs(client, mode, chosen)
    return modes


def _search(client, experiment_id: str, query: str) -> list:
    """Every run matching ``query``, latest first (ties by run id, so the order never
    depends on the store)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], query, max_results=SEARCH_PAGE,
                                  page_token=token)
        runs += page
        token = page.token
        if not token:
            break
    return sorted(runs, key=lambda r: (-r.info.start_time, r.info.run_id))


def _setting(run) -> Setting | None:
    params = run.data.params
    if "noise_type" not in params or "noise_rate" not in params:
        return None
    return params["noise_type"], float(params["noise_rate"])


DIAGNOSIS_KEYS = ("all.pearson", "layer1.pearson", "layer2.pearson", "layer3.pearson",
                  "weight.layer3", "auroc.alignment", "auroc.weight_alignment")


def collect_diagnosis(experiment_id: str) -> Diagnosis | None:
    """The latest finished diagnose run's statistics per checkpoint, if there is one."""
    client = mlflow_client()
    runs = client.search_runs(
        [experiment_id], "tags.`lgals.stage` = 'diagnose' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"], max_results=1)
    if not runs:
        return None
    run_id = runs[0].info.run_id
    values = {key: {m.step: m.value for m in client.get_metric_history(run_id, key)}
              for key in DIAGNOSIS_KEYS}
    return Diagnosis(run_id, runs[0].data.params.get("mode", ""), values)


def unfinished(experiment_id: str) -> dict[str, int]:
    """How many evaluate runs the report leaves out, by status: only FINISHED runs are
    results (a killed process's half-logged seed run is not)."""
    runs = mlflow_client().search_runs(
        [experiment_id], "tags.`lgals.stage` = 'evaluate' and attributes.status != 'FINISHED'",
        max_results=1000)
    return dict(Counter(run.info.status for run in runs))


def _mode_runs(client, mode: str, chosen: list[tuple[int, object, list, int]]) -> ModeRuns:
    """One mode's runs from ``(repeat, evaluate run, its seed runs used, seeds it stacked)``
    per repetition."""
    members = sorted(((repeat, int(r.data.tags["lgals.seed"]), r)
                      for repeat, _, runs, _ in chosen for r in runs), key=lambda m: m[:2])
    curves = {}
    for key in CURVES:
        histories = [[m.value for m in sorted(client.get_metric_history(r.info.run_id, key),
                                              key=lambda m: m.step)] for _, _, r in members]
        if all(histories) and len({len(h) for h in histories}) == 1:
            curves[key] = np.array(histories)
    _, first, _, stacked = chosen[0]
    vary_noise = first.data.params.get("vary_noise", "False") == "True"
    runs = ModeRuns(mode, [parent.info.run_id for _, parent, _, _ in chosen],
                    1 if vary_noise else stacked,
                    {(repeat, seed): r.data.metrics["final_test_acc"]
                     for repeat, seed, r in members}, curves)
    with tempfile.TemporaryDirectory() as tmp:
        counts = []
        for _, _, r in members:
            path = client.download_artifacts(r.info.run_id, "epsilon_distributions.npz", tmp)
            with np.load(path, allow_pickle=False) as npz:
                counts.append(npz["eps_counts"])
                runs.eps_edges = npz["eps_edges"]
        runs.eps_counts = np.sum(counts, axis=0)
    return runs


# --- writing ---------------------------------------------------------------------------

def markdown(report: Report) -> str:
    rows = dict(zip(report.modes, report.rows()))
    lines = ["| Mode | n | Final test acc. (%) mean ± std | 95% CI (%) | vs Baseline (pp, p) "
             "| vs FixedLS (pp, p) | Claim (%) | s/epoch/seed | cost vs Baseline |",
             "|---|---|---|---|---|---|---|---|---|"]
    for mode in SUITES["paper"]:
        if mode not in rows:
            continue
        row = rows[mode]
        lines.append(
            f"| {row['mode']} | {_n_cell(row)} | {_accuracy_cells(row)} | "
            f"{_versus_cell(row, 'baseline')} | {_versus_cell(row, 'fixed_ls')} | "
            f"{row['claim_mean_pct']:.2f} ± {row['claim_std_pct']:.2f} | {_cost_cells(row)} |")
    verdicts = [f"- {c.verdict()}" for c in report.comparisons if (c.a, c.b) in COMPARISONS]
    card = [v.line(number) for number, v in enumerate(claim_card(report), 1)]
    return "\n".join([
        "# LGALS on mnist1d with noisy labels: our measurement", "",
        "## The note's claims", "", *card, "",
        "## Final test accuracy", "",
        "Final test accuracy after the last epoch, per mode over runs (n: seeds, or "
        "repetitions × seeds; a repetition has its own noise draw, split and tuning). The 95% "
        "CI is t-based over the independent units: the seeds of one repetition, else the "
        "repetition means. Comparisons pair the runs both modes share (same repetition and "
        "seed); with one repetition p is the paired t-test over seeds, with more it is a "
        "one-sample t-test on the repetition means of the paired differences, because the "
        "repetition is the independent unit; Welch's t-test when nothing pairs. The tables "
        "show p as computed, and every verdict is stated at α = 0.05 on the p-value "
        "Holm-adjusted over all the comparisons this report makes. "
        "The claim's numbers are copied from the note under test (summarised in lgals' "
        "docs/claim.md), not measured here.", "",
        *lines, "", f"## {VERDICTS}", "",
        "Differences with their hierarchical bootstrap 95% CI (repetitions, then seeds "
        "within them) and P(A > B) over the paired runs.", "", *verdicts, "",
        *_variance_section(report, rows), *_power_section(report),
        *_other_modes(report, rows), *_detection_section(report),
        *_diagnosis_section(report.diagnosis),
        "Cost: wall seconds per epoch of one seed (the stacked run's epoch time / seeds).", "",
    ])


def _n_cell(row: dict) -> str:
    if row["n_repeats"] == 1:
        return str(row["n_seeds"])
    return f"{row['n_repeats']} × {row['n_seeds']}"


def _variance_section(report: Report, rows: dict[str, dict]) -> list[str]:
    """How much of each mode's spread the repetitions make, beside the seeds'."""
    if report.repeats() < 2:
        return []
    lines = ["## Where the variance comes from", "",
             "Variance components of each mode's final test accuracy (pp², one-way random "
             "effects): between repetitions (noise draw, split, tuning) and between seeds "
             "within a repetition.", "",
             "| Mode | n | between repetitions | between seeds | repetitions' share |",
             "|---|---|---|---|---|"]
    for row in rows.values():
        share = Variance(row["var_repeat_pp2"], row["var_seed_pp2"]).repeat_share
        lines.append(f"| {row['mode']} | {_n_cell(row)} | {row['var_repeat_pp2']:.3f} | "
                     f"{row['var_seed_pp2']:.3f} | {share:.2f} |")
    return [*lines, ""]


def _power_section(report: Report) -> list[str]:
    """The smallest difference the note's protocol detects, beside the differences it
    claims."""
    repeats, seeds = CLAIM_PROTOCOL
    protocol = f"{repeats} repetition × {seeds} seeds"
    lines = [f"## {POWER_SECTION}", ""]
    found = {(a, b): report.detectable(a, b) for a, b in COMPARISONS}
    if all(value is None for value in found.values()):
        return [*lines, "With one repetition the variance between repetitions (noise draw, "
                "split, tuning) is not estimable, so neither is the smallest difference the "
                f"note's protocol ({protocol}) detects: that needs two repetitions or more.",
                ""]
    lines += [f"Minimum detectable difference (MDD) of the note's protocol ({protocol}) at "
              f"α = {ALPHA} with {POWER:.0%} power, from the variance components (pp²) of "
              "each comparison's paired differences.", "",
              "| Comparison | between repetitions | between seeds | MDD (pp) | claimed (pp) |",
              "|---|---|---|---|---|"]
    for (a, b), value in found.items():
        if value is not None:
            variance, mdd = value
            lines.append(f"| {MODES[a].label} − {MODES[b].label} | {variance.repeat:.3f} | "
                         f"{variance.seed:.3f} | {mdd:.2f} | "
                         f"{CLAIM[a][0] - CLAIM[b][0]:+.2f} |")
    lines.append("")
    if found[("lgals", "fixed_ls")] is not None:
        mdd = found[("lgals", "fixed_ls")][1]
        gain = CLAIM["lgals"][0] - CLAIM["fixed_ls"][0]
        answer = (f"could have detected it (power at least {POWER:.0%})" if gain >= mdd
                  else f"could not reliably have detected it (power below {POWER:.0%})")
        lines += [f"The note's protocol detects an LGALS − FixedLS difference of {mdd:.2f} pp "
                  f"or more; its claimed gain is {gain:.2f} pp (LGALS {CLAIM['lgals'][0]} − "
                  f"FixedLS {CLAIM['fixed_ls'][0]}), so it {answer}.", ""]
    return lines


def _other_modes(report: Report, rows: dict[str, dict]) -> list[str]:
    """The ablations and peers: every mode against the three references, and what each
    comparison answers, in words."""
    if set(report.modes) <= set(SUITES["paper"]):
        return []
    lines = ["## Every mode against Baseline, FixedLS and LGALS", "",
             "| Mode | family | n | Final test acc. (%) mean ± std | 95% CI (%) "
             "| vs Baseline (pp, p) | vs FixedLS (pp, p) | vs LGALS (pp, p) | s/epoch/seed "
             "| cost vs Baseline |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows.values():
        versus = " | ".join(_versus_cell(row, other) for other in REFERENCES)
        lines.append(f"| {row['mode']} | {row['family']} | {row['n_seeds']} | "
                     f"{_accuracy_cells(row)} | {versus} | {_cost_cells(row)} |")
    answers = [f"- {report.comparison(mode, reference).answer(question)}"
               for mode, reference, question in QUESTIONS
               if report.comparison(mode, reference) is not None]
    return [*lines, "", "## What the controls and peers say", "", *answers, ""]


def _detection_section(report: Report) -> list[str]:
    """How well each per-sample score finds the flipped labels, and when."""
    table = detection(report.modes)
    if not table:
        return []
    modes = [m for m in report.modes if m in SUITES["paper"]]
    lines = [f"## {DETECTION_SECTION}", "",
             "AUROC of each score for telling flipped training labels from clean ones, at its "
             "best epoch (mean over seeds; 0.5 is chance). Scores come from the logits each "
             "training step saw.", "",
             "| Score | " + " | ".join(f"{MODES[m].label}: best (epoch)" for m in modes)
             + " | best in any mode |", "|---" * (len(modes) + 2) + "|"]
    for name, label in DETECTORS.items():
        per_mode = table.get(name)
        if not per_mode:
            continue
        cells = [f"{per_mode[m][0]:.3f} ({per_mode[m][1]})" if m in per_mode else "—"
                 for m in modes]
        top = max(per_mode, key=lambda m: per_mode[m][0])
        cells.append(f"{per_mode[top][0]:.3f} ({MODES[top].label}, epoch {per_mode[top][1]})")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    reference = "baseline" if "baseline" in report.modes else next(iter(report.modes))
    ranked = sorted((name for name in table if reference in table[name]),
                    key=lambda name: -table[name][reference][0])
    if "noise_auroc" not in ranked:  # runs from before the other scores were logged
        return [*lines, ""]
    best, alignment = ranked[0], table["noise_auroc"][reference]
    lines += ["", f"On {MODES[reference].label}'s training, {DETECTORS[best]} detects best "
              f"(AUROC {table[best][reference][0]:.3f} at epoch {table[best][reference][1]}); "
              f"{DETECTORS['noise_auroc']} ranks {ranked.index('noise_auroc') + 1} of "
              f"{len(ranked)} (AUROC {alignment[0]:.3f} at epoch {alignment[1]}).", ""]
    return lines


def _diagnosis_section(diagnosis: Diagnosis | None) -> list[str]:
    """The note's ~0.75 beside what ``lgals diagnose`` measured, layer by layer."""
    if diagnosis is None or not diagnosis.values["all.pearson"]:
        return []
    v = diagnosis.values
    lines = [f"## {DIAGNOSIS_SECTION}", "",
             f"Pearson's r between each sample's logit-gradient cosine s_i and its "
             f"weight-gradient cosine (to the batch mean), from `lgals diagnose` run "
             f"{diagnosis.run_id} ({diagnosis.mode}); the note says {NOTE_CORRELATION}.", "",
             "| epoch | all layers | layer1 | layer2 | layer3 | layer3's weight in the "
             "all-layer cosine | AUROC 1 − s_i | AUROC 1 − weight cosine |",
             "|---|---|---|---|---|---|---|---|"]
    for epoch in sorted(v["all.pearson"]):
        cells = [f"{v[key][epoch]:.3f}" if epoch in v[key] else "—" for key in DIAGNOSIS_KEYS]
        lines.append(f"| {epoch} | " + " | ".join(cells) + " |")
    last = max(v["all.pearson"])
    return [*lines, "", f"layer3's per-sample gradient is g_i ⊗ (a_i, 1): its cosine to the "
            "batch mean equals s_i whenever every sample's penultimate activations a_i are "
            "the same, so its correlation with s_i is partly built in by construction. At "
            f"epoch {last} layer3 carries {v['weight.layer3'][last]:.2f} of the all-layer "
            f"cosine (its weight w_3 averaged over samples) and correlates "
            f"r = {v['layer3.pearson'][last]:.3f}; the first layer, whose gradient is furthest "
            f"from g_i, correlates r = {v['layer1.pearson'][last]:.3f}.", ""]


def _accuracy_cells(row: dict) -> str:
    return (f"{row['final_test_acc_mean_pct']:.2f} ± {row['final_test_acc_std_pct']:.2f} | "
            f"[{row['ci95_low_pct']:.2f}, {row['ci95_high_pct']:.2f}]")


def _cost_cells(row: dict) -> str:
    cost, ratio = row["seconds_per_epoch_per_seed"], row["cost_vs_baseline"]
    return f"{cost:.4f} | {ratio:.2f}x" if cost and ratio != "" else "— | —"


def _versus_cell(row: dict, other: str) -> str:
    """``+diff, p = …`` (paired p when there is one), or a dash for the mode itself."""
    if row[f"diff_vs_{other}_pp"] == "":
        return "—"
    paired = row[f"paired_p_vs_{other}"]
    p = paired if paired != "" else row[f"welch_p_vs_{other}"]
    return f"{row[f'diff_vs_{other}_pp']:+.2f}, p = {p:.3g}"


def csv_text(report: Report) -> str:
    return _csv(report.rows())


def _csv(rows: list[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _publish(out_dir: Path, texts: dict[str, str], figures: dict, experiment_id: str,
             tags: dict, params: dict, metrics: dict[str, float],
             parent_run_id: str | None) -> str:
    """Stage ``texts`` and ``figures`` by file name, log them as one run's artifacts with
    ``metrics``, then move each into ``out_dir`` (each replaced atomically); the run's id."""
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged = Path(tmp)
        for name, text in texts.items():
            (staged / name).write_text(text)
        for name, figure in figures.items():
            figure.savefig(staged / name, dpi=120)
            plt.close(figure)
        with in_run(experiment_id, "report", tags, {**params, **source_info()},
                          parent_run_id) as run_id:
            client = mlflow_client()
            for path in sorted(staged.iterdir()):
                client.log_artifact(run_id, str(path))
            for key, value in metrics.items():
                client.log_metric(run_id, key, value)
        for path in staged.iterdir():
            os.replace(path, out_dir / path.name)  # each file appears whole or not at all
    return run_id


def write(report: Report, out_dir: Path, experiment_id: str,
          parent_run_id: str | None = None) -> tuple[Path, str]:
    """Write every file into ``out_dir`` (each replaced atomically) and log a report run."""
    from lgals.plots import comparison_figure, detection_figure, epsilon_figure

    labels = {mode: MODES[mode].label for mode in report.modes}
    finals = {labels[m]: 100 * np.array(list(r.final_acc.values()))
              for m, r in report.modes.items()}
    curves = {name: {labels[m]: r.curves[name] for m, r in report.modes.items()
                     if name in r.curves} for name in CURVES}
    claim = {labels[m]: CLAIM[m] for m in report.modes if m in CLAIM}
    lgals = report.modes.get("lgals")
    eps = (lgals.eps_counts, lgals.eps_edges) if lgals else None
    detectors = {DETECTORS[name]: curves[name] for name in DETECTORS if curves[name]}
    figures = {"comparison_plot.png": comparison_figure(finals, claim, curves),
               "epsilon_plot.png": epsilon_figure(eps, curves),
               "detection_plot.png": detection_figure(detectors)}
    params = {"evaluate_runs": ",".join(i for r in report.modes.values() for i in r.run_ids)}
    metrics = {f"{mode}.final_test_acc_mean_pct": row["final_test_acc_mean_pct"]
               for mode, row in zip(report.modes, report.rows())}
    run_id = _publish(out_dir, {"results.md": markdown(report), "results.csv": csv_text(report)},
                      figures, experiment_id, {"lgals.stage": "report", "lgals.mode": "all"},
                      params, metrics, parent_run_id)
    return out_dir, run_id


def report_from_mlflow(experiment_id: str, out: Path, parent_run_id: str | None = None,
                       suite: str = "paper", echo: Callable[[str], None] = print,
                       noise: Setting | None = None, repeats: int | None = None,
                       seeds: int | None = None) -> Report:
    """Collect the suite's modes, build, write and log the report; print its tables."""
    from lgals.errors import BadSetting

    modes = collect(experiment_id, suite, noise, repeats, seeds)
    if not modes:
        raise BadSetting("no finished evaluate runs in this experiment: run `lgals evaluate`")
    report = build(modes)
    report.diagnosis = collect_diagnosis(experiment_id)
    out_dir, run_id = write(report, out, experiment_id, parent_run_id)
    echo(markdown(report))
    skipped = unfinished(experiment_id)
    if skipped:
        echo(f"left out {sum(skipped.values())} evaluate runs that did not finish ("
             + ", ".join(f"{n} {status}" for status, n in sorted(skipped.items())) + ")")
    echo(f"report: {out_dir}/results.md, results.csv, comparison_plot.png, epsilon_plot.png, "
         f"detection_plot.png (MLflow run {run_id})")
    return report


# --- the noise sweep ---------------------------------------------------------------------

SWEEP_REFERENCES = ("baseline", "fixed_ls")  # the sweep table's verdict columns


def canonical(setting: Setting) -> Setting:
    """Where a setting's runs are: a rate of 0 flips nothing, so it runs once, symmetric."""
    return ("symmetric", 0.0) if setting[1] == 0 else setting


def sweep_rows(reports: dict[Setting, Report]) -> list[dict]:
    """One row per (setting, mode): mean final test accuracy with its hierarchical
    bootstrap 95% CI, and the difference to each reference with its p Holm-adjusted over
    every such comparison of the sweep (a rate of 0 shared by noise types counts once)."""
    family = {(canonical(setting), c.a, c.b): c for setting, report in reports.items()
              for c in report.comparisons if c.b in SWEEP_REFERENCES}
    adjusted = dict(zip(family, holm([c.p for c in family.values()])))
    rows = []
    for (noise_type, rate), report in reports.items():
        for mode, runs in report.modes.items():
            accs = 100 * runs.matrix()
            mean, low, high = hierarchical_bootstrap(accs)
            row = {"noise_type": noise_type, "noise_rate": rate, "mode": MODES[mode].label,
                   "n_repeats": accs.shape[0], "n_seeds": accs.shape[1],
                   "final_test_acc_mean_pct": mean, "ci95_low_pct": low, "ci95_high_pct": high}
            for other in SWEEP_REFERENCES:
                c = report.comparison(mode, other)
                holm_p = adjusted[(canonical((noise_type, rate)), mode, other)] if c else ""
                row[f"diff_vs_{other}_pp"] = c.diff_pp if c else ""
                row[f"p_vs_{other}"] = c.p if c else ""
                row[f"holm_p_vs_{other}"] = holm_p
                row[f"verdict_vs_{other}"] = _sweep_verdict(c.diff_pp, holm_p) if c else ""
            row["evaluate_runs"] = ",".join(runs.run_ids)
            rows.append(row)
    return rows


def _sweep_verdict(diff_pp: float, holm_p: float) -> str:
    if math.isnan(holm_p):
        return "not testable"
    if holm_p < ALPHA:
        return "better" if diff_pp > 0 else "worse"
    return "n.s."


def sweep_markdown(rows: list[dict]) -> str:
    family = sum(row[f"holm_p_vs_{other}"] != "" for row in rows for other in SWEEP_REFERENCES)
    lines = ["| Noise | rate | Mode | n | Final test acc. (%) | 95% CI (%) | vs Baseline "
             "| vs FixedLS |", "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        n = (str(row["n_seeds"]) if row["n_repeats"] == 1
             else f"{row['n_repeats']} × {row['n_seeds']}")
        versus = " | ".join(
            f"{row[f'diff_vs_{o}_pp']:+.2f} pp, Holm p = {row[f'holm_p_vs_{o}']:.3g}: "
            f"{row[f'verdict_vs_{o}']}" if row[f"diff_vs_{o}_pp"] != "" else "—"
            for o in SWEEP_REFERENCES)
        lines.append(f"| {row['noise_type']} | {100 * row['noise_rate']:g}% | {row['mode']} | "
                     f"{n} | {row['final_test_acc_mean_pct']:.2f} | "
                     f"[{row['ci95_low_pct']:.2f}, {row['ci95_high_pct']:.2f}] | {versus} |")
    return "\n".join([
        "# LGALS across noise settings", "",
        "Final test accuracy per noise setting and mode (n: seeds, or repetitions × seeds), "
        "with its hierarchical bootstrap 95% CI (repetitions, then seeds within them). Each "
        "mode is compared with Baseline and FixedLS on the runs both share: the mean paired "
        "difference and its p (paired t-test over seeds with one repetition, else a "
        "one-sample t-test on the repetition means), Holm-adjusted over all "
        f"{family} comparisons of this table; better / worse at α = {ALPHA}, else n.s. "
        "A rate of 0 flips no label: its runs are shared by every noise type.", "",
        *lines, ""])


def sweep_report(experiment_id: str, out: Path, settings: list[Setting], suite: str = "paper",
                 repeats: int | None = None, seeds: int | None = None,
                 parent_run_id: str | None = None,
                 echo: Callable[[str], None] = print) -> dict[Setting, Report]:
    """The sweep's table, csv and figure from MLflow: each setting's runs collected and
    compared as in the report, written to ``out`` and logged as a report run; the
    per-setting reports, in the settings' order (those without runs left out)."""
    from lgals.errors import BadSetting
    from lgals.plots import sweep_figure

    types = list(dict.fromkeys(noise_type for noise_type, _ in settings))
    if any(rate == 0 for _, rate in settings):  # the clean setting belongs to every type
        settings = [*settings, *((t, 0.0) for t in types)]
    settings = sorted(set(settings), key=lambda s: (types.index(s[0]), s[1]))
    found: dict[Setting, Report] = {}
    for setting in dict.fromkeys(map(canonical, settings)):
        modes = collect(experiment_id, suite, setting, repeats, seeds)
        if modes:
            found[setting] = build(modes)
        else:
            echo(f"no finished evaluate runs for {setting[0]} noise at rate {setting[1]:g}")
    reports = {s: found[canonical(s)] for s in settings if canonical(s) in found}
    if not reports:
        raise BadSetting("no finished evaluate runs for any setting: run the sweep first")
    rows = sweep_rows(reports)
    points: dict[str, dict[str, list]] = {}
    for row in rows:
        points.setdefault(row["noise_type"], {}).setdefault(row["mode"], []).append(
            (100 * row["noise_rate"], row["final_test_acc_mean_pct"], row["ci95_low_pct"],
             row["ci95_high_pct"]))
    text = sweep_markdown(rows)
    params = {"settings": ",".join(f"{t}-{r:g}" for t, r in settings), "suite": suite,
              "repeats": str(repeats), "seeds": str(seeds)}
    metrics = {f"{row['noise_type']}-{row['noise_rate']:g}.{row['mode']}"
               ".final_test_acc_mean_pct": row["final_test_acc_mean_pct"] for row in rows}
    run_id = _publish(out, {"sweep.md": text, "sweep.csv": _csv(rows)},
                      {"sweep_accuracy.png": sweep_figure(points)}, experiment_id,
                      {"lgals.stage": "report", "lgals.mode": "all", "lgals.sweep": "true"},
                      params, metrics, parent_run_id)
    echo(text)
    echo(f"sweep report: {out}/sweep.md, sweep.csv, sweep_accuracy.png (MLflow run {run_id})")
    return reports
