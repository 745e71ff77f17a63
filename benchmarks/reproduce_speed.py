"""Where the time of ``lgals reproduce`` goes, with the default --batch and with --batch 1.

Runs the real pipeline (``lgals.pipeline.reproduce``, tracked) in fresh temporary stores, once
per batch size, one after the other in this process: 3 modes x 20 trials x 100 epochs of
tuning, 3 modes x 5 seeds x 100 epochs of evaluation, the report. For each stage it prints
the wall time, the part spent in training epochs (the sum of logged ``epoch_seconds``, a
stack counted once) and the rest: MLflow logging, models, figures, Optuna, data. Targets:
the default batch takes <= 0.5x the wall of --batch 1, and <= 20% of its wall is spent
outside training. ``--suite all`` runs the twelve modes instead of the paper's three (target:
<= 15 minutes with the default batch); ``--protocol robust`` runs 5 repetitions x 10 seeds
(target: <= 20 minutes with the default batch); ``--keep DIR`` keeps the first run's stores
there (``lgals report`` / ``diagnose`` can then use them).

    python benchmarks/reproduce_speed.py [--protocol P] [--suite S] [--batches 10,1]
        [--out DIR] [--keep DIR] [--json]
"""

from __future__ import annotations

import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from common import (
    REPRODUCE_OUTSIDE_SHARE,
    REPRODUCE_WALL_RATIO,
    ROBUST_SECONDS,
    SUITE_ALL_SECONDS,
    describe_machine,
    emit_json,
    machine,
    parser,
    training_seconds,
)

from lgals.losses import SUITES
from lgals.pipeline import reproduce
from lgals.protocols import PROTOCOLS
from lgals.schema import SEED, Stage, runs_filter
from lgals.tracking.store import connect, mlflow_client
from lgals.tuning import DEFAULT_BATCH


def stage_training(experiment_id: str, stage: Stage) -> float:
    runs = mlflow_client().search_runs(
        [experiment_id], runs_filter(stage, has=(SEED,)))
    return training_seconds(mlflow_client(), [r.info.run_id for r in runs])


def reproduce_once(directory: Path, batch: int, protocol: str, out: Path | None,
                   suite: str) -> dict:
    home = Path.cwd()
    os.chdir(directory)  # the new experiment keeps its artifacts beside its stores
    try:
        experiment_id = connect(f"sqlite:///{directory / 'mlflow.db'}", "bench")
        protocol = dataclasses.replace(PROTOCOLS[protocol], batch=batch, suite=suite)
        timings = reproduce(experiment_id, out or directory / "results", protocol,
                            storage=f"sqlite:///{directory / 'optuna.db'}",
                            echo=lambda line: print(line, file=sys.stderr))
    finally:
        os.chdir(home)
    # the diagnosis logs no epoch times: all of it counts as outside training
    training = {"tuning": stage_training(experiment_id, Stage.TRIAL),
                "evaluation": stage_training(experiment_id, Stage.EVALUATE), "diagnosis": 0.0,
                "report": 0.0}
    stages = {stage: {"wall_s": wall, "training_s": training[stage]}
              for stage, wall in timings.items()}
    wall, train = sum(timings.values()), sum(training.values())
    return {"batch": batch, "stages": stages, "wall_s": wall, "training_s": train,
            "outside_share": (wall - train) / wall}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--protocol", choices=list(PROTOCOLS), default="claim")
    cli.add_argument("--batches", default=f"{DEFAULT_BATCH},1", help="run in this order")
    cli.add_argument("--suite", choices=list(SUITES), default="paper")
    cli.add_argument("--out", type=Path,
                     help="keep the report of the first batch size here (default: discarded)")
    cli.add_argument("--keep", type=Path,
                     help="keep the stores of the first batch size here (an empty directory)")
    args = cli.parse_args()
    info = machine()
    rows = []
    for i, batch in enumerate(int(b) for b in args.batches.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            directory = (args.keep if args.keep and i == 0 else Path(tmp)).resolve()
            directory.mkdir(parents=True, exist_ok=True)
            rows.append(reproduce_once(directory, batch, args.protocol,
                                       args.out.resolve() if args.out and i == 0 else None,
                                       args.suite))
    document = {"machine": info, "protocol": args.protocol, "suite": args.suite, "rows": rows}
    if args.json:
        emit_json(document)
        return
    print(f"lgals reproduce --protocol {args.protocol} --suite {args.suite}, tracked, "
          f"fresh stores; {describe_machine(info)}\n")
    print("| --batch | stage | wall s | training s | outside training s |")
    print("|---|---|---|---|---|")
    for row in rows:
        for stage, t in row["stages"].items():
            print(f"| {row['batch']} | {stage} | {t['wall_s']:.1f} | {t['training_s']:.1f} | "
                  f"{t['wall_s'] - t['training_s']:.1f} |")
        print(f"| {row['batch']} | **total** | {row['wall_s']:.1f} | {row['training_s']:.1f} | "
              f"{row['wall_s'] - row['training_s']:.1f} ({100 * row['outside_share']:.0f}%) |")
    wall = rows[0]["wall_s"]
    if args.suite == "all" and args.protocol == "claim":
        print(f"\n{'PASS' if wall <= SUITE_ALL_SECONDS else 'FAIL'}: --suite all takes "
              f"{wall / 60:.1f} min (target <= {SUITE_ALL_SECONDS / 60:.0f} min)")
    if args.suite == "paper" and args.protocol == "robust":
        print(f"\n{'PASS' if wall <= ROBUST_SECONDS else 'FAIL'}: --protocol robust takes "
              f"{wall / 60:.1f} min (target <= {ROBUST_SECONDS / 60:.0f} min)")
    if args.protocol != "claim" or len(rows) < 2:
        return
    first, *_, one = rows
    ratio = first["wall_s"] / one["wall_s"]
    verdict = "PASS" if ratio <= REPRODUCE_WALL_RATIO else "FAIL"
    print(f"\n{verdict}: --batch {first['batch']} takes {ratio:.2f}x the wall of --batch "
          f"{one['batch']} (target <= {REPRODUCE_WALL_RATIO}x)")
    share = first["outside_share"]
    print(f"{'PASS' if share <= REPRODUCE_OUTSIDE_SHARE else 'FAIL'}: {100 * share:.0f}% of the "
          f"wall outside training (target <= {100 * REPRODUCE_OUTSIDE_SHARE:.0f}%)")


if __name__ == "__main__":
    main()
