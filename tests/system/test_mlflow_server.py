"""``lgals train`` against a real ``mlflow server`` process, and against no server at all."""

from __future__ import annotations

import time

import numpy as np
import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import (
    HISTORY_KEYS,
    MlflowServer,
    assert_pt2_with_installable_requirements,
    download_model,
    free_port,
    history,
    isolated_mlflow,
    mlflow_server,
    model_accuracy,
    run_lgals,
    run_main,
)

from lgals.data import load_dataset
from lgals.tracking.seeds import logged_model_id, model_uri


@pytest.fixture(scope="module", autouse=True)
def server(tmp_path_factory) -> MlflowServer:
    """``mlflow server`` on a free port with a sqlite backend and proxied local artifacts.

    Autouse and started at once, so the server boots while the first test (which needs no
    server) runs; ``server_uri`` waits for ``/health``. Stopped by its process group.
    """
    tmp = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(tmp, f"sqlite:///{tmp / 'server.db'}", wait=False) as server:
        yield server


@pytest.fixture(scope="module")
def server_uri(server) -> str:
    return server.wait_healthy()


def test_unreachable_server_fails_fast_with_one_line(tmp_path, _cache_dir):
    """Nothing listens: the command gives up at its look at the server before it starts
    (``/health``), saying so, not after MLflow's retries of its first request (which end in
    "stopped answering ... not back within" the server wait: here the longest there is, 480
    s, four times ``run_lgals``'s own timeout)."""
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    started = time.monotonic()
    process = run_lgals(["train", "--epochs", "2", "--tracking-uri", uri], tmp_path,
                        timeout=120, LGALS_SERVER_WAIT_SECONDS="480")
    print(f"gave up after {time.monotonic() - started:.1f} s")
    assert process.returncode == 1, process.stderr[-3000:]
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr[-3000:]
    assert lines[0].startswith(f"lgals: error: cannot reach the MLflow tracking server at "
                               f"{uri} ("), lines[0]
    assert "Connection refused" in lines[0], lines[0]
    assert lines[0].endswith("; start it, set --tracking-uri, or pass --no-tracking"), lines[0]
    assert "Traceback" not in process.stderr
    assert process.stdout == ""
    assert not (tmp_path / "mlflow.db").exists()


def test_training_logs_to_the_server_and_the_model_reloads_from_it(server_uri, tmp_path,
                                                                  _cache_dir):
    result = run_main(["train", "--epochs", "2", "--seeds", "2", "--tracking-uri", server_uri],
                      tmp_path)
    assert result.code == 0, result.err
    assert not (tmp_path / "mlflow.db").exists()  # nothing went to a local store

    client = MlflowClient(server_uri)
    experiment = client.get_experiment_by_name("lgals")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags),
                      key=lambda r: int(r.data.tags["lgals.seed"]))
    assert len(parents) == 1 and len(children) == 2
    assert "lgals.seed" not in parents[0].data.tags
    assert all(r.info.status == "FINISHED" for r in runs)
    for seed, child in enumerate(children):
        assert child.data.tags["lgals.seed"] == str(seed)
        assert child.data.tags["mlflow.parentRunId"] == parents[0].info.run_id
        assert child.data.params["seed"] == str(seed)
        for key in HISTORY_KEYS:
            steps, _ = history(client, child.info.run_id, key)
            assert steps == [1, 2], key
        _, test_acc = history(client, child.info.run_id, "test_acc")
        assert child.data.metrics["final_test_acc"] == test_acc[-1]
        assert {"epsilon_distributions.npz", "data_recipe.npz",
                "epsilon_distributions.png"} <= {
            a.path for a in client.list_artifacts(child.info.run_id)}

    import mlflow
    import mlflow.pytorch

    data = load_dataset()
    with isolated_mlflow():
        mlflow.set_tracking_uri(server_uri)
        for child in children:
            model = mlflow.pytorch.load_model(model_uri(child.info.run_id))
            assert model_accuracy(model, data) == child.data.metrics["final_test_acc"]
        found = logged_model_id(children[0].info.run_id)
    assert np.isfinite(children[0].data.metrics["final_test_acc"])
    # its files, through the server: pt2 (MLflow's default differs by tracking URI), and
    # requirements that install the torch build that trained it
    assert_pt2_with_installable_requirements(download_model(server_uri, found, tmp_path / found))
