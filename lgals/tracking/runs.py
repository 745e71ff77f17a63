"""MLflow runs: naming and scoping them, opening them, keeping them alive, ending them.

Seeds trained together are open runs at the same time, so runs are created and ended with
``MlflowClient`` (the fluent API keeps one active run per thread). Every open run beats (its
heartbeat tag, :data:`lgals.schema.HEARTBEAT`) from a daemon thread; a run whose process died
stops beating, and :func:`end_dead_runs`, which commands call on the experiment they open,
ends it FAILED.
:func:`end_runs` is the one place a run ends, and FAILED or KILLED with the reason.

MLflow is imported inside the functions that use it (see :mod:`lgals.tracking.store`).
"""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from importlib.metadata import version
from pathlib import Path
from types import MappingProxyType

from lgals.interrupts import shielded
from lgals.losses import MODES
from lgals.schema import (
    HEARTBEAT,
    MODE,
    NOTE,
    PARENT,
    PLUGIN,
    PLUGIN_MODULE,
    PLUGIN_SHA256,
    PLUGIN_VERSION,
    STAGE,
    STATUS_REASON,
    Stage,
    runs_filter,
)
from lgals.settings import heartbeat_seconds, stale_seconds
from lgals.tracking.store import impatient, mlflow_client, storing
from lgals.tracking.writer import local_artifact_dir


def mode_tags(mode: str) -> dict[str, str]:
    """A run's mode tag and, for a mode from a user's package, the code it comes from: the
    distribution, its version, the module and that file's SHA-256 (lgals' own modes are
    lgals' code, which :func:`source_info` names)."""
    origin = MODES.origins.get(mode)
    if origin is None or origin.builtin:
        return {MODE: mode}
    return {MODE: mode, PLUGIN: origin.distribution, PLUGIN_VERSION: origin.version,
            PLUGIN_MODULE: origin.module, PLUGIN_SHA256: origin.file_sha256}


@functools.cache
def _checkout_tags() -> dict[str, str]:
    """MLflow's git tags (commit, branch, repository URL) of the checkout lgals runs from,
    where it runs from one: the code that ran is lgals', wherever the command was launched."""
    from mlflow.utils.git_utils import get_git_branch, get_git_commit, get_git_repo_url
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_BRANCH, MLFLOW_GIT_COMMIT, MLFLOW_GIT_REPO_URL

    package = str(Path(__file__).parents[1])
    found = {MLFLOW_GIT_COMMIT: get_git_commit(package),
             MLFLOW_GIT_BRANCH: get_git_branch(package),
             MLFLOW_GIT_REPO_URL: get_git_repo_url(package)}
    return {key: value for key, value in found.items() if value}


@functools.cache
def context_tags() -> dict[str, str]:
    """The tags MLflow's fluent API gives a run from its context, for the runs lgals creates
    with ``MlflowClient``: ``mlflow.user`` (the tracking username, else the OS user; the run's
    ``user_id`` follows it), ``mlflow.source.name`` (the command's script) and ``.type``, any
    installed context provider's, and the git tags of lgals' checkout (not of the script's
    directory, as MLflow's git provider would take).

    Cached: they cannot change within a process, and every seed and trial run asks for them.
    """
    from mlflow.tracking.context.git_context import GitRunContext
    from mlflow.tracking.context.registry import resolve_tags

    return {**resolve_tags(ignore=[GitRunContext]), **_checkout_tags()}


@functools.cache
def source_info() -> dict[str, str]:
    """Package version and, from a git checkout, the commit: logged with every run.

    Cached: it cannot change within a process, and every seed and trial run asks for it.
    """
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_COMMIT

    info = {"lgals_version": version("lgals")}
    commit = _checkout_tags().get(MLFLOW_GIT_COMMIT)
    return {**info, "git_commit": commit} if commit else info


_SCOPE: ContextVar[Mapping[str, str]] = ContextVar("lgals_scope",
                                                   default=MappingProxyType({}))


_LABEL: ContextVar[str] = ContextVar("lgals_label", default="")


@contextmanager
def scope(tags: dict, label: str = "") -> Iterator[None]:
    """Tags that every run opened inside the block carries besides its own: a repetition's
    number (:data:`lgals.schema.REPEAT`), a sweep's noise setting (``NOISE``); and a
    ``label`` its runs' names carry (a repeated study's ``r<R>``, see :func:`run_name`)."""
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


def run_name(base: str, last: str = "") -> str:
    """A run's name: ``base``, the scope's label, ``last``; e.g. ``lgals-r2-seed3``,
    ``tune-lgals-r2``."""
    return "-".join(part for part in (base, _LABEL.get(), last) if part)


def open_run(experiment_id: str, name: str, tags: dict, params: dict,
             parent_run_id: str | None = None, adopt_project_run: bool = False) -> str:
    """Create a run, or adopt the one ``mlflow run`` made (``MLFLOW_RUN_ID``); return its id.

    A created run carries MLflow's context tags (:func:`context_tags`); an adopted one keeps
    those ``mlflow run`` gave it. Params that ``mlflow run`` already logged are left as they
    are: MLflow refuses to log a param twice with a different string (``1e-3`` vs ``0.001``).
    A run without a parent is the command's top run: it gets the system metrics
    (:func:`logging_system_metrics`) when they are asked for.
    """
    from mlflow.entities import Param, RunTag

    client = mlflow_client()
    tags = {**_SCOPE.get(), **{key: str(value) for key, value in tags.items()}}
    if parent_run_id:
        tags[PARENT] = parent_run_id
    # beating from birth: a process killed right after creating the run leaves it stale
    tags[HEARTBEAT] = str(int(time.time()))
    run_id = os.environ.pop("MLFLOW_RUN_ID", None) if adopt_project_run else None
    opened: list[str] = []  # ended KILLED if an interrupt came: the caller never gets its id
    with shielded(on_interrupt=lambda: end_runs(opened, "KILLED")):
        if run_id is None:
            run_id = client.create_run(experiment_id, tags={**context_tags(), **tags},
                                       run_name=name).info.run_id
            logged, new_tags = {}, []
        else:
            logged = client.get_run(run_id).data.params
            new_tags = [RunTag(k, v) for k, v in tags.items()]
        opened.append(run_id)
        new_params = [Param(k, str(v)) for k, v in params.items() if k not in logged]
        client.log_batch(run_id, params=new_params, tags=new_tags)
        HEARTBEATS.add(run_id)
    if parent_run_id is None and _SYSTEM_METRICS.get():
        _monitor(run_id)
    return run_id


_SYSTEM_METRICS: ContextVar[bool] = ContextVar("lgals_system_metrics", default=False)
_MONITORS: dict = {}  # run id -> its SystemMetricsMonitor, until the run ends


@contextmanager
def logging_system_metrics(enabled: bool = True) -> Iterator[None]:
    """MLflow's system metrics (``system/cpu_utilization_percentage``, memory, disk, network;
    GPU where pynvml is installed) on every run without a parent opened inside the block,
    sampled by MLflow's monitor (every 10 s, ``MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL``)
    until :func:`end_runs` ends the run. Needs psutil (``lgals[system-metrics]``)."""
    token = _SYSTEM_METRICS.set(enabled)
    try:
        yield
    finally:
        _SYSTEM_METRICS.reset(token)


def _monitor(run_id: str) -> None:
    """Start MLflow's system metrics monitor on ``run_id`` (it needs no active fluent run)."""
    import mlflow
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, tracking_uri=mlflow.get_tracking_uri())
    monitor.start()
    _MONITORS[run_id] = monitor


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
        with suppress(Exception), impatient():
            end_runs(run_ids, status)
        raise
    with storing(f"ending {len(run_ids)} run(s)"):
        end_runs(run_ids, "FINISHED")


@contextmanager
def in_run(experiment_id: str, name: str, tags: dict, params: dict,
           parent_run_id: str | None = None) -> Iterator[str]:
    """One run for the block (adopting ``mlflow run``'s when at the top), ended FINISHED,
    FAILED or KILLED as the block ends; yields its id."""
    run_id = open_run(experiment_id, name, tags, params, parent_run_id=parent_run_id,
                      adopt_project_run=parent_run_id is None)
    with ending([run_id]):
        yield run_id


@contextmanager
def group_run(experiment_id: str, stage: Stage, modes: Sequence[str], params: dict,
              parent_run_id: str | None = None) -> Iterator[str | None]:
    """One umbrella run over several modes' runs (adopting ``mlflow run``'s), else nothing:
    a single mode's run is then the top run itself."""
    if len(modes) < 2:
        yield parent_run_id
        return
    tags = {MODE: "all", STAGE: stage,
            NOTE: f"The {stage} of {len(modes)} modes ({', '.join(modes)}): one run per mode "
                  "below, each holding its own runs."}
    with in_run(experiment_id, run_name(f"{stage}-all"), tags, {**params, **source_info()},
                parent_run_id) as run_id:
        yield run_id


def set_tags(run_id: str, tags: dict) -> None:
    from mlflow.entities import RunTag

    with shielded():
        mlflow_client().log_batch(run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def end_runs(run_ids: Sequence[str], status: str, reason: str = "") -> None:
    """End ``run_ids`` with ``status`` (FINISHED, FAILED or KILLED), and a failed run's
    ``reason`` as its :data:`lgals.schema.STATUS_REASON`: the one place lgals ends a run.

    Another process may have ended a run already, taking its owner for dead (no heartbeat:
    it was paused, or cut off; :func:`end_dead_runs`, a stale trial's retry): the owner,
    alive after all, ends it again, and the reason that process left goes with that status
    unless ``reason`` replaces it."""
    client = mlflow_client()
    for run_id in run_ids:
        HEARTBEATS.discard(run_id)
        monitor = _MONITORS.pop(run_id, None)
        if monitor is not None:  # its last samples land while the run is still RUNNING
            monitor.finish()
    for run_id in run_ids:
        with shielded():
            if reason:
                client.set_tag(run_id, STATUS_REASON, reason)
            else:
                run = client.get_run(run_id)
                if run.info.status != "RUNNING" and STATUS_REASON in run.data.tags:
                    client.delete_tag(run_id, STATUS_REASON)
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
                    clients.setdefault(uri, MlflowClient(uri)).set_tag(run_id, HEARTBEAT,
                                                                       now)
                except MlflowException:  # a store hiccup: the next beat comes in seconds
                    pass


HEARTBEATS = Heartbeats()


def end_dead_runs(experiment_id: str) -> list[str]:
    """End FAILED, with the reason, every RUNNING run of the experiment whose heartbeat is
    stale, and fail the models they left unfinished; return the runs' ids."""
    client = mlflow_client()
    stale_before = time.time() - stale_seconds()
    running = client.search_runs([experiment_id], runs_filter(status="RUNNING"),
                                 max_results=10000)
    dead = [run for run in running if HEARTBEAT in run.data.tags
            and float(run.data.tags[HEARTBEAT]) < stale_before]
    for run in dead:
        last = time.strftime("%Y-%m-%d %H:%M:%S",
                             time.localtime(float(run.data.tags[HEARTBEAT])))
        end_runs([run.info.run_id], "FAILED",
                 f"its process stopped: no heartbeat since {last} (killed, or its host went down)")
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
