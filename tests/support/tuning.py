"""Helpers for the tuning tests: ``lgals tune`` in this process on a test directory's two
sqlite stores (MLflow's and Optuna's), and what it left in them.

Imported by ``tests/unit/test_tuning.py``, ``tests/system/test_tuning.py``,
``tests/system/test_batched_tuning.py`` and ``tests/system/test_concurrency.py``; the study
they share, ``lgals_study``, is a fixture in ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
from mlflow import MlflowClient

from support.mlflow_fixtures import (
    LGALS,
    MLFLOW_LOG,
    CliResult,
    all_runs,
    cli_env,
    run_main,
    sqlite_uri,
    stop,
)


def stores(directory: Path) -> tuple[str, str]:
    """The MLflow tracking URI and the Optuna storage URL of a test's directory."""
    return sqlite_uri(directory / "mlflow.db"), sqlite_uri(directory / "optuna.db")


def tune_argv(directory: Path, *args: str) -> list[str]:
    uri, storage = stores(directory)
    return ["tune", *args, "--tracking-uri", uri, "--storage", storage]


def tune_main(directory: Path, *args: str) -> CliResult:
    """``lgals tune ARGS`` in this process, with the directory's two stores."""
    directory.mkdir(parents=True, exist_ok=True)
    return run_main(tune_argv(directory, *args), directory)


def tune_ok(directory: Path, *args: str) -> CliResult:
    result = tune_main(directory, *args)
    assert result.code == 0, result
    return result


def load_study(directory: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=stores(directory)[1])


def study_names(directory: Path) -> list[str]:
    return sorted(s.study_name for s in optuna.get_all_study_summaries(stores(directory)[1]))


def client_of(directory: Path) -> MlflowClient:
    return MlflowClient(stores(directory)[0])


def runs_of(directory: Path) -> list:
    return all_runs(client_of(directory))


def tune_runs(runs: list) -> list:
    """Tune runs (umbrellas included) in start order."""
    return sorted((r for r in runs if r.data.tags.get("lgals.stage") == "tune"),
                  key=lambda r: r.info.start_time)


def children(runs: list, parent_id: str) -> list:
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def trial_signature(study: optuna.Study) -> list[tuple]:
    """What a trial proposed and measured, per trial number."""
    return [(t.number, t.state.name, t.params, t.value, t.intermediate_values)
            for t in sorted(study.trials, key=lambda t: t.number)]


def error_line(result: CliResult) -> str:
    """The one ``lgals: error:`` line of a failed command, and nothing else but MLflow's own
    INFO lines (store creation) and progress bars: no traceback, on stdout or stderr."""
    assert "Traceback" not in result.out + result.err, (
        f"a traceback was printed:\n--- stdout\n{result.out}\n--- stderr\n{result.err}")
    lines = [line for line in result.err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("lgals")]
    assert len(errors) == 1, result.err
    assert errors[0].startswith("lgals: error: "), errors[0]
    assert lines[-1] == errors[0], result.err  # nothing after it
    others = [line for line in lines[:-1] if not MLFLOW_LOG.match(line) and "%|" not in line]
    assert others == [], result.err
    return errors[0]


@contextlib.contextmanager
def tune_group(directory: Path, *args: str, **env: str) -> Iterator[subprocess.Popen]:
    """``lgals tune ARGS`` in a session of its own (its workers and writers in its process
    group); the whole group is killed, by the command's PID, when the block ends."""
    process = subprocess.Popen([LGALS, *tune_argv(directory, *args)], cwd=directory,
                               env=cli_env(**env), text=True, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        yield process
    finally:
        stop(process)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
