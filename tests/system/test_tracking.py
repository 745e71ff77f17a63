"""MLflow tracking of ``lgals train`` / ``lgals reanalyze`` against a real sqlite store.

Training runs in this process through ``lgals.cli.main`` where that is enough (torch and
MLflow are imported once); what needs a process of its own (signals, the default store,
reloading a model with nothing in memory) runs the installed ``lgals`` console script.

The fast in-process tests: ``tests/unit/test_tracking.py``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import (
    HISTORY_KEYS,
    MEMBER_PARAMS,
    MLFLOW,
    MLFLOW_LOG,
    MlflowServer,
    assert_pt2_with_installable_requirements,
    cli_env,
    download_model,
    free_port,
    history,
    isolated_mlflow,
    popen_lgals,
    run_lgals,
    run_main,
    sqlite_params,
    sqlite_runs,
    sqlite_uri,
    stop,
    wait_for,
)

from lgals.data import NoiseRecipe, load_dataset
from lgals.schema import HEARTBEAT
from lgals.settings import DEFAULT_STALE_SECONDS
from lgals.tracking.runs import end_runs, open_run
from lgals.tracking.seeds import logged_model_id
from lgals.tracking.ui import EXPERIMENT_DESCRIPTION

EPOCHS = 3
TRAIN_ARGS = ["train", "--mode", "lgals", "--epochs", str(EPOCHS), "--seeds", "2"]
N_CLEAN, N_NOISY = 3200, 800  # 20% of mnist1d's 4000 training labels flipped
INTERRUPT_EXIT_TIMEOUT = 30  # s from the signal to the exit (it takes 2-7 s)


def download(client: MlflowClient, run_id: str, path: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        return Path(client.download_artifacts(run_id, path, tmp)).read_bytes()


def load_npz(client: MlflowClient, run_id: str, path: str) -> dict[str, np.ndarray]:
    with tempfile.TemporaryDirectory() as tmp:
        with np.load(client.download_artifacts(run_id, path, tmp), allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}


@pytest.fixture(scope="module")
def trained(tmp_path_factory, _cache_dir):
    """``lgals train --mode lgals --epochs 3 --seeds 2`` tracked in a fresh sqlite store, and
    the same command with ``--json --no-tracking`` in a subprocess (started first so the two
    overlap), run from an empty directory with no tracking URI anywhere."""
    untracked_cwd = tmp_path_factory.mktemp("untracked")
    untracked = popen_lgals([*TRAIN_ARGS, "--json", "--no-tracking"], untracked_cwd)
    try:
        tmp = tmp_path_factory.mktemp("tracked")
        uri = sqlite_uri(tmp / "mlflow.db")
        result = run_main([*TRAIN_ARGS, "--tracking-uri", uri], tmp)
        untracked_out, untracked_err = untracked.communicate(timeout=300)
    finally:
        stop(untracked)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lgals")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = sorted((r for r in runs if "mlflow.parentRunId" in r.data.tags),
                      key=lambda r: int(r.data.tags.get("lgals.seed", -1)))
    return SimpleNamespace(
        uri=uri, client=client, result=result, experiment=experiment, runs=runs,
        parents=parents, children=children, untracked_cwd=untracked_cwd,
        untracked=SimpleNamespace(code=untracked.returncode, out=untracked_out,
                                  err=untracked_err),
    )


def test_train_exits_cleanly_and_names_its_runs(trained):
    assert trained.result.code == 0, trained.result.err
    assert "MLflow runs:" in trained.result.err
    for run in trained.runs:
        assert run.info.run_id in trained.result.err


def test_the_experiment_opens_on_its_runs_and_says_what_it_holds(trained):
    """MLflow's UI shows a model-training experiment on its runs (the kind its experiment
    page reads), with a description saying how to compare modes."""

    tags = trained.experiment.tags
    assert tags["mlflow.experimentKind"] == "custom_model_development"
    assert tags["mlflow.note.content"] == EXPERIMENT_DESCRIPTION
    assert "tags.lgals.stage = 'evaluate' and tags.lgals.seed != ''" in EXPERIMENT_DESCRIPTION


def test_each_run_names_its_training_set_and_its_model_shows_the_final_metric(trained, tmp_path):
    """The noisy training set is every seed run's input dataset (named after its recipe, with
    a digest of inputs and observed labels); the logged model carries the run's final test
    accuracy and the mode's params, and is named after its run."""
    import mlflow.data

    from lgals.data import NoiseRecipe, load_dataset

    data = load_dataset(NoiseRecipe())
    expected = mlflow.data.from_numpy(data.x_train, targets=data.y_train).digest
    other = load_dataset(NoiseRecipe(noise_seed=1))
    assert mlflow.data.from_numpy(other.x_train, targets=other.y_train).digest != expected
    for child in trained.children:
        (dataset_input,) = child.inputs.dataset_inputs
        assert dataset_input.dataset.name == "mnist1d-symmetric-0.2-seed0"
        assert dataset_input.dataset.digest == expected
        assert [(t.key, t.value) for t in dataset_input.tags] == [
            ("mlflow.data.context", "training")]
        (model,) = trained.client.search_logged_models(
            [trained.experiment.experiment_id],
            filter_string=f"source_run_id = '{child.info.run_id}'")
        assert model.status.name == "READY"
        assert model.name == child.info.run_name
        assert {m.key: m.value for m in model.metrics} == {
            "final_test_acc": child.data.metrics["final_test_acc"]}
        assert model.params["mode"] == "lgals" and model.params["epochs"] == "3"
    assert not trained.parents[0].inputs.dataset_inputs  # the parent trained nothing itself
    assert "one run each below" in trained.parents[0].data.tags["mlflow.note.content"]


def test_one_parent_and_one_child_per_seed(trained):
    assert trained.experiment is not None, "no experiment named 'lgals'"
    assert len(trained.runs) == 3
    assert len(trained.parents) == 1 and len(trained.children) == 2
    parent = trained.parents[0]
    assert parent.data.tags["lgals.mode"] == "lgals"
    assert parent.data.tags["lgals.stage"] == "train"
    assert "lgals.seed" not in parent.data.tags
    assert parent.data.params["seeds"] == "0,1"
    for seed, child in enumerate(trained.children):
        assert child.info.run_name == f"lgals-seed{seed}"
        assert child.data.tags["lgals.seed"] == str(seed)
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["lgals.mode"] == "lgals"
        assert child.data.tags["lgals.stage"] == "train"
        assert child.data.tags["lgals.status"] == "completed"
    for run in trained.runs:
        assert run.info.status == "FINISHED"
        assert run.info.end_time is not None


def test_children_carry_every_hyperparameter_and_the_data_recipe(trained):
    for seed, child in enumerate(trained.children):
        params = child.data.params
        missing = [name for name in MEMBER_PARAMS if name not in params]
        assert not missing, f"missing params {missing}"
        assert params["seed"] == str(seed)
        assert params["mode"] == "lgals"
        assert float(params["lr"]) == 1e-3
        assert float(params["weight_decay"]) == 1e-2
        assert float(params["eps_max"]) == 0.3
        assert float(params["gamma"]) == 1.0
        assert int(params["epochs"]) == EPOCHS
        assert int(params["batch_size"]) == 128
        assert float(params["noise_rate"]) == 0.2
        assert params["noise_type"] == "symmetric"
        assert int(params["noise_seed"]) == 0
        assert float(params["val_fraction"]) == 0.0
        assert params["lgals_version"] == version("lgals")


def test_per_epoch_metric_histories(trained):
    client = trained.client
    for child in trained.children:
        run_id = child.info.run_id
        for key in HISTORY_KEYS:
            steps, values = history(client, run_id, key)
            assert steps == list(range(1, EPOCHS + 1)), key
            assert len(values) == EPOCHS, key
            assert all(np.isfinite(values)), key
        _, test_acc = history(client, run_id, "test_acc")
        steps, final = history(client, run_id, "final_test_acc")
        assert final == [test_acc[-1]]
        assert steps == [EPOCHS]
        assert child.data.metrics["final_test_acc"] == test_acc[-1]
        assert "val_acc" not in child.data.metrics  # no validation split asked for


def test_tracked_values_equal_the_untracked_json(trained):
    """Tracking changes nothing: the same command without MLflow prints the same numbers."""
    assert trained.untracked.code == 0, trained.untracked.err
    document = json.loads(trained.untracked.out)
    assert [s["seed"] for s in document["seeds"]] == [0, 1]
    for child, untracked in zip(trained.children, document["seeds"]):
        assert untracked["status"] == "completed"
        assert child.data.metrics["final_test_acc"] == untracked["final_test_acc"]
        assert set(untracked["history"]) == set(HISTORY_KEYS)
        for key, values in untracked["history"].items():
            if key == "epoch_seconds":
                continue
            _, logged = history(trained.client, child.info.run_id, key)
            assert logged == values, key


def test_no_tracking_writes_no_store(trained):
    assert trained.untracked.code == 0, trained.untracked.err
    assert "MLflow" not in trained.untracked.err
    assert not (trained.untracked_cwd / "mlflow.db").exists()
    assert not (trained.untracked_cwd / "mlruns").exists()
    assert not (trained.untracked_cwd / "mlartifacts").exists()


def test_epsilon_distributions_and_data_recipe(trained):
    data = load_dataset()
    assert (int((~data.noise_mask).sum()), int(data.noise_mask.sum())) == (N_CLEAN, N_NOISY)
    for child in trained.children:
        run_id = child.info.run_id
        paths = {a.path for a in trained.client.list_artifacts(run_id)}
        assert {"epsilon_distributions.npz", "data_recipe.npz",
                "epsilon_distributions.png"} <= paths

        histograms = load_npz(trained.client, run_id, "epsilon_distributions.npz")
        assert histograms["eps_counts"].shape == (EPOCHS, 2, 50)
        assert histograms["alignment_counts"].shape == (EPOCHS, 2, 50)
        np.testing.assert_array_equal(histograms["eps_edges"], np.linspace(0, 1, 51))
        np.testing.assert_array_equal(histograms["alignment_edges"], np.linspace(-1, 1, 51))
        for name in ("eps_counts", "alignment_counts"):
            per_group = histograms[name].sum(axis=2)
            assert (per_group[:, 0] == N_CLEAN).all(), name
            assert (per_group[:, 1] == N_NOISY).all(), name
        # LGALS smooths in [0, eps_max = 0.3]: no mass in bins from 0.3 on
        assert histograms["eps_counts"][:, :, 15:].sum() == 0

        recipe = load_npz(trained.client, run_id, "data_recipe.npz")
        np.testing.assert_array_equal(recipe["y_train"], data.y_train)
        np.testing.assert_array_equal(recipe["noise_mask"], data.noise_mask)
        np.testing.assert_array_equal(recipe["train_index"], data.train_index)
        assert float(recipe["noise_rate"]) == 0.2
        assert str(recipe["noise_type"]) == "symmetric"

        png = download(trained.client, run_id, "epsilon_distributions.png")
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(png) > 1000


RELOAD_SCRIPT = """
import json, sys
import numpy as np, torch
import mlflow.pyfunc, mlflow.pytorch
from lgals.data import load_dataset
from lgals.tracking.seeds import model_uri
from lgals.tracking.store import mlflow_client

data = load_dataset()
report = {}
for run_id in sys.argv[1:]:
    uri = model_uri(run_id)
    model = mlflow.pytorch.load_model(uri)
    by_name = mlflow.pytorch.load_model(
        f"runs:/{run_id}/{mlflow_client().get_run(run_id).info.run_name}")
    with torch.no_grad():
        predictions = model(torch.from_numpy(data.x_test)).argmax(-1).numpy()
        same = bool((by_name(torch.from_numpy(data.x_test)).argmax(-1).numpy()
                     == predictions).all())
    pyfunc = mlflow.pyfunc.load_model(uri)
    outputs = np.asarray(pyfunc.predict(data.x_test.astype(np.float32)))
    schema = pyfunc.metadata.get_input_schema()
    report[run_id] = {
        "uri": uri,
        "by_run_name_same": same,
        "test_acc": float((predictions == data.y_test).mean()),
        "pyfunc_shape": list(outputs.shape),
        "pyfunc_same_argmax": bool((outputs.argmax(-1) == predictions).all()),
        "input_shapes": [list(spec.shape) for spec in schema.inputs],
        "input_types": [str(spec.type) for spec in schema.inputs],
    }
print("REPORT " + json.dumps(report))
"""


def test_model_reloads_in_a_fresh_process_and_reproduces_final_test_acc(trained, tmp_path):
    run_ids = [child.info.run_id for child in trained.children]
    process = subprocess.run([sys.executable, "-c", RELOAD_SCRIPT, *run_ids], cwd=tmp_path,
                             env=cli_env(MLFLOW_TRACKING_URI=trained.uri),
                             capture_output=True, text=True, timeout=240)
    assert process.returncode == 0, process.stderr[-3000:]
    line = next(ln for ln in process.stdout.splitlines() if ln.startswith("REPORT "))
    report = json.loads(line.removeprefix("REPORT "))
    for child in trained.children:
        reloaded = report[child.info.run_id]
        assert reloaded["uri"].startswith("models:/m-")
        assert reloaded["by_run_name_same"]
        assert reloaded["test_acc"] == child.data.metrics["final_test_acc"]
        assert reloaded["pyfunc_shape"] == [1000, 10]
        assert reloaded["pyfunc_same_argmax"]
        assert reloaded["input_shapes"] == [[-1, 40]]
        assert reloaded["input_types"] == ["float32"]


def test_the_logged_model_is_pickle_free_pt2_and_requires_this_torch_build(trained, tmp_path):
    """Each seed's logged model, as its files are stored: torch.export's pt2, nothing pickled,
    requirements that install the torch build that trained it (see
    :func:`assert_pt2_with_installable_requirements`)."""
    import mlflow

    for child in trained.children:
        with isolated_mlflow():
            mlflow.set_tracking_uri(trained.uri)
            found = logged_model_id(child.info.run_id)
        files = download_model(trained.uri, found, tmp_path / found)
        assert_pt2_with_installable_requirements(files)


def test_mlflow_models_serve_answers_as_the_model_in_process(trained, tmp_path):
    """``mlflow models serve -m models:/<id> --env-manager local`` of a seed's logged model:
    POST /invocations of the test set in the format its signature asks (a float32 tensor
    [-1, 40]: ``{"inputs": rows}``) answers exactly the in-process pyfunc predictions, and
    their argmax scores the run's final_test_acc. The server is stopped by its process group
    (``mlflow`` and its uvicorn worker)."""
    import mlflow.pyfunc
    import mlflow.pytorch
    import torch

    child = trained.children[0]
    data = load_dataset()
    assert data.x_test.dtype == np.float32
    with isolated_mlflow():
        mlflow.set_tracking_uri(trained.uri)
        uri = f"models:/{logged_model_id(child.info.run_id)}"
        pyfunc = mlflow.pyfunc.load_model(uri)
        inputs = pyfunc.metadata.get_input_schema().inputs
        expected = np.asarray(pyfunc.predict(data.x_test))
        with torch.no_grad():
            module = mlflow.pytorch.load_model(uri)(torch.from_numpy(data.x_test)).numpy()
    assert [(str(spec.type), list(spec.shape)) for spec in inputs] == [("float32", [-1, 40])]
    np.testing.assert_array_equal(module, expected)

    port = free_port()
    server = MlflowServer([MLFLOW, "models", "serve", "-m", uri, "--env-manager", "local",
                           "--host", "127.0.0.1", "--port", str(port)],
                          cli_env(MLFLOW_TRACKING_URI=trained.uri), tmp_path,
                          f"http://127.0.0.1:{port}", tmp_path / "serve.log")
    server.log.write_text("")
    server.start()
    try:
        server.wait_healthy()
        request = urllib.request.Request(
            f"{server.uri}/invocations", data=json.dumps({"inputs": data.x_test.tolist()}).encode(),
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.asarray(json.load(response)["predictions"], dtype=np.float32)
    finally:
        server.stop()

    def group_alive() -> bool:
        try:
            os.killpg(server.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    wait_for(lambda: not group_alive(), timeout=30, what="the model server's process group")
    assert served.shape == (1000, 10)
    np.testing.assert_array_equal(served, expected)
    assert float((served.argmax(-1) == data.y_test).mean()) == child.data.metrics["final_test_acc"]


def test_reanalyze_a_run_whose_data_cannot_be_rebuilt_is_one_line(trained, tmp_path):
    """A run whose logged recipe disagrees with what its params rebuild: exit 2, one line,
    no reanalyze run."""
    import numpy as np

    source = trained.children[0]
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("tampered")
    run_id = client.create_run(experiment_id, tags={"lgals.mode": "lgals"}).info.run_id
    for key in ("noise_rate", "noise_type", "noise_seed", "val_fraction"):
        client.log_param(run_id, key, source.data.params[key])
    recipe_dir = tmp_path / "recipe"
    recipe_dir.mkdir()
    logged = MlflowClient(trained.uri).download_artifacts(source.info.run_id,
                                                          "data_recipe.npz", str(recipe_dir))
    with np.load(logged) as recipe:
        arrays = dict(recipe)
    arrays["y_train"] = (arrays["y_train"] + 1) % 10  # not what the params rebuild
    np.savez(recipe_dir / "data_recipe.npz", **arrays)
    client.log_artifact(run_id, str(recipe_dir / "data_recipe.npz"))
    client.set_terminated(run_id)

    result = run_main(["reanalyze", run_id, "--tracking-uri", uri], tmp_path)
    assert result.code == 2, result
    lines = [line for line in result.err.splitlines()
             if line.strip() and not MLFLOW_LOG.match(line)]  # MLflow's own INFO lines
    assert lines == [f"lgals: error: run {run_id}: its data cannot be rebuilt: the noisy "
                     "labels made from its params differ from its logged data_recipe.npz "
                     "(another mnist1d version?)"], result.err
    assert "Traceback" not in result.err + result.out
    assert len(client.search_runs([experiment_id])) == 1  # no reanalyze run was opened


@pytest.mark.parametrize("what", ["unknown run", "no recipe", "no model"])
def test_reanalyze_refuses_what_it_cannot_reload_in_one_line(trained, tmp_path, what):
    """An unknown run id, a run without a data recipe, a run without a model (as a tuning
    trial): exit 2, one line naming the run, no traceback, no reanalyze run."""
    source = trained.children[0]
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("partial")
    run_id = client.create_run(experiment_id).info.run_id
    for key in ("noise_rate", "noise_type", "noise_seed", "val_fraction"):
        client.log_param(run_id, key, source.data.params[key])
    if what == "no model":
        logged = MlflowClient(trained.uri).download_artifacts(
            source.info.run_id, "data_recipe.npz", str(tmp_path))
        client.log_artifact(run_id, logged)
    client.set_terminated(run_id)
    target = "0" * 32 if what == "unknown run" else run_id
    expected = {"unknown run": f"lgals: error: no run '{target}' in the store {uri}",
                "no recipe": f"lgals: error: run {run_id} has no data_recipe.npz",
                "no model": f"lgals: error: run {run_id} has no logged model"}[what]

    result = run_main(["reanalyze", target, "--tracking-uri", uri], tmp_path)
    assert result.code == 2, result
    lines = [line for line in result.err.splitlines()
             if line.strip() and not MLFLOW_LOG.match(line)]
    assert len(lines) == 1 and lines[0].startswith(expected), result.err
    assert "Traceback" not in result.err + result.out
    assert len(client.search_runs([experiment_id])) == 1  # no reanalyze run was opened


def test_reanalyze_reproduces_and_logs_a_new_run(trained, tmp_path):
    client, source = trained.client, trained.children[0]
    source_id = source.info.run_id
    result = run_main(["reanalyze", source_id, "--tracking-uri", trained.uri], tmp_path)
    assert result.code == 0, result.err + result.out
    assert "reproduces" in result.out and "DOES NOT" not in result.out

    reanalyses = client.search_runs([trained.experiment.experiment_id],
                                    filter_string="tags.`lgals.stage` = 'reanalyze'")
    assert len(reanalyses) == 1
    run = reanalyses[0]
    assert run.info.run_id != source_id
    assert run.info.run_id in result.out
    assert run.info.status == "FINISHED"
    assert run.data.tags["lgals.source_run"] == source_id
    assert run.data.tags["lgals.mode"] == "lgals"
    metrics = run.data.metrics
    assert metrics["test_acc"] == source.data.metrics["final_test_acc"]
    memorized = metrics["memorized_count"]
    assert memorized == int(memorized) and 0 <= memorized <= N_NOISY
    assert metrics["memorized_frac"] == pytest.approx(memorized / N_NOISY)
    assert f"memorised noisy training labels: {int(memorized)} of {N_NOISY}" in result.out

    with tempfile.TemporaryDirectory() as tmp:
        confusion = np.loadtxt(client.download_artifacts(run.info.run_id,
                                                         "confusion_matrix.csv", tmp),
                               delimiter=",", dtype=np.int64)
    assert confusion.shape == (10, 10)
    assert confusion.sum() == 1000
    assert np.trace(confusion) / 1000 == metrics["test_acc"]
    for k, row in enumerate(confusion):
        assert metrics[f"class_{k}_acc"] == pytest.approx(row[k] / row.sum())
    assert {"confusion_matrix.csv", "confusion_matrix.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}
    # the source run is left as it was
    assert client.get_run(source_id).data.metrics == source.data.metrics


def test_baseline_with_a_validation_split(tmp_path, _cache_dir):
    """One seed, baseline (no smoothing at all), 10% noisy validation split."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    result = run_main(["train", "--epochs", "2", "--seeds", "1", "--val-fraction", "0.1",
                       "--tracking-uri", uri], tmp_path)
    assert result.code == 0, result.err
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("lgals").experiment_id])
    assert len(runs) == 1  # a single seed is its own run, no parent
    run = runs[0]
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert "mlflow.parentRunId" not in run.data.tags
    assert run.data.tags["lgals.seed"] == "0"
    assert run.data.tags["lgals.mode"] == "baseline"
    assert float(run.data.params["val_fraction"]) == 0.1
    assert "eps_max" not in run.data.params  # baseline reads no smoothing hyperparameter
    for key in (*HISTORY_KEYS, "val_acc", "val_loss"):
        steps, values = history(client, run_id, key)
        assert steps == [1, 2], key
    _, test_acc = history(client, run_id, "test_acc")
    assert run.data.metrics["final_test_acc"] == test_acc[-1]
    _, eps = history(client, run_id, "eps_mean")
    assert eps == [0.0, 0.0]

    data = load_dataset(NoiseRecipe(val_fraction=0.1))
    recipe = load_npz(client, run_id, "data_recipe.npz")
    for name in ("y_train", "noise_mask", "y_val", "val_noise_mask", "train_index",
                 "val_index"):
        np.testing.assert_array_equal(recipe[name], getattr(data, name), err_msg=name)
    histograms = load_npz(client, run_id, "epsilon_distributions.npz")
    n_clean, n_noisy = int((~data.noise_mask).sum()), int(data.noise_mask.sum())
    assert n_clean + n_noisy == len(data.y_train) < 4000
    counts = histograms["eps_counts"]
    assert counts.shape == (2, 2, 50)
    assert (counts[:, 0, 0] == n_clean).all() and (counts[:, 1, 0] == n_noisy).all()
    assert counts[:, :, 1:].sum() == 0  # every epsilon is 0: all mass in the first bin
    assert (histograms["alignment_counts"].sum(axis=2) == [n_clean, n_noisy]).all()


def test_default_store_is_sqlite_in_the_working_directory(tmp_path, _cache_dir):
    process = run_lgals(["train", "--epochs", "1", "--seeds", "1"], tmp_path)
    assert process.returncode == 0, process.stderr[-3000:]
    db = tmp_path / "mlflow.db"
    assert db.is_file()
    assert db.read_bytes()[:16] == b"SQLite format 3\x00"
    client = MlflowClient(sqlite_uri(db))
    runs = client.search_runs([client.get_experiment_by_name("lgals").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert "final_test_acc" in runs[0].data.metrics
    # no file store: artifacts may sit under ./mlruns, file-store metadata may not
    assert not (tmp_path / "mlruns" / "0" / "meta.yaml").exists()
    mlruns = tmp_path / "mlruns"
    assert not (list(mlruns.rglob("meta.yaml")) if mlruns.exists() else [])


@dataclass
class Interrupted:
    signum: int
    db: Path
    run_id: str | None = None
    code: int | None = None
    err: str = ""
    lost: bool = False  # still running long after the signal


def interrupt_trainings(tmp: Path, plan: list[tuple[int, float]]) -> list[Interrupted]:
    """Start one ``lgals train --epochs 400`` per ``(signal, delay)`` at once, and send each
    its signal ``delay`` s after its run is RUNNING with its params logged (training is
    starting; 400 epochs take far longer than the delays used). Metrics would be no sign:
    the writer runs on idle cores only, and two trainings leave none. Every process is ended
    (killed if the signal was lost)."""
    jobs, processes = [], []
    try:
        for index, (signum, _) in enumerate(plan):
            cwd = tmp / f"job{index}"
            cwd.mkdir()
            jobs.append(Interrupted(signum, cwd / "mlflow.db"))
            processes.append(popen_lgals(["train", "--epochs", "400", "--seeds", "1",
                                          "--tracking-uri", sqlite_uri(cwd / "mlflow.db")],
                                         cwd))
        due: dict[int, float] = {}
        pending = set(range(len(plan)))

        def all_signalled():
            for index in sorted(pending):
                job, process, (_, delay) = jobs[index], processes[index], plan[index]
                if process.poll() is not None:
                    raise AssertionError(f"lgals exited before its signal "
                                         f"({process.returncode}): {process.stderr.read()}")
                if index not in due:
                    runs = sqlite_runs(job.db)
                    if not runs or runs[0][1] != "RUNNING":
                        continue
                    job.run_id = runs[0][0]
                    if "lgals_version" in sqlite_params(job.db, job.run_id):
                        due[index] = time.monotonic() + delay
                if index in due and time.monotonic() >= due[index]:
                    process.send_signal(job.signum)  # by PID
                    pending.discard(index)
            return not pending

        wait_for(all_signalled, timeout=120, interval=0.05, what="runs to reach their signal")
        deadline = time.monotonic() + INTERRUPT_EXIT_TIMEOUT
        for job, process in zip(jobs, processes):
            try:
                _, job.err = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                job.lost = True
                stop(process)
                _, job.err = process.communicate()
            job.code = process.returncode
    finally:
        for process in processes:
            stop(process)
    return jobs


def assert_killed(job: Interrupted) -> None:
    name = signal.Signals(job.signum).name
    ignored = [ln for ln in job.err.splitlines() if "Exception ignored" in ln]
    assert not job.lost and job.code != 0, (
        f"{name} was lost: lgals trained on "
        + (f"for {INTERRUPT_EXIT_TIMEOUT} s" if job.lost else "to the end and exited 0")
        + f"; {ignored or 'no exception reported'}; run "
        + MlflowClient(sqlite_uri(job.db)).get_run(job.run_id).info.status)
    assert "Traceback" not in job.err, job.err[-3000:]
    assert "lgals: interrupted" in job.err
    assert job.code == 128 + job.signum, f"{name}: exit {job.code}"  # 130 or 143, as shells say
    run = MlflowClient(sqlite_uri(job.db)).get_run(job.run_id)
    assert run.info.status == "KILLED", f"{name}: run ended {run.info.status}"
    assert run.info.end_time is not None


@pytest.fixture(scope="module")
def interrupted_while_training(tmp_path_factory, _cache_dir):
    return interrupt_trainings(tmp_path_factory.mktemp("interrupted"),
                               [(signal.SIGINT, 5.0), (signal.SIGTERM, 5.0)])


@pytest.mark.parametrize("index", [0, 1], ids=["SIGINT", "SIGTERM"])
def test_interrupted_training_ends_its_run_killed(interrupted_while_training, index):
    assert_killed(interrupted_while_training[index])


def test_an_interrupt_as_training_starts_is_not_lost(tmp_path, _cache_dir):
    """Ctrl-C or SIGTERM right as training starts (the run is RUNNING with its params):
    the run must still end KILLED and the command stop, not train on for 400 epochs."""
    jobs = interrupt_trainings(tmp_path, [(signal.SIGTERM, 0.1), (signal.SIGINT, 0.25)])
    for job in jobs:
        assert_killed(job)


def test_an_open_run_keeps_beating(tmp_path, monkeypatch):
    import mlflow


    monkeypatch.setenv("LGALS_STALE_SECONDS", "6")  # a beat a second
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    with isolated_mlflow():
        mlflow.set_tracking_uri(uri)
        run_id = open_run(client.create_experiment("beat"), "r", {}, {})
        first = int(client.get_run(run_id).data.tags[HEARTBEAT])
        wait_for(lambda: int(client.get_run(run_id).data.tags[HEARTBEAT]) > first,
                 timeout=DEFAULT_STALE_SECONDS, what="a second heartbeat")
        end_runs([run_id], "FINISHED")
