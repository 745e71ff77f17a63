"""Every input a user controls, through the console script, and what needs a process of its
own: a file the user cannot read, the metric writer killed mid-training, a run whose files
are gone from the artifact store.

Each: exactly one line on stderr, no traceback, the exit code (2 for a bad value, 1 for the
environment), and nothing created or left half-written. Every row of the table, in this
process: ``tests/unit/test_inputs.py``.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import tempfile
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient
from support.inputs import ROWS, user_files
from support.mlflow_fixtures import (
    LGALS,
    cli_env,
    popen_lgals,
    run_lgals,
    sqlite_uri,
    stop,
    wait_for,
)

# Rows of the table run here too, one per kind of input.
CONSOLE_ROWS = ("params-not-utf8", "experiment-env-tune", "storage-mysql", "storage-no-driver",
                "tracking-uri-env", "n-trials", "out-under-a-file")


@pytest.mark.parametrize("argv, env, code, line",
                         [row[1:] for row in ROWS if row[0] in CONSOLE_ROWS],
                         ids=[row[0] for row in ROWS if row[0] in CONSOLE_ROWS])
def test_a_bad_input_is_one_line_from_the_console_script(tmp_path, argv, env, code, line):
    user_files(tmp_path)
    before = sorted(tmp_path.iterdir())
    proc = run_lgals(argv, tmp_path, timeout=120,
                     **{name: value.format(tmp=tmp_path) for name, value in env.items()})
    assert proc.returncode == code, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.strip() == line.format(tmp=tmp_path)
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert sorted(tmp_path.iterdir()) == before


def test_a_params_file_the_user_cannot_read_is_one_line():
    """Unreadable by its permissions: root reads anything, so as root the command runs without
    the capabilities that override file permissions (still root: the checkout and its venv
    may sit where no other user can enter, as in CI's temporary clone)."""
    directory = Path(tempfile.mkdtemp(prefix="lgals-unreadable-"))
    try:
        params = directory / "params.json"
        params.write_text('{"baseline": {"lr": 0.001}}')
        params.chmod(0o000)
        no_override = ["setpriv", "--bounding-set=-dac_override,-dac_read_search",
                       "--inh-caps=-dac_override,-dac_read_search"]
        proc = subprocess.run([*(no_override if os.geteuid() == 0 else []), LGALS, "evaluate",
                               "--params-from", "params.json", "--modes", "baseline"],
                              cwd=directory, env=cli_env(HOME=str(directory)),
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert proc.stderr.strip() == (
            "lgals: error: --params-from params.json: cannot read it (Permission denied); give "
            "`tune`, `defaults` or a JSON/YAML file")
        assert sorted(p.name for p in directory.iterdir()) == ["params.json"]
    finally:
        shutil.rmtree(directory)


def _train_loss_steps(db: Path) -> dict[str, int]:
    """Each run's last epoch of train_loss stored so far (read beside the running command)."""
    with sqlite3.connect(db, timeout=30) as connection:
        return dict(connection.execute(
            "select run_uuid, max(step) from metrics where key = 'train_loss' group by run_uuid"))


def test_the_metric_writer_killed_mid_training_is_one_line_saying_what_was_stored(tmp_path):
    """kill -9 of the writer child during `lgals train`: one line with the signal, the epoch
    the runs' metrics were stored up to (as the store holds them), that their files and
    models were not; the runs end FAILED with that line as their reason; exit 1."""
    db = tmp_path / "mlflow.db"
    client = MlflowClient(sqlite_uri(db))
    client.create_experiment("lgals")  # the store exists: lgals prints no line of MLflow's
    process = popen_lgals(["train", "--epochs", "300", "--seeds", "2", "--tracking-uri",
                           sqlite_uri(db)], tmp_path)
    try:
        wait_for(lambda: db.exists() and _train_loss_steps(db), timeout=120)
        [writer] = [child for child in psutil.Process(process.pid).children()
                    if "lgals.tracking.writer" in " ".join(child.cmdline())]
        os.kill(writer.pid, signal.SIGKILL)
        out, err = process.communicate(timeout=120)
    finally:
        stop(process)
    assert process.returncode == 1, err
    assert len(err.strip().splitlines()) == 1, err
    match = re.fullmatch(
        rf"lgals: error: (the MLflow writer process \(pid {writer.pid}\) was killed by signal "
        r"9 \(SIGKILL\): the 2 run\(s\) being trained hold their metrics up to epoch (\d+) of "
        r"300, and none of their files and models \(training stopped\); they end FAILED: run "
        r"the command again)", err.strip())
    assert match, err
    assert out == ""
    runs = client.search_runs([client.get_experiment_by_name("lgals").experiment_id])
    assert sorted(run.info.status for run in runs) == ["FAILED"] * 3  # the parent and 2 seeds
    assert {run.data.tags["lgals.status_reason"] for run in runs} == {match.group(1)}
    seeds = [run for run in runs if "lgals.seed" in run.data.tags]
    assert max(_train_loss_steps(db).values()) == int(match.group(2)) < 300
    for run in seeds:
        assert client.list_artifacts(run.info.run_id) == []
    assert client.search_logged_models([runs[0].info.experiment_id]) == []


@pytest.fixture(scope="module")
def trained(tmp_path_factory, _cache_dir):
    """One `lgals train` seed run (1 epoch) in a store of its own: its id, store, and a copy
    of its artifacts to restore after each test."""
    root = tmp_path_factory.mktemp("trained")
    proc = run_lgals(["train", "--epochs", "1", "--seeds", "1", "--tracking-uri",
                      sqlite_uri(root / "mlflow.db")], root)
    assert proc.returncode == 0, proc.stderr
    client = MlflowClient(sqlite_uri(root / "mlflow.db"))
    [run] = client.search_runs([client.get_experiment_by_name("lgals").experiment_id])
    shutil.copytree(root / "mlruns", root / "mlruns.whole")
    return run, client, root


@pytest.fixture
def store(trained):
    run, client, root = trained
    yield run, client, root
    shutil.rmtree(root / "mlruns")
    shutil.copytree(root / "mlruns.whole", root / "mlruns")


@pytest.mark.parametrize("fault", ["model files gone", "data recipe gone", "model damaged"])
def test_reanalyze_of_a_run_whose_files_are_gone_is_one_line(store, fault):
    run, client, root = store
    run_id, artifacts = run.info.run_id, Path(run.info.artifact_uri)
    [model] = client.search_logged_models([run.info.experiment_id])
    model_files = Path(model.artifact_location)
    if fault == "model files gone":
        shutil.rmtree(model_files)
        detail = (f": its logged model {model.model_id} is gone from the artifact store "
                  f"({model_files}): No such artifact: ''")
    elif fault == "data recipe gone":
        (artifacts / "data_recipe.npz").unlink()
        detail = (f" (FINISHED): its data_recipe.npz is not in the artifact store ({artifacts}), "
                  "though the run logged one")
    else:
        (model_files / "data" / "model.pt2").write_bytes(b"not a zip archive")
        detail = (f": its logged model {model.model_id} in the artifact store ({model_files}) "
                  "cannot be read (damaged?): File is not a zip file")
    runs_before = len(client.search_runs([run.info.experiment_id]))
    proc = run_lgals(["reanalyze", run_id, "--tracking-uri", sqlite_uri(root / "mlflow.db")],
                     root, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.strip() == (f"lgals: error: run {run_id}{detail}; restore the files "
                                   "logged there, or pick another run")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert len(client.search_runs([run.info.experiment_id])) == runs_before  # no reanalyze run
