"""Publishing a report: its files written into the output folder (each replaced atomically)
and logged as one MLflow ``report`` run; and the whole report from MLflow in one call."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from lgals.claim import Claim
from lgals.data import NoiseRecipe
from lgals.errors import BadSetting
from lgals.losses import MODES
from lgals.plots import comparison_figure, detection_figure, epsilon_figure
from lgals.report.analysis import Report, build
from lgals.report.collect import (
    CURVES,
    DETECTORS,
    collect,
    collect_diagnosis,
    other_precisions,
    unfinished,
)
from lgals.report.render import csv_text, markdown
from lgals.schema import MODE, STAGE, Stage
from lgals.tracking.runs import in_run, source_info
from lgals.tracking.store import mlflow_client


def publish(out_dir: Path, texts: dict[str, str], figures: dict, experiment_id: str,
            tags: dict, params: dict, metrics: dict[str, float],
            parent_run_id: str | None) -> str:
    """Stage ``texts`` and ``figures`` by file name, log them as one run's artifacts with
    ``metrics``, then move each into ``out_dir`` (each replaced atomically); the run's id."""
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
    labels = {mode: MODES[mode].label for mode in report.modes}
    finals = {labels[m]: 100 * np.array(list(r.final_acc.values()))
              for m, r in report.modes.items()}
    curves = {name: {labels[m]: r.curves[name] for m, r in report.modes.items()
                     if name in r.curves} for name in CURVES}
    claim = {labels[m]: report.claim.accuracy[m] for m in report.modes
             if m in report.claim.accuracy}
    lgals = report.modes.get("lgals")
    eps = (lgals.eps_counts, lgals.eps_edges) if lgals else None
    detectors = {DETECTORS[name]: curves[name] for name in DETECTORS if curves[name]}
    figures = {"comparison_plot.png": comparison_figure(finals, claim, curves),
               "epsilon_plot.png": epsilon_figure(eps, curves),
               "detection_plot.png": detection_figure(detectors)}
    params = {"evaluate_runs": ",".join(i for r in report.modes.values() for i in r.run_ids),
              "dataset": report.dataset, "precision": report.precision}
    metrics = {f"{mode}.final_test_acc_mean_pct": row["final_test_acc_mean_pct"]
               for mode, row in zip(report.modes, report.rows())}
    run_id = publish(out_dir, {"results.md": markdown(report), "results.csv": csv_text(report)},
                     figures, experiment_id, {STAGE: Stage.REPORT, MODE: "all"},
                     params, metrics, parent_run_id)
    return out_dir, run_id


def report_from_mlflow(experiment_id: str, out: Path, parent_run_id: str | None = None,
                       modes: Sequence[str] | None = None,
                       echo: Callable[[str], None] = print,
                       noise: NoiseRecipe | None = None, repeats: int | None = None,
                       seeds: int | None = None, claim: Claim | None = None,
                       dataset: str | None = None, precision: str | None = None,
                       diagnosis_run: str | None = None) -> Report:
    """Collect ``modes`` (default: the paper suite's; of ``dataset`` and ``precision``, if
    given: see :func:`collect`), build, write and log the report, its card testing ``claim``
    (default: the note's) with diagnose run ``diagnosis_run`` (default: the latest of the same
    data); print its tables, and a line for runs of another precision."""
    runs = collect(experiment_id, modes, noise, repeats, seeds, dataset, precision)
    if not runs:
        on = f" on {dataset}" if dataset and noise is None else ""
        raise BadSetting(f"no finished evaluate runs{on} in this experiment: run `lgals "
                         "evaluate`")
    report = build(runs, claim)
    report.diagnosis = collect_diagnosis(experiment_id, runs, diagnosis_run)
    out_dir, run_id = write(report, out, experiment_id, parent_run_id)
    echo(markdown(report))
    others = other_precisions(experiment_id, runs)
    if others:
        echo(f"left out {sum(others.values())} evaluate runs at another precision ("
             + ", ".join(f"{n} at {p}" for p, n in sorted(others.items()))
             + f"): this report is of the {report.precision} runs; `lgals report --precision "
             f"{min(others)}` reports those")
    skipped = unfinished(experiment_id)
    if skipped:
        echo(f"left out {sum(skipped.values())} evaluate runs that did not finish ("
             + ", ".join(f"{n} {status}" for status, n in sorted(skipped.items())) + ")")
    echo(f"report: {out_dir}/results.md, results.csv, comparison_plot.png, epsilon_plot.png, "
         f"detection_plot.png (MLflow run {run_id})")
    return report


