"""End to end: ``mlflow run`` of the project's ``train`` and ``tune`` entry points (local
environment).

The fast in-process tests: ``tests/unit/test_mlproject.py``.
"""

from __future__ import annotations

import getpass
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import (
    MLFLOW,
    PROJECT,
    all_runs,
    cli_env,
    git_of_checkout,
    history,
    run_context,
    sqlite_uri,
    stop,
)

EXPERIMENT = "from-mlflow-run"  # the good run's $MLFLOW_EXPERIMENT_NAME


def project_copy(tmp: Path) -> Path:
    """The MLproject, its conda env and entry points, outside the git checkout (``lgals``
    itself is the installed, editable package)."""
    target = tmp / "project"
    target.mkdir()
    for name in ("MLproject", "conda.yaml"):
        if (PROJECT / name).exists():
            shutil.copy2(PROJECT / name, target / name)
    shutil.copytree(PROJECT / "entrypoints", target / "entrypoints",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return target


def mlflow_run(project: Path, cwd: Path, db: Path, *params: str, entry: str = "train",
               **env: str) -> subprocess.Popen:
    args = [MLFLOW, "run", str(project), "-e", entry, "--env-manager", "local"]
    for param in params:
        args += ["-P", param]
    return subprocess.Popen(args, cwd=cwd, env=cli_env(MLFLOW_TRACKING_URI=sqlite_uri(db), **env),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def project_runs(tmp_path_factory, _cache_dir):
    """Both ``mlflow run`` invocations, started together (each in its own store and cwd); the
    good one in the experiment $MLFLOW_EXPERIMENT_NAME names, with system metrics sampled
    every 0.5 s."""
    tmp = tmp_path_factory.mktemp("mlproject")
    project = project_copy(tmp)
    (tmp / "good").mkdir()
    (tmp / "bad").mkdir()
    good_db, bad_db = tmp / "good" / "mlflow.db", tmp / "bad" / "mlflow.db"
    good = mlflow_run(project, tmp / "good", good_db, "epochs=2", "seeds=2", "lr=1e-3",
                      "system_metrics=true", MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
                      MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="0.5")
    bad = mlflow_run(project, tmp / "bad", bad_db, "epochs=2", "seeds=2", "lr=0")
    try:
        bad_out, bad_err = bad.communicate(timeout=300)
        good_out, good_err = good.communicate(timeout=300)
    finally:
        stop(good)
        stop(bad)
    return SimpleNamespace(
        project=project,
        good=SimpleNamespace(code=good.returncode, out=good_out, err=good_err, db=good_db),
        bad=SimpleNamespace(code=bad.returncode, out=bad_out, err=bad_err, db=bad_db),
    )


def test_mlflow_run_train_nests_the_seeds_under_the_project_run(project_runs):
    good = project_runs.good
    assert good.code == 0, good.err[-3000:]
    runs = all_runs(MlflowClient(sqlite_uri(good.db)))
    project_run = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "train"]
    assert len(project_run) == 1, [r.data.tags for r in runs]
    project_run = project_run[0]
    children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags),
                      key=lambda r: int(r.data.tags["lgals.seed"]))
    assert len(runs) == 3 and len(children) == 2
    assert "mlflow.parentRunId" not in project_run.data.tags
    assert project_run.data.tags["lgals.stage"] == "train"
    assert "lgals.seed" not in project_run.data.tags
    # the project run keeps the string mlflow run logged; the seeds get lgals' own
    assert project_run.data.params["lr"] == "1e-3"
    assert project_run.data.params["epochs"] == "2"
    for seed, child in enumerate(children):
        assert child.data.tags["mlflow.parentRunId"] == project_run.info.run_id
        assert child.data.tags["lgals.seed"] == str(seed)
        assert child.data.params["lr"] == "0.001"
        assert child.data.params["seed"] == str(seed)
        assert child.info.experiment_id == project_run.info.experiment_id
        assert "final_test_acc" in child.data.metrics
    assert all(r.info.status == "FINISHED" for r in runs)


def test_the_project_run_keeps_what_mlflow_run_set_and_gets_the_system_metrics(project_runs):
    """``mlflow run`` made the project run, in the experiment of $MLFLOW_EXPERIMENT_NAME, with
    its user and source (the project, type PROJECT; no commit: the copy is no checkout):
    lgals adopts it and adds none of its own, and logs the system metrics to it, the top run.
    The seed runs lgals creates carry its context: the entry point's script, the commit of
    the checkout lgals runs from."""
    good = project_runs.good
    assert good.code == 0, good.err[-3000:]
    client = MlflowClient(sqlite_uri(good.db))
    runs = all_runs(client)
    assert {client.get_experiment(r.info.experiment_id).name for r in runs} == {EXPERIMENT}
    (project_run,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    user = getpass.getuser()
    assert run_context(project_run) == {"mlflow.user": user,
                                        "mlflow.source.name": str(project_runs.project),
                                        "mlflow.source.type": "PROJECT"}
    steps, _ = history(client, project_run.info.run_id, "system/cpu_utilization_percentage")
    assert len(steps) >= 1 and steps == list(range(len(steps)))
    script = str(project_runs.project / "entrypoints" / "train.py")
    seeds = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(seeds) == 2
    for run in seeds:
        assert run_context(run) == {"mlflow.user": user, "mlflow.source.name": script,
                                    "mlflow.source.type": "LOCAL", **git_of_checkout()}
        assert [key for key in run.data.metrics if key.startswith("system/")] == []


def test_mlflow_run_with_a_bad_parameter_fails_the_project_run(project_runs):
    bad = project_runs.bad
    assert bad.code != 0
    assert "--lr" in bad.err
    assert "Traceback" not in bad.err.split("=== Run (ID")[0]  # lgals' own output
    runs = all_runs(MlflowClient(sqlite_uri(bad.db)))
    assert len(runs) == 1, [r.data.tags for r in runs]
    assert runs[0].data.tags.get("mlflow.project.entryPoint") == "train"
    assert runs[0].info.status == "FAILED"
    assert not [r for r in runs if "mlflow.parentRunId" in r.data.tags]


TUNE = ("modes=baseline", "n_trials=1", "pruner=none")


def finished(process: subprocess.Popen) -> SimpleNamespace:
    try:
        out, err = process.communicate(timeout=300)
    finally:
        stop(process)
    return SimpleNamespace(code=process.returncode, out=out, err=err)


@pytest.fixture(scope="module")
def tune_runs(tmp_path_factory, _cache_dir):
    """`mlflow run -e tune` as a user runs it after `lgals reproduce` in the same folder (whose
    study `lgals-baseline` is made here as reproduce makes it, without its 100-epoch trials),
    and after a `--study-name check` study of 2 epochs: first with the same name (refused),
    then following the advice."""
    from lgals.tuning import TuneSettings, create_study

    tmp = tmp_path_factory.mktemp("mlproject-tune")
    project = project_copy(tmp)
    after_reproduce, named = tmp / "after-reproduce", tmp / "named"
    for folder, settings in ((after_reproduce, TuneSettings(mode="baseline")),
                             (named, TuneSettings(mode="baseline", epochs=2,
                                                  study_name="check"))):
        folder.mkdir()
        create_study(settings, sqlite_uri(folder / "optuna.db"))
    started = [mlflow_run(project, after_reproduce, after_reproduce / "mlflow.db", *TUNE,
                          "epochs=1", entry="tune"),
               mlflow_run(project, named, named / "mlflow.db", *TUNE, "epochs=1",
                          "study_name=check", entry="tune")]
    try:
        first, refused = (finished(process) for process in started)
    finally:
        for process in started:
            stop(process)
    advised = finished(mlflow_run(project, named, named / "mlflow.db", *TUNE, "epochs=1",
                                  "study_name=check-1epoch", entry="tune"))
    return SimpleNamespace(after_reproduce=after_reproduce, named=named, first=first,
                           refused=refused, advised=advised)


def studies(folder: Path) -> dict[str, list]:
    import optuna

    storage = sqlite_uri(folder / "optuna.db")
    return {name: optuna.load_study(study_name=name, storage=storage).trials
            for name in optuna.get_all_study_names(storage)}


def test_mlflow_run_tune_after_reproduce_with_other_epochs_starts_its_own_study(tune_runs):
    run = tune_runs.first
    assert run.code == 0, run.err[-3000:]
    found = studies(tune_runs.after_reproduce)
    assert sorted(found) == ["lgals-baseline", "lgals-baseline-epochs=1"]
    assert found["lgals-baseline"] == []  # reproduce's study, untouched
    assert [t.state.name for t in found["lgals-baseline-epochs=1"]] == ["COMPLETE"]
    runs = all_runs(MlflowClient(sqlite_uri(tune_runs.after_reproduce / "mlflow.db")))
    (tune,) = [r for r in runs if r.data.tags.get("mlflow.project.entryPoint") == "tune"]
    assert tune.data.tags["lgals.study"] == "lgals-baseline-epochs=1"
    assert tune.info.status == "FINISHED"


def test_mlflow_run_tune_follows_the_study_name_advice(tune_runs):
    refused, advised = tune_runs.refused, tune_runs.advised
    assert refused.code != 0
    lgals_said = refused.err.split("=== Run (ID")[0]
    assert ("study 'check' was created with epochs=2; pick another --study-name, or another "
            "--storage") in refused.err
    assert "Traceback" not in lgals_said
    assert advised.code == 0, advised.err[-3000:]
    found = studies(tune_runs.named)
    assert sorted(found) == ["check", "check-1epoch"]
    assert found["check"] == []  # the refused run asked nothing of it
    assert [t.state.name for t in found["check-1epoch"]] == ["COMPLETE"]
    runs = all_runs(MlflowClient(sqlite_uri(tune_runs.named / "mlflow.db")))
    statuses = {r.data.tags.get("lgals.study", ""): r.info.status for r in runs
                if r.data.tags.get("mlflow.project.entryPoint") == "tune"}
    assert statuses == {"": "FAILED", "check-1epoch": "FINISHED"}
