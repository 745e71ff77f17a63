"""``lgals tune`` against a real sqlite MLflow store and a real Optuna sqlite storage.

Studies are tiny (2-4 trials of 1-2 epochs). Most commands run in this process through
``lgals.cli.main`` (torch, MLflow and Optuna are imported once); what needs processes of its
own (local workers, a second process for the determinism check) runs the console script.

The process-level and seconds-long tests: ``tests/system/test_tuning.py``.
"""

from __future__ import annotations

import dataclasses
import getpass
from pathlib import Path

import numpy as np
import pytest
from optuna.trial import TrialState
from support.mlflow_fixtures import copy_database, expected_context, history, run_context
from support.tuning import (
    children,
    error_line,
    load_study,
    runs_of,
    stores,
    study_names,
    trial_signature,
    tune_main,
    tune_ok,
    tune_runs,
)

from lgals.tuning import TuneSettings, tuning_data

FIGURES = ("optimization_history", "param_importances", "slice")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# Optuna's figures are "experimental" and complain about studies of one or two trials.
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning:optuna")]


# --- 1. structure of one study ------------------------------------------------------------

def test_tune_run_has_one_child_run_per_trial(lgals_study):
    assert lgals_study.result.code == 0, lgals_study.result
    runs = lgals_study.runs
    (tune,) = tune_runs(runs)
    assert tune.data.tags["lgals.mode"] == "lgals"
    assert tune.data.tags["lgals.study"] == "lgals-lgals-epochs=2"
    assert tune.data.tags["lgals.val_labels"] == "noisy"
    assert "mlflow.parentRunId" not in tune.data.tags
    assert tune.info.status == "FINISHED"
    assert {k: tune.data.params[k] for k in ("mode", "n_trials", "epochs", "workers",
                                             "study_name", "storage")} == {
        "mode": "lgals", "n_trials": "3", "epochs": "2", "workers": "1",
        "study_name": "lgals-lgals-epochs=2", "storage": stores(lgals_study.dir)[1]}

    assert tune.info.run_name == "tune-lgals"
    assert "Optuna study `lgals-lgals-epochs=2`: 3 trials of LGALS" in tune.data.tags[
        "mlflow.note.content"]
    trials = children(runs, tune.info.run_id)
    assert len(trials) == 3 == len(runs) - 1  # nothing else in the store
    assert sorted(r.info.run_name for r in trials) == [
        "lgals-trial00", "lgals-trial01", "lgals-trial02"]
    assert sorted(int(r.data.tags["lgals.trial"]) for r in trials) == [0, 1, 2]
    optuna_trials = {t.number: t for t in lgals_study.study.trials}
    assert sorted(optuna_trials) == [0, 1, 2]
    for run in trials:
        trial = optuna_trials[int(run.data.tags["lgals.trial"])]
        assert run.data.tags["lgals.stage"] == "trial"
        assert run.data.tags["lgals.mode"] == "lgals"
        assert run.data.tags["lgals.study"] == "lgals-lgals-epochs=2"
        assert trial.state == TrialState.COMPLETE
        assert run.data.tags["lgals.trial_state"] == "COMPLETE"
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        # the run logs the hyperparameters the trial proposed, exactly
        assert set(trial.params) == {"lr", "weight_decay", "eps_max", "gamma"}
        for name, value in trial.params.items():
            assert run.data.params[name] == str(value)
        assert run.data.params["val_fraction"] == "0.1"


def test_every_run_of_a_tune_carries_mlflows_context_and_the_study_names_its_objective(
        lgals_study):
    """The tune run and each trial's run: the user, the source and the checkout's commit, as
    MLflow's fluent API would tag them (``tests/unit/test_conventions.py`` for ``train``);
    the study names its objective as the trials' runs name the metric."""
    expected = expected_context(getpass.getuser())
    assert len(lgals_study.runs) == 4  # the tune run and three trials
    for run in lgals_study.runs:
        assert run_context(run) == expected, run.info.run_name
        assert run.info.user_id == expected["mlflow.user"]
    assert lgals_study.study.metric_names == ["val_acc"]


def test_trial_runs_log_validation_history_and_nothing_of_the_test_set(lgals_study):
    (tune,) = tune_runs(lgals_study.runs)
    trials = {t.number: t for t in lgals_study.study.trials}
    runs = children(lgals_study.runs, tune.info.run_id)
    assert len(runs) == 3
    for run in runs:
        trial = trials[int(run.data.tags["lgals.trial"])]
        assert trial.state == TrialState.COMPLETE  # the fixture's study prunes nothing
        metrics = run.data.metrics
        assert not {"test_acc", "test_loss", "final_test_acc"} & set(metrics), sorted(metrics)
        assert {"val_acc", "val_loss", "train_loss"} <= set(metrics)
        steps, values = history(lgals_study.client, run.info.run_id, "val_acc")
        assert steps == [1, 2]
        assert trial.value == values[-1]  # the objective is the last epoch's val acc
        # what the pruner saw is what MLflow has
        assert dict(zip(steps, values)) == trial.intermediate_values


def test_tune_run_records_best_params_and_counts(lgals_study):
    (tune,) = tune_runs(lgals_study.runs)
    study = lgals_study.study
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 3
    best = {k[len("best."):]: v for k, v in tune.data.params.items() if k.startswith("best.")}
    assert best.pop("trial") == str(study.best_trial.number)
    assert best == {name: str(value) for name, value in study.best_params.items()}
    assert set(best) == {"lr", "weight_decay", "eps_max", "gamma"}
    metrics = tune.data.metrics
    assert metrics["best_val_acc"] == study.best_value
    assert metrics["n_trials"] == len(study.trials) == 3
    assert (metrics["n_complete"], metrics["n_pruned"], metrics["n_fail"]) == (3, 0, 0)
    assert f"best val acc {100 * study.best_value:.2f}%" in lgals_study.result.out


def test_tune_run_logs_optuna_figures(lgals_study):
    (tune,) = tune_runs(lgals_study.runs)
    client = lgals_study.client
    logged = {a.path for a in client.list_artifacts(tune.info.run_id, "optuna")}
    # three complete trials (the fixture's study): Optuna draws every figure, none is skipped
    assert [t.state for t in lgals_study.study.trials] == [TrialState.COMPLETE] * 3
    assert logged == {f"optuna/{name}.png" for name in FIGURES}
    assert not [k for k in tune.data.tags if k.startswith("lgals.figure.")], tune.data.tags
    for name in FIGURES:
        local = client.download_artifacts(tune.info.run_id, f"optuna/{name}.png",
                                          str(lgals_study.dir))
        assert Path(local).read_bytes().startswith(PNG_MAGIC)


# --- 5. diverged trials -------------------------------------------------------------------

def test_optuna_figures_name_the_objective_on_every_axis(lgals_study):
    """Not "Objective Value": a trial's value is the noisy validation accuracy. The
    importances' legend is the study's metric name (Optuna prefers it to ``target_name``)."""
    import matplotlib.pyplot as plt

    from lgals.tuning import METRIC, OBJECTIVE, study_figures

    figures = study_figures(lgals_study.study)
    assert set(figures) == {"optimization_history", "param_importances", "slice"}
    drawn = {name: f for name, f in figures.items() if not isinstance(f, str)}
    assert set(drawn) == set(figures), figures  # three complete trials: every figure drawn
    labels = {name: [" ".join([ax.get_ylabel(), ax.get_xlabel(), ax.get_title(),
                               *(t.get_text() for t in (ax.get_legend().get_texts()
                                                        if ax.get_legend() else []))])
                     for ax in f.axes] for name, f in drawn.items()}
    for figure in drawn.values():
        plt.close(figure)
    assert OBJECTIVE in labels["optimization_history"][0]
    assert all(OBJECTIVE in "".join(labels[name]) for name in drawn
               if name != "param_importances"), labels
    assert METRIC in "".join(labels["param_importances"]), labels
    assert not any("Objective Value" in "".join(text) for text in labels.values()), labels


def test_study_figures_have_readable_ticks_and_the_legend_inside(tmp_path):
    """Every tick label drawn apart from its neighbours (log axes label a few major ticks,
    no minor ones) and the history's legend inside its plot, on a study shaped like LGALS'."""
    import matplotlib.pyplot as plt
    import optuna

    from lgals.tuning import study_figures

    space = {"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True),
             "weight_decay": optuna.distributions.FloatDistribution(1e-5, 1e-1, log=True),
             "eps_max": optuna.distributions.FloatDistribution(0.0, 1.0),
             "gamma": optuna.distributions.FloatDistribution(0.25, 4.0, log=True)}
    study = optuna.create_study(direction="maximize")
    rng = np.random.default_rng(0)
    for _ in range(16):
        params = {name: float(np.exp(rng.uniform(np.log(d.low), np.log(d.high)))) if d.log
                  else float(rng.uniform(d.low, d.high)) for name, d in space.items()}
        study.add_trial(optuna.trial.create_trial(params=params, distributions=space,
                                                  value=float(rng.uniform(0.2, 0.5))))
    figures = study_figures(study)
    try:
        assert all(not isinstance(f, str) for f in figures.values()), figures
        for name, figure in figures.items():
            figure.canvas.draw()
            renderer = figure.canvas.get_renderer()
            for ax in figure.axes:
                boxes = [label.get_window_extent(renderer) for label in ax.get_xticklabels()
                         if label.get_visible() and label.get_text()
                         and ax.get_xlim()[0] <= label.get_position()[0] <= ax.get_xlim()[1]]
                boxes.sort(key=lambda box: box.x0)
                assert all(a.x1 <= b.x0 for a, b in zip(boxes, boxes[1:])), (name, ax)
        history = figures["optimization_history"]
        (ax,) = history.axes
        legend = ax.get_legend().get_window_extent(history.canvas.get_renderer())
        assert ax.get_window_extent().contains(legend.x0, legend.y0)
        assert ax.get_window_extent().contains(legend.x1, legend.y1)
        gamma = next(a for a in figures["slice"].axes if a.get_xlabel() == "gamma")
        assert {t.get_text() for t in gamma.get_xticklabels()} >= {"0.5", "1", "2"}
    finally:
        for figure in figures.values():
            plt.close(figure)


# --- 6. no test leakage --------------------------------------------------------------------

def test_tuning_data_has_no_test_set(_cache_dir):
    for val_labels in ("noisy", "clean"):
        data = tuning_data(TuneSettings(mode="lgals", val_labels=val_labels))
        assert data.x_test is None and data.y_test is None
        assert not data.has_test
        assert len(data.y_val) > 0


# --- 7. resuming with other settings ----------------------------------------------------------

@pytest.mark.parametrize("option, value, recorded", [
    ("--epochs", "3", "epochs=2"),
    ("--noise-seed", "1", "noise_seed=0"),
    ("--val-fraction", "0.2", "val_fraction=0.1"),
    ("--batch-size", "64", "batch_size=128"),
])
def test_resume_with_other_settings_is_refused(lgals_study, tmp_path, option, value, recorded):
    copy_database(lgals_study.dir / "optuna.db", tmp_path / "optuna.db")
    args = {"--mode": "lgals", "--n-trials": "4", "--epochs": "2",
            "--study-name": "lgals-lgals-epochs=2", option: value}
    result = tune_main(tmp_path, *[item for pair in args.items() for item in pair])
    assert result.code == 2, result
    line = error_line(result)
    assert "'lgals-lgals-epochs=2'" in line and recorded in line
    assert "pick another --study-name, or another --storage" in line
    assert len(load_study(tmp_path, "lgals-lgals-epochs=2").trials) == 3  # nothing run
    assert runs_of(tmp_path) == []  # nor logged


def test_other_settings_under_the_default_name_are_a_study_of_their_own(lgals_study, tmp_path):
    """`lgals reproduce`, then `lgals tune --epochs 1` in the same folder: no refusal, a new
    study named by what differs; the old one is left as it was."""
    copy_database(lgals_study.dir / "optuna.db", tmp_path / "optuna.db")
    tune_ok(tmp_path, "--mode", "lgals", "--n-trials", "1", "--epochs", "1", "--pruner", "none")
    assert study_names(tmp_path) == ["lgals-lgals-epochs=1", "lgals-lgals-epochs=2"]
    assert len(load_study(tmp_path, "lgals-lgals-epochs=1").trials) == 1
    assert load_study(tmp_path, "lgals-lgals-epochs=1").user_attrs["epochs"] == 1
    assert trial_signature(load_study(tmp_path, "lgals-lgals-epochs=2")) == trial_signature(
        lgals_study.study)
    (tune,) = tune_runs(runs_of(tmp_path))
    assert tune.data.tags["lgals.study"] == "lgals-lgals-epochs=1"


def test_a_study_named_before_names_carried_its_settings_resumes_there(tmp_path, _cache_dir):
    """Before, `tune --epochs 1` made `lgals-baseline` (epochs 1): it now asks for
    `lgals-baseline-epochs=1`, and resumes the old study instead while no study has that
    name; one made with other settings is not taken."""
    from lgals.tuning import create_study, resumable

    storage = stores(tmp_path)[1]
    old = TuneSettings(mode="baseline", epochs=1)
    assert (old.study_name, old.former_name) == ("lgals-baseline-epochs=1", "lgals-baseline")
    create_study(dataclasses.replace(old, study_name="lgals-baseline", former_name=""), storage)
    tune_ok(tmp_path, "--mode", "baseline", "--n-trials", "1", "--epochs", "1",
            "--pruner", "none")
    assert study_names(tmp_path) == ["lgals-baseline"]
    assert len(load_study(tmp_path, "lgals-baseline").trials) == 1
    (tune,) = tune_runs(runs_of(tmp_path))
    assert tune.data.tags["lgals.study"] == tune.data.params["study_name"] == "lgals-baseline"
    # another setting: the old study is not the one, a new one is named
    other = TuneSettings(mode="baseline", epochs=1, train_seed=1)
    assert resumable(other, storage).study_name == "lgals-baseline-epochs=1-train_seed=1"
    # once the new name exists, it is the one (repetitions carry both names along)
    create_study(old, storage)
    assert resumable(old, storage) == old
    assert old.repeated(2).former_name == "lgals-baseline-r2"
    assert resumable(old.repeated(2), storage).study_name == "lgals-baseline-epochs=1-r2"


def test_a_default_name_tells_apart_every_setting_a_study_keeps():
    """Two default-named studies with different settings never share a name, and at the
    defaults the names are what they were."""
    from lgals.data import NoiseRecipe

    assert TuneSettings(mode="lgals").study_name == "lgals-lgals"
    assert TuneSettings(mode="lgals").former_name == ""
    variants = [TuneSettings(mode="lgals", **change) for change in (
        {}, {"epochs": 3}, {"batch_size": 64}, {"train_seed": 1}, {"val_labels": "clean"},
        {"precision": "bf16"}, {"epochs": 3, "batch_size": 64},
        {"noise": NoiseRecipe(0.4, val_fraction=0.1)},
        {"noise": NoiseRecipe(0.2, "pair", val_fraction=0.1)},
        {"noise": NoiseRecipe(0.2, noise_seed=2, val_fraction=0.1)},
        {"noise": NoiseRecipe(0.2, val_fraction=0.2)},
        {"noise": NoiseRecipe(0.2, val_fraction=0.1, dataset="digits")})]
    assert len({tuple(sorted(s.study_attrs().items())) for s in variants}) == len(variants)
    assert len({s.study_name for s in variants}) == len(variants)
    assert [s.study_name for s in variants[6:9]] == [
        "lgals-lgals-epochs=3-batch_size=64", "lgals-lgals-noise_rate=0.4",
        "lgals-lgals-noise_type=pair"]
    assert TuneSettings(mode="lgals", precision="bf16", epochs=30).study_name == (
        "lgals-lgals-bf16-epochs=30")
    assert "former_name" not in TuneSettings(mode="lgals", epochs=3).params()


def test_resume_with_another_sampler_seed_is_allowed(lgals_study, tmp_path):
    copy_database(lgals_study.dir / "optuna.db", tmp_path / "optuna.db")
    tune_ok(tmp_path, "--mode", "lgals", "--n-trials", "3", "--epochs", "2",
            "--sampler-seed", "7", "--pruner", "none")
    assert trial_signature(load_study(tmp_path, "lgals-lgals-epochs=2")) == trial_signature(
        lgals_study.study)  # already full: nothing added
    (tune,) = tune_runs(runs_of(tmp_path))
    assert children(runs_of(tmp_path), tune.info.run_id) == []



# --- 8. a trial another host takes over ------------------------------------------------------

TAKEN_OVER = "taken over by another process while this one was paused (stale heartbeat)"


def taken_over_line(number: int, study: str) -> str:
    return f"lgals: trial {number} of study '{study}' was {TAKEN_OVER}; it stops here"


def fail_as_another_host(directory: Path, study_name: str, trial_id: int) -> None:
    """Another host's check finds the trial stale (its heartbeat an hour old, as if this
    process had been paused since) and fails it; its callback retries it."""
    import contextlib
    import sqlite3

    import optuna

    from lgals.storage import open_storage
    from lgals.tuning import fail_stale_trials

    with contextlib.closing(sqlite3.connect(directory / "optuna.db")) as db, db:
        db.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour') "
                   "WHERE trial_id = ?", (trial_id,))
    other = optuna.load_study(study_name=study_name,
                              storage=open_storage(stores(directory)[1]))
    fail_stale_trials(other)


def test_a_trial_taken_over_as_it_gets_its_params_is_left_to_its_retry(tmp_path, capsys):
    """Paused right after asking a trial, this process finds it failed by another host as it
    suggests its params: one line, and the trial is not trained here; its retry, still
    WAITING, is the next one asked."""
    import optuna

    from lgals.tuning import ask_round, create_study

    settings = TuneSettings(mode="baseline", n_trials=2, epochs=2, study_name="suggested")
    study = create_study(settings, stores(tmp_path)[1])

    class TakenOverAsSuggested(optuna.samplers.TPESampler):
        def sample_independent(self, study, trial, name, distribution):
            if trial.number == 0 and trial.state == TrialState.RUNNING:
                fail_as_another_host(tmp_path, "suggested", trial._trial_id)
            return super().sample_independent(study, trial, name, distribution)

    study.sampler = TakenOverAsSuggested(seed=0)
    capsys.readouterr()
    asked = ask_round([(settings, study)], {"baseline": 2}, 2)
    assert capsys.readouterr().err.splitlines() == [taken_over_line(0, "suggested")]
    trials = load_study(tmp_path, "suggested").trials
    assert [(t.number, t.state.name) for t in trials] == [(0, "FAIL"), (1, "RUNNING")]
    assert [a.trial.number for a in asked] == [1]  # the retry
    assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(
        trials[1]) == 0
    study.tell(asked[0].trial, state=TrialState.FAIL)


@pytest.mark.parametrize("when", ["before it trains", "as it is told"])
def test_a_trial_taken_over_ends_its_run_failed(store, capsys, when):
    """Another host finds a trial of this round stale, fails it and retries it: before the
    round trains (before this process could point the trial at its run), or just as this
    process tells it (between Optuna's check of the trial and its write, where the sampler's
    ``after_trial`` runs). The study keeps the other host's FAIL, the trial's run ends
    FAILED with the reason (never FINISHED), one line says so, and the round's other trial
    completes as usual. The tune run, which the other host ended FAILED as its process's (as
    told: it found the trial's run), ends FINISHED without that reason when its owner ends
    it."""
    import optuna

    from lgals.tracking.runs import end_runs, open_run
    from lgals.tuning import ask_round, create_study, train_round

    settings = TuneSettings(mode="baseline", n_trials=2, epochs=2, pruner="none",
                            study_name="race")
    study = create_study(settings, stores(store.out)[1])
    tune = open_run(store.experiment_id, "tune", {"lgals.stage": "tune"}, {})
    asked = ask_round([(settings, study)], {"baseline": 2}, 2)
    first = asked[0].trial

    class TakenOverAsTold(optuna.samplers.TPESampler):
        def after_trial(self, study, trial, state, values) -> None:
            if trial.number == first.number:
                fail_as_another_host(store.out, "race", first._trial_id)
            super().after_trial(study, trial, state, values)

    if when == "before it trains":
        fail_as_another_host(store.out, "race", first._trial_id)
    else:
        study.sampler = TakenOverAsTold(seed=0)
    capsys.readouterr()
    train_round(asked, tuning_data(settings), store.experiment_id, {"baseline": tune}, "cpu")
    err = capsys.readouterr().err
    end_runs([tune], "FINISHED")

    trials = {t.number: t for t in load_study(store.out, "race").trials}
    assert {n: t.state.name for n, t in trials.items()} == \
        {0: "FAIL", 1: "COMPLETE", 2: "WAITING"}  # trial 2: trial 0's retry
    runs = {int(r.data.tags["lgals.trial"]): r for r in store.client.search_runs(
        [store.experiment_id], "tags.`lgals.stage` = 'trial'")}
    assert {n: (r.info.status, r.data.tags["lgals.trial_state"]) for n, r in runs.items()} == \
        {0: ("FAILED", "FAIL"), 1: ("FINISHED", "COMPLETE")}
    assert runs[0].data.tags["lgals.status_reason"] == TAKEN_OVER
    assert "lgals.status_reason" not in runs[1].data.tags
    assert trials[1].user_attrs["mlflow_run_id"] == runs[1].info.run_id
    if when == "as it is told":
        assert trials[0].user_attrs["mlflow_run_id"] == runs[0].info.run_id
    else:  # failed before it could point at its run; it left the stack at the first epoch
        assert "mlflow_run_id" not in trials[0].user_attrs
        assert history(store.client, runs[0].info.run_id, "val_acc")[0] == [1]
    assert err.splitlines() == [taken_over_line(0, "race")]
    tune_run = store.client.get_run(tune)
    assert (tune_run.info.status, tune_run.data.tags.get("lgals.status_reason")) == \
        ("FINISHED", None)
