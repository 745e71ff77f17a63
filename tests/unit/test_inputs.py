"""Every input a user controls, refused in one line before anything starts.

Each row of the table (``tests/support/inputs.py``): a command line (and the environment it
runs in), the exit code (2 for a bad value, 1 for the environment, such as a driver not
installed or a directory that is not there) and the exact line on stderr. In this process,
through ``lgals.cli.main``; nothing may be created in the working directory (no store,
experiment, study or report). The same through the console script, and what needs a process
of its own (a killed writer, an unreadable file, artifacts gone from the store):
``tests/system/test_inputs.py``.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from support.inputs import ROWS, user_files
from support.mlflow_fixtures import MLFLOW_ENV, run_main, sqlite_uri

from lgals.documents import MAX_DOCUMENT_BYTES, read_document
from lgals.errors import BadSetting


@pytest.mark.parametrize("argv, env, code, line", [row[1:] for row in ROWS],
                         ids=[row[0] for row in ROWS])
def test_a_bad_input_is_one_line_and_creates_nothing(tmp_path, monkeypatch, argv, env, code,
                                                     line):
    user_files(tmp_path)
    before = sorted(tmp_path.iterdir())
    mlflow_env = {name: value.format(tmp=tmp_path) for name, value in env.items()
                  if name in MLFLOW_ENV}
    for name, value in env.items():
        if name not in MLFLOW_ENV:
            monkeypatch.setenv(name, value)
    result = run_main(argv, tmp_path, **mlflow_env)
    assert result.code == code, result
    assert result.err.strip().splitlines() == [line.format(tmp=tmp_path)], result.err
    assert "Traceback" not in result.err and result.out == ""
    assert sorted(tmp_path.iterdir()) == before  # no store, study, experiment or report


def test_mlflow_run_id_naming_no_run_is_one_line_and_creates_nothing(tmp_path):
    """A stale MLFLOW_RUN_ID (``mlflow run`` sets it for its entry point) in a store that
    holds no such run: one line naming the variable; no experiment is created."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    client.create_experiment("other")
    result = run_main(["train", "--tracking-uri", uri], tmp_path, MLFLOW_RUN_ID="0123abcd")
    assert result.code == 2, result
    assert result.err.strip().splitlines() == [
        f"lgals: error: MLFLOW_RUN_ID='0123abcd': no run '0123abcd' in the store {uri} "
        "(`mlflow run` sets it for its entry point: unset it to run lgals on its own)"]
    assert [e.name for e in client.search_experiments()] == ["other", "Default"]
    assert client.search_runs([e.experiment_id for e in client.search_experiments()]) == []


@pytest.mark.parametrize("size, readable", [(MAX_DOCUMENT_BYTES, True),
                                            (MAX_DOCUMENT_BYTES + 1, False)])
def test_a_document_of_up_to_1_mib_is_read(tmp_path, size, readable):
    path = tmp_path / "params.json"
    path.write_bytes(b"{}" + b" " * (size - 2))
    if readable:
        assert read_document(path, "--params-from params.json", "JSON") == {}
        return
    with pytest.raises(BadSetting, match="larger than 1 MiB"):
        read_document(path, "--params-from params.json", "JSON")


def test_the_name_limits_are_those_of_the_stores():
    """lgals's limits on names, written out so that a bad one answers without importing
    MLflow or Optuna, are the columns that PostgreSQL enforces (SQLite enforces none)."""
    from mlflow.store.tracking.dbmodels.models import SqlExperiment
    from mlflow.utils.validation import MAX_EXPERIMENT_NAME_LENGTH
    from optuna.storages._rdb.models import MAX_INDEXED_STRING_LENGTH

    from lgals.cli import MAX_EXPERIMENT_NAME, MAX_STUDY_NAME

    assert MAX_EXPERIMENT_NAME == SqlExperiment.name.type.length <= MAX_EXPERIMENT_NAME_LENGTH
    # the longest suffix lgals adds: -MODE (a built-in's name) and -rN (N < MAX_REPEATS)
    assert MAX_STUDY_NAME + len("-shuffled_lgals-r99") < MAX_INDEXED_STRING_LENGTH


def test_every_seed_option_takes_numpys_range_and_every_size_option_a_cap():
    """No integer option is unbounded: a seed is 0..2**32-1, a size has an upper bound."""
    import click

    from lgals.cli import cli

    def options(group):
        for command in group.commands.values():
            if isinstance(command, click.Group):
                yield from options(command)
            else:
                yield from ((command.name, p) for p in command.params
                            if isinstance(p, click.Option))

    # a batch beyond the training set is the whole set; diagnose's --batches is checked
    # against the training rows
    by_the_data = {"batch_size", "batches"}
    unbounded = [f"{command} {option.opts[0]}" for command, option in options(cli)
                 if isinstance(option.type, click.IntRange) and option.type.max is None
                 and option.name not in by_the_data]
    plain_ints = [f"{command} {option.opts[0]}" for command, option in options(cli)
                  if option.type is click.INT]
    assert (unbounded, plain_ints) == ([], [])
