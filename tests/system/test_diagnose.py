"""``lgals diagnose``: closed-form per-sample weight gradients against one backward pass per
sample, the statistics against scipy, the JSON document, MLflow logging, and bad input.

The fast in-process tests: ``tests/unit/test_diagnose.py``.
"""

from __future__ import annotations

import json

import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import run_main, sqlite_uri


def test_a_logged_model_is_diagnosed_and_logged(tmp_path, _cache_dir):
    """``--run``: the seed run's reloaded model at its last epoch, logged to a new run with
    a metric per statistic and a scatter figure; the same numbers as its JSON document."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    trained = run_main(["train", "--seeds", "1", "--epochs", "2", "--tracking-uri", uri],
                       tmp_path)
    assert trained.code == 0, trained
    client = MlflowClient(uri)
    (seed_run,) = client.search_runs([client.get_experiment_by_name("lgals").experiment_id])
    result = run_main(["diagnose", "--run", seed_run.info.run_id, "--json", "--batches", "2",
                       "--tracking-uri", uri], tmp_path)
    assert result.code == 0, result
    (checkpoint,) = json.loads(result.out)["checkpoints"]
    assert checkpoint["epoch"] == 2
    (diagnosis,) = [r for r in client.search_runs([seed_run.info.experiment_id])
                    if r.data.tags.get("lgals.stage") == "diagnose"]
    assert diagnosis.data.tags["lgals.source_run"] == seed_run.info.run_id
    assert diagnosis.data.metrics["all.pearson"] == pytest.approx(
        checkpoint["correlation"]["all"]["pearson"])
    artifacts = {a.path for a in client.list_artifacts(diagnosis.info.run_id, "scatter")}
    assert artifacts == {"scatter/epoch_0002.png"}
    # a run with no model or data recipe (the diagnosis itself) is one line naming what
    refused = run_main(["diagnose", "--run", diagnosis.info.run_id, "--tracking-uri", uri],
                       tmp_path)
    assert refused.code == 2, refused
    assert refused.err.strip().splitlines() == [
        f"lgals: error: run {diagnosis.info.run_id} has no data_recipe.npz: only training "
        "runs (one per seed or trial) have one"]
