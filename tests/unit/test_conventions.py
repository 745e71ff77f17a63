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
from support.errors import assert_one_line_error
from support.mlflow_fixtures import (
    all_runs,
    expected_context,
    isolated_mlflow,
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

# --- MLFLOW_EXPERIMENT_NAME -------------------------------------------------------------------

# Every command that takes an experiment, as little as it takes to reach the store.
COMMANDS = {
    "train": ["train", "--epochs", "1", "--seeds", "1"],
    "tune": ["tune", "--mode", "baseline", "--n-trials", "1", "--epochs", "1"],
    "evaluate": ["evaluate", "--modes", "baseline", "--params-from", "defaults", "--seeds", "1",
                 "--epochs", "1"],
    "diagnose": ["diagnose", "--epochs", "1", "--checkpoints", "1", "--batches", "1"],
    "reproduce": ["reproduce", "--quick"],
    "sweep": ["sweep", "--quick", "--noise-rates", "0", "--noise-types", "symmetric"],
    "report": ["report"],
}


@pytest.fixture(scope="module")
def gone(tmp_path_factory) -> str:
    """A store whose experiment ``gone`` is deleted (MLflow refuses to log to it); its URI."""
    uri = sqlite_uri(tmp_path_factory.mktemp("deleted") / "mlflow.db")
    with isolated_mlflow():
        client = MlflowClient(uri)
        client.delete_experiment(client.create_experiment("gone"))
    return uri


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_experiment_from_the_environment_is_one_line_naming_the_variable(command, gone,
                                                                               tmp_path):
    """A name MLflow refuses (a deleted experiment; for ``report``, which only reads, one the
    store lacks) from $MLFLOW_EXPERIMENT_NAME: exit 2, one line naming the variable and the
    name, not the option; no run."""
    name = "missing" if command == "report" else "gone"
    result = run_main([*COMMANDS[command], "--tracking-uri", gone], tmp_path,
                      MLFLOW_EXPERIMENT_NAME=name)
    assert_one_line_error(result.code, result.out, result.err, "MLFLOW_EXPERIMENT_NAME")
    assert f"'{name}'" in result.err and "--experiment-name" not in result.err
    assert all_runs(MlflowClient(gone)) == []


def test_a_bad_experiment_option_is_one_line_naming_the_option(gone, tmp_path):
    result = run_main([*COMMANDS["train"], "--experiment-name", "gone", "--tracking-uri", gone],
                      tmp_path)
    assert_one_line_error(result.code, result.out, result.err, "--experiment-name: Cannot set "
                                                               "a deleted experiment 'gone'")
    assert "MLFLOW_EXPERIMENT_NAME" not in result.err
    assert all_runs(MlflowClient(gone)) == []


def test_the_environments_experiment_is_used_and_the_option_beats_it(tmp_path):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    from_env = run_main([*COMMANDS["train"], "--tracking-uri", uri], tmp_path,
                        MLFLOW_EXPERIMENT_NAME="from-env")
    assert from_env.code == 0, from_env.err
    # the variable names an experiment that cannot be used: the option is all that counts
    MlflowClient(uri).delete_experiment(MlflowClient(uri).create_experiment("gone"))
    from_option = run_main([*COMMANDS["train"], "--experiment-name", "from-option",
                            "--tracking-uri", uri], tmp_path, MLFLOW_EXPERIMENT_NAME="gone")
    assert from_option.code == 0, from_option.err
    client = MlflowClient(uri)
    held = {run.info.run_id: client.get_experiment(run.info.experiment_id).name
            for run in all_runs(client)}
    assert sorted(held.values()) == ["from-env", "from-option"]
    assert {e.name for e in client.search_experiments()} == {"Default", "from-env",
                                                               "from-option"}  # active ones

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
