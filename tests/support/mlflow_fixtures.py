"""Helpers for the MLflow tests: real stores, real processes, the real CLI; no mocks.

Imported by most tests in ``tests/unit/`` and ``tests/system/``, and by ``pg_fixtures.py``,
as ``support.mlflow_fixtures`` (``pyproject.toml`` puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
PROJECT = Path(__file__).resolve().parents[2]  # the checkout: MLproject, conda.yaml, entrypoints/
# A line MLflow itself logs (store creation, a new experiment): not lgals' output.
MLFLOW_LOG = re.compile(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d INFO mlflow")
LGALS = str(VENV_BIN / "lgals")
MLFLOW = str(VENV_BIN / "mlflow")
SERVER_START_TIMEOUT = 120  # a cold start takes ~30 s on a busy 2-core machine

# Per-epoch metrics every tracked training run logs (with noisy labels and a test set).
HISTORY_KEYS = (
    "train_loss", "train_acc", "train_true_acc", "memorized_frac", "test_loss", "test_acc",
    "eps_mean", "eps_clean_mean", "eps_noisy_mean", "align_clean_mean", "align_noisy_mean",
    "noise_auroc", "noise_auroc_loss", "noise_auroc_confidence", "noise_auroc_el2n",
    "noise_auroc_aum", "epoch_seconds",
)
# Params every seed's run carries (LGALS mode: eps_max and gamma too).
MEMBER_PARAMS = (
    "mode", "lr", "weight_decay", "eps_max", "gamma", "epochs", "batch_size", "noise_rate",
    "noise_type", "noise_seed", "val_fraction", "dataset", "dataset_version", "dataset_digest",
    "seed", "lgals_version",
)
# MLflow variables that must not leak from one test (or the caller's shell) into another.
MLFLOW_ENV = (
    "MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_EXPERIMENT_ID",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_TIMEOUT",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD",
    "MLFLOW_TRACKING_TOKEN",
)


def cli_env(**overrides: str) -> dict[str, str]:
    """The environment for a CLI subprocess: the venv first on PATH, no inherited MLflow
    settings (so only ``--tracking-uri`` or ``overrides`` decide the store)."""
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_ENV}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    env["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    env.update(overrides)
    return env


def copy_database(source: Path, target: Path) -> None:
    """Copy a SQLite file that may be open, with what its write-ahead log holds (the Optuna
    storage runs in WAL mode: a plain file copy can miss the latest commits)."""
    with contextlib.closing(sqlite3.connect(source)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


def sqlite_uri(path: Path) -> str:
    return f"sqlite:///{path}"


def run_lgals(args: Sequence[str], cwd: Path, timeout: float = 240,
              **env: str) -> subprocess.CompletedProcess:
    """``lgals ARGS`` as a subprocess (the installed console script)."""
    return subprocess.run([LGALS, *args], cwd=cwd, env=cli_env(**env), capture_output=True,
                          text=True, timeout=timeout)


def popen_lgals(args: Sequence[str], cwd: Path, **env: str) -> subprocess.Popen:
    return subprocess.Popen([LGALS, *args], cwd=cwd, env=cli_env(**env), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen, timeout: float = 30) -> None:
    """Make sure a process we started is gone (terminate, then kill), by its PID."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


def all_succeed(processes: Sequence[subprocess.Popen], timeout: float) -> list[tuple[str, str]]:
    """Wait for processes started together: each must exit 0 without a traceback. Their
    ``(stdout, stderr)``; every one is stopped, by its PID, whatever happens."""
    try:
        outputs = [process.communicate(timeout=timeout) for process in processes]
    finally:
        for process in processes:
            stop(process)
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-3000:]
        assert "Traceback" not in err, err[-3000:]
    return outputs


@contextlib.contextmanager
def isolated_mlflow() -> Iterator[None]:
    """Restore MLflow's global tracking URI, the MLflow environment variables, the SIGTERM
    handler (``lgals.cli.main`` installs one) and the cwd afterwards; no active run leaks, nor
    a tracking server found away (:mod:`lgals.tracking.deadline`)."""
    import mlflow
    from mlflow.tracking._tracking_service import utils

    from lgals.tracking.deadline import SERVER

    saved_uri = utils._tracking_uri
    saved_env = {name: os.environ.get(name) for name in MLFLOW_ENV}
    saved_sigterm = signal.getsignal(signal.SIGTERM)
    saved_cwd = os.getcwd()
    for name in MLFLOW_ENV:
        os.environ.pop(name, None)
    SERVER.back()
    try:
        yield
    finally:
        SERVER.back()
        while mlflow.active_run() is not None:
            mlflow.end_run()
        mlflow.set_tracking_uri(saved_uri)
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        signal.signal(signal.SIGTERM, saved_sigterm)
        os.chdir(saved_cwd)


@dataclass
class CliResult:
    code: int | None
    out: str
    err: str


def run_main(argv: Sequence[str], cwd: Path, **env: str) -> CliResult:
    """``lgals ARGV`` in this process through ``lgals.cli.main`` (faster than a subprocess:
    torch and MLflow are imported once), with MLflow's global state restored afterwards;
    ``env``: MLflow variables (of ``MLFLOW_ENV``) the command sees, none other."""
    from lgals.cli import main

    assert set(env) <= set(MLFLOW_ENV), sorted(set(env) - set(MLFLOW_ENV))
    out, err = io.StringIO(), io.StringIO()
    with isolated_mlflow():
        os.environ.update(env)
        os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(argv))
            except SystemExit as exit_:
                code = exit_.code
            else:  # main always exits
                code = None
    return CliResult(code, out.getvalue(), err.getvalue())


def _own_ports() -> Iterator[int]:
    """This test process's ports: below the kernel's ephemeral range (where ``bind(0)`` and
    outgoing connections take theirs), one slice per pytest-xdist worker, from a place of
    its own in the slice."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0")[2:])
    size = (low - 10000) // workers
    first = 10000 + worker * size
    start = os.getpid() % size
    for offset in range(size):
        yield first + (start + offset) % size


_PORTS = _own_ports()


def free_port() -> int:
    """A free port that stays this process's while a server on it is stopped and started
    again (the restart tests): no other test process, and no outgoing connection, is given
    it meanwhile."""
    for port in _PORTS:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port left below the ephemeral range")


def wait_for(predicate: Callable[[], object], timeout: float, interval: float = 0.25,
             what: str = "condition") -> object:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


@contextlib.contextmanager
def paused(*process_groups: int) -> Iterator[None]:
    """SIGSTOP to each process group (a server and its workers): it stops answering without
    closing a connection, as a hung server or a network partition without a reset does;
    SIGCONT when the block ends, however it ends (else it would outlive the test: a stopped
    process ignores everything but SIGKILL)."""
    stopped = []
    try:
        for group in process_groups:
            with contextlib.suppress(ProcessLookupError):  # gone meanwhile
                os.killpg(group, signal.SIGSTOP)
                stopped.append(group)
        yield
    finally:
        for group in stopped:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGCONT)


class MlflowServer:
    """A ``mlflow server`` child process (see :func:`mlflow_server`). It can be killed and
    started again on the same port, store and artifacts (:meth:`kill`, :meth:`start`)."""

    def __init__(self, argv: Sequence[str], env: dict[str, str], directory: Path, uri: str,
                 log: Path):
        self.argv, self.env, self.directory = list(argv), env, directory
        self.uri, self.log = uri, log
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start it (again): in a session of its own, its output appended to its log."""
        assert self.process is None or self.process.poll() is not None, "already running"
        with open(self.log, "a") as log:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                self.argv, cwd=self.directory, env=self.env, stdout=log,
                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"mlflow server exited ({self.process.returncode}):\n"
                                 f"{self.log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=5) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_healthy(self, timeout: float = SERVER_START_TIMEOUT) -> str:
        """Wait for ``/health``; return the server's URI."""
        wait_for(self.healthy, timeout, interval=0.5, what=f"mlflow server at {self.uri}")
        return self.uri

    def kill(self) -> None:
        """SIGKILL to its process group at once (the server, uvicorn's workers, its job
        runner), as a crash or the OOM killer would; returns once the server is gone."""
        process = self.process
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        """Stop it by its process group (SIGTERM, then SIGKILL), uvicorn's workers too."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):  # workers left behind in the group
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def mlflow_server(directory: Path, backend_store_uri: str, artifacts: Path | None = None,
                  wait: bool = True, app_name: str | None = None,
                  env: dict[str, str] | None = None) -> Iterator[MlflowServer]:
    """``mlflow server`` on a free port of 127.0.0.1 with ``backend_store_uri`` and proxied
    artifacts in ``artifacts`` (default ``directory/artifacts``), its log in
    ``directory/server.log``; stopped at the end. ``wait=False`` yields at once (the server
    boots meanwhile: call ``wait_healthy`` before using it). ``app_name`` is its
    ``--app-name`` (e.g. ``basic-auth``), ``env`` more variables for it (``cli_env``'s
    besides)."""
    port = free_port()
    argv = [MLFLOW, "server", "--host", "127.0.0.1", "--port", str(port),
            "--backend-store-uri", backend_store_uri,
            "--artifacts-destination", str(artifacts or directory / "artifacts"),
            "--workers", "1", *(["--app-name", app_name] if app_name else [])]
    server = MlflowServer(argv, cli_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
                                        **(env or {})),
                          directory, f"http://127.0.0.1:{port}", directory / "server.log")
    server.log.write_text("")
    server.start()
    try:
        if wait:
            server.wait_healthy()
        yield server
    finally:
        server.stop()


def sqlite_query(db: Path, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of a read-only query on a sqlite file another process writes; [] if not ready."""
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True,
                                                timeout=5)) as connection:
            return connection.execute(sql, args).fetchall()
    except sqlite3.Error:  # not created yet, or mid-migration
        return []


def sqlite_runs(db: Path) -> list[tuple[str, str]]:
    """``(run_uuid, status)`` of every run in an MLflow sqlite store, read without MLflow
    (read-only, so polling never races the writer's schema creation); [] if not ready."""
    return sqlite_query(db, "SELECT run_uuid, status FROM runs")


def sqlite_params(db: Path, run_id: str) -> dict[str, str]:
    return dict(sqlite_query(db, "SELECT key, value FROM params WHERE run_uuid = ?",
                             (run_id,)))


def git_of_checkout() -> dict[str, str]:
    """MLflow's git tags for this checkout (commit; branch and repository URL where there are
    any), as git's own command line says them."""
    def git(*args: str) -> str:
        result = subprocess.run(["git", "-C", str(PROJECT), *args], capture_output=True,
                                text=True, timeout=30)
        return result.stdout.strip() if result.returncode == 0 else ""

    remotes = git("remote").split()
    found = {"mlflow.source.git.commit": git("rev-parse", "HEAD"),
             "mlflow.source.git.branch": git("symbolic-ref", "--short", "-q", "HEAD"),
             "mlflow.source.git.repoURL": git("remote", "get-url", remotes[0]) if remotes else ""}
    assert len(found["mlflow.source.git.commit"]) == 40, "the tests run from a git checkout"
    return {key: value for key, value in found.items() if value}


def run_context(run) -> dict[str, str]:
    """A run's ``mlflow.user`` and ``mlflow.source.*`` tags: where, by whom, from what code."""
    return {key: value for key, value in run.data.tags.items()
            if key == "mlflow.user" or key.startswith("mlflow.source.")}


def expected_context(user: str) -> dict[str, str]:
    """The context tags of a run this process creates in-process (``run_main``), as MLflow's
    fluent API would give it: the script is this process's ``sys.argv[0]``; the git tags are
    this checkout's."""
    return {"mlflow.user": user, "mlflow.source.name": sys.argv[0] or "<console>",
            "mlflow.source.type": "LOCAL", **git_of_checkout()}


def all_runs(client) -> list:
    """Every run in every experiment of the store ``client`` points at."""
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiment_ids) if experiment_ids else []


def history(client, run_id: str, key: str) -> tuple[list[int], list[float]]:
    """A metric's ``(steps, values)`` in step order."""
    points = sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))
    return [m.step for m in points], [m.value for m in points]


def model_accuracy(model, data) -> float:
    """Test accuracy of a reloaded torch model, computed like the engine (count / n)."""
    import torch

    with torch.no_grad():
        predictions = model(torch.from_numpy(data.x_test)).argmax(-1).numpy()
    return float((predictions == data.y_test).mean())



CPU_TORCH_INDEX_LINE = "--extra-index-url https://download.pytorch.org/whl/cpu"


def download_model(uri: str, model_id: str, directory: Path) -> Path:
    """Every file of the logged model ``model_id`` of the store ``uri``, into ``directory``."""
    import mlflow.artifacts

    with isolated_mlflow():
        mlflow.set_tracking_uri(uri)
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{model_id}",
                                                        dst_path=str(directory)))


def assert_pt2_with_installable_requirements(model: Path) -> None:
    """A logged lgals model's files: torch.export's pickle-free pt2, and requirements that
    install this torch build again (a CPU build from PyTorch's CPU index, not PyPI's CUDA one).

    MLflow's MLmodel names no format: the pytorch flavour's data folder holding ``model.pt2``
    alone (no ``model.pth``, no ``pickle_module_info.txt``) makes its loader take the pt2 path,
    which with pickle refused checks the archive for pickled records before loading it."""
    from importlib.metadata import version

    import mlflow.pytorch
    import torch
    import yaml

    mlmodel = yaml.safe_load((model / "MLmodel").read_text())
    assert mlmodel["flavors"]["pytorch"]["model_data"] == "data"
    assert mlmodel["flavors"]["pytorch"]["pytorch_version"] == torch.__version__
    assert mlmodel["flavors"]["python_function"]["loader_module"] == "mlflow.pytorch"
    assert sorted(p.name for p in (model / "data").iterdir()) == ["model.pt2"]
    saved = os.environ.get("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    try:
        assert isinstance(mlflow.pytorch.load_model(str(model)), torch.nn.Module)
    finally:
        if saved is None:
            os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION")
        else:
            os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = saved

    cpu_build = torch.version.cuda is None and torch.version.hip is None
    requirements = (model / "requirements.txt").read_text().splitlines()
    assert requirements == [f"mlflow=={version('mlflow')}",
                            *([CPU_TORCH_INDEX_LINE] if cpu_build else []),
                            f"torch=={torch.__version__.split('+')[0]}",
                            f"numpy=={version('numpy')}", f"pandas=={version('pandas')}"]
    assert yaml.safe_load((model / "conda.yaml").read_text())["dependencies"][-1] == {
        "pip": requirements}
    assert yaml.safe_load((model / "python_env.yaml").read_text())["dependencies"] == [
        "-r requirements.txt"]


def registry_state(client) -> dict[str, tuple[list[tuple[str, str, str]], str]]:
    """Each registered model of the store: its versions (version, seed run, source) and the
    version its alias ``best`` names (versions as strings: some stores give ints)."""
    return {model.name: (sorted((str(v.version), v.run_id, v.source) for v in
                                client.search_model_versions(f"name = '{model.name}'")),
                         str(client.get_model_version_by_alias(model.name, "best").version))
            for model in client.search_registered_models()}
