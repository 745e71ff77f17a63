"""Shared fixtures: an isolated mnist1d cache and the default noisy dataset; and the fixtures
that tests in both ``unit/`` and ``system/`` use: ``lgals.cli.main`` in this process
(``run_main``), a store of hand-made evaluate runs (``store``), one small tuned study
(``lgals_study``), fake installed packages registering datasets (``plugins``).

``tests/`` is on ``sys.path`` (``pythonpath`` in ``pyproject.toml``): the helpers are
imported from the ``support`` package.
"""

from __future__ import annotations

import itertools
import os
import signal
from types import SimpleNamespace

import pytest
from hypothesis import settings

if "OMP_NUM_THREADS" not in os.environ:
    # One intra-op thread, here and in CLI subprocesses. The tensors are small, and on a shared
    # 2-core machine OpenMP's spinning threads make training up to ~8x slower (measured) when
    # another process competes for the cores. Set OMP_NUM_THREADS yourself to override.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

import numpy as np
from support.mlflow_fixtures import isolated_mlflow, sqlite_uri
from support.reports import EPOCHS

from lgals.data import NoisyDataset, load_clean, load_dataset

# no example database: the suite writes nothing outside pytest's temporary directories
settings.register_profile("lgals", database=None)
settings.load_profile("lgals")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """Point ``LGALS_CACHE_DIR`` at a fresh session directory unless the caller chose one.

    Never reading ``~/.cache/lgals`` keeps the cache tests honest: whatever is in the cache
    was written by this code.
    """
    if "LGALS_CACHE_DIR" in os.environ:
        yield os.environ["LGALS_CACHE_DIR"]
        return
    path = str(tmp_path_factory.mktemp("lgals-cache"))
    os.environ["LGALS_CACHE_DIR"] = path  # also inherited by CLI subprocesses
    try:
        yield path
    finally:
        os.environ.pop("LGALS_CACHE_DIR", None)


@pytest.fixture(scope="session")
def clean(_cache_dir) -> dict:
    """The clean mnist1d arrays (read-only by convention: tests must not mutate them)."""
    return load_clean("mnist1d")


@pytest.fixture(scope="session")
def dataset(_cache_dir) -> NoisyDataset:
    """``load_dataset()`` with its defaults: 20% symmetric noise, seed 0, no validation split."""
    return load_dataset()


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    """Fake installed packages (:class:`support.plugins.FakeDistributions`); the dataset
    registry is loaded again from them, and put back as it was afterwards."""
    from support.plugins import FakeDistributions

    from lgals.data import DATASETS

    DATASETS.loaded  # noqa: B018 -- loaded now, so that the original is what comes back
    monkeypatch.delitem(DATASETS.__dict__, "loaded")
    fake = FakeDistributions(tmp_path / "site-packages", monkeypatch)
    yield fake
    fake.forget()


@pytest.fixture
def run_main(capsys, monkeypatch):
    """Call ``lgals.cli.main`` in-process; return (exit code, stdout, stderr)."""
    # imported here, as MLflow and Optuna below: a run of tests that use none of these fixtures
    # does not wait for them
    from lgals.cli import main

    # main() installs a SIGTERM handler and sets an MLflow variable: undo both afterwards
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    previous_handler = signal.getsignal(signal.SIGTERM)

    def run(argv: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    yield run
    signal.signal(signal.SIGTERM, previous_handler)


@pytest.fixture
def store(tmp_path):
    """An MLflow sqlite store in ``tmp_path`` with one experiment, for hand-made runs
    (:func:`support.reports.evaluate`)."""
    from mlflow import MlflowClient

    with isolated_mlflow():
        import mlflow

        uri = sqlite_uri(tmp_path / "mlflow.db")
        mlflow.set_tracking_uri(uri)
        client = MlflowClient(uri)
        experiment_id = client.create_experiment(
            "lgals-test", artifact_location=(tmp_path / "artifacts").as_uri())
        npz = tmp_path / "epsilon_distributions.npz"
        np.savez(npz, eps_counts=np.ones((EPOCHS, 2, 3), dtype=np.int64),
                 eps_edges=np.linspace(0, 1, 4))
        yield SimpleNamespace(client=client, experiment_id=experiment_id, npz=npz, out=tmp_path,
                              clock=itertools.count(1_000_000, 1000))


@pytest.fixture(scope="module")
def lgals_study(tmp_path_factory, _cache_dir):
    """``lgals tune --mode lgals --n-trials 3 --epochs 2`` in fresh stores.

    A fixed study: seeded sampler and training, learning rates in range, and the default
    median pruner, which prunes nothing before 5 trials are complete: all 3 trials COMPLETE
    (asserted, not assumed, by the tests that use it)."""
    from support.tuning import client_of, load_study, runs_of, tune_main

    directory = tmp_path_factory.mktemp("tune-lgals")
    result = tune_main(directory, "--mode", "lgals", "--n-trials", "3", "--epochs", "2")
    runs = runs_of(directory)
    return SimpleNamespace(dir=directory, result=result, runs=runs,
                           study=load_study(directory, "lgals-lgals-epochs=2"),
                           client=client_of(directory))
