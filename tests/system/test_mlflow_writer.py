"""The MLflow writer process against a real sqlite MLflow store."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow.utils.validation import MAX_METRICS_PER_BATCH
from support.mlflow_fixtures import sqlite_uri, wait_for

from lgals.tracking.writer import MlflowWriter, WriterDied


@pytest.fixture
def store(tmp_path):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("writer")
    return uri, client, experiment_id


@pytest.fixture
def writer():
    writer = MlflowWriter()
    yield writer
    writer.close()


def test_metrics_are_stored_while_every_core_is_busy(store, writer):
    """Live curves on a busy machine: with a CPU-bound process on every core, what the parent
    sends is readable within seconds, not only once the cores fall idle (the writer at
    Linux's idle priority got no time until the spinners stopped)."""
    uri, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id
    writer.open(uri)
    writer.sync()  # the child is up, MLflow imported, the store open
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(1)  # the spinners have the cores
        for step in range(3):
            writer.send(uri, run_id, [("train_loss", 1.0 / (step + 1), 0, step)])
            wait_for(lambda step=step: len(client.get_metric_history(run_id, "train_loss"))
                     > step, timeout=15, what=f"step {step} stored while the cores are busy")
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
    assert writer._process.poll() is None  # stored by the child at work, not at its exit


def _metrics(n_steps: int, keys=("a", "b", "c")) -> list[tuple]:
    return [(key, step * 0.25 + k, 1_700_000_000_000 + step, step)
            for step in range(n_steps) for k, key in enumerate(keys)]


def _history(client, run_id, key) -> list[tuple[int, float, int]]:
    return sorted((m.step, m.value, m.timestamp) for m in client.get_metric_history(run_id, key))


def test_metrics_round_trip_exactly_across_batches_and_runs(store, writer):
    uri, client, experiment_id = store
    runs = [client.create_run(experiment_id).info.run_id for _ in range(2)]
    n_steps = MAX_METRICS_PER_BATCH // 3 + 50  # 1200 rows: more than one log_batch
    sent = _metrics(n_steps)
    for run_id in runs:
        writer.send(uri, run_id, sent[: len(sent) // 2])
        writer.send(uri, run_id, sent[len(sent) // 2:])
    writer.send(uri, runs[1], [("nan_metric", math.nan, 1, 7)])
    writer.sync()
    for run_id in runs:
        for k, key in enumerate("abc"):
            assert _history(client, run_id, key) == [
                (step, step * 0.25 + k, 1_700_000_000_000 + step) for step in range(n_steps)]
    (nan,) = client.get_metric_history(runs[1], "nan_metric")
    assert nan.step == 7 and math.isnan(nan.value)


def test_a_failed_write_is_reported_at_sync_and_the_writer_goes_on(store, writer):
    uri, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id
    writer.send(uri, "0" * 32, _metrics(2))  # no such run
    writer.send(uri, run_id, _metrics(2, keys=("kept",)))  # after the failure, still written
    with pytest.raises(RuntimeError, match="MLflow writer: .*0{32}"):
        writer.sync()
    writer.sync()  # the error was reported once
    assert [m.step for m in client.get_metric_history(run_id, "kept")] == [0, 1]


def test_close_writes_what_was_sent_and_ends_the_process(store, writer):
    uri, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id
    writer.send(uri, run_id, _metrics(5, keys=("x",)))
    process = writer._process
    writer.close()  # no sync: closing alone must not drop what was sent
    assert process.returncode == 0
    assert [m.step for m in client.get_metric_history(run_id, "x")] == list(range(5))
    writer.send(uri, run_id, [("x", 1.0, 1, 5)])  # a closed writer starts anew
    writer.sync()
    assert writer._process.pid != process.pid
    assert len(client.get_metric_history(run_id, "x")) == 6


def test_a_writer_whose_process_died_raises(store, writer):
    uri, client, experiment_id = store
    writer.start()
    pid = writer._process.pid
    writer._process.kill()
    writer._process.wait()
    with pytest.raises(WriterDied, match=rf"^the MLflow writer process \(pid {pid}\) was "
                                         r"killed by signal 9 \(SIGKILL\): what it had not "
                                         "stored is lost: run the command again$"):
        writer.send(uri, client.create_run(experiment_id).info.run_id, _metrics(1))
        writer.sync()


@pytest.mark.parametrize("priority, policy, niced", [
    ("0", os.SCHED_OTHER, 0),  # lgals' own: beside training, as live curves need
    ("10", os.SCHED_OTHER, 10),
    ("idle", os.SCHED_IDLE, 0),  # only what training leaves (benchmarks/live_curves.py)
])
def test_the_writer_runs_at_the_priority_it_is_given(store, priority, policy, niced):
    uri, client, experiment_id = store
    writer = MlflowWriter(priority)
    try:
        writer.send(uri, client.create_run(experiment_id).info.run_id, _metrics(1))
        writer.sync()  # the child has set its scheduling policy before it answers
        pid = writer._process.pid
        assert os.sched_getscheduler(pid) == policy
        assert os.getpriority(os.PRIO_PROCESS, pid) - os.getpriority(os.PRIO_PROCESS, 0) == niced
        assert os.sched_getscheduler(0) == os.SCHED_OTHER  # training keeps its own
    finally:
        writer.close()
    assert MlflowWriter().priority == "0"


def test_a_relative_sqlite_uri_means_the_senders_working_directory(tmp_path, writer,
                                                                    monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    monkeypatch.chdir(first)
    writer.start()  # the child starts in ``first``
    monkeypatch.chdir(second)
    client = MlflowClient(sqlite_uri(second / "mlflow.db"))
    run_id = client.create_run(client.create_experiment("relative")).info.run_id
    writer.send("sqlite:///mlflow.db", run_id, _metrics(3, keys=("here",)))
    writer.sync()
    assert [m.step for m in client.get_metric_history(run_id, "here")] == [0, 1, 2]
    assert not (first / "mlflow.db").exists()


def test_artifacts_and_heat_maps_are_logged_from_files(store, writer, tmp_path):
    """The files a run hands over arrive byte for byte; the figure is drawn from the
    histograms file, by the child, with its imports done at start (``figures``)."""
    uri, client, experiment_id = store
    writer.start(figures=True)
    writer.open(uri)
    run_id = client.create_run(experiment_id).info.run_id
    counts = np.random.default_rng(0).integers(0, 50, size=(4, 2, 50))
    histograms = tmp_path / "epsilon_distributions.npz"
    np.savez_compressed(histograms, eps_edges=np.linspace(0, 1, 51), eps_counts=counts,
                        alignment_edges=np.linspace(-1, 1, 51), alignment_counts=counts[::-1])
    recipe = tmp_path / "data_recipe.npz"
    np.savez_compressed(recipe, y_train=np.arange(10))
    writer.log_artifacts(uri, run_id, [str(histograms), str(recipe)])
    writer.log_heatmaps(uri, run_id, str(histograms), "LGALS, seed 3")
    writer.sync()
    logged = {a.path for a in client.list_artifacts(run_id)}
    assert logged == {"epsilon_distributions.npz", "data_recipe.npz",
                      "epsilon_distributions.png"}
    for name, source in (("epsilon_distributions.npz", histograms), ("data_recipe.npz", recipe)):
        assert Path(client.download_artifacts(run_id, name, str(tmp_path / "back"))
                    ).read_bytes() == source.read_bytes()
    png = Path(client.download_artifacts(run_id, "epsilon_distributions.png",
                                         str(tmp_path / "back")))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missing_file_is_reported_at_sync(store, writer, tmp_path):
    uri, client, experiment_id = store
    run_id = client.create_run(experiment_id).info.run_id
    writer.log_heatmaps(uri, run_id, str(tmp_path / "gone.npz"), "title")
    with pytest.raises(RuntimeError, match="MLflow writer: error: FileNotFoundError"):
        writer.sync()


def test_a_message_cut_off_by_the_parent_is_dropped_without_a_traceback(store):
    """A parent interrupted while writing a long message leaves half a line in the pipe:
    the writer stores what came whole, drops the rest and exits 0, with nothing on stderr."""
    import subprocess
    import sys

    whole = '{"sync": true}\n'
    uri, _, _ = store
    cut = '{"uri": "' + uri + '", "run_id": "x", "metrics": [[' + "1, " * 40_000
    process = subprocess.run([sys.executable, "-m", "lgals.tracking.writer", "idle"],
                             input=whole + cut, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stderr
    assert process.stdout.splitlines() == ["ok"]
    assert "Traceback" not in process.stderr
