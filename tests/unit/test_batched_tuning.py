"""Batched tuning (``lgals tune --batch K``) against real sqlite stores and real processes.

Each round asks up to K trials per study and trains every study's trials as one stack. The
contracts of one-at-a-time tuning still hold: exact trial counts (also on resume with another
``--batch`` and with workers), one nested MLflow run per trial, pruning and failure per trial,
interrupts that fail the trials and kill the runs, and trials of a ``kill -9``ed process
retried by the next run.

The process-level and seconds-long tests: ``tests/system/test_batched_tuning.py``.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState
from support.mlflow_fixtures import run_main
from support.tuning import tune_argv

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
              pytest.mark.filterwarnings("ignore::UserWarning:optuna")]


# --- bad input -------------------------------------------------------------------------------

@pytest.mark.parametrize("args, option", [
    (("--batch", "0"), "--batch"),
    (("--batch", "-3"), "--batch"),
    (("--device", "tpu"), "--device"),
])
def test_bad_batch_or_device_is_one_line_and_starts_nothing(tmp_path, args, option):
    result = run_main(tune_argv(tmp_path, "--mode", "baseline", *args), tmp_path)
    assert result.code == 2, result
    assert option in error_line_of(result)
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "optuna.db").exists()


@pytest.mark.parametrize("command", ["train", "tune", "evaluate", "reproduce"])
def test_cuda_without_cuda_is_one_line(tmp_path, command):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal is for machines without it")
    result = run_main([command, "--device", "cuda", "--tracking-uri",
                       f"sqlite:///{tmp_path / 'mlflow.db'}"], tmp_path)
    assert result.code == 2, result
    line = error_line_of(result)
    assert "--device" in line and "CUDA is not available" in line
    assert not (tmp_path / "mlflow.db").exists()


def error_line_of(result) -> str:
    lines = [line for line in result.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.err, result.err
    return lines[0]



# --- the pruning decision ------------------------------------------------------------------

def test_pruning_from_a_round_snapshot_equals_optunas_should_prune():
    """lgals decides pruning from the complete trials read once a round; for every running
    trial that is exactly what ``trial.should_prune()`` says, reading the storage each time."""
    import numpy as np

    from lgals.tuning import _CompletedTrials, _should_prune

    rng = np.random.default_rng(0)
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.MedianPruner(
        n_startup_trials=5, n_warmup_steps=3))
    for _ in range(8):
        curve = np.cumsum(rng.uniform(0, 0.1, 10))
        study.add_trial(optuna.trial.create_trial(
            value=float(curve[-1]), intermediate_values=dict(enumerate(curve.tolist(), 1))))
    snapshot = _CompletedTrials(study)
    decisions = []
    for _ in range(20):
        trial = study.ask()
        values = {}
        for step, value in enumerate(np.cumsum(rng.uniform(0, 0.1, 10)).tolist(), 1):
            trial.report(value, step)
            values[step] = value
            expected = trial.should_prune()
            assert _should_prune(study.pruner, snapshot, values) == expected, (step, values)
            decisions.append(expected)
        study.tell(trial, state=TrialState.FAIL)  # keep the complete trials as they were
    assert any(decisions) and not all(decisions)  # both answers were checked
