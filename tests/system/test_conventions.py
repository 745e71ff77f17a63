"""The installed ``lgals`` console script as an MLflow user sees it: MLflow's context tags on
every run (the script itself as the source), and ``--system-metrics`` on the top run only.

The in-process tests: ``tests/unit/test_conventions.py``.
"""

from __future__ import annotations

import getpass
from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import (
    LGALS,
    all_runs,
    git_of_checkout,
    history,
    popen_lgals,
    run_context,
    sqlite_uri,
    stop,
)

CPU = "system/cpu_utilization_percentage"
TRAIN = ["train", "--epochs", "10", "--seeds", "2", "--device", "cpu"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, _cache_dir):
    """``lgals train`` of two seeds with ``--system-metrics`` (sampled every 0.5 s) and the
    same without it, side by side, each in a store of its own; their runs, parent first."""
    found = {}
    processes = {}
    try:
        for name, flag in (("with", ["--system-metrics"]), ("without", [])):
            directory = tmp_path_factory.mktemp(name)
            uri = sqlite_uri(directory / "mlflow.db")
            processes[name] = (uri, popen_lgals(
                [*TRAIN, *flag, "--tracking-uri", uri], directory,
                MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL="0.5"))
        for name, (uri, process) in processes.items():
            _, err = process.communicate(timeout=300)
            assert process.returncode == 0, err[-3000:]
            client = MlflowClient(uri)
            runs = sorted(all_runs(client), key=lambda r: "mlflow.parentRunId" in r.data.tags)
            found[name] = SimpleNamespace(client=client, parent=runs[0], seeds=runs[1:])
    finally:
        for _, process in processes.values():
            stop(process)
    return found


def test_every_run_names_the_console_script_the_user_and_the_checkouts_commit(trained):
    expected = {"mlflow.user": getpass.getuser(), "mlflow.source.name": LGALS,
                "mlflow.source.type": "LOCAL", **git_of_checkout()}
    for each in trained.values():
        assert len(each.seeds) == 2
        for run in (each.parent, *each.seeds):
            assert run_context(run) == expected, run.info.run_name
            assert run.info.user_id == expected["mlflow.user"]


def test_system_metrics_go_to_the_top_run_only_and_only_when_asked_for(trained):
    client, parent = trained["with"].client, trained["with"].parent
    steps, values = history(client, parent.info.run_id, CPU)
    assert len(steps) >= 2 and steps == list(range(len(steps)))  # one sample each 0.5 s
    assert all(0 <= value <= 100 for value in values)
    assert parent.data.metrics["system/system_memory_usage_megabytes"] > 0
    for run in (*trained["with"].seeds, trained["without"].parent, *trained["without"].seeds):
        assert [key for key in run.data.metrics if key.startswith("system/")] == [], \
            run.info.run_name
