"""The tracking server's one deadline (lgals.tracking.deadline), against real sockets: one that
accepts connections and never answers (a paused server, as its clients see it: the kernel
completes the connection, nothing reads the request), and a port nothing listens on. The
paused ``mlflow server`` itself, under real commands: tests/system/test_team_auth.py."""

from __future__ import annotations

import contextlib
import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from support.mlflow_fixtures import free_port, isolated_mlflow

from lgals.errors import TrackingUnavailable
from lgals.tracking import deadline
from lgals.tracking.store import check_server, http_retries, impatient, user_error

WAIT = 2  # LGALS_SERVER_WAIT_SECONDS here


@contextlib.contextmanager
def silent_server() -> Iterator[str]:
    """A port that takes connections into its backlog and answers nothing; its URI."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
def client_of(monkeypatch):
    """``client_of(uri)``: an MlflowClient of ``uri`` whose requests go through lgals' deadline
    (a wait of WAIT s, each attempt 10 s at most); the server counts as answering before and
    after the test (:func:`isolated_mlflow`)."""
    import mlflow

    def client(uri: str):
        mlflow.set_tracking_uri(uri)
        return mlflow.MlflowClient(uri)

    with isolated_mlflow():
        monkeypatch.setenv("LGALS_SERVER_WAIT_SECONDS", str(WAIT))
        http_retries()
        deadline.install()
        yield client


def timed(call) -> tuple[BaseException, float]:
    """What ``call()`` raised, and after how many seconds."""
    started = time.monotonic()
    with pytest.raises(Exception) as raised:
        call()
    return raised.value, time.monotonic() - started


def test_a_server_that_never_answers_is_given_up_after_the_wait_once_for_all_requests(
        client_of):
    """The first request waits the wait (its attempt's 10 s cut to what is left), not
    MLflow's timeout times its retries; every request after it fails at once; each is the
    same one line, and so is the check made every epoch."""
    with silent_server() as uri:
        client = client_of(uri)
        first, took = timed(lambda: client.get_experiment("0"))
        assert WAIT <= took < WAIT + 1, took
        later, at_once = timed(lambda: client.set_tag("0" * 32, "k", "v"))
        assert at_once < 0.5, at_once
        for error in (first, later):
            said = user_error(error)
            assert isinstance(said, TrackingUnavailable), error
            assert str(said).startswith(f"the MLflow tracking server at {uri} stopped answering "
                                        f"(no answer in time) and was not back within {WAIT} s "
                                        "(LGALS_SERVER_WAIT_SECONDS): "), str(said)
        with pytest.raises(TrackingUnavailable, match="stopped answering .no answer in time."):
            check_server()


def test_a_refused_server_is_tried_again_until_the_wait_from_the_first_refusal(client_of):
    """Nothing listens: attempts 1 s, then 2 s apart until the wait is over, then one line;
    a block that must not wait (ending runs after a failure) tries once."""
    client = client_of(f"http://127.0.0.1:{free_port()}")
    with impatient():
        error, once = timed(lambda: client.get_experiment("0"))
    assert once < 0.5, once
    assert not deadline.SERVER.gone()  # found away just now: the wait has only begun
    error, took = timed(lambda: client.get_experiment("0"))
    assert WAIT - 0.5 <= took < WAIT + 1, took  # counted from the impatient try's refusal
    assert "stopped answering (connection refused)" in str(user_error(error))


class _NoSuchThing(http.server.BaseHTTPRequestHandler):
    """Answers every request: 404, in MLflow's words."""

    def do_GET(self) -> None:
        body = json.dumps({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "none"}).encode()
        self.send_response(404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def answering() -> Iterator[str]:
    """A server that answers every request (:class:`_NoSuchThing`); its URI."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NoSuchThing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_wait_of_0_asks_once(client_of, monkeypatch):
    """LGALS_SERVER_WAIT_SECONDS=0: every request is made, once; the first that gets no answer
    gives the server up."""
    monkeypatch.setenv("LGALS_SERVER_WAIT_SECONDS", "0")
    with answering() as uri:
        error, took = timed(lambda: client_of(uri).get_experiment("0"))
        assert "RESOURCE_DOES_NOT_EXIST" in str(error) and took < 0.5, (error, took)
    error, took = timed(lambda: client_of(f"http://127.0.0.1:{free_port()}").get_experiment("0"))
    assert took < 0.5 and deadline.SERVER.gone(), took
    assert "stopped answering (connection refused)" in str(user_error(error))


def test_an_answer_resets_the_wait(client_of):
    """A server found away, then answering (a restart in time; an answer that is an error is
    an answer): the wait starts over."""
    with answering() as uri:
        client = client_of(uri)
        deadline.SERVER.away(time.monotonic() - WAIT + 0.5, ConnectionError("refused"))
        error, took = timed(lambda: client.get_experiment("0"))
        assert "RESOURCE_DOES_NOT_EXIST" in str(error) and took < 0.5, (error, took)
        assert deadline.SERVER.away_since is None and deadline.SERVER.left() == WAIT
        check_server()
