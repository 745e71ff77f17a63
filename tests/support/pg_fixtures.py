"""Helpers for the team tests: a real PostgreSQL server, and ``mlflow server`` on it; no mocks.

Imported by ``tests/system/test_team*.py`` as ``support.pg_fixtures`` (``pyproject.toml``
puts ``tests/`` on ``sys.path``); :class:`Host` is an ``lgals`` process as if on a host of its
own.
:func:`postgres_server` runs the PostgreSQL server binaries found on ``PATH`` (``initdb``;
Debian keeps the rest beside it, in ``/usr/lib/postgresql/<version>/bin``) as a child process
of the test: its own data directory, listening on 127.0.0.1 only, on a free port, with a
password user :data:`USER`. Without the binaries the calling test is skipped, saying so.

PostgreSQL refuses to run as root: as root, the server and ``initdb`` run as the
``postgres`` user, started with ``subprocess.Popen(user=...)`` rather than ``runuser``, so the
PID the test holds is the postmaster's own (``runuser`` forks and waits for its child).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from support.mlflow_fixtures import (
    LGALS,
    MlflowServer,
    cli_env,
    free_port,
    mlflow_server,
    paused,
    wait_for,
)

USER, PASSWORD = "lgals", "secret"  # what the URLs carry: password auth over TCP
DATABASES = ("optuna", "mlflow")
START_TIMEOUT = 60  # an initdb'd cluster accepts connections in ~1 s here
STOP_TIMEOUT = 60
# How stop() shuts the server down (PostgreSQL's three shutdown modes, as signals).
SHUTDOWN = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def pg_bin() -> Path | None:
    """The directory of PostgreSQL's server binaries (initdb, postgres, pg_isready, psql)."""
    found = shutil.which("initdb") or next(
        iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)), None)
    return Path(found).resolve().parent if found else None


class PostgresServer:
    """One PostgreSQL cluster: a data directory of its own and, while started, its postmaster
    as a child process of this one. Stop and start it again as often as needed: the data
    directory, the port and so the URLs stay the same."""

    def __init__(self, root: Path, log: Path, bin_dir: Path, owner: str | None,
                 durable: bool = False):
        self.root, self.log, self.bin, self.owner = root, log, bin_dir, owner
        self.durable = durable
        self.data, self.sockets = root / "data", root / "run"
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    # --- running PostgreSQL's programs ---------------------------------------------------

    def _as_owner(self) -> dict:
        """Popen arguments: as the cluster's owner (when we are root), a plain environment."""
        env = {"PATH": f"{self.bin}{os.pathsep}/usr/bin:/bin", "LC_ALL": "C",
               "HOME": str(self.root), "TZ": "UTC"}
        if self.owner is None:
            return {"env": env}
        entry = pwd.getpwnam(self.owner)
        return {"env": env, "user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _run(self, *argv: str, timeout: float = 60) -> subprocess.CompletedProcess:
        result = subprocess.run([str(self.bin / argv[0]), *argv[1:]], cwd=self.root,
                                capture_output=True, text=True, timeout=timeout,
                                **self._as_owner())
        if result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}):\n"
                                 f"{result.stdout}{result.stderr}")
        return result

    def initdb(self) -> None:
        """A new cluster: the superuser ``postgres`` trusted on the unix socket only (it sets
        things up), every TCP connection by password (scram-sha-256)."""
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-E", "UTF8",
                  "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256",
                  "--no-sync", "--no-instructions", timeout=120)

    def psql(self, *commands: str) -> str:
        """Run SQL commands as the superuser over the unix socket (each in its own
        transaction, so ``CREATE DATABASE`` works); return what psql printed."""
        argv = ["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                "-h", str(self.sockets), "-p", str(self.port), "-U", "postgres", "-d", "postgres"]
        for command in commands:
            argv += ["-c", command]
        return self._run(*argv).stdout

    def create_user(self) -> None:
        self.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")

    def create_database(self, name: str) -> str:
        """A new database owned by :data:`USER`; its URL."""
        self.psql(f"CREATE DATABASE {name} OWNER {USER}")
        return self.url(name)

    # --- the server process ---------------------------------------------------------------

    def start(self, timeout: float = START_TIMEOUT) -> None:
        """Start the postmaster on the data directory (again, after :meth:`stop`); return
        once it accepts connections."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with open(self.log, "a") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-c", "listen_addresses=127.0.0.1",
                 "-c", f"unix_socket_directories={self.sockets}",
                 # a test cluster: no waiting for the disk, at the price of the last commits if
                 # the server is killed (`immediate` stop) or the OS crashes; a benchmark's and
                 # a crash test's cluster is durable
                 *([] if self.durable else ["-c", "fsync=off", "-c", "synchronous_commit=off",
                                            "-c", "full_page_writes=off"])],
                cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, **self._as_owner())
        deadline = time.monotonic() + timeout
        while not self.ready():
            if self.process.poll() is not None:
                raise AssertionError(f"postgres exited ({self.process.returncode}):\n"
                                     f"{self.log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                self.stop("immediate")
                raise AssertionError(f"postgres did not accept connections within {timeout} s:"
                                     f"\n{self.log.read_text()[-3000:]}")
            time.sleep(0.1)

    def ready(self) -> bool:
        """Whether the server accepts connections on its TCP port (``pg_isready``)."""
        return subprocess.run([str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1",
                               "-p", str(self.port), "-t", "2"], timeout=30).returncode == 0

    @property
    def pid(self) -> int | None:
        """The postmaster's PID while it runs (the one ``postmaster.pid`` names)."""
        return self.process.pid if self.process and self.process.poll() is None else None

    def stop(self, mode: str = "fast", timeout: float = STOP_TIMEOUT) -> None:
        """Shut the server down by its PID: ``fast`` (SIGINT: sessions are ended, then a
        checkpoint), ``smart`` (waits for the sessions), ``immediate`` (no checkpoint:
        recovery at the next start). Escalates to SIGKILL after ``timeout``; then nothing of
        it is left (its process group is killed)."""
        process = self.process
        if process is None:
            return
        try:
            if process.poll() is None:
                process.send_signal(SHUTDOWN[mode])
                try:
                    process.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=30)
        finally:
            with contextlib.suppress(ProcessLookupError):  # backends a SIGKILL left behind
                os.killpg(process.pid, signal.SIGKILL)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The whole server paused (:func:`support.mlflow_fixtures.paused`): the postmaster
        first (it starts no process meanwhile), then each of its processes, which PostgreSQL
        makes the leader of a process group of its own (the sessions' backends among them);
        all go on when the block ends."""
        with paused(self.pid), paused(*self.children()):
            yield

    def children(self) -> list[int]:
        """The postmaster's child processes now (from ``/proc``)."""
        found = []
        for status in Path("/proc").glob("[0-9]*/status"):
            with contextlib.suppress(OSError):
                fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines()
                              if ":\t" in line)
                if fields.get("PPid", "").strip() == str(self.pid):
                    found.append(int(status.parent.name))
        return found

    def url(self, dbname: str) -> str:
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{dbname}"


@contextlib.contextmanager
def postgres_server(tmp_path: Path, databases: tuple[str, ...] = DATABASES,
                    durable: bool = False) -> Iterator[PostgresServer]:
    """A started PostgreSQL server with the user :data:`USER` and ``databases`` (theirs);
    stopped, and its data directory removed, at the end. Its log is ``tmp_path/postgres.log``.
    ``durable``: commits wait for the disk, as on a real server (tests need not).

    The data directory is a directory of its own in the system's temporary directory, owned
    by the server's user: pytest's (``/tmp/pytest-of-root``) is closed to other users.
    """
    bin_dir = pg_bin()
    if bin_dir is None or not (bin_dir / "postgres").is_file():
        pytest.skip("no PostgreSQL server here (initdb, postgres): install it (Debian: "
                    "apt-get install postgresql) to run the team tests")
    owner = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("PostgreSQL refuses to run as root and there is no `postgres` user")
        owner = "postgres"
    root = Path(tempfile.mkdtemp(prefix="lgals-pg-"))
    server = PostgresServer(root, Path(tmp_path) / "postgres.log", bin_dir, owner, durable)
    try:
        if owner:
            shutil.chown(root, owner, owner)
        server.initdb()
        server.sockets.mkdir()
        if owner:
            shutil.chown(server.sockets, owner, owner)
        server.start()
        server.create_user()
        for name in databases:
            server.create_database(name)
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


def mlflow_server_on(postgres: PostgresServer, directory: Path, database: str = "mlflow",
                     wait: bool = True) -> contextlib.AbstractContextManager[MlflowServer]:
    """``mlflow server`` with its backend store in ``database`` on ``postgres`` and proxied
    artifacts in ``directory/artifacts`` (see :func:`mlflow_fixtures.mlflow_server`)."""
    return mlflow_server(directory, postgres.url(database), directory / "artifacts", wait=wait)


class Host:
    """An ``lgals`` process as if on a host of its own: ``root/work`` (empty) is its working
    directory, ``root/home`` its HOME; no inherited ``$LGALS_CACHE_DIR``, so lgals caches
    its data where it would on a fresh machine; ``env``: more variables for it. Output goes
    to ``root.out`` / ``root.err``. Its command runs in a session of its own: :meth:`kill`
    and :meth:`stop` reach the whole process group (its MLflow writer too) by its PID."""

    def __init__(self, root: Path, **env: str):
        self.root, self.work, self.home = root, root / "work", root / "home"
        self.extra_env = env
        self.work.mkdir(parents=True)
        self.home.mkdir()
        self.process: subprocess.Popen | None = None
        self.left_running = False  # processes of the command still there after it exited

    def env(self) -> dict[str, str]:
        env = cli_env(HOME=str(self.home), **self.extra_env)
        if "LGALS_CACHE_DIR" not in self.extra_env:
            env.pop("LGALS_CACHE_DIR", None)
        env.pop("MPLCONFIGDIR", None)
        return env

    def start(self, *argv: str) -> None:
        with open(f"{self.root}.out", "w") as out, open(f"{self.root}.err", "w") as err:
            self.process = subprocess.Popen([LGALS, *argv], cwd=self.work, env=self.env(),
                                            stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                            start_new_session=True)

    def finish(self, timeout: float) -> subprocess.CompletedProcess:
        """Wait for the command; its exit code and output."""
        try:
            self.process.wait(timeout=timeout)
            with contextlib.suppress(AssertionError):  # its MLflow writer ends on its own
                wait_for(lambda: not self.group_alive(), timeout=10, interval=0.1)
            self.left_running = self.group_alive()
        finally:
            self.stop()
        return subprocess.CompletedProcess(self.process.args, self.process.returncode,
                                           Path(f"{self.root}.out").read_text(),
                                           Path(f"{self.root}.err").read_text())

    def run(self, *argv: str, timeout: float = 240) -> subprocess.CompletedProcess:
        self.start(*argv)
        return self.finish(timeout)

    def kill(self) -> None:
        """SIGKILL to the command's whole process group at once, as the OOM killer or a power
        cut would: no handler runs; returns once the command is gone."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def pause(self) -> None:
        """SIGSTOP to the command's whole process group, as a laptop's lid or a hung VM would:
        nothing of it runs, nothing beats, until :meth:`resume`."""
        os.killpg(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT to the whole group (nothing if it is gone)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Nothing of the command is left: its process group (with its MLflow writer) gets
        SIGKILL if it is still there."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def group_alive(self) -> bool:
        try:
            os.killpg(self.process.pid, 0)
        except ProcessLookupError:
            return False
        return True

    def files(self) -> list[str]:
        """Every file the host holds now, relative to its root."""
        return sorted(str(p.relative_to(self.root)) for p in self.root.rglob("*")
                      if not p.is_dir())


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """A command's result, asserted to have succeeded without a traceback."""
    assert result.returncode == 0, f"{result.args}:\n{result.stderr[-4000:]}"
    assert "Traceback" not in result.stderr, result.stderr[-4000:]
    return result
