"""MLflow writes done by a child process, off the training process's GIL and in parallel.

MLflow's SQLAlchemy store spends hundreds of microseconds of pure Python per metric row. In a
thread of the training process (MLflow's own async logging) that work holds the GIL while the
training loop waits to dispatch its next torch op; in a child process it runs beside training.
The child runs at the default priority: at Linux's idle priority it took only what training
left of the cores, and on a busy machine the curves in the UI fell up to a minute behind
training (``benchmarks/live_curves.py`` measures the lag of each choice). After training the
child draws and logs the heat-map figures and logs the artifact files while the training
process exports the models: the two halves of a run's last seconds overlap.

The parent sends JSON lines on the child's stdin, each naming the store ``uri`` and, but for
``{"uri"}`` alone (open the store now), the ``run_id`` and one of ``"metrics": [[key, value,
timestamp, step], ...]``, ``"artifacts": [path, ...]`` or ``"figure": {"histograms": npz path,
"title": ...}``; and ``{"sync": true}``, which the child answers on its stdout with ``ok`` once
everything before it is stored, or ``error: <what failed>``. The child imports MLflow (and,
for figures, matplotlib) as soon as it starts, while the parent still gets ready; it ignores
Ctrl-C (the parent ends the runs) and exits when its stdin closes, after writing what it has.
This module imports neither torch nor mlflow at the top: the child starts light.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence

from lgals.errors import LgalsError

PRIORITY = "0"  # the default nice value: see the module's docstring


class WriterDied(LgalsError):
    """The writer process is gone (killed, out of memory, crashed): what it held is lost.
    ``death`` says how it went."""

    def __init__(self, death: str, lost: str = "what it had not stored is lost: run the "
                                                "command again"):
        super().__init__(f"{death}: {lost}")
        self.death = death


def _death(process: subprocess.Popen) -> str:
    """How the child went: its signal or exit code (it closed its pipes as it died)."""
    try:
        code = process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        return f"the MLflow writer process (pid {process.pid}) stopped reading"
    if code < 0:
        try:
            name = f" ({signal.Signals(-code).name})"
        except ValueError:
            name = ""
        return f"the MLflow writer process (pid {process.pid}) was killed by signal {-code}{name}"
    return f"the MLflow writer process (pid {process.pid}) exited with code {code}"


class MlflowWriter:
    """The parent's handle on one writer process, started on first use, one per process.

    ``priority``: the child's CPU priority, ``"idle"`` (Linux's ``SCHED_IDLE``: only cores
    training leaves idle) or a nice value ``"0"``-``"19"``; read when the child starts."""

    def __init__(self, priority: str = PRIORITY) -> None:
        self._process: subprocess.Popen | None = None
        self._owner = os.getpid()
        self.priority = priority

    def _started(self, figures: bool = False) -> subprocess.Popen:
        # A forked child inherits this object: it gets a writer of its own, not the pipes.
        if self._process is None or self._owner != os.getpid():
            self._owner = os.getpid()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "lgals.tracking.writer", self.priority,
                 *(["--figures"] * figures)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        return self._process

    def start(self, figures: bool = False) -> None:
        """Start the child now, so that its imports (matplotlib's too, with ``figures``)
        overlap the parent's work."""
        self._started(figures)

    def open(self, uri: str) -> None:
        """Have the child open the store ``uri`` now, before its first write needs it."""
        self._write({"uri": _absolute(uri)})

    def send(self, uri: str, run_id: str, rows: Sequence[tuple[str, float, int, int]]) -> None:
        """Queue metric ``rows`` ``(key, value, timestamp ms, step)`` for ``run_id`` in the
        store ``uri``."""
        if rows:
            self._write({"uri": _absolute(uri), "run_id": run_id, "metrics": list(rows)})

    def log_artifacts(self, uri: str, run_id: str, paths: Sequence[str]) -> None:
        """Queue files to log at the run's artifact root; they must exist until :meth:`sync`."""
        self._write({"uri": _absolute(uri), "run_id": run_id, "artifacts": list(paths)})

    def log_heatmaps(self, uri: str, run_id: str, histograms: str, title: str) -> None:
        """Queue the heat-map figure of an ``epsilon_distributions.npz`` file (which must exist
        until :meth:`sync`) as the run's ``epsilon_distributions.png``."""
        self._write({"uri": _absolute(uri), "run_id": run_id,
                     "figure": {"histograms": histograms, "title": title}})

    def sync(self) -> None:
        """Return once the child has stored everything sent; raise if any write failed."""
        self._write({"sync": True})
        process = self._started()
        answer = process.stdout.readline().strip()
        if not answer:
            raise WriterDied(_death(process))
        if answer != "ok":
            raise RuntimeError(f"MLflow writer: {answer}")

    def close(self, timeout: float = 60) -> None:
        """Let the child finish what it has and exit."""
        if self._process is not None and self._owner == os.getpid():
            try:
                self._process.stdin.close()
            except BrokenPipeError:  # it died with a line unread: nothing more to wait for
                pass
            try:
                self._process.wait(timeout)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process.stdout.close()
        self._process = None

    def _write(self, message: dict) -> None:
        process = self._started()
        try:
            process.stdin.write(json.dumps(message) + "\n")
        except BrokenPipeError:
            raise WriterDied(_death(process)) from None


def _absolute(uri: str) -> str:
    """``sqlite:///mlflow.db`` is relative to the sender's working directory, which may have
    changed since the child started in it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not os.path.isabs(uri[len(prefix):]):
        return prefix + os.path.abspath(uri[len(prefix):])
    return uri


WRITER = MlflowWriter()
atexit.register(WRITER.close)


def _set_priority(priority: str) -> None:
    """``"idle"``: run only on cores training leaves idle (a niced writer still takes its
    share of a busy core from training's threads); else that nice value."""
    if priority == "idle" and hasattr(os, "SCHED_IDLE"):  # Linux
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    elif priority != "0":
        os.nice(19 if priority == "idle" else int(priority))


def _heatmaps(client, run_id: str, histograms: str, title: str) -> None:
    import matplotlib.pyplot as plt
    import numpy as np

    from lgals.plots import distribution_heatmaps

    with np.load(histograms, allow_pickle=False) as saved:
        counts = {name: saved[f"{name}_counts"] for name in ("eps", "alignment")}
        edges = {name: saved[f"{name}_edges"] for name in ("eps", "alignment")}
    figure = distribution_heatmaps(counts, edges, title)
    try:
        client.log_figure(run_id, figure, "epsilon_distributions.png")
    finally:
        plt.close(figure)


def local_artifact_dir(artifact_uri: str):
    """The directory behind a local artifact location (a path or ``file:``); None for one a
    server holds."""
    from pathlib import Path

    from mlflow.utils.file_utils import get_local_path_or_none

    path = get_local_path_or_none(artifact_uri)
    return Path(path) if path else None


def _remove_partial_files(client, run_id: str | None, message: dict) -> None:
    """Delete what a failed write (a full disk) left half-copied into a local artifact store:
    a logged file whose size is not its source's, and the figure being logged."""
    if client is None or run_id is None:
        return
    sizes = {os.path.basename(path): os.path.getsize(path)
             for path in message.get("artifacts", ()) if os.path.exists(path)}
    if "figure" in message:
        sizes["epsilon_distributions.png"] = -1  # failed while logged: never complete
    try:
        root = local_artifact_dir(client.get_run(run_id).info.artifact_uri)
    except Exception:  # the store itself is unreadable: the run's files cannot be found
        return
    if root is None:  # a server's artifact store cleans up after its own uploads
        return
    for name, size in sizes.items():
        if (root / name).is_file() and (root / name).stat().st_size != size:
            (root / name).unlink()


def main(argv: Sequence[str] = sys.argv[1:]) -> None:
    """The child (``argv``: its priority, then ``--figures`` to import matplotlib now): read
    messages as they come (a full pipe would stall the parent), write them
    in order once mlflow is imported."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    from lgals.tracking.deadline import install

    install()  # the parent's wait for a server that stopped answering, in this process too

    if "--figures" in argv:
        import matplotlib

        matplotlib.use("Agg")
        import lgals.plots  # noqa: F401
    _set_priority(argv[0])
    clients: dict[str, MlflowClient] = {}
    error = ""
    while (line := lines.get()) is not None:
        try:
            message = json.loads(line)
        except json.JSONDecodeError:  # a parent interrupted mid-message left half of one
            continue
        if message.get("sync"):
            print(f"error: {error}" if error else "ok", flush=True)
            error = ""
            continue
        uri, run_id = message["uri"], message.get("run_id")
        try:
            if uri not in clients:
                clients[uri] = MlflowClient(uri)
                clients[uri].search_experiments(max_results=1)  # opens the store
            client = clients[uri]
            if "metrics" in message:  # MLflow splits it into batches of its limit
                client.log_batch(run_id, metrics=[Metric(*row) for row in message["metrics"]])
            for path in message.get("artifacts", ()):
                client.log_artifact(run_id, path)
            if "figure" in message:
                _heatmaps(client, run_id, **message["figure"])
        except Exception as failure:  # the first is reported to the parent at its next sync
            _remove_partial_files(clients.get(uri), run_id, message)
            first_line = (str(failure).splitlines() or [""])[0]
            error = error or f"{type(failure).__name__}: {first_line}"
    # Every write is stored; tearing MLflow's and matplotlib's modules down would only keep
    # the parent waiting at its exit.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
