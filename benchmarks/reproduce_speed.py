"""Where the time of ``lgals reproduce`` goes (the full default protocol, tracked).

Runs the real pipeline in a fresh temporary MLflow store: 3 modes x 20 trials x 100 epochs
of tuning, 3 modes x 5 seeds x 100 epochs of evaluation, the report. For each stage it
prints the wall time, the part spent in training epochs (sum of logged ``epoch_seconds``;
an evaluation stack's epoch time counts once for its seeds) and the rest: MLflow logging,
models, figures, Optuna, data. Target: the whole protocol <= 6 minutes.

    python benchmarks/reproduce_speed.py [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def training_seconds(experiment_id: str, stage: str) -> float:
    """Sum of epoch wall times of a stage's runs, one stack counted once."""
    import mlflow

    from lgals.tracking import mlflow_client

    runs = mlflow.search_runs([experiment_id], f"tags.`lgals.stage` = '{stage}' "
                              "and tags.`lgals.seed` != ''", output_format="list")
    stacks = {}
    for run in runs:
        key = run.data.tags.get("mlflow.parentRunId") if stage == "evaluate" else run.info.run_id
        if key not in stacks:
            history = mlflow_client().get_metric_history(run.info.run_id, "epoch_seconds")
            stacks[key] = sum(m.value for m in history)
    return sum(stacks.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, help="keep the report here (default: discarded)")
    args = parser.parse_args()

    from lgals import tracking
    from lgals.report import reproduce

    with tempfile.TemporaryDirectory() as tmp:
        experiment_id = tracking.connect(f"sqlite:///{Path(tmp) / 'mlflow.db'}", "bench")
        timings = reproduce(experiment_id, args.out or Path(tmp) / "results", quick=args.quick,
                            storage=f"sqlite:///{Path(tmp) / 'optuna.db'}", echo=print)
        training = {"tuning": training_seconds(experiment_id, "trial"),
                    "evaluation": training_seconds(experiment_id, "evaluate"), "report": 0.0}

    total = sum(timings.values())
    print(f"lgals reproduce{' --quick' if args.quick else ''}, tracked, fresh store\n")
    print("| stage | wall s | training s | tracking, Optuna and the rest s |")
    print("|---|---|---|---|")
    for stage, wall in timings.items():
        print(f"| {stage} | {wall:.1f} | {training[stage]:.1f} | {wall - training[stage]:.1f} |")
    print(f"| total | {total:.1f} | {sum(training.values()):.1f} | "
          f"{total - sum(training.values()):.1f} |\n")
    if not args.quick:
        print(f"target <= 360 s: {'PASS' if total <= 360 else 'FAIL'}")


if __name__ == "__main__":
    main()
