"""The results report, rebuilt from MLflow alone: table, statistics, plots, cost.

Statistics are stated from our numbers: mean ± sample std over seeds, a t-based 95%
confidence interval, Welch's t-test between modes and, when both modes ran the same seeds,
a paired t-test. The claim's numbers stand beside ours, unchanged, for comparison only.
"""

from __future__ import annotations

import csv
import io
import math
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import stats

from lgals import tracking
from lgals.diagnose import NOTE_CORRELATION
from lgals.losses import MODES, SUITES
from lgals.statistics import ALPHA, holm

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


@dataclass
class ModeRuns:
    """One mode's latest evaluate run: per-seed final accuracy and per-epoch curves."""

    mode: str
    run_id: str
    n_stacked: int  # seeds trained in one stacked computation (epoch_seconds covers them all)
    final_acc: dict[int, float]  # seed -> final test accuracy (fraction)
    curves: dict[str, np.ndarray]  # name -> [seeds, epochs]
    eps_counts: np.ndarray | None = None  # [epochs, 2, bins], summed over seeds
    eps_edges: np.ndarray | None = None


@dataclass
class Comparison:
    a: str
    b: str
    diff_pp: float
    welch_p: float
    paired_p: float | None
    n_a: int
    n_b: int
    holm_p: float = math.nan  # adjusted over every comparison of the report (build sets it)
    family: int = 1  # how many comparisons the report makes

    @property
    def p(self) -> float:
        """The paired p-value when there is one, else Welch's."""
        return self.paired_p if self.paired_p is not None else self.welch_p

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
        test = "paired t-test" if self.paired_p is not None else "Welch's t-test"
        claim = CLAIM[self.a][0] - CLAIM[self.b][0]
        return (f"{label} = {self.diff_pp:+.2f} pp, {test} p = {self.p:.3g} "
                f"(Welch p = {self.welch_p:.3g}; {self.adjusted()}): {self.significance()} at "
                f"n = {self.n_a} vs {self.n_b} (the claim: {claim:+.2f} pp)")

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
            accs = 100 * np.array(list(runs.final_acc.values()))
            mean, std, (lo, hi) = summary_stats(accs)
            row = {"mode": MODES[mode].label, "n_seeds": len(accs),
                   "final_test_acc_mean_pct": mean, "final_test_acc_std_pct": std,
                   "ci95_low_pct": lo, "ci95_high_pct": hi}
            row["family"] = MODES[mode].family
            for other in REFERENCES:
                c = self.comparison(mode, other)
                row[f"diff_vs_{other}_pp"] = c.diff_pp if c else ""
                row[f"welch_p_vs_{other}"] = c.welch_p if c else ""
                row[f"paired_p_vs_{other}"] = c.paired_p if c and c.paired_p is not None else ""
            row["claim_mean_pct"], row["claim_std_pct"] = CLAIM.get(mode, ("", ""))
            cost = self.cost_per_epoch(mode)
            row["seconds_per_epoch_per_seed"] = cost
            row["cost_vs_baseline"] = cost / base_cost if base_cost else ""
            rows.append(row)
        return rows

    def comparison(self, a: str, b: str) -> Comparison | None:
        return next((c for c in self.comparisons if (c.a, c.b) == (a, b)), None)

    def cost_per_epoch(self, mode: str) -> float | None:
        runs = self.modes.get(mode)
        if runs is None or "epoch_seconds" not in runs.curves:
            return None
        # epoch_seconds is the wall time of the whole stack; every seed run logs the same.
        return float(np.mean(runs.curves["epoch_seconds"][0]) / runs.n_stacked)


def summary_stats(values: np.ndarray) -> tuple[float, float, tuple[float, float]]:
    """Mean, sample standard deviation and t-based 95% confidence interval."""
    n = len(values)
    mean = float(np.mean(values))
    if n < 2:
        return mean, float("nan"), (float("nan"), float("nan"))
    std = float(np.std(values, ddof=1))
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * std / math.sqrt(n))
    return mean, std, (mean - half, mean + half)


def compare(a: ModeRuns, b: ModeRuns) -> Comparison:
    """Welch's t-test always; a paired t-test when both modes ran exactly the same seeds."""
    xa = 100 * np.array(list(a.final_acc.values()))
    xb = 100 * np.array(list(b.final_acc.values()))
    welch = (stats.ttest_ind(xa, xb, equal_var=False).pvalue
             if len(xa) > 1 and len(xb) > 1 else float("nan"))
    paired = None
    if set(a.final_acc) == set(b.final_acc) and len(xa) > 1:
        seeds = sorted(a.final_acc)
        paired = float(stats.ttest_rel([a.final_acc[s] for s in seeds],
                                       [b.final_acc[s] for s in seeds]).pvalue)
    comparison = Comparison(a.mode, b.mode, float(xa.mean() - xb.mean()), float(welch), paired,
                            len(xa), len(xb))
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
    """Per detector and mode: the best AUROC over epochs (mean over seeds) and its epoch."""
    table: dict[str, dict[str, tuple[float, int]]] = {}
    for name in DETECTORS:
        for mode, runs in modes.items():
            if name in runs.curves:
                mean = runs.curves[name].mean(axis=0)
                best = int(np.argmax(mean))
                table.setdefault(name, {})[mode] = (float(mean[best]), best + 1)
    return table


# --- collecting from MLflow ----------------------------------------------------------------

def collect(experiment_id: str, suite: str = "paper") -> dict[str, ModeRuns]:
    """Each of the suite's modes' latest finished evaluate run and its seed runs, from MLflow
    only."""
    client = tracking.mlflow_client()
    query = "tags.`lgals.stage` = 'evaluate' and attributes.status = 'FINISHED'"
    runs = client.search_runs([experiment_id], query, order_by=["attributes.start_time DESC"],
                              max_results=500)
    modes = {}
    for mode in SUITES[suite]:
        parent = next((r for r in runs if r.data.tags.get("lgals.mode") == mode
                       and "lgals.seed" not in r.data.tags), None)
        if parent is None:
            continue
        children = sorted((r for r in runs
                           if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
                          key=lambda r: int(r.data.tags["lgals.seed"]))
        children = [r for r in children if "final_test_acc" in r.data.metrics]
        if children:
            modes[mode] = _mode_runs(client, mode, parent, children)
    return modes


DIAGNOSIS_KEYS = ("all.pearson", "layer1.pearson", "layer2.pearson", "layer3.pearson",
                  "weight.layer3", "auroc.alignment", "auroc.weight_alignment")


def collect_diagnosis(experiment_id: str) -> Diagnosis | None:
    """The latest finished diagnose run's statistics per checkpoint, if there is one."""
    client = tracking.mlflow_client()
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
    runs = tracking.mlflow_client().search_runs(
        [experiment_id], "tags.`lgals.stage` = 'evaluate' and attributes.status != 'FINISHED'",
        max_results=1000)
    return dict(Counter(run.info.status for run in runs))


def _mode_runs(client, mode: str, parent, children) -> ModeRuns:
    curves = {}
    for key in CURVES:
        histories = [[m.value for m in sorted(client.get_metric_history(r.info.run_id, key),
                                              key=lambda m: m.step)] for r in children]
        if all(histories) and len({len(h) for h in histories}) == 1:
            curves[key] = np.array(histories)
    vary_noise = parent.data.params.get("vary_noise", "False") == "True"
    runs = ModeRuns(mode, parent.info.run_id, 1 if vary_noise else len(children),
                    {int(r.data.tags["lgals.seed"]): r.data.metrics["final_test_acc"]
                     for r in children}, curves)
    with tempfile.TemporaryDirectory() as tmp:
        counts = []
        for r in children:
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
            f"| {row['mode']} | {row['n_seeds']} | {_accuracy_cells(row)} | "
            f"{_versus_cell(row, 'baseline')} | {_versus_cell(row, 'fixed_ls')} | "
            f"{row['claim_mean_pct']:.2f} ± {row['claim_std_pct']:.2f} | {_cost_cells(row)} |")
    verdicts = [f"- {c.verdict()}" for c in report.comparisons if (c.a, c.b) in COMPARISONS]
    return "\n".join([
        "# LGALS on mnist1d with noisy labels: our measurement", "",
        "Final test accuracy after the last epoch, per mode over seeds. p-values: paired "
        "t-test when both modes ran the same seeds, else Welch's t-test; the tables show them "
        "as computed, and every verdict is stated at α = 0.05 on the p-value Holm-adjusted "
        "over all the comparisons this report makes. "
        "The claim's numbers are copied from the note under test (summarised in lgals' "
        "docs/claim.md), not measured here.", "",
        *lines, "", "## Verdicts", "", *verdicts, "",
        *_other_modes(report, rows), *_detection_section(report),
        *_diagnosis_section(report.diagnosis),
        "Cost: wall seconds per epoch of one seed (the stacked run's epoch time / seeds).", "",
    ])


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
    lines = ["## Which per-sample score detects the flipped labels?", "",
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
    lines = ["## Does s_i track the weight-gradient alignment?", "",
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
    rows = report.rows()
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def write(report: Report, out_dir: Path, experiment_id: str,
          parent_run_id: str | None = None) -> tuple[Path, str]:
    """Write every file into ``out_dir`` (each replaced atomically) and log a report run."""
    import matplotlib.pyplot as plt

    from lgals.plots import comparison_figure, detection_figure, epsilon_figure

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        staged = Path(tmp)
        (staged / "results.md").write_text(markdown(report))
        (staged / "results.csv").write_text(csv_text(report))
        labels = {mode: MODES[mode].label for mode in report.modes}
        finals = {labels[m]: 100 * np.array(list(r.final_acc.values()))
                  for m, r in report.modes.items()}
        curves = {name: {labels[m]: r.curves[name] for m, r in report.modes.items()
                         if name in r.curves} for name in CURVES}
        claim = {labels[m]: CLAIM[m] for m in report.modes if m in CLAIM}
        lgals = report.modes.get("lgals")
        eps = (lgals.eps_counts, lgals.eps_edges) if lgals else None
        detectors = {DETECTORS[name]: curves[name] for name in DETECTORS if curves[name]}
        for name, figure in (("comparison_plot.png", comparison_figure(finals, claim, curves)),
                             ("epsilon_plot.png", epsilon_figure(eps, curves)),
                             ("detection_plot.png", detection_figure(detectors))):
            figure.savefig(staged / name, dpi=120)
            plt.close(figure)
        tags = {"lgals.stage": "report", "lgals.mode": "all"}
        params = {"evaluate_runs": ",".join(r.run_id for r in report.modes.values()),
                  **tracking.source_info()}
        with tracking.run(experiment_id, "report", tags, params, parent_run_id) as run_id:
            client = tracking.mlflow_client()
            for path in sorted(staged.iterdir()):
                client.log_artifact(run_id, str(path))
            for row, mode in zip(report.rows(), report.modes):
                client.log_metric(run_id, f"{mode}.final_test_acc_mean_pct",
                                  row["final_test_acc_mean_pct"])
        for path in staged.iterdir():
            os.replace(path, out_dir / path.name)  # each file appears whole or not at all
    return out_dir, run_id


def report_from_mlflow(experiment_id: str, out: Path, parent_run_id: str | None = None,
                       suite: str = "paper", echo=print) -> Report:
    """Collect the suite's modes, build, write and log the report; print its tables."""
    from lgals.errors import BadSetting

    modes = collect(experiment_id, suite)
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
