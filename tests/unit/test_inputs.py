"""Every input a user controls, refused in one line before anything starts.

Each row: a command line (and the environment it runs in), the exit code (2 for a bad value,
1 for the environment, such as a driver not installed or a directory that is not there) and
the exact line on stderr. In this process, through ``lgals.cli.main``; nothing may be created
in the working directory (no store, experiment, study or report). The same through the
console script, and what needs a process of its own (a killed writer, an unreadable file,
artifacts gone from the store): ``tests/system/test_inputs.py``.
"""

from __future__ import annotations

import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import MLFLOW_ENV, run_main, sqlite_uri

from lgals.documents import MAX_DOCUMENT_BYTES, read_document
from lgals.errors import BadSetting

LONG = "x" * 257  # one more than MLflow's experiments.name column takes
SHOWN = repr(LONG[:40]) + "..."
STORE_URIS = "(sqlite:///PATH, http(s)://HOST:PORT, or postgresql://, mysql://, mssql://, file:)"
STUDIES = "lgals keeps studies in SQLite (sqlite:///PATH) or PostgreSQL (postgresql://USER@HOST/DATABASE)"
PARAMS_HINT = "give `tune`, `defaults` or a JSON/YAML file"


def user_files(directory) -> None:
    """The files the rows name, each bad in its own way."""
    (directory / "latin1.json").write_bytes(b'\xff\xfe{"baseline": {}}')
    (directory / "dir.json").mkdir()
    (directory / "big.json").write_bytes(b" " * MAX_DOCUMENT_BYTES + b"{}")
    (directory / "bad.yaml").write_text("baseline: {lr: [\n")
    (directory / "comma.json").write_text('{"baseline": {"lr": 1,}}')
    (directory / "deep.json").write_text("[" * 100_000)
    (directory / "claim.yaml").write_bytes(b"name: caf\xe9\n")
    (directory / "afile").write_text("")


# (id, argv, environment, exit code, the line; {tmp}: the working directory)
ROWS = [
    # --params-from and --claim: a file of the user's
    ("params-not-utf8", ["evaluate", "--params-from", "latin1.json"], {}, 2,
     "lgals: error: --params-from latin1.json: not UTF-8 text (byte 0: b'\\xff'); save it as "
     "UTF-8"),
    ("params-directory", ["evaluate", "--params-from", "dir.json"], {}, 2,
     f"lgals: error: --params-from dir.json: cannot read it (Is a directory); {PARAMS_HINT}"),
    ("params-missing", ["evaluate", "--params-from", "missing.json"], {}, 2,
     "lgals: error: --params-from missing.json: cannot read it (No such file or directory); "
     f"{PARAMS_HINT}"),
    ("params-too-large", ["evaluate", "--params-from", "big.json"], {}, 2,
     "lgals: error: --params-from big.json: larger than 1 MiB, the most lgals reads of a JSON "
     "file: is it the right file?"),
    ("params-device", ["evaluate", "--params-from", "/dev/zero"], {}, 2,
     "lgals: error: --params-from /dev/zero: larger than 1 MiB, the most lgals reads of a JSON "
     "file: is it the right file?"),
    ("params-bad-yaml", ["evaluate", "--params-from", "bad.yaml"], {}, 2,
     "lgals: error: --params-from bad.yaml: not valid YAML (expected the node content, but "
     "found '<stream end>' at line 2)"),
    ("params-bad-json", ["evaluate", "--params-from", "comma.json"], {}, 2,
     "lgals: error: --params-from comma.json: not valid JSON (Expecting property name enclosed "
     "in double quotes at line 1, column 23)"),
    ("params-too-deep", ["evaluate", "--params-from", "deep.json"], {}, 2,
     "lgals: error: --params-from deep.json: nested too deeply to read as JSON"),
    ("claim-not-utf8", ["reproduce", "--claim", "claim.yaml"], {}, 2,
     "lgals: error: claim file claim.yaml: not UTF-8 text (byte 9: b'\\xe9'); save it as UTF-8"),
    # experiment names MLflow cannot store, and where they came from
    ("experiment-empty", ["train", "--experiment-name", ""], {}, 2,
     "lgals train: error: Invalid value for '--experiment-name': '': it is empty"),
    ("experiment-too-long", ["train", "--experiment-name", LONG], {}, 2,
     f"lgals train: error: Invalid value for '--experiment-name': {SHOWN}: 257 characters, "
     "MLflow stores at most 256"),
    *((f"experiment-env-{command}", [command], {"MLFLOW_EXPERIMENT_NAME": LONG}, 2,
       f"lgals {command}: error: Invalid value for MLFLOW_EXPERIMENT_NAME: {SHOWN}: 257 "
       "characters, MLflow stores at most 256")
      for command in ("train", "tune", "evaluate", "report", "reproduce", "sweep", "diagnose")),
    ("tune-experiment-empty", ["evaluate", "--tune-experiment", ""], {}, 2,
     "lgals evaluate: error: Invalid value for '--tune-experiment': '': it is empty"),
    ("study-name-too-long", ["tune", "--study-name", "s" * 401], {}, 2,
     f"lgals tune: error: Invalid value for '--study-name': {'s' * 40!r}...: 401 characters, "
     "at most 400"),
    # --storage: its password masked
    ("storage-not-a-url", ["tune", "--storage", "not a url"], {}, 2,
     "lgals: error: --storage 'not a url': not a database URL (sqlite:///PATH, or "
     "postgresql://USER@HOST/DATABASE)"),
    ("storage-mysql", ["tune", "--storage", "mysql://me:s3cret-pw@db/optuna"], {}, 2,
     f"lgals: error: --storage 'mysql://me:***@db/optuna': {STUDIES}, not mysql"),
    ("storage-ftp", ["tune", "--storage", "ftp://host/x"], {}, 2,
     f"lgals: error: --storage 'ftp://host/x': {STUDIES}, not ftp"),
    ("storage-no-driver", ["reproduce", "--storage",
                           "postgresql+asyncpg://me:s3cret-pw@db/optuna"], {}, 1,
     "lgals: error: --storage 'postgresql+asyncpg://me:***@db/optuna': its driver 'asyncpg' "
     "cannot be loaded here (No module named 'asyncpg'): install it, or name the default "
     "driver (postgresql://...)"),
    ("storage-in-memory", ["tune", "--storage", "sqlite://"], {}, 2,
     "lgals: error: --storage 'sqlite://': an in-memory database: the studies would be lost "
     "when the command ends; give a file, sqlite:///PATH"),
    ("storage-no-directory", ["sweep", "--storage", "sqlite:///nodir/optuna.db"], {}, 1,
     "lgals: error: --storage 'sqlite:///nodir/optuna.db': cannot create the Optuna storage "
     "nodir/optuna.db: there is no directory nodir (give --storage a place that exists)"),
    # the tracking URI, named where it came from
    ("tracking-uri-option", ["train", "--tracking-uri", "ftp://host/x"], {}, 2,
     f"lgals: error: --tracking-uri 'ftp://host/x': not a tracking store URI {STORE_URIS}"),
    ("tracking-uri-env", ["train"], {"MLFLOW_TRACKING_URI": "ftp://host/x"}, 2,
     f"lgals: error: MLFLOW_TRACKING_URI 'ftp://host/x': not a tracking store URI {STORE_URIS}"),
    ("tracking-uri-env-no-directory", ["train"],
     {"MLFLOW_TRACKING_URI": "sqlite:///nodir/mlflow.db"}, 1,
     "lgals: error: cannot create the MLflow store nodir/mlflow.db: there is no directory "
     "nodir (give MLFLOW_TRACKING_URI a place that exists)"),
    ("tracking-uri-env-nothing-to-read", ["report"],
     {"MLFLOW_TRACKING_URI": "sqlite:///{tmp}/mlflow.db"}, 2,
     "lgals: error: no MLflow store at {tmp}/mlflow.db, so nothing to read: point "
     "MLFLOW_TRACKING_URI at the store that holds the runs"),
    # sizes and seeds: each option's range
    ("n-trials", ["tune", "--n-trials", "1001"], {}, 2,
     "lgals tune: error: Invalid value for '--n-trials': 1001 is not in the range "
     "1<=x<=1000."),
    ("epochs", ["train", "--epochs", "10001"], {}, 2,
     "lgals train: error: Invalid value for '--epochs': 10001 is not in the range "
     "1<=x<=10000."),
    ("seeds", ["evaluate", "--seeds", "101"], {}, 2,
     "lgals evaluate: error: Invalid value for '--seeds': 101 is not in the range 1<=x<=100."),
    ("repeats", ["reproduce", "--repeats", "101"], {}, 2,
     "lgals reproduce: error: Invalid value for '--repeats': 101 is not in the range "
     "1<=x<=100."),
    ("workers", ["tune", "--workers", "65"], {}, 2,
     "lgals tune: error: Invalid value for '--workers': 65 is not in the range 1<=x<=64."),
    ("batch", ["tune", "--batch", "101"], {}, 2,
     "lgals tune: error: Invalid value for '--batch': 101 is not in the range 1<=x<=100."),
    ("noise-seed", ["train", "--noise-seed", "-1"], {}, 2,
     "lgals train: error: Invalid value for '--noise-seed': -1 is not in the range "
     "0<=x<=4294967295."),
    ("sampler-seed", ["tune", "--sampler-seed", "-1"], {}, 2,
     "lgals tune: error: Invalid value for '--sampler-seed': -1 is not in the range "
     "0<=x<=4294967295."),
    ("first-seed", ["train", "--first-seed", str(2**32)], {}, 2,
     "lgals train: error: Invalid value for '--first-seed': 4294967296 is not in the range "
     "0<=x<=4294967295."),
    # where a report goes, and the LGALS_* settings
    ("out-under-a-file", ["reproduce", "--out", "afile/report"], {}, 2,
     "lgals reproduce: error: Invalid value for '--out': 'afile/report': {tmp}/afile is a "
     "file, not a directory"),
    ("storage-wait", ["train"], {"LGALS_STORAGE_WAIT_SECONDS": "soon"}, 2,
     "lgals: error: LGALS_STORAGE_WAIT_SECONDS='soon': must be a number of seconds >= 1"),
]


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
        f"lgals: error: MLFLOW_RUN_ID='0123abcd': no such run in {uri} (`mlflow run` sets it "
        "for its entry point: unset it to run lgals on its own)"]
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
