"""Shared fixtures: an isolated mnist1d cache and the default noisy dataset."""

from __future__ import annotations

import os

import pytest
from hypothesis import settings

if "OMP_NUM_THREADS" not in os.environ:
    # One intra-op thread, here and in CLI subprocesses. The tensors are small, and on a shared
    # 2-core machine OpenMP's spinning threads make training up to ~8x slower (measured) when
    # another process competes for the cores. Set OMP_NUM_THREADS yourself to override.
    os.environ["OMP_NUM_THREADS"] = "1"
    import torch

    torch.set_num_threads(1)

from lgals.data import NoisyDataset, load_dataset, load_mnist1d

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
    return load_mnist1d()


@pytest.fixture(scope="session")
def dataset(_cache_dir) -> NoisyDataset:
    """``load_dataset()`` with its defaults: 20% symmetric noise, seed 0, no validation split."""
    return load_dataset()
