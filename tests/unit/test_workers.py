"""The worker pool (``lgals.workers``) and how tuning splits its trials between workers.

The pool's process-level behaviour with real tuning (Ctrl-C, SIGTERM, ``kill -9`` to a
worker) is tested in ``test_batched_tuning.py`` and ``test_faults.py``; here the outcomes
of small jobs, and the pure quota split.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lgals.tracking.runs import scope, scope_tags
from lgals.tuning import split_quotas
from lgals.workers import DIED, DONE, run_pool, threads_per_worker

# --- the quota split ------------------------------------------------------------------------


def test_missing_trials_are_split_exactly_between_workers():
    assert split_quotas({"a": 5, "b": 0}, 2) == [{"a": 3, "b": 0}, {"a": 2, "b": 0}]
    assert split_quotas({"a": 4, "b": 7}, 3) == [{"a": 2, "b": 3}, {"a": 1, "b": 2},
                                                 {"a": 1, "b": 2}]


def test_a_worker_without_a_quota_is_not_started():
    assert split_quotas({"a": 1, "b": 0}, 2) == [{"a": 1, "b": 0}]
    assert split_quotas({"a": 0, "b": 0}, 3) == []
    assert split_quotas({"a": -2, "b": 3}, 4) == [{"a": 0, "b": 1}] * 3  # a: topped up


@pytest.mark.parametrize("workers", [1, 2, 3, 5])
def test_every_missing_trial_has_one_worker(workers):
    missing = {"a": 7, "b": 2, "c": 0, "d": -1}
    quotas = split_quotas(missing, workers)
    assert len(quotas) <= workers
    assert all(any(quota.values()) for quota in quotas)
    for mode, n in missing.items():
        assert sum(quota[mode] for quota in quotas) == max(0, n)
        assert max(q[mode] for q in quotas) - min(q[mode] for q in quotas) <= 1


# --- the pool -------------------------------------------------------------------------------


def record(path: str) -> None:
    """A worker's job: what it runs with (module level: a spawned process imports it)."""
    Path(path).write_text(json.dumps({"threads": torch.get_num_threads(),
                                      "scope": scope_tags()}))


def test_workers_run_in_the_parents_scope_and_share_the_cores(tmp_path):
    paths = [str(tmp_path / f"{i}.json") for i in range(2)]
    with scope({"lgals.repeat": 2}, "r2"):
        assert run_pool(record, paths, workers=4) == [DONE, DONE]
    for path in paths:
        seen = json.loads(Path(path).read_text())
        assert seen == {"threads": threads_per_worker(4),
                        "scope": [{"lgals.repeat": "2"}, "r2"]}


def test_a_worker_that_dies_unheard_is_an_outcome_and_an_error_is_raised():
    # os._exit ends the process before it can answer; int("x") raises in the worker.
    assert run_pool(os._exit, [3]) == [DIED]
    with pytest.raises(ValueError, match="invalid literal"):
        run_pool(int, ["x", "1"])
