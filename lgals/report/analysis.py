"""The report's numbers: each mode's statistics, the comparisons between modes (paired where
they share runs, Holm-adjusted over the report), how well each score detects flipped labels,
and the claim card: a verdict on each of the note's claims."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from lgals.claim import (
    ACCURACY,
    ALIGNMENT_R_MIN,
    AUROC_CHANCE,
    COMPARISONS,
    CORRELATION,
    COST_RATIO_MAX,
    EPS_GAP_MIN,
    PROTOCOL,
)
from lgals.losses import MODES
from lgals.report.collect import DETECTORS, Diagnosis, ModeRuns
from lgals.statistics import (
    ALPHA,
    Variance,
    hierarchical_bootstrap,
    holm,
    minimum_detectable_difference,
    paired_test,
    probability_of_improvement,
    variance_components,
)

REFERENCES = ("baseline", "fixed_ls", "lgals")  # every other mode is compared with these


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
        claim = ACCURACY[self.a][0] - ACCURACY[self.b][0]
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
class Report:
    modes: dict[str, ModeRuns]
    comparisons: list[Comparison] = field(default_factory=list)
    diagnosis: Diagnosis | None = None

    @property
    def dataset(self) -> str:
        """What its runs trained on: one dataset (:func:`collect` never mixes them)."""
        return next(iter(self.modes.values())).dataset

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
            row["claim_mean_pct"], row["claim_std_pct"] = ACCURACY.get(mode, ("", ""))
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
        return variance, minimum_detectable_difference(variance, PROTOCOL.repeats,
                                                       PROTOCOL.seeds)


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
    return ACCURACY[c.a][0] - ACCURACY[c.b][0]


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
    claim = f"Logit-gradient alignment tracks weight-gradient alignment (r ≈ {CORRELATION})"
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
