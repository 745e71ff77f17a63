"""What the benchmarks share: the targets, interleaved repeats, paired ratios with their
spread, the device line, ``--json``.

This machine's speed drifts by up to 2x within a day, so a benchmark compares side by side in
one process, interleaves its repeats, and states a ratio between runs seconds apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Hashable, Sequence

import torch

# The targets the issues set, each checked (PASS/FAIL) by the benchmark named beside it.
ENGINE_SPEEDUP = 3.0  # train_speed: 5 stacked seeds vs the plain loop, per seed, at least
LGALS_STEP_OVERHEAD = 1.05  # train_speed: an LGALS step vs a baseline step, at most
TUNE_SPEEDUP, TUNE_SPEEDUP_STRETCH = 2.5, 3.0  # tune_speed: --batch K vs --batch 1, at least
REPRODUCE_WALL_RATIO = 0.5  # reproduce_speed: --batch K wall / --batch 1 wall, at most
REPRODUCE_OUTSIDE_SHARE = 0.20  # reproduce_speed: share of the wall outside training, at most
TRACKING_EPOCH_OVERHEAD = 1.10  # tracking_overhead: tracked / untracked epoch, at most
TRACKING_COMMAND_CUT = 0.5  # tracking_overhead: a command's added seconds vs before, at most
SUITE_ALL_SECONDS = 15 * 60  # reproduce_speed --suite all: the whole protocol's wall, at most
ROBUST_SECONDS = 20 * 60  # reproduce_speed --protocol robust: the whole protocol, at most
ROBUST_DEFAULT_SECONDS = 6 * 60  # the robust protocol's wall for it to be reproduce's default
ROBUST_WALL_RATIO = 0.3  # robust_speed: now / before (a checkout from before issue 25), at most
ROBUST_OUTSIDE_SHARE = 0.15  # robust_speed: share of the robust wall outside training, at most
SWEEP_SECONDS = 30 * 60  # sweep_speed: `lgals sweep` at its defaults, at most
DIAGNOSE_SECONDS = 60  # diagnose_speed: `lgals diagnose` at its defaults, at most
DETECTION_EPOCH_SHARE = 0.05  # diagnose_speed: the detection scores' share of an epoch, at most


def interleaved(variants: Sequence[Hashable], repeats: int,
                measure: Callable[[Hashable, int], float]) -> dict[Hashable, list[float]]:
    """``measure(variant, repeat)`` for every variant in every repeat, the order reversed on
    odd repeats, so that a drift of the machine's speed falls on every variant alike."""
    values: dict[Hashable, list[float]] = {variant: [] for variant in variants}
    for repeat in range(repeats):
        for variant in variants if repeat % 2 == 0 else list(variants)[::-1]:
            values[variant].append(measure(variant, repeat))
        print(f"repeat {repeat + 1}/{repeats} done", end="\r", file=sys.stderr)
    return values


def interleaved_medians(variants: Sequence[Hashable], repeats: int,
                        measure: Callable[[Hashable, int], float]) -> dict[Hashable, float]:
    """The median over repeats of each variant's :func:`interleaved` measurements."""
    values = interleaved(variants, repeats, measure)
    return {variant: statistics.median(values[variant]) for variant in variants}


def paired_ratio(num: list[float], den: list[float]) -> tuple[float, float, float]:
    """Median and interquartile range of the per-repeat ratios ``num[i] / den[i]``."""
    ratios = [a / b for a, b in zip(num, den)]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    q1, median, q3 = statistics.quantiles(ratios, n=4, method="inclusive")
    return median, q1, q3


def machine() -> dict:
    """Where a benchmark ran: the device, torch's threads, the cores and the load."""
    device = (torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    return {"device": device, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0]}


def describe_machine(info: dict) -> str:
    return (f"device {info['device']}, torch {info['torch']}, {info['threads']} torch threads, "
            f"{info['cpus']} cpus, load {info['load_avg_1min']:.1f}")


def parser(doc: str) -> argparse.ArgumentParser:
    """An argument parser with the common ``--json`` flag."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--json", action="store_true",
                        help="print one JSON document instead of the tables")
    return parser


def emit_json(document: dict) -> None:
    json.dump(document, sys.stdout, indent=1)
    sys.stdout.write("\n")


def mlflow_async_logger() -> type:
    """lgals' per-epoch logger with MLflow's own async logging (``log_batch(synchronous=False)``,
    a thread of this process) in place of the writer process; ``wait()`` for what it sent."""
    import mlflow
    from mlflow.entities import Metric

    from lgals.tracking.seeds import EpochLogger

    class AsyncLogger(EpochLogger):
        def __init__(self, run_ids, flush_seconds):
            super().__init__(run_ids, flush_seconds)
            self.operations = []

        def flush(self):
            client = mlflow.MlflowClient()
            for run_id, metrics in zip(self.run_ids, self.pending):
                if metrics:
                    self.operations.append(client.log_batch(
                        run_id, metrics=[Metric(*row) for row in metrics], synchronous=False))
                metrics.clear()
            self.last_flush = time.monotonic()

        def wait(self):
            for operation in self.operations:
                operation.wait()

    return AsyncLogger


def training_seconds(client, run_ids: list[str]) -> float:
    """Seconds spent in training epochs by these runs, each stack counted once.

    Members trained together log the same ``epoch_seconds`` (the stack's), so the sum is
    over distinct (step, value) points: runs that are one computation count once.
    """
    points = {(m.step, m.value) for run_id in run_ids
              for m in client.get_metric_history(run_id, "epoch_seconds")}
    return sum(value for _, value in points)


def run_command(argv: list[str], cwd) -> tuple[float, float, str]:
    """Run a command; return its wall seconds, its peak RSS in MiB (the command's own
    process, from ``wait4``) and its stdout. Exits with the command's stderr if it fails."""
    import os
    import subprocess
    import tempfile
    import time

    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, cwd=cwd, stdout=out, stderr=err, text=True)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}):\n"
                             f"{err.read()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()
