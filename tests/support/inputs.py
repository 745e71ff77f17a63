"""The table of bad inputs (``ROWS``) and the files its rows name (:func:`user_files`).

Imported by ``tests/unit/test_inputs.py`` (every row, in this process) and
``tests/system/test_inputs.py`` (some, through the console script).
"""

from __future__ import annotations

from lgals.documents import MAX_DOCUMENT_BYTES

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
    ("storage-mysql", ["tune"], {"LGALS_STORAGE": "mysql://me:s3cret-pw@db/optuna"}, 2,
     f"lgals: error: LGALS_STORAGE 'mysql://me:***@db/optuna': {STUDIES}, not mysql"),
    ("storage-ftp", ["tune", "--storage", "ftp://host/x"], {}, 2,
     f"lgals: error: --storage 'ftp://host/x': {STUDIES}, not ftp"),
    ("storage-no-driver", ["reproduce"],
     {"LGALS_STORAGE": "postgresql+asyncpg://me:s3cret-pw@db/optuna"}, 1,
     "lgals: error: LGALS_STORAGE 'postgresql+asyncpg://me:***@db/optuna': its driver 'asyncpg' "
     "cannot be loaded here (No module named 'asyncpg'): install it, or name the default "
     "driver (postgresql://...)"),
    ("storage-in-memory", ["tune", "--storage", "sqlite://"], {}, 2,
     "lgals: error: --storage 'sqlite://': an in-memory database: the studies would be lost "
     "when the command ends; give a file, sqlite:///PATH"),
    ("storage-driver-not-installed", ["tune", "--storage", "postgresql+pg8000://db/optuna"], {}, 1,
     "lgals: error: --storage 'postgresql+pg8000://db/optuna': its driver 'pg8000' cannot be "
     "loaded here (No module named 'pg8000'): install it, or name the default driver "
     "(postgresql://...)"),
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
    ("system-metrics-interval", ["train", "--system-metrics"],
     {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "often"}, 2,
     "lgals: error: MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL='often': must be a number of "
     "seconds >= 0.1"),
]
