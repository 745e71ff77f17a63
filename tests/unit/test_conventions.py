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
import sys
import threading
import time

import mlflow
import optuna
import pytest
from mlflow import MlflowClient
from support.errors import assert_one_line_error
from support.mlflow_fixtures import (
    all_runs,
    expected_context,
    history,
    isolated_mlflow,
    run_context,
    run_main,
    sqlite_uri,
    wait_for,
)
from support.tuning import load_study, tune_main

from lgals.cli import project_flags
from lgals.tracking.runs import context_tags, ending, logging_system_metrics, open_run

CPU = "system/cpu_utilization_percentage"  # what MLflow's CPU monitor logs


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
    optuna.create_study(study_name="lgals-baseline-epochs=1", storage=storage, direction="maximize")
    assert load_study(directory, "lgals-baseline-epochs=1").metric_names is None
    result = tune_main(directory, "--mode", "baseline", "--n-trials", "1", "--epochs", "1")
    assert result.code == 0, result.err
    study = load_study(directory, "lgals-baseline-epochs=1")
    assert study.metric_names == ["val_acc"]
    assert [t.state.name for t in study.trials] == ["COMPLETE"]
    df = study.trials_dataframe(multi_index=True)  # Optuna's own tables name the value too
    assert ("value", "val_acc") in df.columns


# --- --system-metrics -------------------------------------------------------------------------

TRAINING = ("train", "tune", "evaluate", "diagnose", "reproduce", "sweep")


@pytest.mark.parametrize("command", TRAINING)
def test_system_metrics_without_psutil_is_one_line_and_starts_nothing(command, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # what an import sees where it is missing
    db = tmp_path / "mlflow.db"
    result = run_main([*COMMANDS[command], "--system-metrics", "--tracking-uri",
                       sqlite_uri(db)], tmp_path)
    assert_one_line_error(result.code, result.out, result.err, "'--system-metrics'")
    assert "pip install 'lgals[system-metrics]'" in result.err
    assert not db.exists() and not (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize("command", ("train", "diagnose"))
def test_system_metrics_without_tracking_is_refused(command, tmp_path):
    result = run_main([*COMMANDS[command], "--system-metrics", "--no-tracking"], tmp_path)
    assert_one_line_error(result.code, result.out, result.err, "'--system-metrics'")
    assert "--no-tracking" in result.err


def test_system_metrics_go_to_the_top_run_and_stop_as_it_ends_on_an_interrupt(tmp_path,
                                                                             monkeypatch):
    """Under :func:`logging_system_metrics` a run without a parent gets MLflow's monitor, its
    child none; an interrupt ends the runs KILLED and stops the monitor with them: no monitor
    thread is left, and the run's metrics stop growing."""
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    with isolated_mlflow():
        mlflow.set_tracking_uri(uri)
        experiment_id = client.create_experiment("system-metrics")
        with logging_system_metrics(), pytest.raises(KeyboardInterrupt), \
                ending([]) as runs:
            runs.append(top := open_run(experiment_id, "top", {}, {}))
            runs.append(child := open_run(experiment_id, "child", {}, {}, parent_run_id=top))
            wait_for(lambda: len(history(client, top, CPU)[0]) >= 3, timeout=60,
                     what="three CPU samples")
            raise KeyboardInterrupt
        monitors = [t for t in threading.enumerate() if t.name == "SystemMetricsMonitor"]
        steps, values = history(client, top, CPU)
        with ending([open_run(experiment_id, "plain", {}, {})]) as (plain,):
            time.sleep(1)  # ten sampling intervals: for a monitor left running, or a new one
    assert monitors == []
    assert [client.get_run(r).info.status for r in (top, child)] == ["KILLED", "KILLED"]
    assert steps == list(range(len(steps))) and all(0 <= v <= 100 for v in values)
    assert client.get_run(top).data.metrics["system/system_memory_usage_megabytes"] > 0
    assert history(client, top, CPU)[0] == steps  # nothing after the run ended
    assert [k for k in client.get_run(child).data.metrics if k.startswith("system/")] == []
    assert client.get_run(plain).data.metrics == {}  # opened outside the block


@pytest.mark.parametrize("value, argv", [
    ("true", ["--system-metrics"]), ("True", ["--system-metrics"]), ("1", ["--system-metrics"]),
    ("yes", ["--system-metrics"]), ("false", []), ("False", []), ("0", []), ("no", []),
    ("maybe", ["--system-metrics=maybe"])])
def test_an_mlproject_flag_parameter_becomes_the_flag_or_nothing(value, argv):
    assert project_flags(["--epochs", "2", "--system-metrics", value, "--seeds", "1"]) == [
        "--epochs", "2", *argv, "--seeds", "1"]


def test_an_mlproject_flag_that_is_no_boolean_is_one_line_naming_it(tmp_path):
    result = run_main(["train", *project_flags(["--system-metrics", "maybe"]), "--no-tracking"],
                      tmp_path)
    assert_one_line_error(result.code, result.out, result.err, "'--system-metrics'")
