"""The MLflow store: which one, opening it, its credentials, and its faults in one line.

A tracking URI is checked before anything is created (a bad scheme, a missing or read-only
directory, a damaged SQLite file, a server that is down are each one line); credentials in a
server's URL move to MLflow's environment variables; a server that restarts or hangs
mid-command is waited for (:func:`lgals.settings.server_wait_seconds`, one deadline across
retries and requests: :mod:`lgals.tracking.deadline`), and one that stays away, refuses the
credentials or fills its disk is one line, not a traceback. A server's permission to write is
asked before a command creates anything (:func:`may_write`), and a run a command is given by
id is read through :func:`read_run`, which tells a refusal from a missing run
(:func:`user_error` says what each error means).

MLflow is imported inside the functions that use it, not at the top: its import takes over a
second, and :func:`connect` starts the writer process first so that the child's import of
MLflow overlaps this process's.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

import requests
from filelock import FileLock

from lgals.errors import (
    BadSetting,
    LgalsError,
    NoSpaceLeft,
    NotAuthorised,
    TrackingUnavailable,
    causes,
    keep_secret,
    out_of_space,
    redact_url,
)
from lgals.settings import server_wait_seconds, stale_seconds, storage_wait_seconds
from lgals.tracking import deadline
from lgals.tracking.ui import EXPERIMENT_TAGS
from lgals.tracking.writer import WRITER

if TYPE_CHECKING:
    from mlflow.entities import Run

# What --tracking-uri may name: MLflow's SQL stores, a tracking server, its file store.
STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file")


def http_retries() -> None:
    """MLflow's HTTP requests in this process and those it starts (the MLflow writer, tuning
    workers): each attempt waits up to 10 s for an answer, and MLflow itself retries none;
    lgals retries them, all within one deadline: :func:`server_wait_seconds` from when the
    server was first found away (:mod:`lgals.tracking.deadline`, installed for this process
    as the store opens). Set before the writer starts, so that it waits as long: the metrics
    it holds reach a server that is back in time, or the command fails saying so. Variables
    the caller set (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``_TIMEOUT``) win."""
    server_wait_seconds()  # a bad $LGALS_SERVER_WAIT_SECONDS is one line before anything
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


@contextmanager
def impatient() -> Iterator[None]:
    """One try per request, 5 s at most, for the block: ending runs after a failure must not
    wait for a server that is gone (the next command ends them instead)."""
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict(zip(names, ("0", "5"))))
    try:
        with deadline.impatient():
            yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def credentials_out_of(uri: str | None) -> str | None:
    """A tracking server URI without the user and password it may carry
    (``http://user:password@host``): they go to MLflow's ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` for this process and those it starts, so that the URI MLflow
    prints (its "View run" links, its errors) and lgals records holds no password."""
    if not uri or not uri.startswith(("http://", "https://")):
        return uri
    try:
        parts = urlsplit(uri)
        user, password = parts.username, parts.password
    except ValueError:  # a port that is no number: open_store says so
        return uri
    if user is None and password is None:
        return uri
    keep_secret(uri)
    os.environ["MLFLOW_TRACKING_USERNAME"] = unquote(user or "")
    os.environ["MLFLOW_TRACKING_PASSWORD"] = unquote(password or "")
    clean = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if os.environ.get("MLFLOW_TRACKING_URI") == uri:
        os.environ["MLFLOW_TRACKING_URI"] = clean
    return clean


def connect(tracking_uri: str | None, experiment_name: str, create: bool = True,
            setting: str = "--experiment-name") -> str:
    """The store (:func:`open_store`) and the experiment's id (described for MLflow's UI when
    new). Inside ``mlflow run`` the project's run decides the experiment. A command that only
    reads (``create=False``) creates neither store nor experiment. A name MLflow refuses (a
    deleted experiment, too long) or, to read, one it does not hold is one line naming
    ``setting``, where the name came from. Ending the runs that lost their process is the
    caller's: :func:`lgals.tracking.runs.end_dead_runs`."""
    stale_seconds()  # a bad $LGALS_STALE_SECONDS is one line before anything is created
    storage_wait_seconds()  # and so is a bad $LGALS_STORAGE_WAIT_SECONDS (tune's storage)
    tracking_uri, given_as = _prepared(tracking_uri)  # before the writer starts: it inherits
    WRITER.start(figures=True)  # its imports overlap this process's
    import mlflow

    logging.getLogger("mlflow.store.db.utils").addFilter(_full_disk_reported_by_lgals)
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE, ErrorCode
    from sqlalchemy.exc import DatabaseError

    project_run = os.environ.get("MLFLOW_RUN_ID")
    uri = _open_prepared(tracking_uri, create and not project_run, given_as)
    try:
        with _store_lock(uri):
            if project_run:
                experiment_id = _project_experiment(project_run)
            elif create:
                experiment_id = mlflow.set_experiment(experiment_name).experiment_id
            else:
                experiment = mlflow.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise BadSetting(f"{setting}: no experiment {experiment_name!r} "
                                     f"in {redact_url(uri)}")
                experiment_id = experiment.experiment_id
    except DatabaseError as error:
        raise TrackingUnavailable(f"cannot use the MLflow store {redact_url(uri)}: "
                                  f"{error.orig or error} (damaged? move the file aside and "
                                  "run again to start a new store)") from None
    except MlflowException as error:
        if error.error_code != ErrorCode.Name(INVALID_PARAMETER_VALUE):
            raise
        raise BadSetting(f"{setting}: {error.message}") from None
    may_write(experiment_id)  # before the caller creates anything (a study, a run, a file)
    WRITER.open(uri)  # only now: it must not create a new store's tables alongside
    if create or project_run:
        describe_experiment(experiment_id)
    return experiment_id


def on_server() -> bool:
    """Whether the store is a tracking server (the only kind that refuses an account)."""
    import mlflow

    return mlflow.get_tracking_uri().startswith(("http://", "https://"))


# A tag lgals never sets: deleting it is a write the server must allow, and writes nothing.
PROBE_TAG = "lgals.no_such_tag"


def may_write(experiment_id: str) -> None:
    """On a tracking server, whether this account may log to the experiment, asked before
    the command creates anything, so that a refusal leaves nothing behind: the server lets
    those who may update an experiment create runs in it and delete its tags, so lgals
    deletes a tag the experiment does not hold (the store answers that there is none). A
    refusal is :func:`user_error`'s line, naming the experiment."""
    if not on_server():
        return
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    try:
        client.delete_experiment_tag(experiment_id, PROBE_TAG)
    except MlflowException as error:
        status = _http_status(error)
        if status is None:  # no such tag: allowed (any other error: the writes will say it)
            return
        name = experiment_id
        if status == 403:
            with suppress(MlflowException):  # one it is denied to may not read the name
                name = repr(client.get_experiment(experiment_id).name)
        raise user_error(error, asked=f"log to experiment {name}") from None


# MLflow's error codes for a run id the store does not hold (or cannot: a malformed one).
NO_SUCH_RUN = ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE")


def read_run(run_id: str) -> Run:
    """Run ``run_id``, as a command given its id reads it: a refusal (HTTP 401, 403) or a
    server gone is :func:`user_error`'s line (exit 1), a run the store does not hold is
    one line naming it (exit 2); only the store's own answer says a run is missing."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client().get_run(run_id)
    except MlflowException as error:
        said = user_error(error, asked=f"read run {run_id!r}", advice=(
            "a server with basic auth answers so for a run it does not hold, too: check the "
            "id, or ask its admin for READ permission on the run's experiment"))
        if said is not None:
            raise said from None
        if error.error_code not in NO_SUCH_RUN:
            raise
        raise BadSetting(f"no run {run_id!r} in the store {_server()}") from None


def _project_experiment(run_id: str) -> str:
    """The experiment of ``mlflow run``'s run (``$MLFLOW_RUN_ID``); one line naming the
    variable if the store holds no such run (the variable left over from elsewhere)."""
    try:
        return read_run(run_id).info.experiment_id
    except BadSetting as error:
        raise BadSetting(f"MLFLOW_RUN_ID={run_id!r}: {error} (`mlflow run` sets it for its "
                         "entry point: unset it to run lgals on its own)") from None


def describe_experiment(experiment_id: str) -> None:
    """The experiment's kind and description, unless it has its own already."""
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    tags = client.get_experiment(experiment_id).tags
    for key, value in EXPERIMENT_TAGS.items():
        if key not in tags:
            try:
                client.set_experiment_tag(experiment_id, key, value)
            except MlflowException:  # hosts connecting at once: another one set it first?
                if key not in client.get_experiment(experiment_id).tags:
                    raise


def _full_disk_reported_by_lgals(record) -> bool:
    """Logging filter: MLflow logs each failed SQL statement with its traceback; a full disk
    is lgals's one line (:func:`storing`) instead."""
    return not (record.exc_info and out_of_space(record.exc_info[1]))


def url_scheme(url: str) -> str:
    """The database or protocol a URL names, its driver aside (``postgresql+psycopg://`` is
    ``postgresql``); "" for a plain path."""
    return url.split(":", 1)[0].split("+")[0] if ":" in url else ""


def open_store(tracking_uri: str | None, create: bool = True) -> str:
    """Point MLflow at the store (default: MLflow's own, ``sqlite:///mlflow.db``) once it is
    known to be usable; return its URI. A bad URI or an unusable place is one line before
    anything is created; with ``create=False`` so is a store that does not exist yet."""
    uri, given_as = _prepared(tracking_uri)
    return _open_prepared(uri, create, given_as)


def _prepared(tracking_uri: str | None) -> tuple[str | None, str]:
    """The tracking URI to use (``$MLFLOW_TRACKING_URI`` when none is given), its credentials
    moved out (:func:`credentials_out_of`), and MLflow's HTTP retries set for this process
    and those it starts (:func:`http_retries`); and where it came from, as an error about it
    names it (``--tracking-uri`` for MLflow's default: that is where to give another)."""
    from_env = not tracking_uri and bool(os.environ.get("MLFLOW_TRACKING_URI"))
    tracking_uri = credentials_out_of(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    http_retries()
    return tracking_uri, "MLFLOW_TRACKING_URI" if from_env else "--tracking-uri"


def _open_prepared(tracking_uri: str | None, create: bool,
                   given_as: str = "--tracking-uri") -> str:
    """:func:`open_store` of a URI :func:`_prepared` returned, from ``given_as``."""
    import mlflow

    deadline.install()

    if tracking_uri:
        keep_secret(tracking_uri)  # a database URL's password
        mlflow.set_tracking_uri(tracking_uri)
    uri = mlflow.get_tracking_uri()
    scheme = url_scheme(uri)
    if scheme not in STORE_SCHEMES:
        raise BadSetting(f"{given_as} {redact_url(uri)!r}: not a tracking store URI "
                         "(sqlite:///PATH, http(s)://HOST:PORT, or postgresql://, mysql://, "
                         "mssql://, file:)")
    if scheme in ("http", "https"):
        _check_server(uri, given_as)
    path = sqlite_path(uri)
    if path:
        if not create and not path.is_file():
            raise BadSetting(f"no MLflow store at {path}, so nothing to read: point "
                             f"{given_as} at the store that holds the runs")
        check_sqlite(path, setting=given_as)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` store; None for any other store."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def check_sqlite(path: Path, what: str = "the MLflow store",
                 setting: str = "--tracking-uri") -> None:
    """Say in one line, before MLflow (or Optuna) retries for minutes, why the SQLite file of
    ``what`` cannot be used: its directory is missing or not writable, or the file is not an
    SQLite database; ``setting`` is where to give another place."""
    directory = path.parent
    if not directory.is_dir():
        raise TrackingUnavailable(f"cannot create {what} {path}: there is no directory "
                                  f"{directory} (give {setting} a place that exists)")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise TrackingUnavailable(f"cannot write {what} {path}: its directory {directory} is "
                                  f"not writable (give {setting} a writable place)")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as database:
            if database.read(16) != b"SQLite format 3\x00":
                raise TrackingUnavailable(f"{path} is not an SQLite database (damaged?): move "
                                          f"it aside (mv {path} {path}.damaged) and run again "
                                          "to start a new one")


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One process at a time opens a SQLite store (and creates it, when new): MLflow creates
    a store's tables and experiments with no guard against another process doing the same.
    The lock is a file beside the database."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with FileLock(f"{path}.lock"):  # an OS lock on every platform, released if we die
        yield


def _check_server(uri: str, given_as: str = "--tracking-uri") -> None:
    """Fail in seconds, not after minutes of MLflow's retries, when a server is down as the
    command starts (once it has started, lgals waits :func:`server_wait_seconds` for it)."""
    error = _health(uri)
    if error is not None:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(
            f"cannot reach the MLflow tracking server at {redact_url(uri)} ({reason}); "
            f"start it, set {given_as}, or pass --no-tracking"
        ) from None


def mlflow_client():
    from mlflow import MlflowClient

    return MlflowClient()


def sync_writer() -> None:
    """:meth:`WRITER.sync`, bounded and in one line when the tracking server is gone.

    The writer gives up on the server :func:`server_wait_seconds` after it found it away
    (:mod:`lgals.tracking.deadline`), so what it holds reaches a server that is back in
    time. While this process waits for the writer it asks the server's ``/health`` every 2 s
    too, on the same deadline: a server found away for longer than the wait (by those
    asks, or by this process's requests before) stops the writer, and the command fails
    saying so, rather than waiting for each write it still holds."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    outcome: list[BaseException | None] = []

    def sync() -> None:
        try:
            WRITER.sync()
        except BaseException as error:  # handed to the waiting thread
            outcome.append(error)
        else:
            outcome.append(None)

    if uri.startswith(("http://", "https://")):
        waiting = threading.Thread(target=sync, name="lgals-sync", daemon=True)
        waiting.start()
        while waiting.join(timeout=2) or waiting.is_alive():
            if not deadline.SERVER.gone():
                asked = time.monotonic()
                error = _health(uri, min(5.0, deadline.SERVER.left()))
                if error is None:
                    deadline.SERVER.back()
                    continue
                deadline.SERVER.away(asked, error)
                if not deadline.SERVER.gone():
                    continue
            with suppress(Exception):
                WRITER.close(timeout=1)
            raise TrackingUnavailable(f"{_server_lost('connection refused or no answer')}"
                                      " while the metrics and files of the runs were being "
                                      "stored: some were not stored (the runs end FAILED)")
    else:
        sync()
    error = outcome[0] if outcome else None
    if error is None:
        return
    reason = unreachable(error) if isinstance(error, RuntimeError) else None
    if reason is None:
        raise error
    raise TrackingUnavailable(
        f"{_server_lost(reason)} while the metrics and files of the runs were being stored: "
        "some were not stored (the runs end FAILED)") from None


def check_server() -> None:
    """Raise :class:`TrackingUnavailable` once the tracking server has stopped answering
    this process for longer than :func:`server_wait_seconds`: called every epoch, so that
    training ends about the wait after the server went away (found by the runs' heartbeats),
    not when it next needs the server."""
    if deadline.SERVER.gone():
        first = requests.exceptions.ConnectionError(deadline.SERVER.first_error)
        raise TrackingUnavailable(_server_gone(unreachable(first) or "no answer"))


def _health(uri: str, timeout: float = 5.0) -> OSError | None:
    """Why the tracking server at ``uri`` does not answer ``/health`` within ``timeout``
    seconds; ``None`` when it does."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=timeout):
            return None
    except (urllib.error.URLError, OSError) as error:
        return error


def unreachable(error: BaseException) -> str | None:
    """Why, if ``error`` (or what led to it) is a request to a tracking server that got no
    answer: connections refused or dropped, nothing in time, only server errors (5xx) until
    MLflow's retries ran out. Errors of any other kind (a database's own, say) are not.
    MLflow's wording decides where the requests exception is gone (after the trip through the
    writer's pipe or a process pool)."""
    for cause in causes(error):
        text = str(cause)
        if not (isinstance(cause, requests.exceptions.RequestException)
                or text.startswith("API request to") or ": API request to" in text):
            continue
        if isinstance(cause, requests.exceptions.RetryError) or re.search(
                r"too many \d+ error responses", text):
            return "it answered only with server errors"
        if "Connection refused" in text:
            return "connection refused"
        if isinstance(cause, requests.exceptions.Timeout) or "timeout exception" in text \
                or "timed out" in text:
            return "no answer in time"
        lost = requests.exceptions.ConnectionError | requests.exceptions.ChunkedEncodingError
        if isinstance(cause, lost) or "failed with exception" in text:
            return "connection lost"
    return None


def _http_status(error: BaseException) -> int | None:
    """The HTTP status of a refused request behind ``error``: 401 or 403; else None."""
    from mlflow.exceptions import MlflowException

    for cause in causes(error):
        status = None
        if isinstance(cause, MlflowException):
            status = cause.get_http_status_code()
        elif isinstance(cause, requests.exceptions.HTTPError) and cause.response is not None:
            status = cause.response.status_code
        if status in (401, 403):
            return status
    return None


def _server() -> str:
    import mlflow

    return redact_url(mlflow.get_tracking_uri())


def _server_lost(reason: str) -> str:
    return (f"the MLflow tracking server at {_server()} stopped answering ({reason}) and was "
            f"not back within {server_wait_seconds():g} s (LGALS_SERVER_WAIT_SECONDS)")


def user_error(error: BaseException, asked: str = "do what lgals asked",
               advice: str = "ask the server's admin for EDIT permission on the experiment"
               ) -> LgalsError | None:
    """The one line to say for an error of the tracking server (None for any other error):
    it refused the credentials or the request (:class:`NotAuthorised`; ``asked``: what the
    request was, ``advice``: what to do about a refused one), or it stopped answering for
    longer than lgals waits (:class:`TrackingUnavailable`; the MLflow writer then gets a few
    seconds to store what it holds, and is stopped). The one owner of what an error of
    MLflow's means to the user."""
    status = _http_status(error)
    if status == 401:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME")
        who = (f"the password of user {user!r}" if user and os.environ.get(
            "MLFLOW_TRACKING_PASSWORD") else "a request without credentials")
        return NotAuthorised(f"not authorised by the MLflow tracking server at {_server()}: it "
                             f"refused {who} (HTTP 401); set MLFLOW_TRACKING_USERNAME and "
                             "MLFLOW_TRACKING_PASSWORD to an account of that server")
    if status == 403:
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "")
        return NotAuthorised(f"not authorised by the MLflow tracking server at {_server()}: "
                             f"user {user!r} may not {asked} (HTTP 403); {advice}, or set "
                             "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to "
                             "another account")
    reason = unreachable(error)
    if reason is None:
        return None
    with suppress(Exception):
        WRITER.close(timeout=5)
    return TrackingUnavailable(_server_gone(reason))


def _server_gone(reason: str) -> str:
    """The one line for a server gone for longer than lgals waits."""
    return (f"{_server_lost(reason)}: the runs it holds left RUNNING end FAILED at the next "
            "lgals command on the experiment once it is back; metrics and files not stored by "
            "then are lost")


@contextmanager
def storing(what: str) -> Iterator[None]:
    """A full disk while storing ``what`` is one line, not MLflow's and SQLAlchemy's
    tracebacks: the runs left open end FAILED at the next command (:func:`end_dead_runs`)."""
    try:
        yield
    except Exception as error:
        if out_of_space(error):
            raise NoSpaceLeft(what) from None
        raise
