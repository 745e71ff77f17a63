"""The robust protocol now against the same protocol on an earlier checkout, interleaved.

Each variant runs ``lgals.pipeline.reproduce`` with the robust protocol (5 repetitions x 10
seeds, 20 trials per mode, tracked, fresh stores) in a process of its own: ``now fp32`` and
``now bf16`` with this checkout's lgals at each of ``--precisions``, ``before`` with the lgals
of ``--before DIR`` (a checkout, e.g. ``git worktree add /tmp/before 5874cc6``; it knows no
precision). The variants alternate over ``--repeats``, so a drift of the machine falls on
all; ``--epochs`` shortens every training run alike (the full protocol's 100 epochs take too
long to repeat; the ratio is what is measured). It prints each run's wall seconds, the
paired ratio of each ``now`` to ``before``, and the share of each wall spent outside
training epochs (the diagnostic's training logs no epoch times: it counts as outside).
Targets: <= 0.3x the wall of ``before``; <= 15% of the wall outside training.

    python benchmarks/robust_speed.py --before DIR [--epochs 20] [--repeats 3]
        [--precisions fp32,bf16] [--json]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import (
    ROBUST_OUTSIDE_SHARE,
    ROBUST_WALL_RATIO,
    describe_machine,
    emit_json,
    interleaved,
    machine,
    paired_ratio,
    parser,
)

# Runs in the variant's process, with its lgals first on the path; prints one JSON line.
DRIVER = """
import dataclasses, json, sys, time
from pathlib import Path
from lgals.pipeline import reproduce
from lgals.protocols import ROBUST
from lgals.tracking.store import connect, mlflow_client

directory, epochs, precision = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
protocol = dataclasses.replace(ROBUST, epochs=epochs)
if precision != "-":
    protocol = dataclasses.replace(protocol, precision=precision)
experiment_id = connect(f"sqlite:///{directory / 'mlflow.db'}", "bench")
started = time.perf_counter()
timings = reproduce(experiment_id, directory / "results", protocol,
                    storage=f"sqlite:///{directory / 'optuna.db'}", echo=lambda line: None)
wall = time.perf_counter() - started
client = mlflow_client()
runs = client.search_runs([experiment_id], "tags.`lgals.seed` != ''", max_results=5000)
# members trained together log their stack's epoch time: each counted once
points = {(m.step, m.value) for r in runs
          for m in client.get_metric_history(r.info.run_id, "epoch_seconds")}
print("RESULT " + json.dumps({"wall_s": wall, "stages": timings,
                              "training_s": sum(v for _, v in points)}))
"""


def run_variant(variant: str, before: Path, epochs: int) -> dict:
    """``before``, or ``now <precision>``."""
    env = {**os.environ, "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}
    if variant == "before":
        env["PYTHONPATH"] = str(before)
    with tempfile.TemporaryDirectory(prefix="robust-") as tmp:
        process = subprocess.run(
            [sys.executable, "-c", DRIVER, tmp, str(epochs),
             variant.removeprefix("now ") if variant != "before" else "-"],
            env=env, cwd=tmp, capture_output=True, text=True)
    if process.returncode != 0:
        raise SystemExit(f"{variant} failed:\n{process.stderr[-3000:]}")
    line = next(ln for ln in process.stdout.splitlines() if ln.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--before", type=Path, required=True, help="a checkout of earlier lgals")
    cli.add_argument("--epochs", type=int, default=20)
    cli.add_argument("--repeats", type=int, default=3)
    cli.add_argument("--precisions", default="fp32,bf16", help="of the `now` runs")
    args = cli.parse_args()
    info = machine()
    variants = ["before", *(f"now {p}" for p in args.precisions.split(","))]
    found: dict[str, list[dict]] = {variant: [] for variant in variants}

    def measure(variant: str, _: int) -> float:
        result = run_variant(variant, args.before.resolve(), args.epochs)
        found[variant].append(result)
        return result["wall_s"]

    walls = interleaved(variants, args.repeats, measure)
    ratios = {variant: paired_ratio(walls[variant], walls["before"])
              for variant in variants[1:]}
    outside = {variant: statistics.median(1 - r["training_s"] / r["wall_s"] for r in runs)
               for variant, runs in found.items()}
    document = {"machine": info, "before": str(args.before), "epochs": args.epochs,
                "runs": found, "ratios": ratios, "outside_share": outside,
                "target_ratio": ROBUST_WALL_RATIO, "target_outside": ROBUST_OUTSIDE_SHARE}
    if args.json:
        emit_json(document)
        return
    print(f"robust protocol at {args.epochs} epochs, tracked, fresh stores, {args.repeats} "
          f"interleaved repeats; before = {args.before}; {describe_machine(info)}\n")
    print("| variant | wall s (each repeat) | median | training s (median) | outside training |")
    print("|---|---|---|---|---|")
    for variant, runs in found.items():
        each = ", ".join(f"{r['wall_s']:.0f}" for r in runs)
        print(f"| {variant} | {each} | "
              f"{statistics.median(walls[variant]):.0f} | "
              f"{statistics.median(r['training_s'] for r in runs):.0f} | "
              f"{100 * outside[variant]:.0f}% |")
    print()
    for variant, (ratio, q1, q3) in ratios.items():
        print(f"{'PASS' if ratio <= ROBUST_WALL_RATIO else 'FAIL'}: {variant} takes "
              f"{ratio:.2f}x [IQR {q1:.2f}, {q3:.2f}] the wall of before (target <= "
              f"{ROBUST_WALL_RATIO}x); {100 * outside[variant]:.0f}% of it outside training "
              f"(target <= {100 * ROBUST_OUTSIDE_SHARE:.0f}%)")


if __name__ == "__main__":
    main()
