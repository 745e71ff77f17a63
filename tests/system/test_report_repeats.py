"""Repeated studies in the report: collecting repetitions from a real MLflow store, paired
comparisons over repetitions x seeds, the claim card's verdicts, the MDD line, the sweep.

MLflow runs are made by hand with ``MlflowClient`` in a sqlite store in a tmp dir, shaped as
``lgals evaluate`` makes them (an evaluate run per mode, one child run per seed).

The fast in-process tests: ``tests/unit/test_report_repeats.py``.
"""

from __future__ import annotations

import csv
import io

import pytest
from support.reports import evaluate

from lgals.data import NoiseRecipe
from lgals.report.publish import report_from_mlflow
from lgals.report.sweep import sweep_report

# --- a real store with hand-made evaluate runs ---------------------------------------------


def test_report_from_mlflow_opens_with_the_card_lists_every_run_and_is_deterministic(store):
    ids = [evaluate(store, mode, {0: acc, 1: acc + 0.01, 2: acc + 0.03}, repeat=repeat)
           for repeat in (0, 1) for mode, acc in (("baseline", 0.5), ("lgals", 0.55))]
    first = report_from_mlflow(store.experiment_id, store.out / "a", echo=lambda _: None)
    report_from_mlflow(store.experiment_id, store.out / "b", echo=lambda _: None)
    text = (store.out / "a" / "results.md").read_text()
    assert text == (store.out / "b" / "results.md").read_text()
    assert (store.out / "a" / "results.csv").read_bytes() == (
        store.out / "b" / "results.csv").read_bytes()
    lines = text.splitlines()
    assert lines[:3] == ["# Claims of the note on mnist1d with 20% symmetric label noise: our "
                         "measurement", "", "## The claim card"]
    assert [line[:5] for line in lines[4:10]] == ["1. **", "2. **", "3. **", "4. **", "5. **",
                                                  "6. **"]
    assert first.comparison("lgals", "baseline").n_repeats == 2
    (run, _) = store.client.search_runs([store.experiment_id],
                                        "tags.`lgals.stage` = 'report'")
    assert sorted(run.data.params["evaluate_runs"].split(",")) == sorted(ids)


# --- the sweep -----------------------------------------------------------------------------

def test_sweep_report_from_mlflow_draws_rate_0_in_every_panel(store):
    for mode, acc in (("baseline", 0.8), ("lgals", 0.81)):
        evaluate(store, mode, {0: acc, 1: acc + 0.01}, noise=NoiseRecipe(0.0))
    for noise, acc in ((NoiseRecipe(0.2), 0.6), (NoiseRecipe(0.2, "pair"), 0.55)):
        for mode, gain in (("baseline", 0.0), ("lgals", 0.02)):
            evaluate(store, mode, {0: acc + gain, 1: acc + gain + 0.02}, noise=noise)
    reports = sweep_report(store.experiment_id, store.out / "sweep",
                           [NoiseRecipe(0.0), NoiseRecipe(0.2), NoiseRecipe(0.2, "pair")],
                           echo=lambda _: None)
    assert list(reports) == [NoiseRecipe(0.0), NoiseRecipe(0.2), NoiseRecipe(0.0, "pair"),
                             NoiseRecipe(0.2, "pair")]
    assert reports[NoiseRecipe(0.0, "pair")] is reports[NoiseRecipe(0.0)]
    rows = list(csv.DictReader(io.StringIO((store.out / "sweep" / "sweep.csv").read_text())))
    assert [(r["noise_type"], r["noise_rate"], r["mode"]) for r in rows] == [
        (t, rate, mode) for t, rate in (("symmetric", "0.0"), ("symmetric", "0.2"),
                                        ("pair", "0.0"), ("pair", "0.2"))
        for mode in ("Baseline", "LGALS")]
    assert float(rows[5]["final_test_acc_mean_pct"]) == pytest.approx(81.5)
    assert float(rows[7]["diff_vs_baseline_pp"]) == pytest.approx(2.0)
    assert (store.out / "sweep" / "sweep_accuracy.png").stat().st_size > 0
    assert "| pair | 0% | LGALS |" in (store.out / "sweep" / "sweep.md").read_text()
    (run,) = store.client.search_runs([store.experiment_id], "tags.`lgals.sweep` = 'true'")
    assert (run.data.tags["lgals.stage"], run.data.tags["lgals.mode"]) == ("report", "all")
    assert {a.path for a in store.client.list_artifacts(run.info.run_id)} == {
        "sweep.md", "sweep.csv", "sweep_accuracy.png"}
