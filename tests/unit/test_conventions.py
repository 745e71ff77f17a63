"""What an MLflow or Optuna user expects of lgals' runs and studies: MLflow's context tags
(user, source, git) on every run, ``MLFLOW_EXPERIMENT_NAME`` honoured by every command, the
Optuna objective named, ``--system-metrics`` on the top run only. Real sqlite stores and
storages, commands through ``lgals.cli.main``.

The process-level tests (the console script, a real training with system metrics):
``tests/system/test_conventions.py``; ``mlflow run``: ``tests/system/test_mlproject.py``; a
basic-auth server's user: ``tests/system/test_team_auth.py``.
"""

from __future__ import annotations

import getpass

import optuna
import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import (
    all_runs,
    expected_context,
    run_context,
    run_main,
    sqlite_uri,
)
from support.tuning import load_study, tune_main

from lgals.tracking.runs import context_tags


@pytest.fixture
def fresh_context():
    """The run context resolved anew for the test, and again after it (it is cached once per
    process, and the test may set a tracking username)."""
    context_tags.cache_clear()
    yield
    context_tags.cache_clear()

# --- MLflow's context tags --------------------------------------------------------------------

def test_every_run_of_train_carries_the_user_the_source_and_the_commit(tmp_path, fresh_context):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    result = run_main(["train", "--epochs", "1", "--seeds", "2", "--tracking-uri", uri],
                      tmp_path)
    assert result.code == 0, result.err
    client = MlflowClient(uri)
    runs = all_runs(client)
    assert len(runs) == 3  # the parent and two seeds
    assert {client.get_experiment(r.info.experiment_id).name for r in runs} == {"lgals"}
    user = getpass.getuser()
    for run in runs:
        assert run_context(run) == expected_context(user), run.info.run_name
        assert run.info.user_id == user
        # the commit lgals logs as a param is the one the tag names
        assert run.data.params["git_commit"] == run.data.tags["mlflow.source.git.commit"]


def test_the_tracking_username_is_the_runs_user(tmp_path, fresh_context):
    """MLFLOW_TRACKING_USERNAME, where set, is ``mlflow.user`` and the run's ``user_id``, as
    MLflow's fluent API does (on a basic-auth server: ``tests/system/test_team_auth.py``)."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    result = run_main(["train", "--epochs", "1", "--seeds", "1", "--tracking-uri", uri],
                      tmp_path, MLFLOW_TRACKING_USERNAME="carol")
    assert result.code == 0, result.err
    (run,) = all_runs(MlflowClient(uri))
    assert run_context(run) == expected_context("carol")
    assert run.info.user_id == "carol"

# --- Optuna: the objective named -------------------------------------------------------------

def test_a_study_made_before_its_objective_had_a_name_gets_it_when_resumed(tmp_path):
    """A study as lgals made it before (no metric names) is named ``val_acc`` by the next
    ``lgals tune`` on it, which tops it up; a new study is named as it is made
    (``test_every_run_of_a_tune_...`` in ``test_tuning.py``)."""
    directory = tmp_path / "tune"
    directory.mkdir()
    storage = sqlite_uri(directory / "optuna.db")
    optuna.create_study(study_name="lgals-baseline", storage=storage, direction="maximize")
    assert load_study(directory, "lgals-baseline").metric_names is None
    result = tune_main(directory, "--mode", "baseline", "--n-trials", "1", "--epochs", "1")
    assert result.code == 0, result.err
    study = load_study(directory, "lgals-baseline")
    assert study.metric_names == ["val_acc"]
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    df = study.trials_dataframe(multi_index=True)  # Optuna's own tables name the value too
    assert ("value", "val_acc") in df.columns
