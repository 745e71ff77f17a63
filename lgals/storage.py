"""Where Optuna studies live, and how hosts share them.

A study is kept in an RDB storage: a SQLite file locally (beside the MLflow store), a
PostgreSQL database when a team tunes one study from several hosts. This module opens it:
heartbeats, so a dead process's trials are failed and retried; on PostgreSQL, connections
pinged before use and calls retried while the server restarts (up to
``$LGALS_STORAGE_WAIT_SECONDS``, one deadline a call, a server that hangs included:
:class:`_Watchdog`), and the advisory locks that make hosts take turns where Optuna does not,
so they share one study through server restarts (processes sharing a SQLite file take the
same turns under a file lock). A round's trials are
written (their heartbeats, their per-epoch values) from a thread of their own
(:class:`TrialRecorder`).
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import socket
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from filelock import FileLock
from optuna.exceptions import ExperimentalWarning
from optuna.storages._rdb import models  # private: its trial table (see _HeartbeatStorage)
from optuna.trial import TrialState
from sqlalchemy.exc import DBAPIError, OperationalError

from lgals.errors import BadSetting, LgalsError, TrackingUnavailable, causes, redact_url
from lgals.schema import PARENT, TRIAL_STATE
from lgals.settings import heartbeat_seconds, stale_seconds, storage_wait_seconds
from lgals.tracking.runs import end_runs
from lgals.tracking.store import check_sqlite, mlflow_client, sqlite_path, url_scheme


class StorageUnavailable(LgalsError):
    """The Optuna storage cannot be used: its database server did not answer within the wait,
    or its SQLite file cannot be created."""


# What --storage may name: SQLite (one host) or PostgreSQL (hosts sharing a study take turns
# under its advisory locks, which lgals takes on no other database).
STORAGE_SCHEMES = ("sqlite", "postgresql")


def check_storage(url: str, given_as: str = "--storage") -> None:
    """Refuse in one line, before anything is created, a ``--storage`` that cannot hold
    studies: not a database URL, a database other than :data:`STORAGE_SCHEMES`, an asyncio
    driver (Optuna's are plain), an in-memory SQLite (its studies would end with the command)
    (exit 2); a driver that is not installed, a SQLite file that cannot be created or is no
    database (exit 1). The line names ``given_as`` (the option, or the variable it came
    from); the URL's password is never printed."""
    shown = f"{given_as} {redact_url(url)!r}"
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError:
        raise BadSetting(f"{shown}: not a database URL (sqlite:///PATH, or "
                         "postgresql://USER@HOST/DATABASE)") from None
    backend = parsed.get_backend_name()
    if backend not in STORAGE_SCHEMES:
        raise BadSetting(f"{shown}: lgals keeps studies in SQLite (sqlite:///PATH) or PostgreSQL "
                         f"(postgresql://USER@HOST/DATABASE), not {backend}")
    try:
        dialect = parsed.get_dialect()
        dialect.import_dbapi()
    except (ImportError, sqlalchemy.exc.NoSuchModuleError) as error:
        raise LgalsError(f"{shown}: its driver {parsed.get_driver_name()!r} cannot be loaded "
                         f"here ({error}): install it, or name the default driver "
                         f"({backend}://...)") from None
    if dialect.is_async:
        raise BadSetting(f"{shown}: {parsed.get_driver_name()} is an asyncio driver; Optuna "
                         f"needs a plain one ({backend}://... takes the default)")
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            raise BadSetting(f"{shown}: an in-memory database: the studies would be lost when "
                             "the command ends; give a file, sqlite:///PATH")
        try:
            check_sqlite(Path(parsed.database), "the Optuna storage", given_as)
        except TrackingUnavailable as error:
            raise StorageUnavailable(f"{shown}: {error}") from None


def default_storage() -> str:
    """A SQLite file beside the MLflow store (``optuna.db`` next to ``mlflow.db``)."""
    import mlflow

    path = sqlite_path(mlflow.get_tracking_uri())
    return f"sqlite:///{path.parent / 'optuna.db' if path else Path('optuna.db').resolve()}"


@contextlib.contextmanager
def experimental() -> Iterator[None]:
    """Optuna marks the heartbeat API and its matplotlib figures experimental; lgals uses them
    knowingly, so their warnings are silenced where they are called, and only there."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


def trial_grace_seconds() -> int:
    """How long a trial may go without a heartbeat before it counts as its process's, dead:
    half of :func:`lgals.settings.stale_seconds`, so its retry is under way by the time the
    dead process's runs are ended."""
    return round(stale_seconds() / 2)


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so trials of a killed process are failed and retried.

    A SQLite file is switched to write-ahead logging with ``synchronous=NORMAL``: each trial
    writes a value every epoch and a heartbeat, and a commit then no longer waits for a
    full sync of the file (safe for processes on one host; a crash can lose the last commits,
    never corrupt the file). A PostgreSQL storage rides out a restart of its server
    (:class:`_ServerStorage`), opening it too.
    """
    kwargs = {
        "heartbeat_interval": max(1, round(heartbeat_seconds())),
        "grace_period": trial_grace_seconds(),
        "heartbeat_stale_trial_callback": _fail_and_retry,
    }
    if url_scheme(url) == "postgresql":
        storage_wait_seconds()  # a bad $LGALS_STORAGE_WAIT_SECONDS is one line, before waiting
        with experimental():
            return _retrying(lambda: _ServerStorage(url, {"pool_pre_ping": True}, **kwargs),
                             url, "opening the storage")
    with experimental():
        storage = _HeartbeatStorage(url, **kwargs)
    if storage.engine.dialect.name == "sqlite":
        @sqlalchemy.event.listens_for(storage.engine, "connect")
        def write_ahead(connection, record) -> None:
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        storage.engine.dispose()  # connections opened from now on get the pragmas
    return storage


def _disconnected(error: BaseException | None) -> bool:
    """Whether ``error``, or an error that led to it, says the database could not be reached
    or went away (SQLAlchemy's ``OperationalError``: connection refused or lost, the server
    shutting down or starting up, a transaction it rolled back), not a bad statement."""
    for cause in causes(error):
        if isinstance(cause, StorageUnavailable):  # waited for already
            return False
        if isinstance(cause, OperationalError) or (isinstance(cause, DBAPIError)
                                                   and cause.connection_invalidated):
            return True
    return False


def _first_line(error: BaseException) -> str:
    """The database driver's own message (Optuna's wrapper blames "invalid data")."""
    cause = next((c for c in causes(error) if isinstance(c, DBAPIError)), None)
    text = str(cause.orig if cause is not None and cause.orig is not None else error)
    return (text.strip().splitlines() or [type(error).__name__])[0]


_RETRY = threading.local()  # the outermost retried call in the thread: .attempt, .deadline
# No attempt starts closer than this to its call's deadline: one that fails at once (refused)
# is then never taken for one the deadline cut.
_LAST_ATTEMPT = 0.1
# A watchdog that wakes this much past a deadline was paused with its process.
_PAUSED_SECONDS = 2.0


def _retrying(call, url: str, what: str, lost=None):
    """``call()``, made again with backoff (0.1 s doubling to 1 s) while its database cannot
    be reached, for up to :func:`storage_wait_seconds` from the first attempt: one deadline
    for the whole call, an attempt that hangs included (:class:`_Watchdog` cuts it there);
    then :class:`StorageUnavailable`. ``lost()`` is called each time it cannot. Calls made
    inside a retried call are retried by it, not again on their own."""
    if getattr(_RETRY, "attempt", 0):
        return call()
    wait = storage_wait_seconds()
    deadline, delay = time.monotonic() + wait, 0.1
    _RETRY.attempt, _RETRY.deadline = 1, deadline
    try:
        with WATCHDOG.watching(deadline) as watch:
            while True:
                started = time.monotonic()
                try:
                    return call()
                except Exception as error:
                    failed = time.monotonic()
                    if not _disconnected(error):
                        raise
                    if lost is not None:
                        lost()
                    left = deadline - failed
                    if left > _LAST_ATTEMPT and watch.cut_at is None:
                        time.sleep(min(delay, left - _LAST_ATTEMPT))
                        delay = min(2 * delay, 1.0)
                        _RETRY.attempt += 1
                        continue
                    time.sleep(max(0.0, left))  # the wait, waited whole
                    cut = watch.cut_at is not None and started <= watch.cut_at <= failed
                    reason = ("no answer (a server that hangs, or a network that dropped it "
                              "without a reset)" if cut else _first_line(error))
                    raise StorageUnavailable(
                        f"the Optuna storage {redact_url(url)} did not answer for {wait:g} s "
                        f"({what}): {reason}; is its database server up and answering? Run "
                        "the command again once it is (LGALS_STORAGE_WAIT_SECONDS sets the "
                        "wait)") from error
    finally:
        _RETRY.attempt = 0


class _Watch:
    """A storage call under way: its deadline, and when its connections were cut."""

    def __init__(self, deadline: float):
        self.deadline = deadline
        self.cut_at: float | None = None


class _Watchdog:
    """Cuts the connections of a storage call still under way at its deadline.

    A server that stops answering without closing its connections (its process paused, a
    network partition without a reset) would keep the call waiting for as long as it hangs:
    the server's statement_timeout is the server's own, and TCP keepalives and
    tcp_user_timeout notice a host that is gone, not a process that stopped (its kernel still
    acknowledges). So each PostgreSQL connection opened in a storage call is remembered
    (:func:`_connecting`), and at a call's deadline every one of them has its socket shut
    down: whatever waits on it fails at once, as if the server had dropped it, and the call
    ends with :class:`StorageUnavailable`. All of them, not only the late call's: a server
    that let a statement run past its own statement_timeout answers no one (and a call of
    another thread cut by mistake is made again on a new connection)."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.watches: set[_Watch] = set()
        self.connections: weakref.WeakSet = weakref.WeakSet()
        self.thread: threading.Thread | None = None
        self.owner = os.getpid()

    @contextlib.contextmanager
    def watching(self, deadline: float) -> Iterator[_Watch]:
        watch = _Watch(deadline)
        with self.changed:
            if self.thread is None or self.owner != os.getpid():  # a fork has no thread
                self.owner = os.getpid()
                self.thread = threading.Thread(target=self._run, name="lgals-storage-watchdog",
                                               daemon=True)
                self.thread.start()
            self.watches.add(watch)
            self.changed.notify()
        try:
            yield watch
        finally:
            with self.changed:
                self.watches.discard(watch)

    def opened(self, connection) -> None:
        """Remember ``connection`` (a DB-API connection with ``fileno()``) to cut it."""
        with self.changed:
            self.connections.add(connection)

    def _run(self) -> None:
        with self.changed:
            soonest = None
            while True:
                now = time.monotonic()
                late = {watch for watch in self.watches if watch.deadline <= now}
                if late and soonest is not None and now - soonest > _PAUSED_SECONDS:
                    # this process was paused (SIGSTOP, a suspended machine), not the server:
                    # the calls get a moment to read the answers that came meanwhile
                    for watch in late:
                        watch.deadline = now + _PAUSED_SECONDS
                elif late:
                    for watch in late:
                        watch.cut_at = now
                    self.watches -= late
                    for connection in list(self.connections):
                        _shut_down(connection)
                soonest = min((watch.deadline for watch in self.watches), default=None)
                self.changed.wait(None if soonest is None else soonest - now)


def _shut_down(connection) -> None:
    """Shut the connection's socket down (its descriptor stays open for its owner to close):
    a read or write waiting on it returns at once."""
    with contextlib.suppress(Exception):  # closed meanwhile
        with socket.socket(fileno=os.dup(connection.fileno())) as duplicate:
            duplicate.shutdown(socket.SHUT_RDWR)


WATCHDOG = _Watchdog()


def _connecting(dialect, record, cargs, cparams) -> None:
    """SQLAlchemy's ``do_connect``, for every engine: a PostgreSQL connection opened in a
    storage call (:func:`_retrying`) gives up connecting by the call's deadline
    (``connect_timeout``, at least libpq's 2 s), probes an idle peer with TCP keepalives and
    drops one that stops acknowledging (``tcp_user_timeout``: a host gone, a network
    partition) within about the wait; and it is marked for :func:`_connected`. Parameters the
    storage URL gives win, but for a longer ``connect_timeout``. Other engines (MLflow's SQL
    store's, an SQLite storage's) are left as they are."""
    if dialect.name != "postgresql" or not getattr(_RETRY, "attempt", 0):
        return
    timeout = max(2, math.ceil(_RETRY.deadline - time.monotonic()))
    with contextlib.suppress(TypeError, ValueError):  # a bad one: ours stands
        given = float(cparams.get("connect_timeout", 0))
        timeout = min(timeout, math.ceil(given)) if given > 0 else timeout
    cparams["connect_timeout"] = timeout
    for name, value in _tcp_settings(storage_wait_seconds()).items():
        cparams.setdefault(name, value)
    record.info["lgals.storage"] = True


def _tcp_settings(wait: float) -> dict[str, int]:
    """libpq's keepalive settings for a peer to count as gone after about ``wait`` seconds of
    silence; ``tcp_user_timeout`` (libpq 12 on) where the client library knows it."""
    import psycopg

    settings = {"keepalives": 1, "keepalives_idle": max(1, round(wait / 3)),
                "keepalives_interval": max(1, round(wait / 9)), "keepalives_count": 3}
    if psycopg.pq.version() >= 120000:
        settings["tcp_user_timeout"] = round(wait * 1000)
    return settings


def _connected(connection, record) -> None:
    """The pool's ``connect``, for every pool: a connection :func:`_connecting` marked is
    remembered by :data:`WATCHDOG`, and the server ends its statements, and its waits for a
    row or table lock, after the wait (``statement_timeout``, ``lock_timeout``): a server that
    is up but stuck answers with an error, which is retried as a lost connection is."""
    if not record.info.get("lgals.storage"):
        return
    WATCHDOG.opened(connection)
    milliseconds = round(storage_wait_seconds() * 1000)
    cursor = connection.cursor()
    try:
        cursor.execute(f"SET statement_timeout = {milliseconds}")
        cursor.execute(f"SET lock_timeout = {milliseconds}")
    finally:
        cursor.close()
    connection.commit()


sqlalchemy.event.listen(sqlalchemy.engine.Engine, "do_connect", _connecting)
sqlalchemy.event.listen(sqlalchemy.pool.Pool, "connect", _connected)


class _HeartbeatStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage, where a trial that never got a heartbeat can also go stale.

    ``study.ask()`` creates a RUNNING trial; its first heartbeat is written just after. A
    process killed in between leaves a trial Optuna never finds stale (it looks only at
    heartbeats), which would stay RUNNING for good. Here such a trial is stale once it
    started more than the grace period ago.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        cutoff = now - datetime.timedelta(seconds=self.grace_period)  # the column is UTC
        with contextlib.closing(self.scoped_session()) as session:
            never_beat = (
                session.query(models.TrialModel.trial_id)
                .filter(models.TrialModel.study_id == study_id,
                        models.TrialModel.state == TrialState.RUNNING,
                        models.TrialModel._datetime_start_utc < cutoff,
                        ~models.TrialModel.heartbeats.any())
                .all())
        return stale + [trial_id for (trial_id,) in never_beat]


class _ServerStorage(_HeartbeatStorage):
    """A storage on a PostgreSQL server, which may restart (or fail over, or drop connections)
    while hosts tune:

    - pooled connections are pinged before use (Optuna does so for MySQL only): one the
      server closed is replaced instead of failing the call;
    - a call that cannot reach the server, or that was in flight when it went away, is made
      again (:func:`_retrying`) for up to ``$LGALS_STORAGE_WAIT_SECONDS``, then the command
      ends with one line (:class:`StorageUnavailable`);
    - no trial goes stale until the server has been up, and reachable from this process,
      for a grace period and a heartbeat: while it was away nobody could beat, so just after
      it is back every trial would look stale, those of live processes too. (Up: since the
      server started; reachable: since this process last found it away, which is what
      covers a crash recovery, during which a started server refuses connections. A process
      that started only after a crash recovery that took seconds can still fail the trials
      of hosts that did not beat yet: they are retried, and their hosts' tells skipped.)

    A write whose commit reached the server but whose answer was lost is made twice: a trial
    told twice the same is recognised; a trial created twice leaves one that never beats,
    failed (and retried, unless it was a retry) as a dead process's trial is.
    """

    def __init__(self, *args, **kwargs):
        self.away_at = -math.inf  # when this process last found the server away (monotonic)
        super().__init__(*args, **kwargs)
        # a pooled connection found dead (by its ping, or under a statement)
        sqlalchemy.event.listen(self.engine, "invalidate", lambda *_: self.away())

    def away(self) -> None:
        self.away_at = time.monotonic()

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        with contextlib.closing(self.scoped_session()) as session:
            up = float(session.execute(sqlalchemy.text(
                "SELECT EXTRACT(EPOCH FROM now() - pg_postmaster_start_time())")).scalar())
        if min(up, time.monotonic() - self.away_at) < self.grace_period + self.heartbeat_interval:
            return []
        return super()._get_stale_trial_ids(study_id)

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values=None) -> bool:
        try:
            return super().set_trial_state_values(trial_id, state, values)
        except optuna.exceptions.UpdateFinishedTrialError:
            if getattr(_RETRY, "attempt", 0) > 1 and state.is_finished():
                stored = super().get_trial(trial_id)  # did the lost attempt store it?
                told = None if values is None else [float(v) for v in values]
                if stored.state == state and stored.values == told:
                    return True
            raise


# Every call of Optuna's RDB storage (and of its cache) that reads or writes the database.
_SERVER_CALLS = (
    "create_new_study", "delete_study", "set_study_user_attr", "set_study_system_attr",
    "get_study_id_from_name", "get_study_name_from_id", "get_study_directions",
    "get_study_user_attrs", "get_study_system_attrs", "get_trial_user_attrs",
    "get_trial_system_attrs", "get_all_studies", "create_new_trial", "_create_new_trial",
    "set_trial_param", "_set_trial_param", "get_trial_param", "set_trial_state_values",
    "set_trial_intermediate_value", "set_trial_user_attr", "set_trial_system_attr",
    "get_trial_id_from_study_id_trial_number", "get_trial", "get_all_trials", "_get_trials",
    "get_best_trial", "_get_best_trial_id", "record_heartbeat", "_get_stale_trial_ids",
)


def _retried(name: str):
    method = getattr(_ServerStorage, name)

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        return _retrying(lambda: method(self, *args, **kwargs), self.url,
                         name.strip("_").replace("_", " "), self.away)
    return call


for _name in _SERVER_CALLS:
    setattr(_ServerStorage, _name, _retried(_name))


def _fail_and_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A stale trial's MLflow run ends FAILED, and so do its still RUNNING ancestors (the
    tune runs of the process that died); then Optuna retries the trial once. An owner that
    was only paused, back, ends them itself later: the trial's run FAILED as taken over, the
    tune runs as they end, without this reason (:func:`lgals.tuning.train_round`,
    :func:`lgals.tracking.runs.end_runs`)."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        client = mlflow_client()
        client.set_tag(run_id, TRIAL_STATE, "FAIL")
        while run_id:
            run = client.get_run(run_id)
            if run.info.status == "RUNNING":
                end_runs([run_id], "FAILED", "process died (stale heartbeat)")
            run_id = run.data.tags.get(PARENT)
    with experimental():
        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)


# Hosts sharing a PostgreSQL storage take turns where Optuna does not make them: a
# transaction-level advisory lock pg_advisory_xact_lock(_LOCKS, key), key _SETUP while one
# creates or loads a study (Optuna's tables too), the study's id while one counts and asks
# its trials. (One host's local workers need none: their quotas split the trials exactly.)
_LOCKS, _SETUP = 0x6C67616C, 0  # "lgal"


_LOCK_POLL_SECONDS = 0.1  # how often a host waiting for another's lock asks for it again


@contextlib.contextmanager
def _locked(engine, key: int) -> Iterator[None]:
    """The block under lock ``key``, held on a connection of its own (Optuna's sessions take
    others); released when the block ends, or by the server when the connection is lost.

    A host waits for as long as another host holds the lock (legitimately: the holder's
    block is short, and a lost holder's lock ends with its connection), asking for it every
    :data:`_LOCK_POLL_SECONDS`: each ask is a call of its own, retried while the server is
    down and cut when it hangs (:func:`_retrying`), so no wait for a lock looks like a server
    that stopped answering, nor the other way round. A server restarting during the block
    (milliseconds: a count and a few asks) loses the lock with the connection."""
    url = engine.url.render_as_string(hide_password=False)
    held: list = []

    def take() -> bool:
        if not held:
            held.append(engine.connect())
        try:
            return bool(held[0].execute(
                sqlalchemy.text("SELECT pg_try_advisory_xact_lock(:space, :key)"),
                {"space": _LOCKS, "key": key}).scalar())
        except BaseException:
            _drop(held.pop())
            raise

    try:
        while not _retrying(take, url, "taking a lock"):
            time.sleep(_LOCK_POLL_SECONDS)
    except BaseException:
        if held:
            _drop(held.pop())
        raise
    connection = held[0]
    try:
        yield
    except StorageUnavailable:  # the server is away: rolling back would wait for it again
        _drop(connection)
        raise
    finally:
        # the lock ends with its transaction however that ends; a connection the server
        # dropped has ended it already
        if not connection.invalidated:
            with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError), \
                    WATCHDOG.watching(time.monotonic() + storage_wait_seconds()):
                connection.rollback()
        with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
            connection.close()


def _drop(connection) -> None:
    """Close ``connection`` without a word to its server (which may not answer)."""
    with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
        connection.invalidate()
    with contextlib.suppress(sqlalchemy.exc.SQLAlchemyError):
        connection.close()


@contextlib.contextmanager
def _sqlite_locked(path: Path | None) -> Iterator[None]:
    """The block under the OS lock of a file beside the SQLite storage ``path``
    (``optuna.db.lock``): processes on one host take turns as hosts on PostgreSQL do under
    an advisory lock. Where no such file can be made (no such directory, a read-only one),
    Optuna's own error says why once the block opens the storage."""
    if path is None or not os.access(path.parent, os.W_OK | os.X_OK):
        yield
        return
    with FileLock(f"{path}.lock"):  # released by the OS if the process dies
        yield


@contextlib.contextmanager
def setting_up(url: str) -> Iterator[None]:
    """One host at a time creates or loads a study of the storage ``url``: Optuna creates its
    tables and a study's settings are recorded with no guard against another host doing the
    same (PostgreSQL refuses the second ``CREATE TYPE``; a host would read the settings half
    recorded). Processes sharing a SQLite file take turns under a file lock."""
    if url_scheme(url) != "postgresql":
        with _sqlite_locked(sqlite_path(url)):
            yield
        return
    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with _locked(engine, _SETUP):
            yield
    finally:
        engine.dispose()


@contextlib.contextmanager
def asking(study: optuna.Study) -> Iterator[None]:
    """One host at a time counts a study's trials and asks new ones: hosts that counted at
    the same time would each ask what is missing, and the study would get more than
    ``n_trials``. Processes sharing a SQLite file (two commands on one store) take turns
    under a file lock."""
    storage = study._storage
    engine = getattr(storage, "_backend", storage).engine  # Optuna caches an RDB storage
    if engine.dialect.name != "postgresql":
        database = engine.url.database if engine.dialect.name == "sqlite" else None
        with _sqlite_locked(Path(database) if database else None):
            yield
        return
    with _locked(engine, study._study_id):
        yield


class TrialRecorder:
    """Writes a round's trials to Optuna from a thread of its own: each trial's heartbeat, and
    the validation accuracies the training loop reports every epoch (queued, written within
    about a second), so the training loop never waits on the storage.

    Optuna's own heartbeat thread runs only inside ``study.optimize``; with ask/tell, without
    this, the trials of a killed process would never go stale, and never be retried.

    A trial whose value the storage refuses was failed by another host, which took this
    process for dead (no heartbeat within the grace: it was paused, or cut off) and retries
    the trial: it is in :attr:`taken_over` from then on.

    A storage that stops answering for longer than its wait (:class:`StorageUnavailable`)
    ends the thread, and the training with it: the next :meth:`report` (or :meth:`write`)
    raises the error, so that the command ends about the wait after the storage went away,
    not after the round.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: list[int]):
        self.storage, self.trial_ids = storage, trial_ids
        self.queue: list[tuple[int, int, float]] = []  # (trial id, step, value)
        self.taken_over: set[int] = set()  # trial ids another host failed (stale)
        self.lock = threading.Lock()
        self.writing = threading.Lock()  # one write at a time: the thread's, or a caller's
        self.stopped = threading.Event()
        self.last_beat = 0.0
        self.lost: StorageUnavailable | None = None  # why the thread gave up
        self.write()
        self.thread = threading.Thread(target=self._run, name="lgals-trials", daemon=True)

    def report(self, trial_id: int, step: int, value: float) -> None:
        """Queue a trial's value for ``step``; raise :class:`StorageUnavailable` once the
        storage stopped answering for longer than its wait."""
        if self.lost is not None:
            raise self.lost
        with self.lock:
            self.queue.append((trial_id, step, value))

    def write(self) -> None:
        """Write the heartbeats when they are due, and the queued values; once it returns,
        every value reported before the call is stored. The heartbeats come first and keep
        coming while a backlog is written (values held back while the storage was away): a
        trial whose heartbeat waited behind them would look dead. A value that cannot be
        written (its storage did not answer within its wait) stays queued for the next
        write; one of a trial another host failed meanwhile (stale) is dropped, and the trial
        is :attr:`taken_over`. Once the thread found the storage away for longer than its
        wait, raises that (:class:`StorageUnavailable`) instead of waiting again."""
        if self.lost is not None:
            raise self.lost
        with self.writing:
            self._beat()
            with self.lock:
                queued, self.queue = self.queue, []
            try:
                while queued:
                    trial_id, step, value = queued[0]
                    try:
                        self.storage.set_trial_intermediate_value(trial_id, step, value)
                    except optuna.exceptions.UpdateFinishedTrialError:
                        self.taken_over.add(trial_id)
                    queued.pop(0)
                    self._beat()
            finally:
                with self.lock:
                    self.queue[:0] = queued

    def _beat(self) -> None:
        if time.monotonic() - self.last_beat >= heartbeat_seconds():
            for trial_id in self.trial_ids:
                self.storage.record_heartbeat(trial_id)
            self.last_beat = time.monotonic()

    def _run(self) -> None:
        while not self.stopped.wait(1.0):
            try:
                self.write()
            except StorageUnavailable as error:  # waited for it already: the command ends
                self.lost = error
                return
            except Exception:  # kept queued: the next write tries again, the last one says why
                pass

    def __enter__(self) -> TrialRecorder:
        self.thread.start()
        return self

    def __exit__(self, kind, *_) -> None:
        self.stopped.set()
        self.thread.join()
        if kind is None:
            self.write()  # what is left, before the trials are told
        elif self.lost is None and not issubclass(kind, StorageUnavailable):
            with contextlib.suppress(Exception):  # best effort: the block's error is the one
                self.write()  # to report (with the storage away, it would wait for it again)
