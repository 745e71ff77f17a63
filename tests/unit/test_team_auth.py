"""A team's tracking server as it really is: killed and restarted under a running command,
behind basic auth; and no password anywhere lgals prints or records.

Real processes, no mocks: ``mlflow server`` (``--app-name basic-auth`` where it says so),
PostgreSQL (Optuna's storage), ``lgals`` commands as hosts of their own
(:class:`support.pg_fixtures.Host`); each stopped by its PID (process group): in
``tests/system/test_team_auth.py``. Here: the unit tests of the redaction and of how tracking
errors become one line.
"""

from __future__ import annotations

import os

import pytest
from mlflow import MlflowClient
from support.errors import stderr_lines
from support.mlflow_fixtures import isolated_mlflow, run_main, sqlite_uri

from lgals.cli import password_warning
from lgals.errors import BadSetting, NotAuthorised, TrackingUnavailable, redact, redact_url
from lgals.settings import server_wait_seconds
from lgals.tracking.store import (
    credentials_out_of,
    http_retries,
    unreachable,
    user_error,
)

# --- fast: the redaction, and tracking errors as one line ---------------------------------


@pytest.mark.parametrize(("url", "redacted"), [
    ("postgresql://lgals:secret@127.0.0.1:5432/optuna",
     "postgresql://lgals:***@127.0.0.1:5432/optuna"),
    ("postgresql+psycopg://lgals:secret@db.example:5432/optuna",
     "postgresql+psycopg://lgals:***@db.example:5432/optuna"),
    # percent-encoded '@' and ':' in the password
    ("postgresql://lgals:p%40ss%3Aw0rd@host/db", "postgresql://lgals:***@host/db"),
    # unencoded '@', '/', '?' in it: masked in full all the same
    ("postgresql://lgals:p@ss@host/db", "postgresql://lgals:***@host/db"),
    ("postgresql://lgals:pa/ss@host/db", "postgresql://lgals:***@host/db"),
    ("postgresql://lgals:p?ss@host/db?application_name=a@b",
     "postgresql://lgals:***@host/db?application_name=a@b"),
    ("mysql://:pw@host/db", "mysql://:***@host/db"),
    ("postgresql://lgals:pw@[::1]:5432/db", "postgresql://lgals:***@[::1]:5432/db"),
    # secrets in the query string
    ("postgresql://host/db?user=lgals&password=s3cret&sslmode=require",
     "postgresql://host/db?user=lgals&password=***&sslmode=require"),
    ("postgresql://host/db?sslpassword=abc;PASSWORD=x#frag",
     "postgresql://host/db?sslpassword=***;PASSWORD=***#frag"),
    # a tracking server with basic auth in its URL
    ("http://alice:pw@127.0.0.1:5000", "http://alice:***@127.0.0.1:5000"),
    ("https://alice:p%3Aw@mlflow.example/path?token=abc&x=1",
     "https://alice:***@mlflow.example/path?token=***&x=1"),
    # nothing to hide: unchanged
    ("postgresql://lgals@host/db", "postgresql://lgals@host/db"),
    ("postgresql://host:5432/db", "postgresql://host:5432/db"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:///mlflow.db", "sqlite:///mlflow.db"),
    ("sqlite:////tmp/a:b@c/mlflow.db", "sqlite:////tmp/a:b@c/mlflow.db"),  # a path
    ("file:///tmp/mlruns", "file:///tmp/mlruns"),
    ("optuna.db", "optuna.db"),
])
def test_redact_url_masks_the_password_of_every_url_shape(url, redacted):
    assert redact_url(url) == redacted
    assert redact_url(redacted) == redacted  # idempotent


def test_redact_masks_urls_in_text_and_the_mlflow_password(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "Zx81-distinctive")
    text = ("API request to http://bob:hunter22@h:5000/api failed; storage "
            "postgresql://u:topsecret@db/optuna, and Zx81-distinctive in the clear")
    assert redact(text) == ("API request to http://bob:***@h:5000/api failed; storage "
                            "postgresql://u:***@db/optuna, and *** in the clear")


def test_tracking_errors_become_one_line_naming_the_server(monkeypatch):
    """What the CLI says for MLflow's errors: refused credentials (401), a refused request
    (403), a server gone for longer than lgals waits; nothing for any other error."""
    import mlflow
    import requests
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import PERMISSION_DENIED, UNAUTHENTICATED


    with isolated_mlflow():
        mlflow.set_tracking_uri("http://127.0.0.1:5999")
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "Pw-never-shown")
        said = user_error(MlflowException("401 != 200", error_code=UNAUTHENTICATED))
        assert isinstance(said, NotAuthorised)
        assert str(said).startswith("not authorised by the MLflow tracking server at "
                                    "http://127.0.0.1:5999")
        assert "'alice'" in str(said) and "MLFLOW_TRACKING_PASSWORD" in str(said)
        assert "Pw-never-shown" not in str(said)
        said = user_error(MlflowException("403", error_code=PERMISSION_DENIED))
        assert isinstance(said, NotAuthorised) and "HTTP 403" in str(said)

        # as MLflow raises it: its own, worded so, after the requests error
        try:
            try:
                raise requests.exceptions.ConnectionError(
                    "HTTPConnectionPool(host='127.0.0.1', port=5999): Max retries exceeded "
                    "(Caused by NewConnectionError(... [Errno 111] Connection refused))")
            except requests.exceptions.ConnectionError as error:
                raise MlflowException(f"API request to http://127.0.0.1:5999/api/2.0/mlflow/"
                                      f"runs/create failed with exception {error}") from error
        except MlflowException as error:
            gone = error
        said = user_error(gone)
        assert isinstance(said, TrackingUnavailable) and not isinstance(said, NotAuthorised)
        assert "stopped answering (connection refused)" in str(said)
        assert "LGALS_SERVER_WAIT_SECONDS" in str(said)
        # the same words after a trip through the writer's pipe (no exception chain left)
        assert unreachable(RuntimeError(f"MLflow writer: error: MlflowException: "
                                        f"{gone}")) == "connection refused"
        assert user_error(ValueError("Connection refused")) is None  # not MLflow's
        assert user_error(MlflowException("bad param")) is None


def test_mlflow_retries_nothing_itself_and_gives_each_attempt_10_s(monkeypatch):
    """lgals retries MLflow's requests within one deadline (tests/unit/test_deadline.py);
    the caller's own settings win."""
    with isolated_mlflow():
        monkeypatch.setenv("LGALS_SERVER_WAIT_SECONDS", "10")
        http_retries()
        assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "0"
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "10"
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = "30"
        http_retries()
        assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "30"


@pytest.mark.parametrize("value", ["-1", "481", "soon", "nan", "inf"])
def test_a_bad_server_wait_is_one_line(monkeypatch, value):

    monkeypatch.setenv("LGALS_SERVER_WAIT_SECONDS", value)
    with pytest.raises(BadSetting, match="LGALS_SERVER_WAIT_SECONDS"):
        server_wait_seconds()


def test_credentials_in_a_tracking_uri_move_to_mlflows_variables():

    with isolated_mlflow():
        uri = "http://alice:p%40ss%3Aword@127.0.0.1:5000"
        os.environ["MLFLOW_TRACKING_URI"] = uri
        assert credentials_out_of(uri) == "http://127.0.0.1:5000"
        assert os.environ["MLFLOW_TRACKING_USERNAME"] == "alice"
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p@ss:word"
        assert os.environ["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5000"
        assert redact("p@ss:word") == "***"
        assert credentials_out_of("http://127.0.0.1:5000") == "http://127.0.0.1:5000"
        assert credentials_out_of("sqlite:///mlflow.db") == "sqlite:///mlflow.db"


# --- passwords on the command line, runs that cannot be read ---------------------------------

PASSWORD = "Kq7-never-printed"


def test_a_password_on_the_command_line_is_warned_of_once(tmp_path):
    """Both URLs carry a password (one as ``--option=value``): one line, before anything else
    (here a bad option), naming where each goes instead and neither password."""
    storage = f"postgresql://lgals:{PASSWORD}@db.example/optuna"
    result = run_main(["tune", "--storage", storage, "--n-trials", "0",
                       f"--tracking-uri=http://alice:{PASSWORD}@127.0.0.1:5999"], tmp_path)
    assert result.code == 2, result
    warning, error = result.err.strip().splitlines()
    assert warning == (
        "lgals: warning: every user of this machine can read a password on the command line "
        "in the process list while the command runs: --storage: leave it out of the URL and "
        "set PGPASSWORD or ~/.pgpass (PostgreSQL's client reads them), or give the whole URL "
        "in LGALS_STORAGE; --tracking-uri: leave it out of the URL and set "
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (MLflow reads them), or give "
        "the whole URL in MLFLOW_TRACKING_URI")
    assert "--n-trials" in error and PASSWORD not in result.err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("argv", "project", "advice"), [
    (["--storage", "postgresql://lgals@db/optuna?password=x"], False,
     "--storage: leave it out of the URL and set PGPASSWORD"),
    (["--storage", "mysql://lgals:x@db/optuna"], False,
     "--storage: give the whole URL in LGALS_STORAGE"),
    (["--storage", "postgresql://lgals:x@db/optuna"], True,  # an MLproject entry point
     "(and mlflow run logged it as a param of its run): -P storage: leave it out"),
])
def test_the_warning_names_where_each_password_goes(monkeypatch, argv, project, advice):
    if project:
        monkeypatch.setenv("MLFLOW_RUN_ID", "0" * 32)
    else:
        monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    assert advice in password_warning(["tune", *argv])
    assert password_warning(["tune", "--storage", "postgresql://lgals@db/optuna",
                             "--tracking-uri", "http://127.0.0.1:5000"]) is None


def test_a_malformed_run_id_is_no_run_of_the_store(tmp_path):
    """Only the store's own answer (no such run, or an id it cannot hold) makes a run
    missing: exit 2, one line; no run is created."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    with isolated_mlflow():
        client = MlflowClient(uri)
        experiment_id = client.create_experiment("one")
        client.create_run(experiment_id)
    result = run_main(["reanalyze", "no'run", "--tracking-uri", uri], tmp_path)
    assert result.code == 2, result
    assert stderr_lines(result.err) == [f"lgals: error: no run \"no'run\" in the store {uri}"]
    assert len(client.search_runs([experiment_id])) == 1
