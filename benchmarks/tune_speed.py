"""Wall time of ``lgals tune --mode all`` (tracked, default protocol) on this machine.

Runs the real tuning path in a fresh temporary MLflow store and Optuna storage and prints,
per mode, the wall time, the trials by state and the share spent training (the sum of the
trials' epoch times) versus everything else (MLflow, Optuna, data). Target: 20 trials per
mode at 100 epochs, all three modes, <= 4 minutes.

    python benchmarks/tune_speed.py [--n-trials 20] [--epochs 100] [--workers 1]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-trials", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()

    import mlflow

    from lgals import tracking
    from lgals.losses import MODES
    from lgals.tuning import TuneSettings, tune_modes

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        experiment_id = tracking.connect(f"sqlite:///{Path(tmp) / 'mlflow.db'}", "bench")
        rows = []
        for mode in MODES:
            settings = TuneSettings(mode=mode, n_trials=args.n_trials, epochs=args.epochs)
            t = time.perf_counter()
            (summary,) = tune_modes([settings], experiment_id, workers=args.workers)
            wall = time.perf_counter() - t
            trials = mlflow.search_runs(
                [experiment_id], f"tags.`lgals.stage` = 'trial' and tags.`lgals.mode` = '{mode}'")
            training = sum(sum(m.value for m in tracking.mlflow_client().get_metric_history(
                run_id, "epoch_seconds")) for run_id in trials["run_id"])
            rows.append((mode, wall, summary, training))
        total = time.perf_counter() - started

    print(f"tune --mode all --n-trials {args.n_trials} --epochs {args.epochs} "
          f"--workers {args.workers}, tracked\n")
    print("| mode | wall s | complete | pruned | failed | training s | other s |")
    print("|---|---|---|---|---|---|---|")
    for mode, wall, summary, training in rows:
        print(f"| {MODES[mode].label} | {wall:.1f} | {summary['n_complete']} | "
              f"{summary['n_pruned']} | {summary['n_fail']} | {training:.1f} | "
              f"{wall - training:.1f} |")
    verdict = "PASS" if total <= 240 else "FAIL"
    print(f"| total (incl. store set-up) | {total:.1f} | | | | | |\n")
    print(f"target <= 240 s: {verdict}")


if __name__ == "__main__":
    main()
