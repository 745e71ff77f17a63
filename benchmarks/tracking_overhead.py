"""What MLflow tracking costs a training run.

Per epoch: the same 5-seed training untracked, tracked as lgals tracks (metrics buffered and
handed to the writer process, histograms computed every epoch), and tracked with MLflow's own
in-process async logging instead (``log_batch(synchronous=False)``), interleaved in one
process; the median of the paired ratios of their training wall times is the per-epoch
overhead, and the paired ratio writer / async with a Wilcoxon signed-rank test decides
between the two designs. Metrics are flushed every ``--flush-seconds`` (lgals' own interval
by default). The final flush, which waits for the last unsent metrics to be stored before the
run ends, is a once-per-run cost: timed apart, in the one-off table.

One-off: importing mlflow (a fresh interpreter), opening a new sqlite store and an existing
one (a fresh interpreter), starting the writer process, logging one model (first and steady
state) and one figure, each timed on its own.

With ``--cli-pairs N`` it also times whole 5-seed, 100-epoch ``lgals train`` commands,
tracked and ``--no-tracking``: everything a user pays, one-off costs included. With
``--before DIR`` (a checkout of an earlier lgals) the tracked command of that code runs
interleaved with them, so the added seconds of both are measured side by side.

    python benchmarks/tracking_overhead.py [--epochs 100] [--repeats 15] [--cli-pairs 0]
        [--before DIR] [--json]
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import (
    TRACKING_COMMAND_CUT,
    TRACKING_EPOCH_OVERHEAD,
    describe_machine,
    emit_json,
    interleaved,
    machine,
    mlflow_async_logger,
    paired_ratio,
    parser,
)
from scipy import stats

SEEDS = 5


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def fresh_interpreter_seconds(code: str) -> float:
    """The fastest of two runs of ``code``, which prints the seconds it measured itself."""
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True,
                                    text=True, check=True).stdout) for _ in range(2))


def per_epoch(epochs: int, repeats: int, flush_seconds: float) -> dict:
    import matplotlib.pyplot as plt
    import mlflow

    from lgals.data import load_dataset
    from lgals.plots import distribution_heatmaps
    from lgals.tracking.runs import open_run
    from lgals.tracking.seeds import EDGES, EpochLogger, model_requirements
    from lgals.tracking.writer import WRITER
    from lgals.train import TrainConfig, train


    import_mlflow = fresh_interpreter_seconds(
        "import time; t = time.perf_counter(); import mlflow; print(time.perf_counter() - t)")
    loggers = {"untracked": None, "writer": EpochLogger, "async": mlflow_async_logger()}
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        mlflow.set_tracking_uri(uri)
        open_store = timed(lambda: mlflow.set_experiment("bench"))
        open_existing = fresh_interpreter_seconds(
            f"import time, mlflow; mlflow.set_tracking_uri('{uri}'); t = time.perf_counter(); "
            "mlflow.set_experiment('bench'); print(time.perf_counter() - t)")
        writer_start = timed(lambda: (WRITER.start(), WRITER.sync()))
        experiment_id = mlflow.get_experiment_by_name("bench").experiment_id
        data = load_dataset()
        config = TrainConfig.of("lgals", epochs=epochs)
        seeds = list(range(SEEDS))
        train(data, TrainConfig.of("lgals", epochs=1), seeds)  # warm-up
        final_flush = {kind: [] for kind in loggers if loggers[kind]}
        last_run = {}

        def measure(kind: str, repeat: int) -> float:
            run_ids = [open_run(experiment_id, f"s{s}", {}, {}) for s in seeds]
            logger = loggers[kind] and loggers[kind](run_ids, flush_seconds)
            seconds = timed(lambda: train(data, config, seeds, callback=logger))
            if logger:
                logger.flush()
                final_flush[kind].append(timed(logger.wait if kind == "async" else WRITER.sync))
                last_run.update(logger=logger, run_id=run_ids[0])
            return seconds

        times = interleaved(list(loggers), repeats, measure)

        import mlflow.pytorch

        from lgals.model import layer_sizes, make_mlp

        def log_model():
            model = make_mlp(0, layer_sizes(data.n_features, data.n_classes))
            mlflow.pytorch.log_model(model, name="model", run_id=last_run["run_id"],
                                     input_example=data.x_train[:2],
                                     serialization_format="pt2",
                                     pip_requirements=list(model_requirements()))

        def log_figure():
            figure = distribution_heatmaps(last_run["logger"].histogram_arrays(0), EDGES,
                                           "bench")
            mlflow.MlflowClient().log_figure(last_run["run_id"], figure, "eps.png")
            plt.close(figure)

        first_model = timed(log_model)
        steady_model = statistics.median(timed(log_model) for _ in range(3))
        figure = statistics.median(timed(log_figure) for _ in range(3))

    ratios = {kind: paired_ratio(times[kind], times["untracked"]) for kind in ("writer", "async")}
    writer_vs_async = paired_ratio(times["writer"], times["async"])
    return {
        "epochs": epochs, "repeats": repeats, "seeds": SEEDS, "flush_seconds": flush_seconds,
        "times_s": times,
        "seconds_per_epoch": {kind: statistics.median(t) / epochs for kind, t in times.items()},
        "ratio_to_untracked": ratios,
        "writer_vs_async": writer_vs_async,
        "writer_vs_async_wilcoxon_p": float(stats.wilcoxon(times["writer"], times["async"]).pvalue),
        "one_off_s": {
            "import mlflow (fresh interpreter)": import_mlflow,
            "open a new sqlite store + experiment": open_store,
            "open an existing sqlite store (fresh interpreter)": open_existing,
            "start the writer process": writer_start,
            "final flush of a run, writer": statistics.median(final_flush["writer"]),
            "final flush of a run, async": statistics.median(final_flush["async"]),
            "log_model, first in the process": first_model,
            "log_model, steady state": steady_model,
            "log_figure": figure,
        },
    }


def whole_commands(pairs: int, before: Path | None) -> dict:
    """``lgals train --mode lgals --seeds 5 --epochs 100``, each a fresh process, tracked (into
    a store the first tracked command created) and with --no-tracking, interleaved; with
    ``before``, the same two by that checkout's lgals too."""
    command = [sys.executable, "-m", "lgals.cli", "train", "--mode", "lgals", "--seeds",
               str(SEEDS), "--epochs", "100"]
    variants = ["untracked", "tracked"] + (["untracked_before", "tracked_before"] if before
                                           else [])
    with tempfile.TemporaryDirectory() as tmp:
        stores = {kind: Path(tmp) / kind for kind in variants}
        for directory in stores.values():
            directory.mkdir()

        def measure(kind: str, repeat: int) -> float:
            env = dict(os.environ)
            if kind.endswith("_before"):
                env["PYTHONPATH"] = str(before)
            extra = ["--no-tracking"] if kind.startswith("untracked") else []
            return timed(lambda: subprocess.run(command + extra, cwd=stores[kind], env=env,
                                                capture_output=True, check=True))

        times = interleaved(variants, pairs, measure)

    def added(suffix: str = "") -> float:
        return statistics.median(t - u for t, u in zip(times["tracked" + suffix],
                                                       times["untracked" + suffix]))

    document = {"pairs": pairs, "times_s": times, "added_s": added(),
                "median_s": {kind: statistics.median(t) for kind, t in times.items()}}
    if before:
        document.update(before=str(before), added_before_s=added("_before"),
                        added_ratio=added() / added("_before"))
    return document


def print_tables(document: dict) -> None:
    print(describe_machine(document["machine"]))
    if "per_epoch" in document:
        print_per_epoch(document["per_epoch"])
    if "commands" in document:
        print_commands(document["commands"])


def print_per_epoch(epoch: dict) -> None:
    print(f"\n{epoch['seeds']} seeds of LGALS, "
          f"{epoch['epochs']} epochs, {epoch['repeats']} interleaved repeats, metrics flushed "
          f"every {epoch['flush_seconds']:g} s\n")
    print(f"| per epoch | wall s | ratio to untracked (IQR) | target <= "
          f"{TRACKING_EPOCH_OVERHEAD}x |")
    print("|---|---|---|---|")
    print(f"| untracked | {epoch['seconds_per_epoch']['untracked']:.4f} | | |")
    labels = {"writer": "tracked, writer process (lgals)",
              "async": "tracked, MLflow async logging in-process"}
    for kind, label in labels.items():
        ratio, q1, q3 = epoch["ratio_to_untracked"][kind]
        verdict = "PASS" if ratio <= TRACKING_EPOCH_OVERHEAD else "FAIL"
        print(f"| {label} | {epoch['seconds_per_epoch'][kind]:.4f} | {ratio:.3f}x "
              f"({q1:.3f}-{q3:.3f}) | {verdict} |")
    ratio, q1, q3 = epoch["writer_vs_async"]
    print(f"\nwriter / async, paired: {ratio:.3f}x (IQR {q1:.3f}-{q3:.3f}), Wilcoxon "
          f"signed-rank p = {epoch['writer_vs_async_wilcoxon_p']:.3g}\n")
    print("| one-off cost | seconds |")
    print("|---|---|")
    for name, seconds in epoch["one_off_s"].items():
        print(f"| {name} | {seconds:.2f} |")


def print_commands(commands: dict) -> None:
    print(f"\nwhole `lgals train --mode lgals --seeds {SEEDS} --epochs 100`, "
          f"{commands['pairs']} interleaved repeats\n")
    print("| command | wall s (median) | added by tracking, paired median s |")
    print("|---|---|---|")
    print(f"| --no-tracking | {commands['median_s']['untracked']:.1f} | |")
    print(f"| tracked | {commands['median_s']['tracked']:.1f} | {commands['added_s']:.1f} |")
    if "before" in commands:
        print(f"| --no-tracking, {commands['before']} | "
              f"{commands['median_s']['untracked_before']:.1f} | |")
        print(f"| tracked, {commands['before']} | {commands['median_s']['tracked_before']:.1f} | "
              f"{commands['added_before_s']:.1f} |")
        ratio = commands["added_ratio"]
        print(f"\n{'PASS' if ratio <= TRACKING_COMMAND_CUT else 'FAIL'}: tracking adds "
              f"{ratio:.2f}x the seconds it added before (target <= {TRACKING_COMMAND_CUT}x)")


def main() -> None:
    from lgals.tracking.seeds import FLUSH_SECONDS

    cli = parser(__doc__)
    cli.add_argument("--epochs", type=int, default=100)
    cli.add_argument("--repeats", type=int, default=15, help="0: skip the per-epoch runs")
    cli.add_argument("--flush-seconds", type=float, default=FLUSH_SECONDS)
    cli.add_argument("--cli-pairs", type=int, default=0,
                     help="also time whole `lgals train` commands, tracked vs --no-tracking")
    cli.add_argument("--before", type=Path,
                     help="a checkout of an earlier lgals whose tracked command to time too")
    args = cli.parse_args()
    document = {"machine": machine()}
    if args.repeats:
        document["per_epoch"] = per_epoch(args.epochs, args.repeats, args.flush_seconds)
    if args.cli_pairs:
        document["commands"] = whole_commands(args.cli_pairs, args.before)
    if args.json:
        emit_json(document)
    else:
        print_tables(document)


if __name__ == "__main__":
    main()
