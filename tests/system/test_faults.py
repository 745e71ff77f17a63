"""Fault injection with real processes, signals, mounts and files: what a user meets when
things go wrong, and what the next command makes of it.

Every test asserts the same contract: the exit code, one line on stderr and no traceback,
then, after the follow-up command, 0 runs RUNNING, 0 logged models PENDING, exact trial
counts and no half-written file under the artifact root (:func:`assert_settled`).

Here: ``kill -9`` in each stage (train, reproduce's tuning, evaluate, a ``tune --workers``
pool) followed by the rerun; a full disk (a 3 MB tmpfs); 4 commands started at once on an
empty directory; a model that does not fit its disk. In ``tests/unit/test_faults.py``:
unusable stores (a read-only mount, no directory, damaged or foreign files, bad URIs) and a
bad stale period, refused in one line before anything trains.
Elsewhere, next to the code they exercise: Ctrl-C and SIGTERM to one process
(``test_tracking.py``) and to a worker pool (``test_batched_tuning.py``), damaged data caches
(``test_data.py``), bad ``--params-from`` files (``test_reproduce.py``) and bad options
(``test_cli.py``, ``test_batched_tuning.py``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from support.errors import assert_one_line
from support.mlflow_fixtures import (
    LGALS,
    all_succeed,
    cli_env,
    run_lgals,
    sqlite_runs,
    sqlite_uri,
    stop,
    wait_for,
)

from lgals.losses import SUITES

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

# Runs (and trials) of a dead process go stale in 6 s here instead of 30: the reruns need
# not wait long.
STALE = "6"


def assert_settled(root: Path) -> MlflowClient:
    """The store under ``root`` as the follow-up command must leave it: no run RUNNING, no
    model PENDING, a model's files only for a READY model, and every file complete."""
    from mlflow.entities import LoggedModelStatus

    client = MlflowClient(sqlite_uri(root / "mlflow.db"))
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=10000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    models = client.search_logged_models(experiments, max_results=10000)
    assert [m.name for m in models if m.status == LoggedModelStatus.PENDING] == []
    ready = {m.model_id for m in models if m.status == LoggedModelStatus.READY}
    model_dirs = {p.name for p in root.glob("mlruns/*/models/*")}
    assert model_dirs == ready  # a failed model leaves no files behind
    assert_files_whole(root / "mlruns")
    return client


def assert_files_whole(root: Path) -> None:
    """Every artifact under ``root`` is complete: archives open, images end."""
    for path in root.rglob("*"):
        if path.suffix == ".npz":
            with np.load(path) as npz:
                [npz[name] for name in npz.files]  # each member decompresses in full
        elif path.suffix == ".png":
            assert path.read_bytes().endswith(b"IEND\xaeB`\x82"), path
        elif path.suffix == ".pt2":
            with zipfile.ZipFile(path) as archive:
                assert archive.testzip() is None, path


def failed_by_heartbeat(client: MlflowClient) -> list:
    experiments = [e.experiment_id for e in client.search_experiments()]
    return [r for r in client.search_runs(experiments, max_results=10000)
            if r.data.tags.get("lgals.status_reason", "").startswith("its process stopped")]


def running_at_stage(db: Path, stage: str) -> int:
    """RUNNING runs of an ``lgals.stage``, read without MLflow."""
    if not db.exists():
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=5)) as connection:
            return connection.execute(
                "SELECT COUNT(*) FROM runs JOIN tags ON runs.run_uuid = tags.run_uuid "
                "WHERE runs.status = 'RUNNING' AND tags.key = 'lgals.stage' "
                "AND tags.value = ?", (stage,)).fetchone()[0]
    except sqlite3.Error:  # not created yet, or mid-migration
        return 0


def exact_trials(root: Path, study_name: str, n_trials: int) -> None:
    """``n_trials`` counted trials (a stale trial's retry replaces it), none left RUNNING."""
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{root / 'optuna.db'}")
    retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
               for t in study.trials} - {None}
    counted = [t for t in study.trials if t.number not in retried]
    assert len(counted) == n_trials, [(t.number, t.state.name) for t in study.trials]
    assert all(t.state.is_finished() for t in study.trials)


# --- kill -9 in each stage, then the same command again ------------------------------------

STAGES = {
    # what runs, the stage whose RUNNING runs show it is under way, how many of them
    "train": (["train", "--seeds", "2", "--epochs", "60"], "train", 2),
    "reproduce, tuning": (["reproduce", "--quick"], "trial", 1),
    "evaluate": (["evaluate", "--params-from", "defaults", "--seeds", "2", "--epochs", "40"],
                 "evaluate", 2),
    "tune --workers 2": (["tune", "--workers", "2", "--batch", "2", "--n-trials", "3",
                          "--epochs", "60", "--study-name", "w"], "trial", 2),
}


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_then_the_same_command_again(tmp_path, _cache_dir, stage):
    """SIGKILL to the whole process group (the command, its workers, its MLflow writer: as
    the OOM killer or a power cut would): no handler runs, everything it had open stays
    RUNNING. The rerun ends those FAILED with the reason once they are stale, tops studies up
    to exactly their trials, and finishes the work."""
    argv, running_stage, running = STAGES[stage]
    env = cli_env(LGALS_STALE_SECONDS=STALE)
    process = subprocess.Popen([LGALS, *argv], cwd=tmp_path, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    try:
        wait_for(lambda: process.poll() is not None
                 or running_at_stage(tmp_path / "mlflow.db", running_stage) >= running,
                 timeout=180, interval=0.05, what=f"{running} {running_stage} runs")
        assert process.poll() is None, process.communicate()[1][-3000:]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        stop(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
    statuses = [status for _, status in sqlite_runs(tmp_path / "mlflow.db")]
    assert statuses.count("RUNNING") >= running  # what the killed command had open stays so
    time.sleep(float(STALE) + 1)
    rerun = run_lgals(argv, tmp_path, timeout=600, LGALS_STALE_SECONDS=STALE)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    client = assert_settled(tmp_path)
    dead = failed_by_heartbeat(client)
    assert dead and {r.info.status for r in dead} == {"FAILED"}
    if stage == "reproduce, tuning":
        for mode in SUITES["paper"]:
            exact_trials(tmp_path, f"lgals-quick-{mode}", 2)
        assert (tmp_path / "results" / "results.md").is_file()
    if stage == "tune --workers 2":
        for mode in SUITES["paper"]:
            exact_trials(tmp_path, f"w-{mode}", 3)
    if stage == "evaluate":
        report = run_lgals(["report"], tmp_path)
        assert report.returncode == 0, report.stderr
        assert f"left out {len(dead)} evaluate runs that did not finish" in report.stdout


# --- a full disk -----------------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(mount: Path, options: str) -> Iterator[Path]:
    """A tmpfs at ``mount`` for the block (root only: the test is skipped, saying so, where
    mounting is refused)."""
    mount.mkdir(exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"mounting a tmpfs was refused here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs: room for the store and a few models, not for five."""
    with tmpfs(tmp_path / "disk", "size=3m") as mount:
        yield mount


def test_a_full_disk_is_one_line_and_the_next_command_settles_it(small_disk, _cache_dir):
    """The disk fills while the five seeds' files and models are logged: one line, exit 1;
    the half-copied files are gone; the runs that could not be ended (the database is full
    too) end FAILED at the next command, once there is space again."""
    argv = ["train", "--mode", "lgals", "--seeds", "5", "--epochs", "3"]
    full = run_lgals(argv, small_disk, LGALS_STALE_SECONDS=STALE)
    assert full.returncode == 1, full.stderr[-3000:]
    assert_one_line(full.stderr, "lgals: error: no space left on device while ")
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    time.sleep(float(STALE) + 1)
    after = run_lgals(["train", "--seeds", "1", "--epochs", "1"], small_disk,
                      LGALS_STALE_SECONDS=STALE)
    assert after.returncode == 0, after.stderr[-3000:]
    client = assert_settled(small_disk)
    finished = [r for r in client.search_runs(
        [e.experiment_id for e in client.search_experiments()]) if r.info.status == "FINISHED"]
    assert [r.info.run_name for r in finished] == ["baseline-seed0"]  # the follow-up's only


# --- stores that cannot be used ---------------------------------------------------------------

def test_four_trainings_started_at_once_on_an_empty_directory(tmp_path, _cache_dir):
    """MLflow creates a new store's tables with no guard against another process: lgals
    takes a lock beside the database, so all four start, train and log into one store."""
    processes = [subprocess.Popen([LGALS, "train", "--seeds", "1", "--epochs", "1"],
                                  cwd=tmp_path, env=cli_env(), text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(4)]
    all_succeed(processes, timeout=240)
    client = assert_settled(tmp_path)
    (experiment,) = [e for e in client.search_experiments() if e.name == "lgals"]
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 4 and {r.info.status for r in runs} == {"FINISHED"}


def test_the_store_lock_holds_off_another_process_until_released(tmp_path):
    """The lock beside a SQLite store (:func:`lgals.tracking.store._store_lock`, a
    ``filelock`` lock) is held across processes: a second process taking it gets it only
    once the first lets go."""
    from lgals.tracking.store import _store_lock

    uri = sqlite_uri(tmp_path / "mlflow.db")
    child = ("import sys, time\n"
             "from lgals.tracking.store import _store_lock\n"
             "print('waiting', flush=True)\n"
             "with _store_lock(sys.argv[1]):\n"
             "    print(time.time(), flush=True)\n")
    process = None
    try:
        with _store_lock(uri):
            process = subprocess.Popen([sys.executable, "-c", child, uri], env=cli_env(),
                                       text=True, stdout=subprocess.PIPE)
            assert process.stdout.readline() == "waiting\n"
            time.sleep(1.0)  # the child is blocked on the lock meanwhile
            released = time.time()
        acquired = float(process.stdout.readline())
        assert process.wait(timeout=30) == 0
    finally:
        if process is not None:
            stop(process)
    assert acquired >= released


def test_a_model_that_does_not_fit_is_failed_and_leaves_no_files(tmp_path, _cache_dir):
    """Artifacts on a 256 kB tmpfs, the store elsewhere: the model (~330 kB) cannot be
    written. One line names the run; the runs end FAILED (the store has room), the model is
    FAILED and its partial files are gone; whatever else of the run was logged is whole (the
    writer copies the data recipe and histograms while the model is exported: which of them
    fills the disk first varies)."""
    with tmpfs(tmp_path / "artifacts", "size=256k") as artifacts:
        uri = sqlite_uri(tmp_path / "mlflow.db")
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("tiny", artifact_location=str(artifacts))
        result = run_lgals(["train", "--seeds", "1", "--epochs", "2", "--tracking-uri", uri,
                            "--experiment-name", "tiny"], tmp_path)
        assert result.returncode == 1, result.stderr[-3000:]
        (run,) = client.search_runs([experiment_id])
        assert_one_line(result.stderr, "lgals: error: no space left on device while logging "
                                       f"the model of run {run.info.run_id}: ")
        assert run.info.status == "FAILED"
        (model,) = client.search_logged_models([experiment_id])
        assert model.status.name == "FAILED"
        assert not list(artifacts.glob("models/*"))
        assert_files_whole(artifacts)
