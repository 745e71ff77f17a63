"""MLflow around the engine: runs, buffered per-epoch metrics, epsilon histograms, models.

The engine knows nothing of MLflow; :class:`EpochLogger` is its callback. Seeds trained
together are open MLflow runs at the same time, so runs are created and ended with
``MlflowClient`` (the fluent API keeps one active run per thread). Metrics are buffered and
handed every few seconds to a writer process (:mod:`lgals.mlflow_writer`): one synchronous
call per epoch would cost more than the epoch itself on a server, and MLflow's own async
logging runs its SQLAlchemy work in a thread that holds this process's GIL. After training
the writer logs the artifact files and draws the figures while this process logs the models.
"""

from __future__ import annotations

import fcntl
import functools
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from importlib.metadata import version
from pathlib import Path
from types import MappingProxyType

import numpy as np

from lgals.data import NoisyDataset
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
from lgals.interrupts import raise_if_interrupted
from lgals.losses import MODES
from lgals.metrics import histogram_counts
from lgals.mlflow_writer import WRITER, local_artifact_dir
from lgals.train import Callback, EpochReport, MemberResult, TrainConfig, train

# What --tracking-uri may name: MLflow's SQL stores, a tracking server, its file store.
STORE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql", "http", "https", "file")
EDGES = {"eps": np.linspace(0.0, 1.0, 51), "alignment": np.linspace(-1.0, 1.0, 51)}
FLUSH_SECONDS = 5.0
HEARTBEAT_TAG = "lgals.heartbeat"
# The evaluate seed runs (one per mode, seed and repetition): what a comparison starts from.
SEED_RUNS = "tags.lgals.stage = 'evaluate' and tags.lgals.seed != ''"
EXPERIMENT_DESCRIPTION = f"""\
lgals: Logit-Gradient Alignment Label Smoothing against no smoothing and fixed smoothing on
mnist1d with flipped training labels.

Runs by stage (tag `lgals.stage`): `trial` (one Optuna trial, named `<mode>-trial<NN>`, under
its `tune-<mode>` run), `tune`, `evaluate` (one run per seed, named `<mode>-seed<N>`, under
`evaluate-<mode>`), `report`, `reproduce`, `sweep`, `diagnose`. Tags `lgals.mode`,
`lgals.seed`, `lgals.repeat` (repetition of a repeated study) and `lgals.noise` (a sweep's
noise setting) filter them.

Switch the UI to "Model training" (top left; or add `?workflowType=machine_learning` to
the experiment's URL) to see the runs.

Compare modes: filter `{SEED_RUNS}`, sort by `final_test_acc` (sorted by creation time, the
table also pulls in their parent runs), open the chart view, group by `lgals.mode`, and
search the charts for `test_acc`, `noise_auroc`, `eps_`, `memorized_frac`.
The statistics are in the latest `report` run's `results.md`."""
# The kind MLflow's experiment page reads from this tag (MLflow 3.17's server/js) when its
# GenAI / model training switch does not decide, which it does by default: see runs_page.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development",
                   "mlflow.note.content": EXPERIMENT_DESCRIPTION}
DEFAULT_STALE_SECONDS = 30.0
DEFAULT_SERVER_WAIT_SECONDS = 120.0
MAX_SERVER_WAIT_SECONDS = 480.0  # what MLflow's retries can span: 10 at most, 120 s apart


def seconds_setting(name: str, default: float, low: float, high: float = math.inf) -> float:
    """The environment variable ``name`` as seconds, ``default`` when unset; a value that is
    not a finite number from ``low`` to ``high`` is one line (exit 2)."""
    text = os.environ.get(name, "")
    try:
        seconds = float(text) if text else default
    except ValueError:
        seconds = math.nan
    if not (low <= seconds <= high and seconds < math.inf):
        span = f">= {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
        raise BadSetting(f"{name}={text!r}: must be a number of seconds {span}")
    return seconds


def stale_seconds() -> float:
    """How long a run may go without a heartbeat before it counts as lost with its process
    (kill -9, power loss, a full disk), on this host or another: ``$LGALS_STALE_SECONDS``,
    default 30. Every run lgals has open beats (its ``lgals.heartbeat`` tag, unix seconds) six
    times as often; the next command on the experiment ends a stale one."""
    return seconds_setting("LGALS_STALE_SECONDS", DEFAULT_STALE_SECONDS, 6)


def heartbeat_seconds() -> float:
    return stale_seconds() / 6


def server_wait_seconds() -> float:
    """How long lgals keeps trying a tracking server that stopped answering mid-command
    (killed, restarting, its network gone) before it gives up with one line and exit 1:
    ``$LGALS_SERVER_WAIT_SECONDS``, default 120, at most 480. See :func:`_http_retries`."""
    return seconds_setting("LGALS_SERVER_WAIT_SECONDS", DEFAULT_SERVER_WAIT_SECONDS, 0,
                           MAX_SERVER_WAIT_SECONDS)


def _retry_span(retries: int) -> float:
    """Seconds MLflow's HTTP client sleeps over ``retries`` retries of one request with
    backoff factor 1 (urllib3: none before the first retry, then 2, 4, 8 ... s, at most 120
    s each; plus up to 1 s of jitter each)."""
    return sum(min(120.0, 2.0 ** (k - 1)) for k in range(2, retries + 1))


def _http_retries() -> None:
    """MLflow's HTTP retries for this process and those it starts (the MLflow writer, tuning
    workers): every request to a tracking server that stops answering is retried for at
    least :func:`server_wait_seconds` (the fewest retries whose backoff spans it: 120 s is
    7 retries, 126 s of backoff), then fails; a request that gets no answer at all gives up
    after 10 s. Set before the writer starts, so that it waits as long: the metrics it holds
    reach a server that is back in time, or the command fails saying so. Variables the
    caller set (``MLFLOW_HTTP_REQUEST_MAX_RETRIES``, ``_BACKOFF_FACTOR``, ``_TIMEOUT``) win."""
    wait = server_wait_seconds()
    retries = next(r for r in range(11) if _retry_span(r) >= wait or r == 10)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", str(retries))
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


@contextmanager
def _impatient() -> Iterator[None]:
    """One try per request, 5 s at most, for the block: ending runs after a failure must not
    wait minutes for a server that is gone (the next command ends them instead)."""
    names = ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict(zip(names, ("0", "5"))))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _credentials_out_of(uri: str | None) -> str | None:
    """A tracking server URI without the user and password it may carry
    (``http://user:password@host``): they go to MLflow's ``MLFLOW_TRACKING_USERNAME`` and
    ``MLFLOW_TRACKING_PASSWORD`` for this process and those it starts, so that the URI MLflow
    prints (its "View run" links, its errors) and lgals records holds no password."""
    from urllib.parse import unquote, urlsplit, urlunsplit

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


def connect(tracking_uri: str | None, experiment_name: str, create: bool = True) -> str:
    """The store (:func:`open_store`) and the experiment's id, after ending the runs on it that
    lost their process. Inside ``mlflow run`` the project's run decides the experiment. A
    command that only reads (``create=False``) creates neither store nor experiment."""
    stale_seconds()  # a bad $LGALS_STALE_SECONDS is one line before anything is created
    tracking_uri = _prepared(tracking_uri)  # before the writer starts: it inherits them
    WRITER.start(figures=True)  # its imports overlap this process's
    import logging

    import mlflow

    logging.getLogger("mlflow.store.db.utils").addFilter(_full_disk_reported_by_lgals)
    from sqlalchemy.exc import DatabaseError

    uri = _open_prepared(tracking_uri, create)
    project_run = os.environ.get("MLFLOW_RUN_ID")
    try:
        with _store_lock(uri):
            if project_run:
                experiment_id = mlflow.MlflowClient().get_run(project_run).info.experiment_id
            elif create:
                experiment_id = mlflow.set_experiment(experiment_name).experiment_id
            else:
                experiment = mlflow.get_experiment_by_name(experiment_name)
                if experiment is None:
                    raise BadSetting(f"--experiment-name: no experiment {experiment_name!r} "
                                     f"in {redact_url(uri)}")
                experiment_id = experiment.experiment_id
    except DatabaseError as error:
        raise TrackingUnavailable(f"cannot use the MLflow store {redact_url(uri)}: "
                                  f"{error.orig or error} (damaged? move the file aside and "
                                  "run again to start a new store)") from None
    WRITER.open(uri)  # only now: it must not create a new store's tables alongside
    if create or project_run:
        describe_experiment(experiment_id)
    end_dead_runs(experiment_id)
    return experiment_id


def runs_page(server: str, experiment_id: str, search: str = "") -> str:
    """The experiment's runs in MLflow's UI; with ``search``, the runs it matches, sorted by
    ``final_test_acc``.

    MLflow 3.17's UI picks its GenAI or model training view from ``workflowType`` (URL, else
    the browser's last choice, else GenAI), not from the experiment's kind: the link says
    which. Sorted by creation time, the default, its table pulls in the parents of the runs
    a search matches; sorted by a metric, it lists just those runs.
    """
    from urllib.parse import urlencode

    query = {"workflowType": "machine_learning"}
    if search:
        query |= {"searchFilter": search, "orderByKey": "metrics.`final_test_acc`",
                  "orderByAsc": "false"}
    return f"{server}/#/experiments/{experiment_id}/runs?{urlencode(query)}"


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
    return _open_prepared(_prepared(tracking_uri), create)


def _prepared(tracking_uri: str | None) -> str | None:
    """The tracking URI to use (``$MLFLOW_TRACKING_URI`` when none is given), its credentials
    moved out (:func:`_credentials_out_of`), and MLflow's HTTP retries set for this process
    and those it starts (:func:`_http_retries`)."""
    tracking_uri = _credentials_out_of(tracking_uri or os.environ.get("MLFLOW_TRACKING_URI"))
    _http_retries()
    return tracking_uri


def _open_prepared(tracking_uri: str | None, create: bool) -> str:
    """:func:`open_store` of a URI :func:`_prepared` returned."""
    import mlflow

    if tracking_uri:
        keep_secret(tracking_uri)  # a database URL's password
        mlflow.set_tracking_uri(tracking_uri)
    uri = mlflow.get_tracking_uri()
    scheme = url_scheme(uri)
    if scheme not in STORE_SCHEMES:
        raise BadSetting(f"--tracking-uri {redact_url(uri)!r}: not a tracking store URI "
                         "(sqlite:///PATH, http(s)://HOST:PORT, or postgresql://, mysql://, "
                         "mssql://, file:)")
    if scheme in ("http", "https"):
        _check_server(uri)
    path = sqlite_path(uri)
    if path:
        if not create and not path.is_file():
            raise BadSetting(f"no MLflow store at {path}, so nothing to read: point "
                             "--tracking-uri at the store that holds the runs")
        _check_sqlite(path)
    return uri


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` store; None for any other store."""
    prefix = "sqlite:///"
    return Path(uri[len(prefix):]) if uri.startswith(prefix) else None


def _check_sqlite(path: Path) -> None:
    """Say in one line, before MLflow retries for minutes, why a SQLite store cannot be used:
    its directory is missing or not writable, or the file is not an SQLite database."""
    directory = path.parent
    if not directory.is_dir():
        raise TrackingUnavailable(f"cannot create the MLflow store {path}: there is no "
                                  f"directory {directory}")
    if not os.access(directory, os.W_OK | os.X_OK):
        raise TrackingUnavailable(f"cannot write the MLflow store {path}: its directory "
                                  f"{directory} is not writable (give --tracking-uri a "
                                  "writable place)")
    if path.is_file() and path.stat().st_size:
        with open(path, "rb") as database:
            if database.read(16) != b"SQLite format 3\x00":
                raise TrackingUnavailable(f"{path} is not an SQLite database (damaged?): move "
                                          f"it aside (mv {path} {path}.damaged) and run again "
                                          "to start a new store")


@contextmanager
def _store_lock(uri: str) -> Iterator[None]:
    """One process at a time opens a SQLite store (and creates it, when new): MLflow creates
    a store's tables and experiments with no guard against another process doing the same.
    The lock is a file beside the database."""
    path = sqlite_path(uri)
    if path is None:
        yield
        return
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _check_server(uri: str) -> None:
    """Fail in seconds, not after minutes of MLflow's retries, when a server is down as the
    command starts (once it has started, lgals waits :func:`server_wait_seconds` for it)."""
    error = _health(uri)
    if error is not None:
        reason = getattr(error, "reason", error)
        raise TrackingUnavailable(
            f"cannot reach the MLflow tracking server at {redact_url(uri)} ({reason}); "
            "start it, set --tracking-uri, or pass --no-tracking"
        ) from None


def mlflow_client():
    from mlflow import MlflowClient

    return MlflowClient()


@functools.cache
def source_info() -> dict[str, str]:
    """Package version and, from a git checkout, the commit: logged with every run.

    Cached: it cannot change within a process, and every seed and trial run asks for it.
    """
    info = {"lgals_version": version("lgals")}
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5, check=True).stdout.strip()
        info["git_commit"] = commit
    except (OSError, subprocess.SubprocessError):
        pass
    return info


NOTE = "mlflow.note.content"  # a run's (or experiment's) description in MLflow's UI
_SCOPE: ContextVar[Mapping[str, str]] = ContextVar("lgals_scope",
                                                   default=MappingProxyType({}))


_LABEL: ContextVar[str] = ContextVar("lgals_label", default="")


@contextmanager
def scope(tags: dict, label: str = "") -> Iterator[None]:
    """Tags that every run opened inside the block carries besides its own: a repetition's
    ``lgals.repeat``, a sweep's ``lgals.noise``; and a ``label`` its runs' names carry (a
    repeated study's ``r<R>``, see :func:`run_name`)."""
    token = _SCOPE.set({**_SCOPE.get(), **{key: str(value) for key, value in tags.items()}})
    label_token = _LABEL.set("-".join(part for part in (_LABEL.get(), label) if part))
    try:
        yield
    finally:
        _LABEL.reset(label_token)
        _SCOPE.reset(token)


def scope_tags() -> tuple[dict[str, str], str]:
    """The tags and label of the enclosing :func:`scope` (a worker process re-enters it)."""
    return dict(_SCOPE.get()), _LABEL.get()


def repeat_of(run) -> int:
    """The repetition a run belongs to (``lgals.repeat``; runs from before repetitions: 0)."""
    return int(run.data.tags.get("lgals.repeat", 0))


def run_name(base: str, last: str = "") -> str:
    """A run's name: ``base``, the scope's label, ``last``; e.g. ``lgals-r2-seed3``,
    ``tune-lgals-r2``."""
    return "-".join(part for part in (base, _LABEL.get(), last) if part)


def open_run(experiment_id: str, name: str, tags: dict, params: dict,
             parent_run_id: str | None = None, adopt_project_run: bool = False) -> str:
    """Create a run, or adopt the one ``mlflow run`` made (``MLFLOW_RUN_ID``); return its id.

    Params that ``mlflow run`` already logged are left as they are: MLflow refuses to log a
    param twice with a different string (``1e-3`` vs ``0.001``).
    """
    from mlflow.entities import Param, RunTag

    client = mlflow_client()
    tags = {**_SCOPE.get(), **{key: str(value) for key, value in tags.items()}}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    # beating from birth: a process killed right after creating the run leaves it stale
    tags[HEARTBEAT_TAG] = str(int(time.time()))
    run_id = os.environ.pop("MLFLOW_RUN_ID", None) if adopt_project_run else None
    if run_id is None:
        run_id = client.create_run(experiment_id, tags=tags, run_name=name).info.run_id
        logged, new_tags = {}, []
    else:
        logged = client.get_run(run_id).data.params
        new_tags = [RunTag(k, v) for k, v in tags.items()]
    new_params = [Param(k, str(v)) for k, v in params.items() if k not in logged]
    client.log_batch(run_id, params=new_params, tags=new_tags)
    HEARTBEATS.add(run_id)
    return run_id


@contextmanager
def ending(run_ids: list[str]) -> Iterator[list[str]]:
    """End every run in ``run_ids`` (which may grow inside): FINISHED, FAILED on an error,
    KILLED on an interrupt (Ctrl-C, or SIGTERM turned into KeyboardInterrupt by the CLI)."""
    try:
        yield run_ids
    except BaseException as error:
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        # Best effort, one try: a store that cannot take the status (full, gone) must not hide
        # the error or keep it waiting; the runs stop beating, and the next command ends them
        # FAILED.
        with suppress(Exception), _impatient():
            _terminate(run_ids, status)
        raise
    with storing(f"ending {len(run_ids)} run(s)"):
        _terminate(run_ids, "FINISHED")


@contextmanager
def run(experiment_id: str, name: str, tags: dict, params: dict,
        parent_run_id: str | None = None) -> Iterator[str]:
    """One run for the block (adopting ``mlflow run``'s when at the top), ended FINISHED,
    FAILED or KILLED as the block ends; yields its id."""
    run_id = open_run(experiment_id, name, tags, params, parent_run_id=parent_run_id,
                      adopt_project_run=parent_run_id is None)
    with ending([run_id]):
        yield run_id


@contextmanager
def group_run(experiment_id: str, stage: str, modes: Sequence[str], params: dict,
              parent_run_id: str | None = None) -> Iterator[str | None]:
    """One umbrella run over several modes' runs (adopting ``mlflow run``'s), else nothing:
    a single mode's run is then the top run itself."""
    if len(modes) < 2:
        yield parent_run_id
        return
    tags = {"lgals.mode": "all", "lgals.stage": stage,
            NOTE: f"The {stage} of {len(modes)} modes ({', '.join(modes)}): one run per mode "
                  "below, each holding its own runs."}
    with run(experiment_id, run_name(f"{stage}-all"), tags, {**params, **source_info()},
             parent_run_id) as run_id:
        yield run_id


def set_tags(run_id: str, tags: dict) -> None:
    from mlflow.entities import RunTag

    mlflow_client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def _terminate(run_ids: list[str], status: str) -> None:
    client = mlflow_client()
    for run_id in run_ids:
        HEARTBEATS.discard(run_id)
    for run_id in run_ids:
        client.set_terminated(run_id, status)


class Heartbeats:
    """The runs this process has open, kept alive by a daemon thread that refreshes their
    heartbeat tag: when the process dies, so does the thread, and the runs go stale."""

    def __init__(self) -> None:
        self._runs: dict[str, str] = {}  # run id -> the store it lives in
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._owner = os.getpid()

    def add(self, run_id: str) -> None:
        import mlflow

        with self._lock:
            self._runs[run_id] = mlflow.get_tracking_uri()
            if self._thread is None or self._owner != os.getpid():  # a fork has no thread
                self._owner = os.getpid()
                self._thread = threading.Thread(target=self._beat, name="lgals-heartbeat",
                                                daemon=True)
                self._thread.start()

    def discard(self, run_id: str) -> None:
        with self._lock:
            self._runs.pop(run_id, None)

    def _beat(self) -> None:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        clients: dict[str, MlflowClient] = {}
        while True:
            time.sleep(heartbeat_seconds())
            with self._lock:
                runs = list(self._runs.items())
            now = str(int(time.time()))
            for run_id, uri in runs:
                try:
                    clients.setdefault(uri, MlflowClient(uri)).set_tag(run_id, HEARTBEAT_TAG,
                                                                       now)
                except MlflowException:  # a store hiccup: the next beat comes in seconds
                    pass


HEARTBEATS = Heartbeats()


def end_dead_runs(experiment_id: str) -> list[str]:
    """End FAILED, with the reason, every RUNNING run of the experiment whose heartbeat is
    stale, and fail the models they left unfinished; return the runs' ids."""
    client = mlflow_client()
    stale_before = time.time() - stale_seconds()
    running = client.search_runs([experiment_id], "attributes.status = 'RUNNING'",
                                 max_results=10000)
    dead = [run for run in running if HEARTBEAT_TAG in run.data.tags
            and float(run.data.tags[HEARTBEAT_TAG]) < stale_before]
    for run in dead:
        last = time.strftime("%Y-%m-%d %H:%M:%S",
                             time.localtime(float(run.data.tags[HEARTBEAT_TAG])))
        client.set_tag(run.info.run_id, "lgals.status_reason",
                       f"its process stopped: no heartbeat since {last} (killed, or its host "
                       "went down)")
        client.set_terminated(run.info.run_id, "FAILED")
    dead_ids = {run.info.run_id for run in dead}
    if dead_ids:
        fail_unfinished_models(experiment_id, dead_ids)
    return sorted(dead_ids)


def fail_unfinished_models(experiment_id: str, run_ids: Collection[str]) -> None:
    """Mark FAILED the models of ``run_ids`` whose logging never finished, and delete what they
    left in a local artifact store: a half-written model must not look loadable."""
    from mlflow.entities import LoggedModelStatus

    client = mlflow_client()
    for model in client.search_logged_models([experiment_id], max_results=10000):
        if model.source_run_id not in run_ids or model.status == LoggedModelStatus.READY:
            continue
        directory = local_artifact_dir(model.artifact_location)  # .../models/<id>/artifacts
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
            with suppress(OSError):  # the model's own directory, now empty
                directory.parent.rmdir()
        if model.status == LoggedModelStatus.PENDING:
            client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)


def sync_writer() -> None:
    """:meth:`WRITER.sync`, bounded and in one line when the tracking server is gone.

    The writer tries each write for :func:`server_wait_seconds` (:func:`_http_retries`), so
    what it holds reaches a server that is back in time. Should one stay down (no answer on
    ``/health``) for longer than that while this process waits for the writer, the writer is
    stopped and the command fails saying so, rather than waiting that long again for each
    write it still holds."""
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
        down_since = None
        while waiting.join(timeout=2) or waiting.is_alive():
            if _health(uri) is None:
                down_since = None
                continue
            down_since = down_since or time.monotonic()
            if time.monotonic() - down_since > server_wait_seconds():
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
    reason = _unreachable(error) if isinstance(error, RuntimeError) else None
    if reason is None:
        raise error
    raise TrackingUnavailable(
        f"{_server_lost(reason)} while the metrics and files of the runs were being stored: "
        "some were not stored (the runs end FAILED)") from None


def _health(uri: str) -> OSError | None:
    """Why the tracking server at ``uri`` does not answer ``/health`` within 5 s; ``None``
    when it does."""
    try:
        with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=5):
            return None
    except (urllib.error.URLError, OSError) as error:
        return error


def _unreachable(error: BaseException) -> str | None:
    """Why, if ``error`` (or what led to it) is a request to a tracking server that got no
    answer: connections refused or dropped, nothing in time, only server errors (5xx) until
    MLflow's retries ran out. Errors of any other kind (a database's own, say) are not.
    MLflow's wording decides where the requests exception is gone (after the trip through the
    writer's pipe or a process pool)."""
    import requests

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
    import requests
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


def user_error(error: BaseException) -> LgalsError | None:
    """The one line to say for an error of the tracking server (None for any other error):
    it refused the credentials or the request (:class:`NotAuthorised`), or it stopped
    answering for longer than lgals waits (:class:`TrackingUnavailable`; the MLflow writer
    then gets a few seconds to store what it holds, and is stopped)."""
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
                             f"user {user!r} may not do what lgals asked (HTTP 403); ask the "
                             "server's admin for EDIT permission on the experiment, or set "
                             "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to "
                             "another account")
    reason = _unreachable(error)
    if reason is None:
        return None
    with suppress(Exception):
        WRITER.close(timeout=5)
    return TrackingUnavailable(f"{_server_lost(reason)}: the runs it holds left RUNNING end "
                               "FAILED at the next lgals command on the experiment once it is "
                               "back; metrics and files not stored by then are lost")


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


class EpochLogger:
    """Engine callback: buffers per-epoch metrics and epsilon/alignment histograms per run."""

    def __init__(self, run_ids: Sequence[str], flush_seconds: float = FLUSH_SECONDS):
        import mlflow

        self.uri = mlflow.get_tracking_uri()
        self.run_ids = list(run_ids)
        self.flush_seconds = flush_seconds
        self.pending: list[list[tuple]] = [[] for _ in self.run_ids]  # (key, value, ms, step)
        self.histograms: list[dict[str, list[np.ndarray]]] = [
            {name: [] for name in EDGES} for _ in self.run_ids]
        self.last_flush = time.monotonic()
        WRITER.start()

    def __call__(self, report: EpochReport) -> None:
        raise_if_interrupted()
        timestamp = int(time.time() * 1000)
        counts = {
            "eps": histogram_counts(report.eps, report.noise_mask, EDGES["eps"]),
            "alignment": histogram_counts(report.alignment, report.noise_mask,
                                          EDGES["alignment"]),
        }
        row_of = {member: row for row, member in enumerate(report.rows)}
        for member in report.members:
            self.pending[member] += [(key, value, timestamp, report.epoch)
                                     for key, value in report.metrics[member].items()]
            for name, per_row in counts.items():
                self.histograms[member][name].append(per_row[row_of[member]])
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered metrics to the writer process: the writes overlap training."""
        for run_id, metrics in zip(self.run_ids, self.pending):
            WRITER.send(self.uri, run_id, metrics)
            metrics.clear()
        self.last_flush = time.monotonic()

    def histogram_arrays(self, member: int) -> dict[str, np.ndarray]:
        return {name: np.stack(per_epoch) if per_epoch else np.zeros((0, 2, len(EDGES[name]) - 1),
                                                                     dtype=np.int64)
                for name, per_epoch in self.histograms[member].items()}


def pip_requirements() -> list[str]:
    """Explicit requirements for logged models (inferring them costs seconds per model)."""
    return [f"torch=={version('torch').split('+')[0]}", f"numpy=={version('numpy')}"]


def log_members(experiment_id: str, run_ids: Sequence[str], run_names: Sequence[str],
                results: Sequence[MemberResult], logger: EpochLogger, data: NoisyDataset,
                log_models: bool = True) -> None:
    """Each finished member's final metric, status, histograms, the data recipe, its figure and
    model (named after its run); returns once all of it is stored.

    The writer process logs the files and draws the figures while this process exports the
    models. Tuning trials (``log_models=False``) skip the model and the heat-map figure: at
    dozens of trials they would cost more than the training; their histograms are logged all
    the same.
    """
    from mlflow.entities import Metric, RunTag

    client = mlflow_client()
    logger.flush()
    with tempfile.TemporaryDirectory() as tmp:
        # Complete files are handed to MLflow; nothing is logged half-written.
        recipe = Path(tmp) / "data_recipe.npz"
        save_recipe(recipe, data)
        for member, (run_id, result) in enumerate(zip(run_ids, results)):
            histograms = logger.histogram_arrays(member)
            path = Path(tmp) / str(member) / "epsilon_distributions.npz"
            path.parent.mkdir()
            np.savez_compressed(path, eps_edges=EDGES["eps"], alignment_edges=EDGES["alignment"],
                                eps_counts=histograms["eps"],
                                alignment_counts=histograms["alignment"],
                                groups=np.array(["clean", "noisy"]))
            WRITER.log_artifacts(logger.uri, run_id, [str(path), str(recipe)])
            if log_models and len(histograms["eps"]):
                WRITER.log_heatmaps(logger.uri, run_id, str(path),
                                    f"{MODES[result.config.mode].label}, seed {result.seed}")
        for run_id, name, result in zip(run_ids, map(model_name, run_names), results):
            # the model first exists empty (PENDING): its run's final metric names it, so
            # the model's page shows the metric; its files follow
            model_id = None
            if log_models:
                with storing(f"logging the model of run {run_id}"):
                    model_id = client.create_logged_model(
                        experiment_id, name, run_id,
                        params={k: str(v) for k, v in result.config.mode_params().items()},
                    ).model_id
            metrics = []
            if result.final_test_acc is not None:
                metrics.append(Metric("final_test_acc", result.final_test_acc,
                                      int(time.time() * 1000), result.config.epochs,
                                      model_id=model_id))
            tags = [RunTag("lgals.status", result.status)]
            if result.reason:
                tags.append(RunTag("lgals.status_reason", result.reason))
            with storing(f"logging the results of run {run_id}"):
                client.log_batch(run_id, metrics=metrics, tags=tags)
            if model_id:
                _log_model(run_id, name, model_id, result, data)
        with storing(f"logging the files of {len(run_ids)} run(s)"):
            sync_writer()


def _log_model(run_id: str, name: str, model_id: str, result: MemberResult,
               data: NoisyDataset) -> None:
    """The member's model into its logged model ``model_id``, or, should logging it fail (a
    full disk, an interrupt), no trace of it but a FAILED logged model."""
    import mlflow.pytorch

    try:
        with storing(f"logging the model of run {run_id}"):
            mlflow.pytorch.log_model(result.model, name=name, run_id=run_id, model_id=model_id,
                                     input_example=data.x_train[:2],
                                     pip_requirements=pip_requirements())
    except BaseException:
        with suppress(Exception):  # a full store cannot be written: the next command will
            fail_unfinished_models(mlflow_client().get_run(run_id).info.experiment_id,
                                   {run_id})
        raise


def model_name(run_name: str) -> str:
    """A logged model's name: its run's, with the characters MLflow refuses in model names
    (``/ : . % " '``; e.g. the ``.`` of a sweep's ``symmetric-0.4``) as ``_``."""
    return re.sub(r"[/:.%\"']", "_", run_name)


def model_uri(run_id: str) -> str | None:
    """``models:/<id>`` of the finished model run ``run_id`` logged, or ``None``.

    Models are named after their run, and MLflow resolves ``runs:/<id>/<name>`` by that name;
    the model's id needs no name (and finds the ``model`` of stores made before the rename).
    """
    from mlflow.entities import LoggedModelStatus

    client = mlflow_client()
    experiment_id = client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment_id],
                                         filter_string=f"source_run_id = '{run_id}'")
    ready = [m for m in models if m.status == LoggedModelStatus.READY]
    return f"models:/{ready[0].model_id}" if ready else None


def log_dataset(run_ids: Sequence[str], data: NoisyDataset) -> None:
    """The noisy training set as each run's input dataset: named after its noise recipe,
    with a digest of its inputs and observed labels, which another noise draw changes."""
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    recipe = data.recipe
    split = f"-val{recipe.val_fraction:g}" if recipe.val_fraction else ""
    source = CodeDatasetSource({"generator": "lgals.data.load_dataset", **recipe.params()})
    dataset = mlflow.data.from_numpy(
        data.x_train, targets=data.y_train, source=source,
        name=f"mnist1d-{recipe.setting}-seed{recipe.noise_seed}{split}")
    inputs = [DatasetInput(dataset._to_mlflow_entity(),
                           [InputTag("mlflow.data.context", "training")])]
    client = mlflow_client()
    with storing("logging the training set"):
        for run_id in run_ids:
            client.log_inputs(run_id, datasets=inputs)


def save_recipe(path: Path, data: NoisyDataset) -> None:
    """What rebuilds this run's data exactly: settings, observed labels, masks, indices."""
    np.savez_compressed(path, **data.recipe.params(), y_train=data.y_train,
                        noise_mask=data.noise_mask, y_val=data.y_val,
                        val_noise_mask=data.val_noise_mask,
                        train_index=data.train_index, val_index=data.val_index)


def run_params(config: TrainConfig, data: NoisyDataset) -> dict:
    return {**config.mode_params(), **data.recipe.params(), **source_info()}


def tracked_train(
    data: NoisyDataset,
    configs: Sequence[TrainConfig],
    seeds: Sequence[int],
    *,
    experiment_id: str,
    stage: str,
    parent_run_id: str | Sequence[str] | None = None,
    member_tags: Sequence[dict] | None = None,
    member_names: Sequence[str] | None = None,
    log_models: bool = True,
    callback: Callback | None = None,
    on_runs_opened: Callable[[list[str]], None] | None = None,
    progress: bool = False,
    device: str = "cpu",
) -> tuple[list[MemberResult], list[str], str | None]:
    """Train ``seeds`` together with one MLflow run per member.

    Members go under ``parent_run_id`` if given (one for all, or one per member); otherwise
    several seeds get a new parent run (adopting ``mlflow run``'s run) and a single seed is
    that run itself. Members are named ``<mode>-seed<N>`` unless ``member_names`` says
    otherwise. Returns the results, the member run ids and the parent run id (``None`` for a
    single adopted run).
    """
    member_tags = member_tags or [{} for _ in seeds]
    member_names = member_names or [run_name(c.mode, f"seed{seed}")
                                    for c, seed in zip(configs, seeds)]
    owned: list[str] = []
    with ending(owned):
        if parent_run_id is None and len(seeds) > 1:
            mode = configs[0].mode
            shared = {**run_params(configs[0], data), "seeds": ",".join(map(str, seeds))}
            parent_run_id = open_run(experiment_id, run_name(f"{stage}-{mode}"),
                                     {"lgals.mode": mode, "lgals.stage": stage,
                                      NOTE: f"{MODES[mode].label}: seeds {shared['seeds']} "
                                            "trained together, one run each below."},
                                     shared, adopt_project_run=True)
            owned.append(parent_run_id)
        parents = ([parent_run_id] * len(seeds) if parent_run_id is None
                   or isinstance(parent_run_id, str) else list(parent_run_id))
        run_ids = []
        for seed, config, extra, parent, name in zip(seeds, configs, member_tags, parents,
                                                     member_names):
            run_id = open_run(experiment_id, name,
                              {"lgals.mode": config.mode, "lgals.stage": stage,
                               "lgals.seed": seed, "lgals.device": device, **extra},
                              {**run_params(config, data), "seed": seed},
                              parent_run_id=parent, adopt_project_run=parent is None)
            owned.append(run_id)
            run_ids.append(run_id)
        log_dataset(run_ids, data)
        if on_runs_opened:
            on_runs_opened(run_ids)
        logger = EpochLogger(run_ids)

        def observe(report: EpochReport):
            logger(report)
            return callback(report) if callback else None

        try:
            results = train(data, list(configs), list(seeds), callback=observe,
                            progress=progress, device=device)
        except BaseException:  # interrupted or failed: the epochs trained are stored first
            logger.flush()
            with suppress(RuntimeError, LgalsError):  # a dead writer: the runs end all the same
                sync_writer()
            raise
        log_members(experiment_id, run_ids, member_names, results, logger, data, log_models)
        for run_id, result in zip(run_ids, results):
            if result.status == "diverged":
                _terminate([run_id], "FAILED")
                owned.remove(run_id)
    return results, run_ids, parent_run_id if isinstance(parent_run_id, str) else None
