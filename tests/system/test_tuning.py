"""``lgals tune`` against a real sqlite MLflow store and a real Optuna sqlite storage.

Studies are tiny (2-4 trials of 1-2 epochs). Most commands run in this process through
``lgals.cli.main`` (torch, MLflow and Optuna are imported once); what needs processes of its
own (local workers, a second process for the determinism check) runs the console script.

The fast in-process tests: ``tests/unit/test_tuning.py``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from optuna.trial import TrialState
from support.mlflow_fixtures import history, run_lgals, run_main
from support.tuning import (
    children,
    client_of,
    error_line,
    load_study,
    runs_of,
    stores,
    study_names,
    trial_signature,
    tune_argv,
    tune_main,
    tune_ok,
    tune_runs,
)

import lgals.data
from lgals.losses import SUITES
from lgals.tuning import TuneSettings, create_study, suggest, tuning_data

PAPER = SUITES["paper"]  # the modes `--mode all` means by default
# Optuna's figures are "experimental" and complain about studies of one or two trials.
pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning:optuna")]


# --- 2. all modes under one umbrella run ----------------------------------------------------

def test_mode_all_nests_one_tune_run_per_mode_under_an_umbrella(tmp_path, _cache_dir):
    result = tune_ok(tmp_path, "--mode", "all", "--n-trials", "1", "--epochs", "1",
                     "--study-name", "grp")
    runs = runs_of(tmp_path)
    (umbrella,) = [r for r in tune_runs(runs) if r.data.tags["lgals.mode"] == "all"]
    assert "mlflow.parentRunId" not in umbrella.data.tags
    assert umbrella.info.status == "FINISHED"
    assert umbrella.data.params["n_trials"] == "1" and umbrella.data.params["epochs"] == "1"
    per_mode = children(runs, umbrella.info.run_id)
    assert sorted(r.data.tags["lgals.mode"] for r in per_mode) == sorted(PAPER)
    for run in per_mode:
        mode = run.data.tags["lgals.mode"]
        assert run.data.tags["lgals.stage"] == "tune"
        assert run.data.tags["lgals.study"] == f"grp-{mode}"
        assert run.info.status == "FINISHED"
        (trial,) = children(runs, run.info.run_id)
        assert trial.data.tags["lgals.stage"] == "trial"
        assert trial.data.tags["lgals.mode"] == mode
    # umbrella + 3 tune runs + 3 trials, nothing else
    assert len(runs) == 7
    assert study_names(tmp_path) == sorted(f"grp-{m}" for m in PAPER)
    assert len(result.out.strip().splitlines()) == 3  # one summary line per mode


# --- 3. resume ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def resumed(tmp_path_factory, _cache_dir):
    """``--n-trials 2``, then ``--n-trials 4`` twice, on one study."""
    directory = tmp_path_factory.mktemp("resume")
    args = ("--mode", "baseline", "--epochs", "2")
    results = [tune_main(directory, *args, "--n-trials", n) for n in ("2", "4", "4")]
    return SimpleNamespace(dir=directory, results=results, runs=runs_of(directory),
                           study=load_study(directory, "lgals-baseline-epochs=2"))


def test_rerun_tops_the_study_up_to_n_trials(resumed):
    assert [r.code for r in resumed.results] == [0, 0, 0], resumed.results
    study = resumed.study
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    # 4 trials: fewer than the median pruner's 5 startup trials, so none can be pruned
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    runs = resumed.runs
    tunes = tune_runs(runs)
    assert len(tunes) == 3
    per_tune = [sorted(int(r.data.tags["lgals.trial"]) for r in children(runs, t.info.run_id))
                for t in tunes]
    assert per_tune == [[0, 1], [2, 3], []]
    assert [t.data.metrics["n_trials"] for t in tunes] == [2, 4, 4]
    # every trial has exactly one MLflow run and it is the one the trial points at
    trial_runs = [r for r in runs if r.data.tags.get("lgals.stage") == "trial"]
    assert sorted(r.info.run_id for r in trial_runs) == sorted(
        t.user_attrs["mlflow_run_id"] for t in study.trials)
    # the summary of a resumed study covers all of its trials
    assert tunes[2].data.params["best.lr"] == str(study.best_params["lr"])
    assert tunes[2].data.metrics["best_val_acc"] == study.best_value


def test_resumed_study_proposes_new_hyperparameters(resumed):
    """Topping up must explore: the resumed trials must not replay the first ones.

    The sampler is re-created with the same seed on every (re)run, so a fresh stream would
    propose trials 0, 1 again as trials 2, 3 (and, with the same train seed, measure the
    same values: half the budget wasted).
    """
    proposals = [tuple(sorted(t.params.items())) for t in
                 sorted(resumed.study.trials, key=lambda t: t.number)]
    assert len(set(proposals)) == len(proposals), (
        f"resumed trials repeat earlier proposals: {proposals}")


# --- 4. local workers ---------------------------------------------------------------------

def test_workers_share_one_study_without_duplicates(tmp_path, _cache_dir):
    result = run_lgals(tune_argv(tmp_path, "--mode", "baseline", "--workers", "2",
                                 "--n-trials", "4", "--epochs", "2"), tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    study = load_study(tmp_path, "lgals-baseline-epochs=2")
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4  # too few to prune
    runs = runs_of(tmp_path)
    (tune,) = tune_runs(runs)
    assert tune.data.params["workers"] == "2"
    assert tune.data.metrics["n_trials"] == 4
    trial_runs = {r.info.run_id: r for r in runs if r.data.tags.get("lgals.stage") == "trial"}
    assert len(trial_runs) == 4
    assert all(r.data.tags["mlflow.parentRunId"] == tune.info.run_id
               for r in trial_runs.values())
    pointed = [t.user_attrs["mlflow_run_id"] for t in study.trials]
    assert sorted(pointed) == sorted(trial_runs)  # one run per trial, none twice
    for trial in study.trials:
        run = trial_runs[trial.user_attrs["mlflow_run_id"]]
        assert int(run.data.tags["lgals.trial"]) == trial.number
        assert run.data.tags["lgals.trial_state"] == trial.state.name
    # each worker has its own sampler stream: no two trials propose the same point
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 4


# --- 5. diverged trials -------------------------------------------------------------------

def test_enqueued_out_of_range_lr_is_a_failed_trial_and_the_study_goes_on(tmp_path, _cache_dir):
    study = create_study(TuneSettings(mode="baseline", n_trials=3, epochs=2),
                         stores(tmp_path)[1])
    study.enqueue_trial({"lr": 1e30, "weight_decay": 1e-6})
    assert [t.state for t in study.trials] == [TrialState.WAITING]

    # Optuna runs an enqueued value outside the search space as it is, with a warning
    with pytest.warns(UserWarning, match="out of range"):
        result = tune_main(tmp_path, "--mode", "baseline", "--n-trials", "3", "--epochs", "2")
    assert result.code == 0, result
    study = load_study(tmp_path, "lgals-baseline-epochs=2")
    assert len(study.trials) == 3
    failed = [t for t in study.trials if t.state == TrialState.FAIL]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(failed) == 1 and len(complete) == 2, [t.state for t in study.trials]
    (bad,) = failed
    assert bad.params == {"lr": 1e30, "weight_decay": 1e-6}  # not clamped
    assert "non-finite" in bad.user_attrs["fail_reason"]
    client = client_of(tmp_path)
    bad_run = client.get_run(bad.user_attrs["mlflow_run_id"])
    assert bad_run.info.status == "FAILED"
    assert bad_run.data.tags["lgals.trial_state"] == "FAIL"
    assert bad_run.data.tags["lgals.status"] == "diverged"
    assert "val_acc" not in bad_run.data.metrics  # nothing non-finite was logged
    for trial in complete:
        run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED"
        assert run.data.tags["lgals.trial_state"] == "COMPLETE"
    (tune,) = tune_runs(runs_of(tmp_path))
    assert tune.info.status == "FINISHED"
    assert (tune.data.metrics["n_fail"], tune.data.metrics["n_complete"]) == (1, 2)
    assert tune.data.params["best.trial"] != str(bad.number)
    assert "2 complete, 0 pruned, 1 failed" in result.out


def test_every_trial_diverging_is_a_one_line_error(tmp_path, monkeypatch, _cache_dir):
    """Inputs full of NaN: every trial's loss is non-finite at epoch 1."""
    real = lgals.data.load_clean

    def nan_inputs(*args, **kwargs):
        arrays = dict(real(*args, **kwargs))
        arrays["x"] = np.full_like(arrays["x"], np.nan)
        return arrays

    monkeypatch.setattr(lgals.data, "load_clean", nan_inputs)
    result = tune_main(tmp_path, "--mode", "baseline", "--n-trials", "2", "--epochs", "2")
    study = load_study(tmp_path, "lgals-baseline-epochs=2")
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert all("non-finite" in t.user_attrs["fail_reason"] for t in study.trials)
    runs = runs_of(tmp_path)
    (tune,) = tune_runs(runs)
    assert tune.info.status == "FINISHED"
    assert not any(k.startswith("best.") for k in tune.data.params)
    assert (tune.data.metrics["n_fail"], tune.data.metrics["n_complete"]) == (2, 0)
    assert sorted(r.info.status for r in children(runs, tune.info.run_id)) == ["FAILED"] * 2
    assert result.code == 1, result
    line = error_line(result)
    assert "lgals-baseline-epochs=2" in line and "every trial failed" in line and "2 failed" in line
    assert result.out == ""  # no summary line: there is no best trial


@pytest.mark.parametrize("died", ["training", "between ask and first heartbeat"])
def test_trial_of_a_dead_process_is_retried_on_rerun(tmp_path, _cache_dir, died):
    """The documented crash recovery: a trial whose process died (stale heartbeat) is failed,
    its MLflow run too, and it is retried; the retry counts towards ``n_trials``.

    The dead process is reproduced as the state it leaves: a RUNNING trial with an old
    heartbeat (or, killed right after ``ask``, none at all and an old start) and a RUNNING
    MLflow trial run. Optuna alone never finds the second stale: the rerun used to wait on it
    for good.
    """
    settings = TuneSettings(mode="baseline", n_trials=1, epochs=2)
    uri, storage = stores(tmp_path)
    study = create_study(settings, storage)
    with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize"
        warnings.simplefilter("ignore")
        dead = study.ask()
    proposed = suggest(dead, "baseline")
    client = client_of(tmp_path)
    experiment_id = client.create_experiment("lgals")
    dead_run = client.create_run(experiment_id, tags={"lgals.stage": "trial"}).info.run_id
    dead.set_user_attr("mlflow_run_id", dead_run)
    with contextlib.closing(sqlite3.connect(tmp_path / "optuna.db")) as db, db:
        if died == "training":
            study._storage.record_heartbeat(dead._trial_id)
            db.execute("UPDATE trial_heartbeats SET heartbeat = datetime('now', '-1 hour')")
        else:
            db.execute("UPDATE trials SET datetime_start = '2000-01-01 00:00:00.000000'")

    result = tune_main(tmp_path, "--mode", "baseline", "--n-trials", "1", "--epochs", "2")
    dead_after = client.get_run(dead_run)
    assert dead_after.info.status == "FAILED"
    assert dead_after.data.tags["lgals.trial_state"] == "FAIL"
    study = load_study(tmp_path, "lgals-baseline-epochs=2")
    states = {t.number: t.state.name for t in study.trials}
    assert states[0] == "FAIL"
    assert result.code == 0 and states.get(1) == "COMPLETE", (
        f"the retry of the dead trial never ran: states {states}, exit {result.code}, "
        f"stderr {result.err.strip().splitlines()[-1:]}")
    assert study.trials[1].params == proposed  # the retry repeats the dead trial
    (tune,) = tune_runs(runs_of(tmp_path))
    assert tune.data.metrics["n_complete"] == 1


# --- 6. no test leakage --------------------------------------------------------------------

def test_poisoned_test_labels_do_not_change_any_trial(lgals_study, tmp_path, monkeypatch):
    """The same study with the test set replaced by garbage measures exactly the same."""
    real = lgals.data.load_clean
    rng = np.random.default_rng(123)

    def poisoned(*args, **kwargs):
        arrays = dict(real(*args, **kwargs))
        arrays["x_test"] = rng.normal(size=arrays["x_test"].shape).astype(np.float32) * 1e3
        arrays["y_test"] = rng.integers(0, 10, size=arrays["y_test"].shape)
        return arrays

    monkeypatch.setattr(lgals.data, "load_clean", poisoned)
    clean_test = real()["y_test"]
    assert (lgals.data.load_dataset().y_test != clean_test).mean() > 0.5  # the poison bites
    tune_ok(tmp_path, "--mode", "lgals", "--n-trials", "3", "--epochs", "2")
    again = load_study(tmp_path, "lgals-lgals-epochs=2")
    assert trial_signature(again) == trial_signature(lgals_study.study)


# --- 8. determinism ----------------------------------------------------------------------

def test_same_sampler_seed_gives_the_same_study_in_another_process(lgals_study, tmp_path):
    result = run_lgals(tune_argv(tmp_path, "--mode", "lgals", "--n-trials", "3",
                                 "--epochs", "2", "--sampler-seed", "0"), tmp_path)
    assert result.returncode == 0, result.stderr
    again = load_study(tmp_path, "lgals-lgals-epochs=2")
    assert trial_signature(again) == trial_signature(lgals_study.study)
    assert [t.state for t in again.trials] == [TrialState.COMPLETE] * 3
    assert all(t.value is not None for t in again.trials)


# --- 9. the oracle variant ---------------------------------------------------------------

def test_clean_validation_labels_are_an_oracle_study_evaluate_ignores(tmp_path, _cache_dir):
    noisy = tuning_data(TuneSettings(mode="baseline"))
    oracle = tuning_data(TuneSettings(mode="baseline", val_labels="clean"))
    assert np.array_equal(oracle.y_val, noisy.y_val_true)
    assert not np.array_equal(oracle.y_val, noisy.y_val)
    assert np.array_equal(oracle.y_train, noisy.y_train)  # training labels stay noisy

    tune_ok(tmp_path, "--mode", "baseline", "--val-labels", "clean", "--n-trials", "2",
            "--epochs", "2")
    assert study_names(tmp_path) == ["lgals-baseline-oracle-epochs=2"]
    runs = runs_of(tmp_path)
    (tune,) = tune_runs(runs)
    assert tune.data.tags["lgals.study"] == "lgals-baseline-oracle-epochs=2"
    assert tune.data.params["val_labels"] == "clean"
    assert "best.lr" in tune.data.params
    assert len(runs) == 3
    assert all(r.data.tags["lgals.val_labels"] == "clean" for r in runs)

    uri, _ = stores(tmp_path)
    result = run_main(["evaluate", "--params-from", "tune", "--modes", "baseline",
                       "--seeds", "2", "--epochs", "1", "--tracking-uri", uri], tmp_path)
    assert result.code == 2, result
    line = error_line(result)
    assert "no finished tune" in line and "'baseline'" in line
    assert len(runs_of(tmp_path)) == 3  # no evaluate run was created


def test_evaluate_takes_the_noisy_tune_even_when_an_oracle_tune_is_newer(tmp_path, _cache_dir):
    tune_ok(tmp_path, "--mode", "baseline", "--n-trials", "1", "--epochs", "1")
    tune_ok(tmp_path, "--mode", "baseline", "--val-labels", "clean", "--n-trials", "1",
            "--epochs", "1")
    noisy, oracle = tune_runs(runs_of(tmp_path))
    assert (noisy.data.tags["lgals.val_labels"], oracle.data.tags["lgals.val_labels"]) == (
        "noisy", "clean")
    uri, _ = stores(tmp_path)
    result = run_main(["evaluate", "--params-from", "tune", "--modes", "baseline",
                       "--seeds", "2", "--epochs", "1", "--tracking-uri", uri], tmp_path)
    assert result.code == 0, result
    (evaluate,) = [r for r in runs_of(tmp_path) if r.data.tags.get("lgals.stage") == "evaluate"
                   and "lgals.seed" not in r.data.tags]
    assert evaluate.data.params["tune_run_id"] == noisy.info.run_id
    assert evaluate.data.params["tune_study"] == "lgals-baseline-epochs=1"
    assert evaluate.data.params["lr"] == noisy.data.params["best.lr"]


# --- 7. a mode that picks its epoch count ------------------------------------------------------

def test_early_stop_picks_the_best_epoch_and_evaluation_trains_to_it(tmp_path, _cache_dir):
    """early_stop's trial value is its best epoch's validation accuracy (the first of equal
    ones); the tune logs that epoch as ``best.epochs`` and evaluation trains exactly that long,
    whatever --epochs says."""
    tune_ok(tmp_path, "--mode", "early_stop", "--n-trials", "2", "--epochs", "6",
            "--pruner", "none")
    study = load_study(tmp_path, "lgals-early_stop-epochs=6")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 2  # --pruner none
    for trial in study.trials:
        curve = [trial.intermediate_values[e] for e in range(1, 7)]
        assert trial.value == max(curve)
        assert trial.user_attrs["best_epoch"] == curve.index(max(curve)) + 1
    best_epoch = study.best_trial.user_attrs["best_epoch"]
    (tune,) = tune_runs(runs_of(tmp_path))
    assert tune.data.params["best.epochs"] == str(best_epoch)
    uri, _ = stores(tmp_path)
    result = run_main(["evaluate", "--modes", "early_stop", "--seeds", "1", "--epochs", "50",
                       "--tracking-uri", uri], tmp_path)
    assert result.code == 0, result
    (evaluated,) = [r for r in runs_of(tmp_path) if r.data.tags.get("lgals.stage") == "evaluate"
                    and "lgals.seed" in r.data.tags]
    assert evaluated.data.params["epochs"] == str(best_epoch)
    steps, _ = history(client_of(tmp_path), evaluated.info.run_id, "test_acc")
    assert steps == list(range(1, best_epoch + 1))
