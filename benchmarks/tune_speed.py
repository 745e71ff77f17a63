"""``lgals tune --mode all`` with the default --batch against --batch 1, side by side, at each
precision.

Each setting runs the real command in a fresh directory (fresh MLflow and Optuna stores, so
start-up, store creation and figures count), one after the other in this one benchmark run.
It prints the wall time, the trials by state, the training time (the sum of epoch times, a
stack counted once) and the rest (MLflow, Optuna, start-up), the peak RSS, and the speed-up
of the default batch over one trial at a time at the same precision. Target: >= 2.5x
(stretch 3x) at each precision.

    python benchmarks/tune_speed.py [--n-trials 20] [--epochs 100] [--batches 10,1]
        [--precisions fp32,bf16] [--json]
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import optuna
from common import (
    TUNE_SPEEDUP,
    TUNE_SPEEDUP_STRETCH,
    describe_machine,
    emit_json,
    machine,
    parser,
    run_command,
    training_seconds,
)
from mlflow import MlflowClient

from lgals.losses import SUITES
from lgals.schema import Stage, runs_filter
from lgals.tuning import DEFAULT_BATCH, TuneSettings


def tune_once(directory: Path, n_trials: int, epochs: int, batch: int, precision: str) -> dict:
    """One ``lgals tune --mode all`` in ``directory``: wall, peak RSS, trials, training."""
    lgals = str(Path(sys.executable).parent / "lgals")
    uri, storage = f"sqlite:///{directory / 'mlflow.db'}", f"sqlite:///{directory / 'optuna.db'}"
    wall, rss, _ = run_command([lgals, "tune", "--mode", "all", "--n-trials", str(n_trials),
                                "--epochs", str(epochs), "--batch", str(batch),
                                "--precision", precision,
                                "--tracking-uri", uri, "--storage", storage], directory)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lgals")
    trial_runs = client.search_runs([experiment.experiment_id], runs_filter(Stage.TRIAL))
    states = {"COMPLETE": 0, "PRUNED": 0, "FAIL": 0}
    for mode in SUITES["paper"]:  # what `--mode all` tunes
        name = TuneSettings(mode=mode, epochs=epochs, precision=precision).study_name
        for trial in optuna.load_study(study_name=name, storage=storage).trials:
            states[trial.state.name] += 1
    training = training_seconds(client, [r.info.run_id for r in trial_runs])
    return {"precision": precision, "batch": batch, "wall_s": wall, "training_s": training,
            "other_s": wall - training, "peak_rss_mib": rss, "trials": states}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--n-trials", type=int, default=20)
    cli.add_argument("--epochs", type=int, default=100)
    cli.add_argument("--batches", default=f"{DEFAULT_BATCH},1",
                     help="batch sizes, run in this order")
    cli.add_argument("--precisions", default="fp32,bf16", help="each with every batch size")
    args = cli.parse_args()
    info = machine()
    rows = []
    for precision in args.precisions.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            directory = Path(tempfile.mkdtemp(prefix=f"tune-speed-{precision}-{batch}-"))
            try:
                rows.append(tune_once(directory, args.n_trials, args.epochs, batch, precision))
            finally:
                shutil.rmtree(directory)
            print(f"{precision} --batch {batch}: {rows[-1]['wall_s']:.1f} s", file=sys.stderr)
    for row in rows:
        one = next((r for r in rows if r["batch"] == 1 and r["precision"] == row["precision"]),
                   None)
        row["speedup_vs_batch_1"] = one["wall_s"] / row["wall_s"] if one else None
    document = {"machine": info, "n_trials": args.n_trials, "epochs": args.epochs,
                "rows": rows, "target": TUNE_SPEEDUP, "stretch": TUNE_SPEEDUP_STRETCH}
    if args.json:
        emit_json(document)
        return
    print(f"tune --mode all --n-trials {args.n_trials} --epochs {args.epochs}, tracked, fresh "
          f"stores; {describe_machine(info)}\n")
    print("| precision | --batch | wall s | complete / pruned / failed | training s | other s | "
          "peak RSS MiB | speed-up vs --batch 1 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        trials = row["trials"]
        speedup = f"{row['speedup_vs_batch_1']:.2f}x" if row["speedup_vs_batch_1"] else ""
        print(f"| {row['precision']} | {row['batch']} | {row['wall_s']:.1f} | "
              f"{trials['COMPLETE']} / "
              f"{trials['PRUNED']} / {trials['FAIL']} | {row['training_s']:.1f} | "
              f"{row['other_s']:.1f} | {row['peak_rss_mib']:.0f} | {speedup} |")
    for row in rows:
        if row["batch"] != 1 and row["speedup_vs_batch_1"]:
            verdict = "PASS" if row["speedup_vs_batch_1"] >= TUNE_SPEEDUP else "FAIL"
            print(f"{verdict}: {row['precision']} --batch {row['batch']} is "
                  f"{row['speedup_vs_batch_1']:.2f}x faster than --batch 1 (target >= "
                  f"{TUNE_SPEEDUP}x, stretch {TUNE_SPEEDUP_STRETCH}x)")


if __name__ == "__main__":
    main()
