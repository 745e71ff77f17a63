"""Batched tuning (``lgals tune --batch K``) against real sqlite stores and real processes.

Each round asks up to K trials per study and trains every study's trials as one stack. The
contracts of one-at-a-time tuning still hold: exact trial counts (also on resume with another
``--batch`` and with workers), one nested MLflow run per trial, pruning and failure per trial,
interrupts that fail the trials and kill the runs, and trials of a ``kill -9``ed process
retried by the next run.

The fast in-process tests: ``tests/unit/test_batched_tuning.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from optuna.trial import TrialState
from support.mlflow_fixtures import (
    popen_lgals,
    run_lgals,
    sqlite_runs,
    stop,
    wait_for,
)
from support.tuning import (
    children,
    client_of,
    load_study,
    runs_of,
    stores,
    tune_argv,
    tune_group,
    tune_main,
    tune_ok,
    tune_runs,
)

from lgals.losses import HYPERPARAMETERS, MODES, SUITES
from lgals.storage import open_storage
from lgals.tuning import TuneSettings, create_study

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning:optuna")]

PAPER = SUITES["paper"]  # the modes `--mode all` means by default


def trial_runs(runs: list) -> list:
    return [r for r in runs if r.data.tags.get("lgals.stage") == "trial"]


def assert_one_run_per_trial(directory: Path, study_name: str, n_trials: int) -> None:
    """Exactly ``n_trials`` counted trials, each pointing at its own MLflow trial run."""
    study = load_study(directory, study_name)
    retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
               for t in study.trials} - {None}
    counted = [t for t in study.trials if t.number not in retried]
    assert len(counted) == n_trials, [(t.number, t.state.name) for t in study.trials]
    assert all(t.state.is_finished() for t in study.trials)
    pointed = [t.user_attrs["mlflow_run_id"] for t in study.trials]
    assert len(set(pointed)) == len(pointed)
    runs = {r.info.run_id: r for r in trial_runs(runs_of(directory))}
    for trial in study.trials:
        run = runs[trial.user_attrs["mlflow_run_id"]]
        assert int(run.data.tags["lgals.trial"]) == trial.number
        assert run.data.tags["lgals.study"] == study_name


# --- one batched tune of every mode ----------------------------------------------------------

@pytest.fixture(scope="module")
def batched(tmp_path_factory, _cache_dir):
    """``--mode all --n-trials 5 --batch 3 --epochs 2``: rounds of 3 + 2 trials per study."""
    directory = tmp_path_factory.mktemp("batched")
    result = tune_main(directory, "--mode", "all", "--n-trials", "5", "--batch", "3",
                       "--epochs", "2", "--study-name", "b")
    return SimpleNamespace(dir=directory, result=result, runs=runs_of(directory))


def test_batched_tune_gives_exactly_n_trials_per_study_with_one_run_each(batched):
    assert batched.result.code == 0, batched.result
    for mode in PAPER:
        assert_one_run_per_trial(batched.dir, f"b-{mode}", 5)
    runs = batched.runs
    assert len(runs) == 1 + 3 + 15  # umbrella, a tune run per mode, a run per trial
    assert all(r.info.status in ("FINISHED", "FAILED") for r in runs)


def test_batched_trial_runs_nest_under_their_modes_tune_run(batched):
    per_mode = [r for r in tune_runs(batched.runs) if r.data.tags["lgals.mode"] != "all"]
    assert sorted(r.data.tags["lgals.mode"] for r in per_mode) == sorted(PAPER)
    for tune in per_mode:
        mode = tune.data.tags["lgals.mode"]
        assert tune.data.params["batch"] == "3"
        assert tune.data.params["device"] == "cpu"
        trials = children(batched.runs, tune.info.run_id)
        assert sorted(int(r.data.tags["lgals.trial"]) for r in trials) == [0, 1, 2, 3, 4]
        for run in trials:
            assert run.data.tags["lgals.mode"] == run.data.params["mode"] == mode
            assert run.data.tags["lgals.device"] == "cpu"
            assert "test_acc" not in run.data.metrics


def test_trials_of_a_round_train_in_one_stack(batched):
    """Every mode's first round (trials 0-2) is one computation: one shared epoch time."""
    client = client_of(batched.dir)
    first_epoch = {}
    for run in trial_runs(batched.runs):
        if int(run.data.tags["lgals.trial"]) < 3:
            (point, *_) = sorted(client.get_metric_history(run.info.run_id, "epoch_seconds"),
                                 key=lambda m: m.step)
            first_epoch[(run.data.tags["lgals.mode"], run.data.tags["lgals.trial"])] = point.value
    assert len(first_epoch) == 9
    assert len(set(first_epoch.values())) == 1, first_epoch


def test_trial_values_and_pruning_are_per_trial(batched):
    """Each trial's value is its own last validation accuracy. No trial of this study can be
    pruned (the median pruner waits for 5 complete trials; the second round starts with 3):
    :func:`test_a_round_prunes_its_trials_each_on_its_own` prunes some."""
    client = client_of(batched.dir)
    for mode in PAPER:
        study = load_study(batched.dir, f"b-{mode}")
        assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 5, mode
        for trial in study.trials:
            run = client.get_run(trial.user_attrs["mlflow_run_id"])
            assert run.data.tags["lgals.trial_state"] == "COMPLETE"
            steps = sorted(trial.intermediate_values)
            values = [m.value for m in sorted(client.get_metric_history(
                run.info.run_id, "val_acc"), key=lambda m: m.step)]
            assert [trial.intermediate_values[s] for s in steps] == values
            assert trial.value == values[-1] and steps == [1, 2]


def seed_complete_trials(directory: Path, settings: TuneSettings, n: int, curve: float) -> None:
    """``n`` COMPLETE trials in the study of ``settings`` (created as ``lgals tune`` would),
    each with validation accuracy ``curve`` at every epoch: what the median pruner compares a
    running trial with."""
    study = create_study(settings, stores(directory)[1])
    names = ("lr", "weight_decay") + MODES[settings.mode].params
    space = {name: optuna.distributions.FloatDistribution(*HYPERPARAMETERS[name].search,
                                                          log=HYPERPARAMETERS[name].log)
             for name in names}
    for _ in range(n):
        study.add_trial(optuna.trial.create_trial(
            params={name: d.low for name, d in space.items()}, distributions=space,
            value=curve, intermediate_values=dict.fromkeys(range(1, settings.epochs + 1),
                                                           curve)))


def test_a_round_prunes_its_trials_each_on_its_own(tmp_path, _cache_dir):
    """One round, one stack, six trials: the two of a study whose 5 complete trials scored a
    perfect validation accuracy at every epoch (which noisy labels rule out) are pruned at
    the first epoch the pruner looks at (epoch 1: 3 epochs, 1 of warm-up); the four of the
    studies whose complete trials scored 0 cannot be pruned and train every epoch, in the
    stack the pruned ones left."""
    epochs, pruning = 3, "lgals"
    for mode in PAPER:
        seed_complete_trials(tmp_path, TuneSettings(mode=mode, n_trials=7, epochs=epochs,
                                                    study_name=f"p-{mode}"),
                             5, 1.0 if mode == pruning else 0.0)
    result = tune_ok(tmp_path, "--mode", "all", "--n-trials", "7", "--batch", "2",
                     "--epochs", str(epochs), "--study-name", "p")
    client = client_of(tmp_path)
    seconds = {}  # epoch_seconds per trial run: one value per computation of the stack
    for mode in PAPER:
        study = load_study(tmp_path, f"p-{mode}")
        new = [t for t in study.trials if t.number >= 5]
        expected = TrialState.PRUNED if mode == pruning else TrialState.COMPLETE
        assert [(t.number, t.state) for t in new] == [(5, expected), (6, expected)], mode
        for trial in new:
            run = client.get_run(trial.user_attrs["mlflow_run_id"])
            assert run.data.tags["lgals.trial_state"] == expected.name
            assert run.info.status == "FINISHED"
            steps, values = zip(*[(m.step, m.value) for m in sorted(
                client.get_metric_history(run.info.run_id, "val_acc"), key=lambda m: m.step)])
            assert dict(zip(steps, values)) == trial.intermediate_values
            assert list(steps) == ([1] if mode == pruning else [1, 2, 3]), (mode, steps)
            if expected == TrialState.COMPLETE:
                assert trial.value == values[-1]
            seconds[(mode, trial.number)] = [m.value for m in sorted(
                client.get_metric_history(run.info.run_id, "epoch_seconds"),
                key=lambda m: m.step)]
    assert len({times[0] for times in seconds.values()}) == 1, seconds  # one stack of six
    kept = [times for (mode, _), times in seconds.items() if mode != pruning]
    assert len(kept) == 4 and all(times == kept[0] for times in kept), seconds  # then of four
    tunes = {r.data.tags["lgals.mode"]: r for r in tune_runs(runs_of(tmp_path))}
    for mode in PAPER:
        counts = (tunes[mode].data.metrics["n_complete"], tunes[mode].data.metrics["n_pruned"])
        assert counts == ((5, 2) if mode == pruning else (7, 0)), (mode, counts)
    assert "5 complete, 2 pruned, 0 failed" in result.out


# --- resume, workers: exact counts ---------------------------------------------------------

def test_resume_with_another_batch_tops_up_exactly(tmp_path, _cache_dir):
    tune_ok(tmp_path, "--mode", "fixed_ls", "--n-trials", "3", "--batch", "2", "--epochs", "1")
    tune_ok(tmp_path, "--mode", "fixed_ls", "--n-trials", "7", "--batch", "3", "--epochs", "1")
    assert_one_run_per_trial(tmp_path, "lgals-fixed_ls-epochs=1", 7)
    first, second = tune_runs(runs_of(tmp_path))
    assert [len(children(runs_of(tmp_path), t.info.run_id)) for t in (first, second)] == [3, 4]


def test_batch_one_trains_each_trial_alone(tmp_path, _cache_dir):
    tune_ok(tmp_path, "--mode", "all", "--n-trials", "2", "--batch", "1", "--epochs", "1")
    client = client_of(tmp_path)
    times = [client.get_metric_history(r.info.run_id, "epoch_seconds")[0].value
             for r in trial_runs(runs_of(tmp_path))]
    assert len(times) == 6 and len(set(times)) == 6  # six separate computations


def test_workers_with_batches_give_exactly_n_trials(tmp_path, _cache_dir):
    result = run_lgals(tune_argv(tmp_path, "--mode", "all", "--workers", "2", "--batch", "2",
                                 "--n-trials", "5", "--epochs", "1", "--study-name", "w"),
                       tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr  # e.g. Optuna's ExperimentalWarning
    for mode in PAPER:
        assert_one_run_per_trial(tmp_path, f"w-{mode}", 5)
    assert all(status != "RUNNING" for _, status in sqlite_runs(tmp_path / "mlflow.db"))


# --- interrupts and killed processes --------------------------------------------------------

def start_tune(directory: Path, *args: str):
    directory.mkdir(parents=True, exist_ok=True)
    return popen_lgals(tune_argv(directory, *args), directory)


def wait_for_trial_runs(directory: Path, n: int, process) -> None:
    """Until ``n`` trials are RUNNING, with their MLflow runs opened, and have reported a
    validation accuracy (a round is training). Optuna's storage hears of every epoch within
    about a second; MLflow's metrics can wait for the round's end (the writer runs on idle
    cores only)."""
    import sqlite3

    def ready():
        assert process.poll() is None, process.communicate()
        db = directory / "optuna.db"
        try:
            with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as connection:
                (count,) = connection.execute(
                    "SELECT COUNT(DISTINCT t.trial_id) FROM trials t "
                    "JOIN trial_intermediate_values v ON v.trial_id = t.trial_id "
                    "JOIN trial_user_attributes a ON a.trial_id = t.trial_id "
                    "AND a.key = 'mlflow_run_id' WHERE t.state = 'RUNNING'"
                ).fetchone()
        except sqlite3.Error:
            return False
        return count >= n

    wait_for(ready, timeout=180, interval=0.2, what=f"{n} trials to train")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_batched_tune_kills_its_runs_and_fails_its_trials(tmp_path, _cache_dir,
                                                                      signum):
    process = start_tune(tmp_path, "--mode", "all", "--n-trials", "4", "--batch", "2",
                         "--epochs", "200", "--study-name", "i")
    try:
        wait_for_trial_runs(tmp_path, 6, process)
        process.send_signal(signum)
        _, err = process.communicate(timeout=60)
    finally:
        stop(process)
    assert process.returncode == 128 + signum, err  # 130 for SIGINT, 143 for SIGTERM
    assert "Traceback" not in err and "lgals: interrupted" in err
    runs = runs_of(tmp_path)
    assert runs and {r.info.status for r in runs} == {"KILLED"}
    for mode in PAPER:
        study = load_study(tmp_path, f"i-{mode}")
        assert [t.state for t in study.trials] == [TrialState.FAIL] * 2


@pytest.mark.parametrize("to_group", [True, False], ids=["Ctrl-C to the group",
                                                         "SIGTERM to the parent"])
def test_an_interrupted_worker_pool_ends_everything_it_owns(tmp_path, _cache_dir, to_group):
    """Ctrl-C reaches every process of the group; a SIGTERM only the parent, which passes it
    on. Either way each worker fails its round's trials and ends its runs KILLED before the
    command exits: nothing is left RUNNING."""
    with tune_group(tmp_path, "--mode", "all", "--workers", "2", "--batch", "2",
                    "--n-trials", "4", "--epochs", "300", "--study-name", "g") as process:
        wait_for_trial_runs(tmp_path, 4, process)
        if to_group:
            os.killpg(process.pid, signal.SIGINT)
        else:
            process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    assert process.returncode == (130 if to_group else 143), err
    assert "Traceback" not in err, err
    runs = runs_of(tmp_path)
    assert runs and "RUNNING" not in {r.info.status for r in runs}, err
    for mode in PAPER:
        states = {t.state for t in load_study(tmp_path, f"g-{mode}").trials}
        assert TrialState.RUNNING not in states, (mode, states)


def worker_pids(parent: int) -> list[int]:
    """The tuning workers of process ``parent``: its spawned children (not the resource
    tracker, not its MLflow writer)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(pid) for pid in children
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()]


def test_a_worker_killed_outright_leaves_its_trials_to_the_others(tmp_path, _cache_dir):
    """``kill -9`` to one worker mid-round (no word to the parent, its trials left RUNNING):
    the command does not wait for it for ever; the trials go stale and are retried, and it
    ends with exactly its trials, nothing left RUNNING."""
    with tune_group(tmp_path, "--mode", "lgals", "--workers", "2", "--batch", "2",
                    "--n-trials", "4", "--epochs", "20", "--study-name", "d",
                    LGALS_STALE_SECONDS="6") as process:
        wait_for_trial_runs(tmp_path, 4, process)
        victim, _ = worker_pids(process.pid)
        os.kill(victim, signal.SIGKILL)
        _, err = process.communicate(timeout=240)
    assert process.returncode == 0, err
    assert "Traceback" not in err, err
    assert_one_run_per_trial(tmp_path, "d", 4)
    trials = load_study(tmp_path, "d").trials
    retried = [t for t in trials if optuna.storages.RetryHeartbeatStaleTrialCallback
               .retried_trial_number(t) is not None]
    assert len(retried) == 2, [(t.number, t.state.name) for t in trials]  # the victim's round
    assert TrialState.RUNNING not in {t.state for t in trials}
    assert "RUNNING" not in {status for _, status in sqlite_runs(tmp_path / "mlflow.db")}


def last_heartbeats(db: Path) -> dict[int, float]:
    """The RUNNING trials of an Optuna sqlite storage and when each last beat (unix seconds;
    Optuna writes the database's clock, UTC, to the second)."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                            timeout=10)) as connection:
        return dict(connection.execute(
            "SELECT t.trial_id, (julianday(h.heartbeat) - 2440587.5) * 86400.0 FROM trials t "
            "JOIN trial_heartbeats h ON h.trial_id = t.trial_id WHERE t.state = 'RUNNING'"
        ).fetchall())


def test_kill_9_mid_round_then_rerun_gives_exactly_n_trials(tmp_path, _cache_dir):
    args = ("--mode", "all", "--n-trials", "3", "--batch", "2", "--epochs", "40",
            "--study-name", "k")
    process = start_tune(tmp_path, *args)
    try:
        wait_for_trial_runs(tmp_path, 6, process)
        process.kill()  # SIGKILL, by PID: no handler runs, nothing is ended
        process.wait(timeout=30)
    finally:
        stop(process)
    beats = last_heartbeats(tmp_path / "optuna.db")  # the killed round's trials
    assert len(beats) == 6, beats
    storage = open_storage(stores(tmp_path)[1])  # as the rerun opens it: its grace period
    grace = storage.grace_period
    storage.engine.dispose()
    rerun = run_lgals(tune_argv(tmp_path, *args), tmp_path, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    failed_at = {}  # trial id -> how long after its last heartbeat the rerun failed it
    for mode in PAPER:
        assert_one_run_per_trial(tmp_path, f"k-{mode}", 3)
        study = load_study(tmp_path, f"k-{mode}")
        dead = [t for t in study.trials if t.state == TrialState.FAIL
                and optuna.storages.RetryHeartbeatStaleTrialCallback.retry_history(t) == []]
        retries = [t for t in study.trials
                   if optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
                   is not None]
        assert len(dead) == len(retries) == 2  # the killed round, retried once each
        failed_at |= {t._trial_id: t.datetime_complete.timestamp() - beats.get(t._trial_id, 0)
                      for t in dead}
        for retry in retries:
            original = study.trials[
                optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retry)]
            assert retry.params == original.params
    # the trials failed are those of the kill, each only once its heartbeat was stale
    assert sorted(failed_at) == sorted(beats)
    assert all(silent >= grace for silent in failed_at.values()), (grace, failed_at)
    print(f"the dead trials failed {min(failed_at.values()):.1f}-{max(failed_at.values()):.1f}"
          f" s after their last heartbeat (grace period {grace} s)")
    statuses = [status for _, status in sqlite_runs(tmp_path / "mlflow.db")]
    assert "RUNNING" not in statuses
    assert statuses.count("FAILED") == 6 + 3 + 1  # the dead trial runs, tune runs, umbrella
