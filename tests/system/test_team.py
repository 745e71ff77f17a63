"""A team's setup on real services: one PostgreSQL (Optuna's storage and MLflow's backend
store), one ``mlflow server`` on it with proxied artifacts, and ``lgals`` processes that each
stand for a host of their own: an empty working directory, a HOME of their own, nothing shared
with the others but the two URLs.

Three workers join one study at the same time; a fourth "host" evaluates and reports from the
server alone. Before them, three clients create and fill one study at the very same moment.
Each test's timings and what each host holds are printed (``-s`` shows them).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from mlflow import MlflowClient
from optuna.trial import TrialState
from support.mlflow_fixtures import isolated_mlflow
from support.pg_fixtures import Host, mlflow_server_on, ok, postgres_server

from lgals.tracking.store import describe_experiment
from lgals.tracking.ui import EXPERIMENT_TAGS
from lgals.tuning import TuneSettings, ask_round, create_study

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

# Batches of 3 for 7 trials: hosts that counted the trials at the same time would each ask
# 3 at first (9 in all), and the last batch is a single trial.
N_TRIALS, BATCH, EPOCHS, WORKERS = 7, 3, 3, 3
STUDY, EXPERIMENT = "team-lgals", "lgals"
FIGURES = ("optimization_history", "param_importances", "slice")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
# What a host may keep of a run in its HOME: caches it can rebuild (lgals' generated mnist1d,
# matplotlib's font list); nothing another host would need.
CACHES = (".cache/lgals/", ".cache/matplotlib/", ".config/matplotlib/")


def local_files(host: Host) -> list[str]:
    """What a host holds besides its caches: must be nothing another host would need."""
    return [f for f in host.files() if not f.startswith(tuple(f"home/{c}" for c in CACHES))]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """PostgreSQL with the databases ``optuna`` and ``mlflow``, for the module."""
    with postgres_server(tmp_path_factory.mktemp("postgres")) as server:
        yield server


@pytest.fixture(scope="module")
def team(postgres, tmp_path_factory):
    """``mlflow server`` on PostgreSQL; three hosts run ``lgals tune`` on one study at the
    same time; everything stopped at the end."""
    tmp = tmp_path_factory.mktemp("team")
    started = time.monotonic()
    with mlflow_server_on(postgres, tmp) as server:
        timings = {"mlflow server": time.monotonic() - started}
        storage = postgres.url("optuna")
        hosts = [Host(tmp / f"worker{i}") for i in range(WORKERS)]
        started = time.monotonic()
        try:
            for host in hosts:
                host.start("tune", "--mode", "lgals", "--storage", storage,
                           "--tracking-uri", server.uri, "--study-name", STUDY,
                           "--n-trials", str(N_TRIALS), "--batch", str(BATCH),
                           "--epochs", str(EPOCHS), "--device", "cpu")
            results = [host.finish(timeout=240) for host in hosts]
        finally:
            for host in hosts:
                host.stop()
        timings["tune"] = time.monotonic() - started
        print("team timings (s):", {k: round(v, 1) for k, v in timings.items()})
        yield SimpleNamespace(postgres=postgres, server=server, storage=storage, hosts=hosts,
                              results=results, tmp=tmp, client=MlflowClient(server.uri))


def test_hosts_creating_and_asking_at_once_never_exceed_n_trials(postgres):
    """Three hosts' create-or-load and first ask at the very same moment (threads, each with
    its own engine and connections: to PostgreSQL they are three clients) on an empty
    database: Optuna's tables are created once, and the study gets exactly its trials though
    each host's batch alone could fill it."""
    storage = postgres.create_database("race")
    settings = TuneSettings(mode="lgals", n_trials=4, epochs=1, study_name="race")
    start, asked = threading.Barrier(WORKERS), threading.Barrier(WORKERS)
    results, errors = [None] * WORKERS, []

    def host(worker: int) -> None:
        try:
            start.wait(timeout=30)
            study = create_study(settings, storage, worker)
            asked.wait(timeout=30)
            results[worker] = len(ask_round([(settings, study)], {"lgals": 4}, batch=3))
        except BaseException as error:  # reported below; the other hosts stop waiting
            errors.append(error)
            start.abort()
            asked.abort()

    threads = [threading.Thread(target=host, args=(i,)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert sum(results) == 4, results
    study = optuna.load_study(study_name="race", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]


def study_runs(client: MlflowClient, stage: str) -> list:
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id],
                              f"tags.`lgals.stage` = '{stage}' and "
                              f"tags.`lgals.study` = '{STUDY}'", max_results=1000)


def test_three_hosts_tune_one_study_on_postgresql_and_an_mlflow_server(team, tmp_path):
    """Exactly N_TRIALS trials, each once in Optuna and once in MLflow; everything readable
    through the server; nothing on the hosts but caches."""
    for result in team.results:
        ok(result)
    # Optuna: exactly N_TRIALS trials, numbered 0..N-1, all finished
    study = optuna.load_study(study_name=STUDY, storage=team.storage)
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.number for t in trials) == list(range(N_TRIALS)), \
        [(t.number, t.state.name) for t in trials]
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}, \
        [(t.number, t.state.name) for t in trials]

    # MLflow, read through the server: one trial run per trial, each the one its trial
    # names; every run FINISHED
    client = team.client
    experiment = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    assert runs and {r.info.status for r in runs} == {"FINISHED"}, \
        [(r.info.run_name, r.info.status) for r in runs]
    trial_runs = study_runs(client, "trial")
    assert sorted(int(r.data.tags["lgals.trial"]) for r in trial_runs) == list(range(N_TRIALS))
    by_number = {int(r.data.tags["lgals.trial"]): r for r in trial_runs}
    for trial in trials:
        run = by_number[trial.number]
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.data.tags["lgals.trial_state"] == trial.state.name
    # one tune run per host, each with the trials its host ran; together all of them
    tunes = study_runs(client, "tune")
    assert len(tunes) == WORKERS
    ran = {t.info.run_id: [r for r in trial_runs
                           if r.data.tags["mlflow.parentRunId"] == t.info.run_id]
           for t in tunes}
    assert sum(map(len, ran.values())) == N_TRIALS
    print("trials per host:", sorted(len(v) for v in ran.values()))
    assert sum(1 for v in ran.values() if v) >= 2, "the hosts did not share the study"
    # each host's summary is of the whole study, once every host's trials ended
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    for tune in tunes:
        assert tune.data.metrics["n_trials"] == N_TRIALS
        assert tune.data.metrics["n_complete"] == complete
        assert tune.data.params["best.trial"] == str(study.best_trial.number)
        assert "***" in tune.data.params["storage"]  # the password is not in a param

    # the artifacts are the server's (proxied), and come back through it
    assert all(r.info.artifact_uri.startswith("mlflow-artifacts:") for r in runs)
    tune = tunes[0]
    logged = {a.path for a in client.list_artifacts(tune.info.run_id, "optuna")}
    drawn = {f"optuna/{name}.png" for name in FIGURES
             if f"lgals.figure.{name}" not in tune.data.tags}
    assert drawn and drawn <= logged, (logged, tune.data.tags)
    figure = Path(client.download_artifacts(tune.info.run_id, sorted(drawn)[0],
                                            str(tmp_path)))
    assert figure.read_bytes().startswith(PNG_MAGIC)
    trial_run = by_number[0]
    assert {"epsilon_distributions.npz", "data_recipe.npz"} <= {
        a.path for a in client.list_artifacts(trial_run.info.run_id)}
    recipe = client.download_artifacts(trial_run.info.run_id, "data_recipe.npz",
                                       str(tmp_path))
    with np.load(recipe) as arrays:
        assert len(arrays["val_index"]) > 0
    stored = team.tmp / "artifacts"
    assert any(stored.rglob("data_recipe.npz")) and any(stored.rglob("*.png"))

    # and no host kept anything another host would need: only caches in its HOME
    for host in team.hosts:
        assert local_files(host) == [], host.files()
        assert any(f.startswith("home/.cache/lgals/mnist1d-") for f in host.files())
        print(f"{host.root.name} holds:", host.files())


def test_a_fourth_host_evaluates_and_reports_from_the_server_alone(team):
    """`lgals evaluate` takes the study's best params from the server's tune runs (it needs
    no --storage), `lgals report` builds the report from the server's runs."""
    host = Host(team.tmp / "reporter")
    evaluate = ok(host.run("evaluate", "--modes", "lgals", "--seeds", "2", "--epochs",
                           str(EPOCHS), "--device", "cpu", "--tracking-uri", team.server.uri))
    report = ok(host.run("report", "--out", "results", "--tracking-uri", team.server.uri))
    results = host.work / "results" / "results.md"
    assert results.is_file(), report.stderr + report.stdout
    rows = [line.split(" | ")[0] for line in results.read_text().splitlines()
            if line.startswith("| ") and " | 2 | " in line]  # the table's mode rows: 2 seeds
    assert rows == ["| LGALS"], results.read_text()
    # the evaluation used the study's best params, found on the server
    client = team.client
    experiment = client.get_experiment_by_name(EXPERIMENT)
    evaluated = client.search_runs([experiment.experiment_id],
                                   "tags.`lgals.stage` = 'evaluate'")
    assert evaluated and {r.info.status for r in evaluated} == {"FINISHED"}, evaluate.stderr
    best = optuna.load_study(study_name=STUDY, storage=team.storage).best_params
    lrs = [float(r.data.params["lr"]) for r in evaluated if "lr" in r.data.params]
    assert lrs and lrs == pytest.approx([best["lr"]] * len(lrs))
    (report_run,) = client.search_runs([experiment.experiment_id],
                                       "tags.`lgals.stage` = 'report'")
    assert "results.md" in {a.path for a in client.list_artifacts(report_run.info.run_id)}
    # what the host holds: its report, and caches
    assert [f for f in local_files(host) if not f.startswith("work/results/")] == [], \
        host.files()
    print("reporter holds:", host.files())
    assert not host.left_running


def test_hosts_connecting_at_once_describe_a_new_experiment(team):
    """``lgals.tracking.connect`` gives a new experiment its kind and note; hosts connecting to
    it at the very same moment (threads, each its own requests to the server) all succeed."""
    import mlflow

    errors: list[BaseException] = []

    def host(experiment_id: str, barrier: threading.Barrier) -> None:
        try:
            barrier.wait(timeout=30)
            describe_experiment(experiment_id)
        except Exception as error:  # reported below
            errors.append(error)

    with isolated_mlflow():
        mlflow.set_tracking_uri(team.server.uri)
        for attempt in range(10):
            experiment_id = team.client.create_experiment(f"described-{attempt}")
            barrier = threading.Barrier(4)
            threads = [threading.Thread(target=host, args=(experiment_id, barrier))
                       for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=60)
            tags = team.client.get_experiment(experiment_id).tags
            assert {k: tags.get(k) for k in EXPERIMENT_TAGS} == EXPERIMENT_TAGS
    assert not errors, errors[:3]


def test_every_lgals_process_ends_on_its_own(team):
    """Each command's processes (its MLflow writer too) were gone once it exited."""
    assert not [host.root.name for host in team.hosts if host.left_running]
