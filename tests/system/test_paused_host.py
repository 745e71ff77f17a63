"""A host presumed dead that comes back: an ``lgals tune`` process paused (SIGSTOP to its
process group) longer than the stale-trial grace while another host goes on with the same
study (one SQLite MLflow store, one SQLite Optuna storage, two processes), then resumed
(SIGCONT).

The other host fails the paused host's running trials (stale heartbeat) and retries them;
the paused host, back, drops those trials from its stack, says so in one line per trial, and
ends their runs FAILED with the reason; its tune run, which the other host took for dead,
ends FINISHED without that reason. Afterwards the study has exactly its trials and MLflow
one run per trial, each run's status agreeing with its trial's state and tags. Every process
started is resumed and stopped by its PID (its process group), whatever happens.
"""

from __future__ import annotations

import time

import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from support.mlflow_fixtures import history, sqlite_uri, wait_for
from support.pg_fixtures import Host, ok

from lgals.tuning import counted_trials

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

# Runs go stale after 6 s without a heartbeat, trials after 3 s (instead of 30 and 15).
STALE = "6"
# Two rounds of two trials: the host is paused in its second round, having finished the first.
N_TRIALS, BATCH, EPOCHS = 4, 2, 40
STUDY = "paused"
TAKEN_OVER = "taken over by another process while this one was paused (stale heartbeat)"


def retried(trials: list) -> dict[int, int]:
    """``{failed trial number: the number of its retry}``."""
    return {number: t.number for t in trials
            if (number := optuna.storages.RetryHeartbeatStaleTrialCallback
                .retried_trial_number(t)) is not None}


def test_a_host_paused_past_the_grace_gives_up_its_trials_and_finishes(tmp_path, _cache_dir):
    """Host A tunes; SIGSTOP in its second round, until host B, started meanwhile on the same
    study, has failed A's two running trials and is training their retries; then SIGCONT.
    A drops the two trials at its next epochs (their runs hold fewer than ``EPOCHS`` epochs),
    prints one line for each, and exits 0: its first round's trials stand, and it waits for
    B's retries before its summary. No run is left RUNNING; FINISHED trial runs are exactly
    the COMPLETE and PRUNED trials."""
    uri, storage = sqlite_uri(tmp_path / "mlflow.db"), sqlite_uri(tmp_path / "optuna.db")
    argv = ["tune", "--mode", "baseline", "--tracking-uri", uri, "--storage", storage,
            "--study-name", STUDY, "--n-trials", str(N_TRIALS), "--batch", str(BATCH),
            "--epochs", str(EPOCHS), "--pruner", "none", "--device", "cpu"]
    hosts = [Host(tmp_path / f"host{i}", LGALS_STALE_SECONDS=STALE, LGALS_CACHE_DIR=_cache_dir)
             for i in range(2)]
    reader = optuna.storages.RDBStorage(storage)

    def trials() -> list:
        try:
            return optuna.load_study(study_name=STUDY, storage=reader).get_trials(deepcopy=False)
        except KeyError:  # not created yet
            return []

    def states(*numbers: int) -> list:
        by_number = {t.number: t for t in trials()}
        return [by_number.get(n) for n in numbers]

    def training(*numbers: int) -> bool:
        """The trials are RUNNING and have reported an epoch."""
        return all(t is not None and t.state == TrialState.RUNNING and t.intermediate_values
                   for t in states(*numbers))

    a, b = hosts
    try:
        a.start(*argv, "--sampler-seed", "0")
        wait_for(lambda: training(2, 3), timeout=240, interval=0.1, what="A's second round")
        a.pause()
        paused = time.monotonic()
        b.start(*argv, "--sampler-seed", "1")
        # B failed A's trials 2 and 3 and trains their retries, 4 and 5
        wait_for(lambda: training(4, 5), timeout=240, interval=0.2, what="B's retries")
        failed_after = time.monotonic() - paused
        a.resume()
        results = [a.finish(timeout=240), b.finish(timeout=240)]
    finally:
        for host in hosts:
            host.resume()
            host.stop()
    for result in results:
        ok(result)
    a_result, b_result = results

    # A: one line per trial it lost, nothing else about it; B: none
    lost = [line for line in a_result.stderr.splitlines() if "taken over" in line]
    assert lost == [f"lgals: trial {n} of study '{STUDY}' was {TAKEN_OVER}; it stops here"
                    for n in (2, 3)], a_result.stderr[-4000:]
    assert "taken over" not in b_result.stderr
    for result in results:  # both summarise the finished study
        assert "trials 4 complete, 0 pruned, 2 failed" in result.stdout, result.stdout

    # Optuna: exact counts; A's trials 2 and 3 failed, retried once each by B
    final = trials()
    assert {t.number: t.state.name for t in final} == {
        0: "COMPLETE", 1: "COMPLETE", 2: "FAIL", 3: "FAIL", 4: "COMPLETE", 5: "COMPLETE"}
    assert retried(final) == {2: 4, 3: 5}
    assert counted_trials(optuna.load_study(study_name=STUDY, storage=storage)) == N_TRIALS

    # MLflow: one run per trial, pointed at by its trial; its status agrees with the state
    client = MlflowClient(uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              max_results=1000)
    assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
    trial_runs = [r for r in runs if r.data.tags.get("lgals.stage") == "trial"]
    by_number = {int(r.data.tags["lgals.trial"]): r for r in trial_runs}
    assert len(trial_runs) == len(by_number) == len(final)
    tunes = {r.data.params["sampler_seed"]: r for r in runs
             if r.data.tags.get("lgals.stage") == "tune"}
    for trial in final:
        run = by_number[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["lgals.trial_state"] == trial.state.name
        if trial.state == TrialState.FAIL:
            assert (run.info.status, run.data.tags["lgals.status_reason"]) == \
                ("FAILED", TAKEN_OVER), trial.number
            assert run.data.tags["mlflow.parentRunId"] == tunes["0"].info.run_id
            steps, _ = history(client, run.info.run_id, "val_acc")
            assert len(steps) < EPOCHS, (trial.number, steps)  # dropped, not trained out
        else:
            assert run.info.status == "FINISHED", (trial.number, run.info.status)
            assert "lgals.status_reason" not in run.data.tags, trial.number
    finished = sum(r.info.status == "FINISHED" for r in trial_runs)
    assert finished == sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in final)
    # A's tune run, ended FAILED "process died" by B while A was paused, is A's to end
    for tune in tunes.values():
        assert (tune.info.status, tune.data.tags.get("lgals.status_reason")) == \
            ("FINISHED", None), tune.data.params["sampler_seed"]
    print(f"A paused {failed_after:.1f} s until B trained the retries")
