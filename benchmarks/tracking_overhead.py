"""What MLflow tracking costs a training run.

Per epoch: the same 5-seed training untracked, tracked as lgals tracks (metrics buffered and
handed to the writer process, histograms computed every epoch), and tracked with MLflow's own
in-process async logging instead (``log_batch(synchronous=False)``, lgals' previous design),
in short runs interleaved in one process (order alternating, since this machine's speed
drifts); the median of the paired ratios of their training wall times is the per-epoch
overhead (target <= 1.05x). Metrics are flushed every ``--flush-seconds`` (1 s here so that
short runs flush as long ones do; lgals flushes every 5 s, which costs less per row, not
more). The final flush, which waits for the last unsent metrics to be stored before the
run ends, is a once-per-run cost: timed apart, in the one-off table.
One-off: importing mlflow (a fresh interpreter), opening a new sqlite store and an existing
one (a fresh interpreter: most of it is MLflow importing its SQLAlchemy store), starting the
writer process (its own ``import mlflow``, overlapped with training in a real run), logging
one model (first and steady state) and one figure, each timed on its own.

With ``--cli-pairs N`` it also times whole 5-seed, 100-epoch ``lgals train`` commands,
tracked and untracked: everything a user pays, one-off costs included.

    python benchmarks/tracking_overhead.py [--epochs 10] [--repeats 9] [--cli-pairs 0]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import describe_machine, machine


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--flush-seconds", type=float, default=1.0)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--cli-pairs", type=int, default=0,
                        help="also time whole `lgals train` commands, tracked vs --no-tracking")
    args = parser.parse_args()

    import_mlflow = min(float(subprocess.run(
        [sys.executable, "-c", "import time; t = time.perf_counter(); import mlflow; "
         "print(time.perf_counter() - t)"], capture_output=True, text=True, check=True
    ).stdout) for _ in range(2))

    import matplotlib.pyplot as plt
    import mlflow
    from mlflow.entities import Metric

    from lgals.data import load_dataset
    from lgals.metric_writer import WRITER
    from lgals.plots import distribution_heatmaps
    from lgals.tracking import EDGES, EpochLogger, open_run, pip_requirements
    from lgals.train import TrainConfig, train

    class InProcessAsyncLogger(EpochLogger):
        """lgals' previous design: MLflow's async logging, a thread of this process."""

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

        def close(self):
            self.flush()
            for operation in self.operations:
                operation.wait()

    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        open_store = timed(lambda: mlflow.set_experiment("bench"))
        open_existing = min(float(subprocess.run(
            [sys.executable, "-c", "import time, mlflow; "
             f"mlflow.set_tracking_uri('sqlite:///{Path(tmp) / 'mlflow.db'}'); "
             "t = time.perf_counter(); mlflow.set_experiment('bench'); "
             "print(time.perf_counter() - t)"], capture_output=True, text=True, check=True
        ).stdout) for _ in range(2))
        writer_start = timed(lambda: (WRITER.start(), WRITER.sync()))
        experiment_id = mlflow.get_experiment_by_name("bench").experiment_id
        data = load_dataset()
        config = TrainConfig(mode="lgals", epochs=args.epochs)
        seeds = list(range(args.seeds))
        train(data, TrainConfig(mode="lgals", epochs=1), seeds)  # warm-up

        loggers = {"untracked": None, "lgals": EpochLogger, "in-process": InProcessAsyncLogger}
        times = {kind: [] for kind in loggers}
        final_flush = []
        for repeat in range(args.repeats):
            for kind in list(loggers) if repeat % 2 == 0 else list(loggers)[::-1]:
                run_ids = [open_run(experiment_id, f"s{s}", {}, {}) for s in seeds]
                logger = loggers[kind] and loggers[kind](run_ids, args.flush_seconds)
                times[kind].append(timed(lambda log=logger: train(data, config, seeds,
                                                                  callback=log)))
                if kind == "lgals":
                    final_flush.append(timed(logger.close))
                    histograms = logger.histogram_arrays(0)
                elif logger:
                    logger.close()

        import mlflow.pytorch

        from lgals.model import make_mlp

        def log_model():
            mlflow.pytorch.log_model(make_mlp(0), name="model", run_id=run_ids[0],
                                     input_example=data.x_train[:2],
                                     pip_requirements=pip_requirements())

        first_model = timed(log_model)
        steady_model = statistics.median(timed(log_model) for _ in range(3))

        def log_figure():
            figure = distribution_heatmaps(histograms, EDGES, "bench")
            mlflow.MlflowClient().log_figure(run_ids[0], figure, "eps.png")
            plt.close(figure)

        figure = statistics.median(timed(log_figure) for _ in range(3))

    print(f"{describe_machine(machine())}\n{args.seeds} seeds of LGALS, {args.epochs} epochs, "
          f"median of {args.repeats}\n")
    print("| per epoch | wall seconds | ratio to untracked (IQR) | target <= 1.05x |")
    print("|---|---|---|---|")
    for kind in loggers:
        seconds = statistics.median(times[kind]) / args.epochs
        if kind == "untracked":
            print(f"| untracked | {seconds:.4f} | | |")
            continue
        ratios = [t / p for t, p in zip(times[kind], times["untracked"])]
        q1, ratio, q3 = statistics.quantiles(ratios, n=4)
        label = ("tracked, writer process (lgals)" if kind == "lgals"
                 else "tracked, MLflow async logging in-process")
        print(f"| {label} | {seconds:.4f} | {ratio:.3f}x ({q1:.3f}-{q3:.3f}) | "
              f"{'PASS' if ratio <= 1.05 else 'FAIL'} |")
    print()
    rows = [("import mlflow (fresh interpreter)", import_mlflow),
            ("open a new sqlite store + experiment", open_store),
            ("open an existing sqlite store (fresh interpreter)", open_existing),
            ("start the writer process (overlaps training in a real run)", writer_start),
            (f"final flush of a run: its last <= {args.flush_seconds:g} s of metrics",
             statistics.median(final_flush)),
            ("log_model, first in the process", first_model),
            ("log_model, steady state", steady_model),
            ("log_figure", figure)]
    print("| one-off cost | seconds |")
    print("|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.2f} |")
    print(f"| a run on an existing store: import + open + first model + figure | "
          f"{import_mlflow + open_existing + first_model + figure:.2f} |")
    print(f"| a first run on a new store: import + open new + first model + figure | "
          f"{import_mlflow + open_store + first_model + figure:.2f} |")
    print(f"| floor that MLflow sets: import + open existing | "
          f"{import_mlflow + open_existing:.2f} |")
    if args.cli_pairs:
        whole_commands(args.cli_pairs)


def whole_commands(pairs: int) -> None:
    """What a user pays: `lgals train --mode lgals --seeds 5 --epochs 100`, each a fresh
    process, tracked (into a store the first pair created) and with --no-tracking,
    interleaved."""
    command = [sys.executable, "-m", "lgals.cli", "train", "--mode", "lgals", "--seeds", "5",
               "--epochs", "100"]
    times = {"tracked": [], "untracked": []}
    with tempfile.TemporaryDirectory() as tmp:
        for pair in range(pairs):
            for kind in ("untracked", "tracked") if pair % 2 == 0 else ("tracked", "untracked"):
                extra = ["--no-tracking"] if kind == "untracked" else []
                times[kind].append(timed(lambda extra=extra: subprocess.run(
                    command + extra, cwd=tmp, capture_output=True, check=True)))
    print(f"\nwhole `lgals train --mode lgals --seeds 5 --epochs 100`, {pairs} interleaved pairs\n")
    print("| command | wall s (median) | tracked - untracked, paired median s |")
    print("|---|---|---|")
    extra = statistics.median(t - u for t, u in zip(times["tracked"], times["untracked"]))
    print(f"| --no-tracking | {statistics.median(times['untracked']):.1f} | |")
    print(f"| tracked | {statistics.median(times['tracked']):.1f} | {extra:.1f} |")


if __name__ == "__main__":
    main()
