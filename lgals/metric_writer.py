"""Per-epoch metrics written to MLflow by a child process, off the training process's GIL.

MLflow's SQLAlchemy store spends ~60-200 us of pure Python per metric row. In a thread of
the training process (MLflow's own async logging) that work holds the GIL while the training
loop waits to dispatch its next torch op, and a 5-seed run paid 1.10-1.21x per epoch for it
(``benchmarks/tracking_overhead.py``). In a child process it only shares the cores.

The parent sends JSON lines on the child's stdin: ``{"uri", "run_id", "metrics": [[key, value,
timestamp, step], ...]}``, and ``{"sync": true}``, which the child answers on its stdout with
``ok`` once everything before it is stored, or ``error: <what failed>``. The child runs at
idle priority, ignores Ctrl-C (the parent ends the runs) and exits when its stdin closes,
after writing what it has.
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

MAX_METRICS_PER_BATCH = 1000  # MLflow's own limit for one log_batch call


class MetricWriter:
    """The parent's handle on one writer process, started on first use, one per process."""

    def __init__(self) -> None:
        self._process: subprocess.Popen | None = None
        self._owner = os.getpid()

    def _started(self) -> subprocess.Popen:
        # A forked child inherits this object: it gets a writer of its own, not the pipes.
        if self._process is None or self._owner != os.getpid():
            self._owner = os.getpid()
            self._process = subprocess.Popen(
                [sys.executable, "-m", "lgals.metric_writer"], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True, bufsize=1)
        return self._process

    def start(self) -> None:
        """Start the child now, so its ``import mlflow`` overlaps training."""
        self._started()

    def send(self, uri: str, run_id: str, rows: Sequence[tuple[str, float, int, int]]) -> None:
        """Queue metric ``rows`` ``(key, value, timestamp ms, step)`` for ``run_id`` in the
        store ``uri``."""
        if rows:
            self._write({"uri": _absolute(uri), "run_id": run_id, "metrics": list(rows)})

    def sync(self) -> None:
        """Return once the child has stored everything sent; raise if any write failed."""
        self._write({"sync": True})
        answer = self._started().stdout.readline().strip()
        if answer != "ok":
            raise RuntimeError(f"metric writer: {answer or 'exited unexpectedly'}")

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
            raise RuntimeError("metric writer: exited unexpectedly") from None


def _absolute(uri: str) -> str:
    """``sqlite:///mlflow.db`` is relative to the sender's working directory, which may have
    changed since the child started in it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not os.path.isabs(uri[len(prefix):]):
        return prefix + os.path.abspath(uri[len(prefix):])
    return uri


WRITER = MetricWriter()
atexit.register(WRITER.close)


def _yield_to_training() -> None:
    """Run only on cores training leaves idle, and catch up while a run waits at its final
    sync: a niced writer still takes its share of a busy core from training's threads
    (``benchmarks/tracking_overhead.py`` compares the two)."""
    if hasattr(os, "SCHED_IDLE"):  # Linux
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)


def main() -> None:
    """The child: read messages as they come (a full pipe would stall the parent), write them
    in order once mlflow is imported."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _yield_to_training()
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in sys.stdin:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    from mlflow import MlflowClient
    from mlflow.entities import Metric

    clients: dict[str, MlflowClient] = {}
    error = ""
    while (line := lines.get()) is not None:
        message = json.loads(line)
        if message.get("sync"):
            print(f"error: {error}" if error else "ok", flush=True)
            error = ""
            continue
        uri, metrics = message["uri"], [Metric(*row) for row in message["metrics"]]
        try:
            if uri not in clients:
                clients[uri] = MlflowClient(uri)
            for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
                clients[uri].log_batch(message["run_id"],
                                       metrics=metrics[start:start + MAX_METRICS_PER_BATCH])
        except Exception as failure:  # the first is reported to the parent at its next sync
            first_line = (str(failure).splitlines() or [""])[0]
            error = error or f"{type(failure).__name__}: {first_line}"


if __name__ == "__main__":
    main()
