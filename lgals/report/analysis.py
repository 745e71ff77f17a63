"""The report's numbers: each mode's statistics, the comparisons between modes (paired where
they share runs, Holm-adjusted over the report), how well each score detects flipped labels,
and the claim card: a verdict on each claim of a :class:`~lgals.claim.Claim`, with the
interval method and the selection rule it rests on."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy import stats

from lgals.claim import Claim, note
from lgals.losses import MODES
from lgals.report.collect import DETECTORS, Diagnosis, ModeRuns
from lgals.statistics import (
    ALPHA,
    T_COVERAGE,
    Variance,
    holm,
    minimum_detectable_difference,
    paired_test,
    probability_of_improvement,
    t_interval,
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
    ci: tuple[float, float] = (math.nan, math.nan)  # t over the paired units (t_interval)
    p_improve: float = math.nan  # P(A > B) over the paired runs
    n_repeats: int = 1  # repetitions in the paired test
    n_seeds: int = 0  # seeds per repetition in the paired test
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

    def verdict(self, claim: Claim) -> str:
        label = f"{MODES[self.a].label} − {MODES[self.b].label}"
        return (f"{label} = {self.diff_pp:+.2f} pp{self.interval()}, {self.test} p = "
                f"{self.p:.3g} (Welch p = {self.welch_p:.3g}; {self.adjusted()}): "
                f"{self.significance()} at n = {self.n_a} vs {self.n_b} (the claim: "
                f"{_size(claim.claimed(self.a, self.b))})")

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


def _size(claimed: float | None) -> str:
    return f"{claimed:+.2f} pp" if claimed is not None else "no size claimed"


@dataclass
class Report:
    modes: dict[str, ModeRuns]
    comparisons: list[Comparison] = field(default_factory=list)
    diagnosis: Diagnosis | None = None
    claim: Claim = field(default_factory=note)

    def references(self) -> tuple[str, ...]:
        """The modes every row states its difference to: the usual references and each mode
        the claim asserts another beats."""
        return tuple(dict.fromkeys([*REFERENCES, *(b for _, b in self.claim.orderings)]))

    @property
    def dataset(self) -> str:
        """What its runs trained on: one dataset (:func:`collect` never mixes them)."""
        return next(iter(self.modes.values())).dataset

    @property
    def precision(self) -> str:
        """Of its runs' matrix products: one precision (:func:`collect` never mixes them)."""
        return next(iter(self.modes.values())).precision

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
            for other in self.references():
                c = self.comparison(mode, other)
                row[f"diff_vs_{other}_pp"] = c.diff_pp if c else ""
                row[f"welch_p_vs_{other}"] = c.welch_p if c else ""
                row[f"paired_p_vs_{other}"] = c.paired_p if c and c.paired_p is not None else ""
                row[f"holm_p_vs_{other}"] = c.holm_p if c else ""
                row[f"diff_ci95_low_vs_{other}_pp"] = c.ci[0] if c else ""
                row[f"diff_ci95_high_vs_{other}_pp"] = c.ci[1] if c else ""
                row[f"p_improve_vs_{other}"] = c.p_improve if c else ""
            claimed = self.claim.accuracy.get(mode, ("", ""))
            row["claim_mean_pct"], row["claim_std_pct"] = claimed
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
        difference the claim's protocol detects with them; None below two repetitions (the
        repetitions' variance is then not estimable)."""
        if a not in self.modes or b not in self.modes:
            return None
        xa, xb = paired(self.modes[a], self.modes[b])
        if len(xa) < 2:
            return None
        variance = variance_components(xa - xb)
        protocol = self.claim.protocol
        return variance, minimum_detectable_difference(variance, protocol.repeats,
                                                       protocol.seeds)


def mode_stats(values: np.ndarray) -> tuple[float, float, tuple[float, float]]:
    """Mean and std over all runs of ``values [R, S]``, and the t-based 95% interval over
    the independent units: the seeds of one repetition, else the repetition means."""
    mean, low, high = t_interval(values)
    std = float(np.std(values, ddof=1)) if values.size > 1 else math.nan
    return mean, std, (low, high)


def compare(a: ModeRuns, b: ModeRuns) -> Comparison:
    """Welch's t-test over all runs always; on the runs both modes share, the paired
    differences' mean, t interval over the units, P(A > B) and paired test."""
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
        mean, low, high = t_interval(diff)
        comparison.diff_pp, comparison.ci = mean, (low, high)
        comparison.n_repeats, comparison.n_seeds = diff.shape
        comparison.paired_p = paired_test(diff)
        comparison.p_improve = probability_of_improvement(pa, pb)
    comparison.holm_p = comparison.p  # alone, a comparison is its own family
    return comparison


def build(modes: dict[str, ModeRuns], claim: Claim | None = None) -> Report:
    """The claim's orderings (default: the note's), then every other mode against each
    reference mode (a pair the claim orders, once). A claim's accuracies are its dataset's:
    on another dataset its orderings are tested, with no claimed numbers beside them."""
    claim = claim or note()
    if next(iter(modes.values())).dataset != claim.dataset:
        claim = replace(claim, accuracy={})
    claimed = list(claim.orderings)
    pairs = claimed + [(mode, reference) for mode in modes if mode not in REFERENCES
                       for reference in REFERENCES
                       if (mode, reference) not in claimed and (reference, mode) not in claimed]
    comparisons = [compare(modes[a], modes[b]) for a, b in pairs if a in modes and b in modes]
    for comparison, adjusted in zip(comparisons, holm([c.p for c in comparisons])):
        comparison.holm_p, comparison.family = adjusted, len(comparisons)
    return Report(modes, comparisons, claim=claim)


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


# --- the claim card: a verdict on each claim, and what the verdicts rest on ---------------

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
# Section titles the claim card points to.
VERDICTS = "Verdicts"
POWER_SECTION = "Could the claim's protocol detect the differences it claims?"
DETECTION_SECTION = "Which per-sample score detects the flipped labels?"
DIAGNOSIS_SECTION = "Does s_i track the weight-gradient alignment?"


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim, our verdict on it, the numbers and where they come from."""

    claim: str
    status: str
    evidence: str
    where: str

    def line(self, number: int) -> str:
        return f"{number}. **{self.claim}: {self.status}.** {self.evidence} ({self.where})"


def claim_ordering(report: Report, a: str, b: str) -> ClaimVerdict:
    """A beats B: supported when A − B is significantly positive after Holm; not supported
    when it is significantly negative or its 95% CI excludes the claimed difference."""
    claim = f"{MODES[a].label} beats {MODES[b].label}"
    where = f"see “{VERDICTS}”"
    c = report.comparison(a, b)
    if c is None:
        return ClaimVerdict(claim, INCONCLUSIVE, f"Needs {MODES[a].label} and "
                            f"{MODES[b].label} evaluated.", where)
    claimed = report.claim.claimed(a, b)
    evidence = _step(report, c, claimed) + "."
    outside = (claimed is not None and not math.isnan(c.ci[0])
               and not c.ci[0] <= claimed <= c.ci[1])
    if c.holm_p < ALPHA and c.diff_pp > 0:
        size = f" The claimed {claimed:+.2f} pp lies outside its 95% CI." if outside else ""
        return ClaimVerdict(claim, SUPPORTED, f"{evidence} Significant after Holm, in the "
                            f"claimed direction.{size}", where)
    if c.holm_p < ALPHA:
        return ClaimVerdict(claim, NOT_SUPPORTED, f"{evidence} Significantly reversed after "
                            "Holm.", where)
    if outside:
        return ClaimVerdict(claim, NOT_SUPPORTED, f"{evidence} Its 95% CI excludes the claimed "
                            f"{claimed:+.2f} pp.", where)
    return ClaimVerdict(claim, INCONCLUSIVE, f"{evidence} Not significant after Holm, and "
                        "nothing measured contradicts it.", where)


def _step(report: Report, c: Comparison, claimed: float | None) -> str:
    """A − B with its CI, P(A > B), Holm's p and, from two repetitions on, the smallest
    difference the claim's protocol detects."""
    interval = (f"[95% CI {c.ci[0]:+.2f}, {c.ci[1]:+.2f}]" if not math.isnan(c.ci[0])
                else "[no paired CI]")
    a, b = MODES[c.a].label, MODES[c.b].label
    text = (f"{a} − {b} = {c.diff_pp:+.2f} pp {interval} (claimed "
            f"{'none' if claimed is None else f'{claimed:+.2f}'}), P({a} > {b}) = "
            f"{c.p_improve:.2f}, Holm p = {c.holm_p:.3g}")
    found = report.detectable(c.a, c.b)
    if found is not None:
        protocol = report.claim.protocol
        text += (f"; the claim's protocol ({protocol.repeats} × {protocol.seeds}) detects "
                 f"{found[1]:.2f} pp or more")
    return text


def claim_mechanism(report: Report) -> ClaimVerdict:
    """Flipped labels have low s_i (AUROC of 1 − s_i above the claim's bar) and so get more
    ε (the gap above its bar), in the claim's mode's runs."""
    detection = report.claim.detection
    label = MODES[detection.mode].label
    claim = f"Noisy samples get misaligned logit gradients, so {label} smooths them more"
    where = f"see “{DETECTION_SECTION}” and epsilon_plot.png"
    runs = report.modes.get(detection.mode)
    names = ("noise_auroc", "eps_noisy_mean", "eps_clean_mean")
    if runs is None or any(name not in runs.curves for name in names):
        return ClaimVerdict(claim, INCONCLUSIVE, f"{label}'s runs logged no AUROC or ε curves "
                            f"of flipped labels (none flipped, or no {label} runs).", where)
    auroc = runs.curve_matrix("noise_auroc")
    gap = runs.curve_matrix("eps_noisy_mean") - runs.curve_matrix("eps_clean_mean")
    if not (np.isfinite(auroc).all() and np.isfinite(gap).all()):
        return ClaimVerdict(claim, INCONCLUSIVE, "No flipped labels to detect in these runs.",
                            where)
    a_mean, a_low, a_high = t_interval(auroc)
    g_mean, g_low, g_high = t_interval(gap)
    chance, gap_min = detection.auroc_above, detection.eps_gap_above
    evidence = (f"In {label}'s runs (mean over epochs), the AUROC of 1 − s_i for flipped labels "
                f"is {a_mean:.3f} [95% CI {a_low:.3f}, {a_high:.3f}] and ε(noisy) − ε(clean) "
                f"= {g_mean:+.4f} [95% CI {g_low:+.4f}, {g_high:+.4f}].")
    if a_low > chance and g_low > gap_min:
        return ClaimVerdict(claim, SUPPORTED, f"{evidence} Flipped labels are less aligned and "
                            "get more smoothing.", where)
    if not a_low > chance:  # a NaN bound (one unit) supports nothing
        place = "lies below" if a_high < chance else "contains"
        return ClaimVerdict(claim, NOT_SUPPORTED, f"{evidence} The AUROC's CI {place} "
                            f"{chance}: s_i does not single out flipped labels.", where)
    return ClaimVerdict(claim, INCONCLUSIVE, f"{evidence} s_i detects flipped labels, but "
                        f"their extra ε is not above {gap_min}.", where)


def claim_alignment(report: Report) -> ClaimVerdict:
    """s_i stands in for the weight-gradient alignment: r at least the claim's r_min at every
    checkpoint of the latest diagnose run."""
    alignment = report.claim.alignment
    claim = ("Logit-gradient alignment tracks weight-gradient alignment "
             f"(r ≈ {alignment.correlation})")
    where = f"see “{DIAGNOSIS_SECTION}”"
    diagnosis, r_min = report.diagnosis, alignment.r_min
    if diagnosis is None or not diagnosis.values["all.pearson"]:
        return ClaimVerdict(claim, INCONCLUSIVE, "Not measured: run `lgals diagnose`.", where)
    r = diagnosis.values["all.pearson"]
    evidence = (f"Pearson's r over {len(r)} checkpoints: all layers {_range(r)} (layer1 "
                f"{_range(diagnosis.values['layer1.pearson'])}, layer3 "
                f"{_range(diagnosis.values['layer3.pearson'])}).")
    if min(r.values()) >= r_min:
        return ClaimVerdict(claim, SUPPORTED, f"{evidence} Every checkpoint reaches {r_min}.",
                            where)
    if max(r.values()) < r_min:
        return ClaimVerdict(claim, NOT_SUPPORTED, f"{evidence} No checkpoint reaches {r_min}.",
                            where)
    return ClaimVerdict(claim, INCONCLUSIVE, f"{evidence} Some checkpoints reach {r_min}, some "
                        "do not.", where)


def _range(values: dict[int, float]) -> str:
    return f"{min(values.values()):.3f}–{max(values.values()):.3f}" if values else "—"


def claim_cost(report: Report) -> ClaimVerdict:
    """The claim's mode's seconds per epoch at most ratio_max times its reference's."""
    cost = report.claim.cost
    label, reference = MODES[cost.mode].label, MODES[cost.reference].label
    claim = f"{label} adds negligible cost"
    where = "see the cost columns of the table below"
    mine, theirs = report.cost_per_epoch(cost.mode), report.cost_per_epoch(cost.reference)
    if not mine or not theirs:
        return ClaimVerdict(claim, INCONCLUSIVE, f"No epoch_seconds for {label} and "
                            f"{reference}.", where)
    ratio = mine / theirs
    evidence = (f"{label} takes {mine:.4f} s per epoch per seed, {ratio:.2f}x {reference}'s "
                f"{theirs:.4f} s")
    if ratio <= cost.ratio_max:
        return ClaimVerdict(claim, SUPPORTED, f"{evidence}, within {cost.ratio_max:.2f}x.",
                            where)
    return ClaimVerdict(claim, NOT_SUPPORTED, f"{evidence}, above {cost.ratio_max:.2f}x.",
                        where)


def claim_card(report: Report) -> list[ClaimVerdict]:
    """A verdict per ordering the claim asserts, then per mechanism claim it makes."""
    claim = report.claim
    return [*(claim_ordering(report, a, b) for a, b in claim.orderings),
            *([claim_mechanism(report)] if claim.detection else []),
            *([claim_alignment(report)] if claim.alignment else []),
            *([claim_cost(report)] if claim.cost else [])]


def interval_method(report: Report) -> str:
    """What the card's intervals are, over which units, and how often they hold at this size
    by simulation (:data:`lgals.statistics.T_COVERAGE`)."""
    card = [report.comparison(a, b) for a, b in report.claim.orderings]
    designs = dict.fromkeys((c.n_repeats, c.n_seeds) for c in card
                            if c is not None and c.paired_p is not None)
    if not designs:
        return ("No ordering the claim asserts pairs runs, so none has a CI: p is Welch's "
                "t-test.")
    also = " (and those of the AUROC and ε gap)" if report.claim.detection else ""
    methods = "; ".join(_units(r, s) for r, s in designs)
    return (f"Each difference's 95% CI{also} is a Student t interval over {methods} "
            "(benchmarks/interval_coverage.py). It is the interval of the t-test beside it: the "
            f"CI excludes 0 exactly when that test's p < {ALPHA}. Verdicts are stated at "
            f"α = {ALPHA} on p Holm-adjusted over the report's {len(report.comparisons)} "
            "comparisons, so a CI that excludes 0 may still be not significant. P(A > B) is "
            "the share of paired runs in which A beat B, ties counting half: counted, not "
            "bootstrapped.")


def _units(repeats: int, seeds: int) -> str:
    """The units of one size and the t interval's simulated coverage there."""
    size = f"{repeats} × {seeds}"
    coverage = T_COVERAGE.get((repeats, seeds))
    if repeats == 1:
        units = f"the {seeds} paired seed differences (one repetition: its seeds are the units)"
        if coverage is None:
            return f"{units}; exact for normal units, not simulated at {size}"
        return (f"{units}; by simulation at {size} it covers the mean for this repetition's "
                f"noise draw, split and tuning {_span(coverage.given_draws)} of the time, and "
                f"the mean over draws only {_span(coverage.over_draws)}: one repetition "
                "speaks for its own draw")
    units = (f"the {repeats} repetition means of the paired differences (a repetition's "
             f"{seeds} seeds share its noise draw, split and tuning)")
    if coverage is None:
        return f"{units}; exact for normal units, not simulated at {size}"
    return (f"{units}; by simulation at {size} it covers the mean over noise draws, splits "
            f"and tunings {_span(coverage.over_draws)} of the time")


def _span(values: tuple[float, float]) -> str:
    low, high = (f"{100 * value:.1f}" for value in values)
    return f"{low}%" if low == high else f"{low}–{high}%"


def selection_rule(report: Report) -> str:
    """Which epoch's accuracy the card reports, how the hyperparameters were chosen and on
    which split, and how many trials, repetitions and seeds: from the runs used."""
    final = {mode: {s.epochs for s in runs.selections if s.epochs is not None}
             for mode, runs in report.modes.items()}
    picked = [f"{MODES[m].label} {_spread(e)}" for m, e in final.items()
              if MODES[m].picks_epochs and e]
    fixed = set().union(*(e for m, e in final.items() if not MODES[m].picks_epochs))
    epochs = (f"{_spread(fixed)} epochs" if fixed else "epochs not logged") + (
        f"; {', '.join(picked)}, as many as its tuning picked" if picked else "")
    shapes = dict.fromkeys(runs.matrix().shape for runs in report.modes.values())
    size = "; ".join(f"{r} repetition{'s' * (r > 1)} × {s} seeds" for r, s in shapes)
    return (f"Each run's test accuracy after its last epoch ({epochs}), never its best "
            f"epoch's. Hyperparameters: {_tuning(report)}. Runs per mode: {size}; a "
            "repetition has its own noise draw, validation split and tuning.")


def _tuning(report: Report) -> str:
    """Where the hyperparameters came from, as the runs logged it."""
    selections = [(m, s) for m, runs in report.modes.items() for s in runs.selections]
    tuned = [s for _, s in selections if s.source == "tune"]
    other = {f"{MODES[m].label}'s " + (f"from {s.source}" if s.source else "not recorded")
             for m, s in selections if s.source != "tune"}
    picking = dict.fromkeys(MODES[m].label for m, s in selections
                            if s.source == "tune" and MODES[m].picks_epochs)
    parts = []
    if tuned:
        trials = {s.n_trials for s in tuned if s.n_trials is not None}
        shares = {f"{s.val_fraction:.0%}" for s in tuned if s.val_fraction is not None}
        labels = {s.val_labels or "noisy" for s in tuned}
        best = f" ({', '.join(picking)}: its best epoch's)" if picking else ""
        parts.append(
            f"Optuna, {_spread(trials)} trials per mode and repetition, each scored by its "
            f"last epoch's accuracy{best} on a stratified validation split of "
            f"{_spread(shares)} of the noisy training set with its "
            f"{' or '.join(sorted(labels))} labels (never the test set), then retrained on "
            "the full noisy training set")
    parts += sorted(other)
    return "; ".join(parts) or "not recorded by these runs"


def _spread(values: set) -> str:
    """One value, or the lowest and highest."""
    if not values:
        return "?"
    ordered = sorted(values)
    return str(ordered[0]) if len(ordered) == 1 else f"{ordered[0]}–{ordered[-1]}"
