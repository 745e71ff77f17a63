"""What the benchmarks share: paired ratios with their spread, the device line, ``--json``.

This machine's speed drifts by up to 2x within a day, so a benchmark compares side by side in
one process, interleaves its repeats, and states a ratio between runs seconds apart.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch


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
