"""The noise sweep's report: every setting's runs collected and compared as in the report,
one table (sweep.md, sweep.csv) Holm-adjusted over the whole sweep, one figure, one report
run."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from lgals.data import NoiseRecipe
from lgals.errors import BadSetting
from lgals.losses import MODES, SUITES
from lgals.plots import sweep_figure
from lgals.report.analysis import Report, build
from lgals.report.collect import collect
from lgals.report.publish import publish
from lgals.report.render import csv_rows
from lgals.schema import MODE, STAGE, SWEEP, Stage
from lgals.statistics import ALPHA, hierarchical_bootstrap, holm

SWEEP_REFERENCES = ("baseline", "fixed_ls")  # the sweep table's verdict columns


def sweep_rows(reports: dict[NoiseRecipe, Report]) -> list[dict]:
    """One row per (setting, mode): mean final test accuracy with its hierarchical
    bootstrap 95% CI, and the difference to each reference with its p Holm-adjusted over
    every such comparison of the sweep (a rate of 0 shared by noise types counts once)."""
    family = {(recipe.canonical, c.a, c.b): c for recipe, report in reports.items()
              for c in report.comparisons if c.b in SWEEP_REFERENCES}
    adjusted = dict(zip(family, holm([c.p for c in family.values()])))
    rows = []
    for recipe, report in reports.items():
        for mode, runs in report.modes.items():
            accs = 100 * runs.matrix()
            mean, low, high = hierarchical_bootstrap(accs)
            row = {"noise_type": recipe.noise_type, "noise_rate": recipe.noise_rate,
                   "mode": MODES[mode].label, "n_repeats": accs.shape[0],
                   "n_seeds": accs.shape[1], "final_test_acc_mean_pct": mean,
                   "ci95_low_pct": low, "ci95_high_pct": high}
            for other in SWEEP_REFERENCES:
                c = report.comparison(mode, other)
                holm_p = adjusted[(recipe.canonical, mode, other)] if c else ""
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


def panels(recipes: Sequence[NoiseRecipe]) -> list[NoiseRecipe]:
    """The settings the sweep's table and figure show, noise type by type, rate by rate:
    each of ``recipes``' settings once (:meth:`NoiseRecipe.distinct`), and, as a rate of 0
    flips no label whatever the type, rate 0 under every type among them."""
    settings = NoiseRecipe.distinct(recipes)
    types = list(dict.fromkeys(recipe.noise_type for recipe in settings))
    clean = next((recipe for recipe in settings if recipe.noise_rate == 0), None)
    if clean is not None:  # the clean setting belongs to every type
        settings += [replace(clean, noise_type=noise_type) for noise_type in types]
    return sorted(dict.fromkeys(settings),
                  key=lambda recipe: (types.index(recipe.noise_type), recipe.noise_rate))


def sweep_report(experiment_id: str, out: Path, recipes: Sequence[NoiseRecipe],
                 modes: Sequence[str] | None = None, repeats: int | None = None,
                 seeds: int | None = None,
                 parent_run_id: str | None = None, precision: str = "fp32",
                 echo: Callable[[str], None] = print) -> dict[NoiseRecipe, Report]:
    """The sweep's table, csv and figure from MLflow: each setting's runs (at ``precision``)
    collected and compared as in the report, written to ``out`` and logged as a report run;
    the per-setting reports, in :func:`panels`' order (those without runs left out), a
    setting every type shares (rate 0) one report under each type."""
    settings = panels(recipes)
    modes = SUITES["paper"] if modes is None else modes
    found: dict[NoiseRecipe, Report] = {}
    for setting in NoiseRecipe.distinct(settings):
        runs = collect(experiment_id, modes, setting, repeats, seeds, precision=precision)
        if runs:
            found[setting] = build(runs)
        else:
            echo(f"no finished evaluate runs for {setting.noise_type} noise at rate "
                 f"{setting.noise_rate:g}")
    reports = {s: found[s.canonical] for s in settings if s.canonical in found}
    if not reports:
        raise BadSetting("no finished evaluate runs for any setting: run the sweep first")
    rows = sweep_rows(reports)
    points: dict[str, dict[str, list]] = {}
    for row in rows:
        points.setdefault(row["noise_type"], {}).setdefault(row["mode"], []).append(
            (100 * row["noise_rate"], row["final_test_acc_mean_pct"], row["ci95_low_pct"],
             row["ci95_high_pct"]))
    text = sweep_markdown(rows)
    params = {"dataset": settings[0].dataset,
              "settings": ",".join(setting.setting for setting in settings),
              "modes": ",".join(modes), "repeats": str(repeats), "seeds": str(seeds),
              "precision": precision}
    metrics = {f"{row['noise_type']}-{row['noise_rate']:g}.{row['mode']}"
               ".final_test_acc_mean_pct": row["final_test_acc_mean_pct"] for row in rows}
    run_id = publish(out, {"sweep.md": text, "sweep.csv": csv_rows(rows)},
                     {"sweep_accuracy.png": sweep_figure(points)}, experiment_id,
                     {STAGE: Stage.REPORT, MODE: "all", SWEEP: "true"},
                     params, metrics, parent_run_id)
    echo(text)
    echo(f"sweep report: {out}/sweep.md, sweep.csv, sweep_accuracy.png (MLflow run {run_id})")
    return reports
