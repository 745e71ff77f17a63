"""Faults of a team's setup, on real services (tests/test_team.py's: one PostgreSQL for
Optuna's storage and MLflow's backend store, an ``mlflow server`` on it, ``lgals tune``
processes that each stand for a host of their own): a host ``kill -9``ed mid-trial, the
PostgreSQL server stopped and started again under running hosts, and a server that stays
away (stopped, or paused: a server that hangs) longer than a host waits for it.

Each test follows tests/test_faults.py's contract: the exit codes, one line on stderr and no
traceback; afterwards no run RUNNING, exact trial counts (a stale trial's retry replaces it),
none duplicated. Every process started is stopped by its PID (its process group). Timings are
printed (``-s`` shows them).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import sqlalchemy
from mlflow import MlflowClient
from optuna.trial import TrialState
from support.errors import stderr_lines
from support.mlflow_fixtures import isolated_mlflow, sqlite_uri, wait_for
from support.pg_fixtures import Host, mlflow_server_on, ok, postgres_server

from lgals.storage import StorageUnavailable, open_storage
from lgals.tuning import (
    TuneSettings,
    ask_round,
    counted_trials,
    create_study,
    fail_stale_trials,
)

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

# Three hosts, batches of 2: the first round gives each host 2 of the 6 trials.
N_TRIALS, BATCH, HOSTS = 6, 2, 3
EXPERIMENT = "lgals"
# Runs and trials of a dead process go stale in 6 s (trials: after 3 s without a heartbeat)
# instead of 30: the others retry a killed host's trials soon.
STALE = "6"
DOWN_SECONDS = 4  # how long PostgreSQL stays stopped
# How long after the restart the test looks for stale trials as a waiting host would: longer
# than a trial takes to go stale (3 s) and than lgals holds back after a restart (4 s).
CHECKING_SECONDS = 8
RETRY_REASON = "process died (stale heartbeat)"
OPTUNA_LOG = re.compile(r"^\[I \d{4}-\d\d-\d\d ")  # Optuna's own info line (a new study)


@contextlib.contextmanager
def services(tmp_path: Path, durable: bool = False):
    """PostgreSQL (databases ``optuna`` and ``mlflow``) and an mlflow server on it."""
    with postgres_server(tmp_path, durable=durable) as postgres:
        directory = tmp_path / "mlflow"
        directory.mkdir()
        with mlflow_server_on(postgres, directory) as server:
            yield postgres, server


def start_hosts(tmp_path: Path, storage: str, tracking_uri: str, study: str, epochs: int,
                **env: str) -> list[Host]:
    """Three hosts join one study at once; host i tunes with ``--sampler-seed i`` (its own
    proposals, and how its tune run is told from the others': the run's ``sampler_seed``)."""
    hosts = [Host(tmp_path / f"host{i}", LGALS_STALE_SECONDS=STALE, **env) for i in range(HOSTS)]
    for i, host in enumerate(hosts):
        host.start("tune", "--mode", "lgals", "--storage", storage, "--tracking-uri",
                   tracking_uri, "--study-name", study, "--n-trials", str(N_TRIALS),
                   "--batch", str(BATCH), "--epochs", str(epochs), "--pruner", "none",
                   "--sampler-seed", str(i), "--device", "cpu")
    return hosts


class Watch:
    """What the test reads of the study while the hosts run, through a storage of its own
    (plain Optuna, its connections pinged: the server restarts under it), and whose each
    trial is: its MLflow run's parent is a host's tune run."""

    def __init__(self, storage_url: str, study: str, client: MlflowClient | None = None):
        self.storage = optuna.storages.RDBStorage(storage_url,
                                                  engine_kwargs={"pool_pre_ping": True})
        self.study, self.client = study, client
        self.host_of_tune: dict[str, int] = {}

    def trials(self) -> list:
        try:
            return optuna.load_study(study_name=self.study,
                                     storage=self.storage).get_trials(deepcopy=False)
        except KeyError:  # not created yet
            return []

    def host(self, trial) -> int | None:
        """The host (its index) whose tune run holds the trial's MLflow run; None if unknown
        yet."""
        run_id = trial.user_attrs.get("mlflow_run_id")
        if not run_id:
            return None
        tune = self.client.get_run(run_id).data.tags.get("mlflow.parentRunId")
        if tune not in self.host_of_tune:
            seed = self.client.get_run(tune).data.params.get("sampler_seed")
            if seed is None:
                return None
            self.host_of_tune[tune] = int(seed)
        return self.host_of_tune[tune]

    def training(self) -> list:
        """The RUNNING trials that have trained an epoch or more."""
        return [t for t in self.trials() if t.state == TrialState.RUNNING
                and t.intermediate_values]

    def mid_trial(self) -> dict[int, list[int]]:
        """:meth:`training`'s trials by host."""
        hosts: dict[int, list[int]] = {}
        for trial in self.training():
            host = self.host(trial)
            if host is not None:
                hosts.setdefault(host, []).append(trial.number)
        return hosts

    def tune_of(self, host: int) -> str:
        return next(run for run, index in self.host_of_tune.items() if index == host)


def retried(trials: list) -> dict[int, int]:
    """``{failed trial number: the number of its retry}``."""
    with warnings_off():
        return {number: t.number for t in trials
                if (number := optuna.storages.RetryHeartbeatStaleTrialCallback
                    .retried_trial_number(t)) is not None}


@contextlib.contextmanager
def warnings_off():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def assert_exact(trials: list, storage_url: str, study: str) -> None:
    """``N_TRIALS`` counted trials (a retried one does not count, its retry does), all
    finished, each retried at most once and no retry retried."""
    counted = [t for t in trials if t.number not in retried(trials)]
    assert len(counted) == N_TRIALS, [(t.number, t.state.name) for t in trials]
    assert counted_trials(optuna.load_study(study_name=study, storage=storage_url)) == N_TRIALS
    assert all(t.state.is_finished() for t in trials), [(t.number, t.state.name) for t in trials]
    retries = retried(trials)
    assert len(set(retries.values())) == len(retries)
    assert not set(retries) & set(retries.values()), retries


def trial_runs(client: MlflowClient, study: str) -> dict[int, list]:
    """The study's trial runs by trial number."""
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id],
                              f"tags.`lgals.stage` = 'trial' and tags.`lgals.study` = '{study}'",
                              max_results=1000)
    by_number: dict[int, list] = {}
    for run in runs:
        by_number.setdefault(int(run.data.tags["lgals.trial"]), []).append(run)
    return by_number


def all_runs(client: MlflowClient) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id], max_results=1000)


def test_kill_9_one_of_three_hosts_mid_trial(tmp_path):
    """SIGKILL to one host's process group while its trials train: they go stale, are failed
    (their MLflow runs end FAILED, with the reason, and so does the host's tune run) and
    retried once each, with the same params, by the other hosts; the study ends with exactly
    its trials, each trial once in MLflow."""
    study = "team-kill"
    with services(tmp_path) as (postgres, server):
        storage = postgres.url("optuna")
        client = MlflowClient(server.uri)
        watch = Watch(storage, study, client)
        started = time.monotonic()
        hosts = start_hosts(tmp_path, storage, server.uri, study, epochs=60)
        try:
            mid = wait_for(watch.mid_trial, timeout=240, interval=0.2, what="a host mid-trial")
            victim = min(mid)
            hosts[victim].kill()
            killed, killed_wall = time.monotonic(), time.time()
            assert hosts[victim].process.returncode == -9
            results = {i: host.finish(timeout=300) for i, host in enumerate(hosts)
                       if i != victim}
        finally:
            for host in hosts:
                host.stop()
        done = time.monotonic()
        for result in results.values():
            ok(result)

        trials = watch.trials()
        assert_exact(trials, storage, study)
        mine = [t for t in trials if watch.host(t) == victim]
        failed = [t for t in trials if t.state == TrialState.FAIL]
        # the victim's trials running at the kill, and only they, failed, each retried once
        # with the same params by another host, and completed there
        assert set(mid[victim]) <= {t.number for t in mine}
        assert {t.number for t in failed} == {t.number for t in mine
                                              if t.number in retried(trials)} >= set(mid[victim])
        by_number = {t.number: t for t in trials}
        for number, retry in retried(trials).items():
            assert by_number[retry].params == by_number[number].params
            assert by_number[retry].state == TrialState.COMPLETE
            assert watch.host(by_number[retry]) not in (victim, None)

        # MLflow: one run per trial; the failed trials' runs and the victim's tune run FAILED
        # with the reason; every other run FINISHED; none RUNNING
        runs = trial_runs(client, study)
        assert sorted(runs) == sorted(by_number), sorted(runs)
        assert all(len(r) == 1 for r in runs.values()), {n: len(r) for n, r in runs.items()}
        for trial in trials:
            (run,) = runs[trial.number]
            assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
            assert run.data.tags["lgals.trial_state"] == trial.state.name
            if trial.state == TrialState.FAIL:
                assert run.info.status == "FAILED"
                assert run.data.tags["lgals.status_reason"] == RETRY_REASON
            else:
                assert run.info.status == "FINISHED", (trial.number, run.info.status)
        tune = client.get_run(watch.tune_of(victim))
        assert (tune.info.status, tune.data.tags.get("lgals.status_reason")) == \
            ("FAILED", RETRY_REASON)
        statuses = {r.info.run_id: r.info.status for r in all_runs(client)}
        assert "RUNNING" not in statuses.values(), statuses
        assert sorted(statuses.values()).count("FAILED") == len(failed) + 1

        fails = [t.datetime_complete.timestamp() - killed_wall for t in failed]
        retries = [by_number[r].datetime_start.timestamp() - killed_wall
                   for r in retried(trials).values()]
        print(f"kill -9 host{victim} with trials {mid[victim]} running: failed "
              f"{[t.number for t in failed]} {min(fails):.1f}-{max(fails):.1f} s after the kill,"
              f" retries {sorted(retried(trials).values())} started {min(retries):.1f}-"
              f"{max(retries):.1f} s after; hosts done {done - killed:.1f} s after the kill; "
              f"the whole test's tune {done - started:.1f} s")


def recovered(engine) -> tuple[int, int]:
    """``(RUNNING trials, those without a heartbeat since the server started)``."""
    with engine.connect() as connection:
        return tuple(connection.execute(sqlalchemy.text(
            "SELECT count(*), count(*) FILTER (WHERE h.heartbeat IS NULL OR "
            "h.heartbeat < pg_postmaster_start_time()) FROM trials t LEFT JOIN "
            "trial_heartbeats h ON h.trial_id = t.trial_id WHERE t.state = 'RUNNING'")).one())


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_restarts_while_three_hosts_tune(tmp_path, mode):
    """PostgreSQL stopped (``fast``: sessions ended, a checkpoint; ``immediate``: no
    checkpoint, crash recovery at the start) for DOWN_SECONDS while three hosts train, then
    started again: the hosts wait for it, write what they held back (every epoch's value),
    beat again, and finish; a host looking for stale trials meanwhile (as one waiting for
    the others' trials does) fails none of them, though every heartbeat is older than a
    trial may go without one: no trial fails, none is lost. (``immediate`` on a server whose
    commits wait for the disk: the test cluster's ``synchronous_commit=off`` would lose the
    last commits to it, as it would on any server.)"""
    study, epochs = f"team-restart-{mode}", 150
    with services(tmp_path, durable=mode == "immediate") as (postgres, server), \
            isolated_mlflow(), pytest.MonkeyPatch.context() as env:
        storage = postgres.url("optuna")
        client = MlflowClient(server.uri)
        watch = Watch(storage, study, client)
        engine = sqlalchemy.create_engine(storage, pool_pre_ping=True)
        hosts = start_hosts(tmp_path, storage, server.uri, study, epochs=epochs)
        try:
            wait_for(lambda: len(watch.mid_trial()) == HOSTS, timeout=240, interval=0.2,
                     what="every host mid-trial")
            # what a host that waits for the others' trials does, every second: look for
            # stale trials, fail and retry them (in this process, on lgals's own storage)
            env.setenv("LGALS_STALE_SECONDS", STALE)
            mlflow.set_tracking_uri(server.uri)
            checker = optuna.load_study(study_name=study, storage=open_storage(storage))
            fail_stale_trials(checker)
            stopping = time.monotonic()
            postgres.stop(mode)
            stopped = time.monotonic()
            time.sleep(DOWN_SECONDS)
            postgres.start()
            up, up_wall = time.monotonic(), time.time()
            running, behind = recovered(engine)
            beating = None
            while time.monotonic() < up + CHECKING_SECONDS or beating is None:
                fail_stale_trials(checker)
                if beating is None and recovered(engine)[1] == 0:
                    beating = time.monotonic()
                assert time.monotonic() < up + 60, "running trials not beating again"
                time.sleep(0.1)
            results = [host.finish(timeout=300) for host in hosts]
        finally:
            for host in hosts:
                host.stop()
            engine.dispose()
        done = time.monotonic()
        for result in results:
            ok(result)
        assert running >= 1  # the restart came mid-training

        trials = watch.trials()
        assert_exact(trials, storage, study)
        assert {t.state for t in trials} == {TrialState.COMPLETE}, [  # none failed as stale
            (t.number, t.state.name, round(t.datetime_complete.timestamp() - up_wall, 2))
            for t in trials if t.state != TrialState.COMPLETE]
        runs = trial_runs(client, study)
        for trial in trials:
            # every epoch's value reached the storage, and the value is the last epoch's
            assert sorted(trial.intermediate_values) == list(range(1, epochs + 1)), \
                (trial.number, len(trial.intermediate_values))
            assert trial.value == trial.intermediate_values[epochs]
            (run,) = runs[trial.number]
            assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
            assert (run.info.status, run.data.tags["lgals.trial_state"]) == \
                ("FINISHED", "COMPLETE")
            history = client.get_metric_history(run.info.run_id, "val_acc")
            assert len(history) == epochs, (trial.number, len(history))
        statuses = [r.info.status for r in all_runs(client)]
        assert set(statuses) == {"FINISHED"}, statuses
        print(f"{mode}: stop took {stopped - stopping:.2f} s, start "
              f"{up - stopped - DOWN_SECONDS:.2f} s; {running} trials running at the start, "
              f"{behind} of them beating again "
              f"{beating - up:.2f} s after it; hosts done {done - up:.1f} s after it")


def test_a_tell_in_flight_when_postgres_stops_is_made_again(tmp_path):
    """A tell blocked in the server (another client holds its trial's row) when the server
    stops: the statement dies with the server, and the tell is made again once it is back,
    within the wait. A server that stays away longer than the wait is one line, naming
    the storage without its password, in the wait and not much more."""
    settings = TuneSettings(mode="baseline", n_trials=1, epochs=1, study_name="in-flight")
    with postgres_server(tmp_path, databases=("optuna",)) as postgres:
        url = postgres.url("optuna")
        study = create_study(settings, url)
        (item,) = ask_round([(settings, study)], {"baseline": 1}, batch=1)
        holder = sqlalchemy.create_engine(url)
        watcher = sqlalchemy.create_engine(url, isolation_level="AUTOCOMMIT")
        outcome: dict = {}

        def tell() -> None:
            started = time.monotonic()
            try:
                outcome["trial"] = item.study.tell(item.trial, 0.5)
            except BaseException as error:  # reported below
                outcome["error"] = error
            outcome["seconds"] = time.monotonic() - started

        def waiting_on_a_lock() -> int:
            with watcher.connect() as connection:
                return connection.execute(sqlalchemy.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                )).scalar()

        thread = threading.Thread(target=tell)
        try:
            connection = holder.connect()
            connection.execute(sqlalchemy.text(
                "SELECT 1 FROM trials WHERE trial_id = :id FOR UPDATE"),
                {"id": item.trial._trial_id})
            thread.start()
            wait_for(waiting_on_a_lock, timeout=30, interval=0.05,
                     what="the tell waiting on its trial's row")
            postgres.stop("fast")  # ends every session: the holder's, the tell's
            time.sleep(2)
            postgres.start()
            up = time.monotonic()
            thread.join(timeout=90)
        finally:
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
                connection.close()
            holder.dispose()
            watcher.dispose()
        assert not thread.is_alive()
        assert "error" not in outcome, outcome
        assert outcome["trial"].state == TrialState.COMPLETE
        stored = optuna.load_study(study_name="in-flight", storage=url).trials[0]
        assert (stored.state, stored.value) == (TrialState.COMPLETE, 0.5)
        print(f"the tell took {outcome['seconds']:.2f} s, "
              f"{time.monotonic() - up:.2f} s or less after the server was back")

        # a server away for longer than the wait
        postgres.stop("fast")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("LGALS_STORAGE_WAIT_SECONDS", "3")
            started = time.monotonic()
            with pytest.raises(StorageUnavailable) as raised:
                study.get_trials()
            waited = time.monotonic() - started
            with pytest.raises(StorageUnavailable):
                open_storage(url)
        message = str(raised.value)
        assert 3 <= waited < 6, waited
        assert "\n" not in message and "secret" not in message, message
        assert message.startswith("the Optuna storage postgresql://"), message
        assert f"@127.0.0.1:{postgres.port}/optuna did not answer for 3 s (get trials): " \
               "connection failed" in message, message
        print(f"gave up after {waited:.2f} s: {message}")


# What a host may take past LGALS_STORAGE_WAIT_SECONDS to give up on its storage: its
# recorder's next call (a second apart), the epoch that notices, ending its runs.
GIVE_UP_MARGIN = 15


@pytest.mark.parametrize("fault", ["stopped", "paused"])
def test_postgres_away_past_the_wait_then_the_same_command_again(tmp_path, fault):
    """The storage's server goes away mid-round and stays away: ``stopped`` (shut down:
    connections refused), or ``paused`` (SIGSTOP to each of its processes: connections open,
    nothing answers, as a hung server or a network partition without a reset). The host
    gives up ``LGALS_STORAGE_WAIT_SECONDS`` after its storage calls stopped getting answers,
    mid-training (not once the round's training is over, nor when the server answers
    again), with one line naming the storage (password masked), the setting and what to do;
    its trial runs end FAILED saying why (its local MLflow store still works), nothing left
    RUNNING in MLflow. The same command, once the server is back and the trials are stale,
    fails and retries each once: exactly its trials, none lost or counted twice, one trial
    run per trial."""
    n_trials, study, wait = 2, f"away-{fault}", 4
    argv = ["tune", "--mode", "lgals", "--n-trials", str(n_trials), "--batch", "2",
            "--epochs", "150", "--pruner", "none", "--study-name", study, "--device", "cpu"]
    with postgres_server(tmp_path, databases=("optuna",)) as postgres:
        storage = postgres.url("optuna")
        host = Host(tmp_path / "host", LGALS_STALE_SECONDS=STALE,
                    LGALS_STORAGE_WAIT_SECONDS=str(wait))
        tracking_uri = sqlite_uri(host.work / "mlflow.db")
        argv += ["--storage", storage, "--tracking-uri", tracking_uri]
        watch = Watch(storage, study)  # no MLflow client yet: lgals creates the store
        host.start(*argv)
        try:
            wait_for(watch.training, timeout=180, interval=0.2, what="mid-trial")
            with contextlib.ExitStack() as away:
                if fault == "paused":  # continued when the block ends, however it ends
                    away.enter_context(postgres.paused())
                else:
                    postgres.stop("fast")
                gone = time.monotonic()
                result = host.finish(timeout=wait + 60)
                gave_up = time.monotonic() - gone
        finally:
            host.stop()
        print(f"{fault}: the host gave up {gave_up:.1f} s after the server went away "
              f"(LGALS_STORAGE_WAIT_SECONDS={wait})")
        assert result.returncode == 1, result.stderr[-3000:]
        assert "Traceback" not in result.stderr, result.stderr[-3000:]
        warning, line = [line for line in stderr_lines(result.stderr)
                         if not OPTUNA_LOG.match(line)]  # the password on the command line
        assert warning.startswith("lgals: warning:") and "PGPASSWORD" in warning, warning
        assert line.startswith(f"lgals: error: the Optuna storage postgresql://lgals:***@"
                               f"127.0.0.1:{postgres.port}/optuna did not answer for {wait} s "
                               "("), line
        assert line.endswith("; is its database server up and answering? Run the command "
                             "again once it is (LGALS_STORAGE_WAIT_SECONDS sets the wait)"), line
        if fault == "paused":
            assert "): no answer (a server that hangs, or a network that dropped it without a " \
                   "reset); " in line, line
        assert "secret" not in result.stderr
        assert wait - 1 <= gave_up <= wait + GIVE_UP_MARGIN, gave_up
        assert not host.left_running
        client = MlflowClient(tracking_uri)
        runs = all_runs(client)
        assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
        trial_runs_before = [r for r in runs if r.data.tags.get("lgals.stage") == "trial"]
        assert len(trial_runs_before) == n_trials
        for run in trial_runs_before:
            assert run.info.status == "FAILED"
            assert run.data.tags["lgals.status_reason"].startswith(
                "its trial was not stored: the Optuna storage"), run.data.tags

        if fault == "stopped":
            postgres.start()
        # its trials could not be told: RUNNING, beating no more
        assert {t.state for t in watch.trials()} == {TrialState.RUNNING}
        time.sleep(float(STALE) + 1)  # stale by now
        rerun = host.run(*argv, timeout=300)
        ok(rerun)
        trials = watch.trials()
        failed = {t.number for t in trials if t.state == TrialState.FAIL}
        assert failed == {0, 1} and set(retried(trials)) == failed, \
            [(t.number, t.state.name) for t in trials]
        assert [t.state for t in trials if t.number not in failed] == \
            [TrialState.COMPLETE] * n_trials
        runs = all_runs(client)
        assert [r.info.run_name for r in runs if r.info.status == "RUNNING"] == []
        by_trial = trial_runs(client, study)
        assert sorted(by_trial) == [t.number for t in trials], sorted(by_trial)
        for trial in trials:
            (run,) = by_trial[trial.number]
            assert run.data.tags["lgals.trial_state"] == trial.state.name
