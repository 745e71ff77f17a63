"""How long this process waits for a tracking server that stopped answering: one deadline for
every request, counted from when the server was first found away.

MLflow's own retries count per request: each attempt waits up to ``MLFLOW_HTTP_REQUEST_TIMEOUT``
for an answer, each request is retried, and a command makes requests one after another; a
server that hangs (its process paused, a network partition without a reset: connections are
accepted, nothing answers) kept a command waiting for minutes. Here every request that gets
no answer (no connection, none in time, a server error) marks the server away from the start
of that attempt; requests are retried (1 s apart, doubling to 4 s) until
:func:`lgals.settings.server_wait_seconds` after that moment, each attempt given no more than
what is left; once it has passed, every request fails at once (:class:`ServerAway`). Any answer
resets it. The MLflow writer child and tuning workers hold deadlines of their own: each finds
the server away within seconds of the others (its own next request), so all give up about the
wait after it stopped answering.

This module imports neither MLflow nor anything heavy at the top: the writer child imports it.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import requests
from requests.adapters import BaseAdapter

from lgals.settings import server_wait_seconds

# What a request that got no usable answer raises: no connection, none in time, a connection
# dropped mid-answer, only server errors (MLflow's retries of status codes, set to none,
# raise RetryError).
NO_ANSWER = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
             requests.exceptions.RetryError, requests.exceptions.ChunkedEncodingError)
FIRST_BACKOFF, LAST_BACKOFF = 1.0, 4.0  # seconds between attempts


class ServerAway(requests.exceptions.ConnectionError):
    """The tracking server has not answered for the whole wait: no request tries it again."""


class _Server:
    """The tracking server as this process last found it: answering, or away since when."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.away_since: float | None = None  # monotonic; None: it answers
        self.first_error = ""  # what the first request it did not answer got
        self.impatient = 0  # blocks inside impatient(): one try per request

    def left(self) -> float:
        """Seconds left before lgals gives the server up (the whole wait while it answers)."""
        since = self.away_since
        waited = 0.0 if since is None else time.monotonic() - since
        return server_wait_seconds() - waited

    def gone(self) -> bool:
        """Whether the server stopped answering and was not back within the wait."""
        return self.away_since is not None and self.left() <= 0

    def away(self, since: float, error: BaseException) -> None:
        with self.lock:
            if self.away_since is None or since < self.away_since:
                self.away_since, self.first_error = since, str(error)

    def back(self) -> None:
        with self.lock:
            self.away_since, self.first_error = None, ""


SERVER = _Server()


@contextmanager
def impatient() -> Iterator[None]:
    """One try per request for the block (see :func:`lgals.tracking.store.impatient`)."""
    with SERVER.lock:
        SERVER.impatient += 1
    try:
        yield
    finally:
        with SERVER.lock:
            SERVER.impatient -= 1


def _capped(timeout, left: float):
    """A request's timeout (seconds, a (connect, read) pair, or None), at most ``left``."""
    if isinstance(timeout, tuple):
        return tuple(left if t is None else min(t, left) for t in timeout)
    return left if timeout is None else min(timeout, left)


class _Patient(BaseAdapter):
    """requests' adapter for MLflow's sessions: MLflow's own (``inner``) makes each attempt;
    this one retries it within the deadline (module docstring)."""

    def __init__(self, inner: BaseAdapter) -> None:
        super().__init__()
        self.inner = inner

    def send(self, request, timeout=None, **kwargs):
        body = request.body
        start = body.tell() if hasattr(body, "seek") and hasattr(body, "tell") else None
        again = body is None or isinstance(body, bytes | str) or start is not None
        backoff = FIRST_BACKOFF
        while True:
            if SERVER.gone():
                raise ServerAway(f"no answer for {server_wait_seconds():g} s (since: "
                                 f"{SERVER.first_error})", request=request)
            left = SERVER.left()  # a wait of 0: one attempt, MLflow's timeout
            attempt = time.monotonic()
            try:
                response = self.inner.send(
                    request, timeout=_capped(timeout, left) if left > 0 else timeout, **kwargs)
            except NO_ANSWER as error:
                SERVER.away(attempt, error)
                if SERVER.impatient or SERVER.left() <= 0 or not again:
                    raise
                time.sleep(min(backoff, SERVER.left()))
                backoff = min(2 * backoff, LAST_BACKOFF)
                if start is not None:
                    body.seek(start)  # a file being uploaded: from its start again
                continue
            SERVER.back()
            return response

    def close(self) -> None:
        self.inner.close()


def install() -> None:
    """Put the deadline into every HTTP session MLflow makes in this process (once): MLflow
    builds its sessions, with its retry policy and TCP keepalives, in
    ``mlflow.utils.request_utils._get_request_session`` (private: lgals.private_apis); each is
    given a :class:`_Patient` around its adapter."""
    from mlflow.utils import request_utils

    made = request_utils._get_request_session
    if getattr(made, "lgals_deadline", False):
        return

    @functools.wraps(made)
    def session(*args, **kwargs) -> requests.Session:
        found = made(*args, **kwargs)  # cached by MLflow: wrapped once
        for prefix in ("https://", "http://"):
            adapter = found.adapters.get(prefix)
            if adapter is not None and not isinstance(adapter, _Patient):
                found.mount(prefix, _Patient(adapter))
        return found

    session.lgals_deadline = True
    request_utils._get_request_session = session
