"""The report as text: results.md (the claim card, then the tables and sections it points
to) and results.csv."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from lgals.losses import MODES
from lgals.report.analysis import (
    DETECTION_SECTION,
    DIAGNOSIS_SECTION,
    POWER_SECTION,
    VERDICTS,
    Report,
    claim_card,
    detection,
    interval_method,
    selection_rule,
)
from lgals.report.collect import DETECTORS, DIAGNOSIS_KEYS
from lgals.statistics import ALPHA, POWER, Variance

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


def markdown(report: Report) -> str:
    claim = report.claim
    rows = dict(zip(report.modes, report.rows()))
    versus = list(dict.fromkeys(b for _, b in claim.orderings))
    lines = ["| Mode | n | Final test acc. (%) mean ± std | 95% CI (%) | "
             + "".join(f"vs {MODES[b].label} (pp, p) | " for b in versus)
             + "Claim (%) | s/epoch/seed | cost vs Baseline |",
             "|---" * (7 + len(versus)) + "|"]
    for mode in claim.modes:
        if mode not in rows:
            continue
        row = rows[mode]
        lines.append(
            f"| {row['mode']} | {_n_cell(row)} | {_accuracy_cells(row)} | "
            + "".join(f"{_versus_cell(row, b)} | " for b in versus)
            + f"{_claim_cell(row)} | {_cost_cells(row)} |")
    verdicts = [f"- {c.verdict(claim)}" for c in report.comparisons
                if (c.a, c.b) in claim.orderings]
    card = [v.line(number) for number, v in enumerate(claim_card(report), 1)]
    noise = claim.protocol.noise
    return "\n".join([
        f"# Claims of {claim.name}"
        + (f" (made on {claim.dataset})" if claim.dataset != report.dataset else "")
        + f" on {report.dataset} with {noise.noise_rate:.0%} "
        f"{noise.noise_type} label noise: our measurement"
        + ("" if report.precision == "fp32" else
           f" ({report.precision} matrix products, float32 elsewhere)"), "",
        "## The claim card", "", *card, "",
        f"**Intervals.** {interval_method(report)}", "",
        f"**Selection.** {selection_rule(report)}", "",
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
        f"The claim's numbers are copied from {claim.name}'s claim file "
        f"({Path(claim.path).name}), not measured here.", "",
        *lines, "", f"## {VERDICTS}", "",
        "Differences with their Student t 95% CI over the independent units (the seeds of "
        "one repetition, else the repetition means) and P(A > B) over the paired runs.", "",
        *verdicts, "",
        *_variance_section(report, rows), *_power_section(report),
        *_other_modes(report, rows), *_detection_section(report),
        *_diagnosis_section(report),
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
    """The smallest difference the claim's protocol detects, beside the differences it
    claims."""
    claim = report.claim
    repeats, seeds = claim.protocol.repeats, claim.protocol.seeds
    protocol = f"{repeats} repetition{'s' * (repeats > 1)} × {seeds} seeds"
    lines = [f"## {POWER_SECTION}", ""]
    found = {(a, b): report.detectable(a, b) for a, b in claim.orderings}
    if all(value is None for value in found.values()):
        return [*lines, "With one repetition the variance between repetitions (noise draw, "
                "split, tuning) is not estimable, so neither is the smallest difference the "
                f"claim's protocol ({protocol}) detects: that needs two repetitions or more.",
                ""]
    lines += [f"Minimum detectable difference (MDD) of the claim's protocol ({protocol}) at "
              f"α = {ALPHA} with {POWER:.0%} power, from the variance components (pp²) of "
              "each comparison's paired differences.", "",
              "| Comparison | between repetitions | between seeds | MDD (pp) | claimed (pp) |",
              "|---|---|---|---|---|"]
    answers = []
    for (a, b), value in found.items():
        if value is None:
            continue
        variance, mdd = value
        gain = claim.claimed(a, b)
        label = f"{MODES[a].label} − {MODES[b].label}"
        lines.append(f"| {label} | {variance.repeat:.3f} | {variance.seed:.3f} | {mdd:.2f} | "
                     + ("— |" if gain is None else f"{gain:+.2f} |"))
        if gain is not None:
            answer = (f"could have detected it (power at least {POWER:.0%})" if gain >= mdd
                      else f"could not reliably have detected it (power below {POWER:.0%})")
            answers += [f"The claim's protocol detects an {label} difference of {mdd:.2f} pp "
                        f"or more; its claimed gain is {gain:.2f} pp ({MODES[a].label} "
                        f"{claim.accuracy[a].mean} − {MODES[b].label} "
                        f"{claim.accuracy[b].mean}), so it {answer}.", ""]
    return [*lines, "", *answers]


def _other_modes(report: Report, rows: dict[str, dict]) -> list[str]:
    """The ablations and peers: every mode against the three references, and what each
    comparison answers, in words."""
    if set(report.modes) <= set(report.claim.modes):
        return []
    references = report.references()
    lines = [f"## Every mode against {_names(references)}", "",
             "| Mode | family | n | Final test acc. (%) mean ± std | 95% CI (%) | "
             + "".join(f"vs {MODES[r].label} (pp, p) | " for r in references)
             + "s/epoch/seed | cost vs Baseline |", "|---" * (7 + len(references)) + "|"]
    for row in rows.values():
        versus = " | ".join(_versus_cell(row, other) for other in references)
        lines.append(f"| {row['mode']} | {row['family']} | {row['n_seeds']} | "
                     f"{_accuracy_cells(row)} | {versus} | {_cost_cells(row)} |")
    answers = [f"- {report.comparison(mode, reference).answer(question)}"
               for mode, reference, question in QUESTIONS
               if report.comparison(mode, reference) is not None]
    return [*lines, "", "## What the controls and peers say", "", *answers, ""]


def _detection_section(report: Report) -> list[str]:
    """How well each per-sample score finds the flipped labels, and when."""
    table = detection(report.modes)
    if report.claim.detection is None or not table:
        return []
    modes = [m for m in report.modes if m in report.claim.modes]
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


def _diagnosis_section(report: Report) -> list[str]:
    """The claim's correlation (the note's ~0.75) beside what ``lgals diagnose`` measured,
    layer by layer."""
    diagnosis, alignment = report.diagnosis, report.claim.alignment
    if alignment is None or diagnosis is None or not diagnosis.values["all.pearson"]:
        return []
    v = diagnosis.values
    lines = [f"## {DIAGNOSIS_SECTION}", "",
             f"Pearson's r between each sample's logit-gradient cosine s_i and its "
             f"weight-gradient cosine (to the batch mean), from `lgals diagnose` run "
             f"{diagnosis.run_id} ({diagnosis.mode}); {report.claim.name} says "
             f"{alignment.correlation}.", "",
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


def _names(modes: tuple[str, ...]) -> str:
    """"Baseline, FixedLS and LGALS"."""
    labels = [MODES[m].label for m in modes]
    return ", ".join(labels[:-1]) + f" and {labels[-1]}" if len(labels) > 1 else labels[0]


def _claim_cell(row: dict) -> str:
    if row["claim_mean_pct"] == "":
        return "—"
    return f"{row['claim_mean_pct']:.2f} ± {row['claim_std_pct']:.2f}"


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
    return csv_rows(report.rows())


def csv_rows(rows: list[dict]) -> str:
    """``rows`` as CSV, a column per key of the first."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
