"""How soon an epoch's metrics can be read from MLflow (what the UI shows), and what each way
of writing them costs the training.

For each store (a sqlite file; an ``mlflow server`` on 127.0.0.1 over sqlite) and each
scenario (``train``: 5 seeds trained together, as ``lgals train``; ``tune round``: 10 trials
trained together, as a tuning round), the same members are trained with their metrics
logged the way lgals logs them (:class:`lgals.tracking.seeds.EpochLogger`, flushed every
``--flush-seconds``), by each variant in turn:

- ``writer idle``: the writer process at Linux's ``SCHED_IDLE`` (lgals up to issue 26);
- ``writer nice N``: the writer process at that nice value;
- ``async``: MLflow's own async logging (``log_batch(synchronous=False)``), a thread of the
  training process.

Meanwhile an observer process polls the runs' ``train_loss`` history every 0.5 s, as an open
UI page would. An epoch's **lag** is when the observer first saw its metric minus the metric's
timestamp (the epoch's end); the observer runs until it has seen every epoch, so a backlog the
final flush drains counts too. Per variant: the median, 95th percentile and largest lag, and
the wall time of training plus the final flush (what the user waits for), interleaved over
``--repeats``.

    python benchmarks/live_curves.py [--epochs 100] [--repeats 1] [--flush-seconds S]
        [--variants idle,10,0,async] [--json]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext, redirect_stdout
from pathlib import Path

import numpy as np
from common import (
    describe_machine,
    emit_json,
    interleaved,
    machine,
    mlflow_async_logger,
    parser,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from support.mlflow_fixtures import mlflow_server  # noqa: E402  (a real server, as tests use)

SCENARIOS = {"train": 5, "tune round": 10}  # members trained together
POLL_SECONDS = 0.5

# Polls the runs' train_loss histories until stdin closes (everything is stored by then),
# then once more; prints each epoch's lag (s).
OBSERVER = """
import json, sys, threading, time
from mlflow import MlflowClient
uri, run_ids, poll = sys.argv[1], sys.argv[2].split(","), float(sys.argv[3])
client, seen, stored = MlflowClient(uri), {}, threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stored.set()), daemon=True).start()
print("ready", flush=True)
while True:
    last = stored.is_set()
    for run_id in run_ids:
        for metric in client.get_metric_history(run_id, "train_loss"):
            seen.setdefault((run_id, metric.step), time.time() - metric.timestamp / 1000)
    if last:
        break
    stored.wait(poll)
print(json.dumps(list(seen.values())))
"""


def measure(variant: str, uri: str, members: int, epochs: int, flush_seconds: float) -> dict:
    """Train ``members`` tracked, with ``variant`` writing; its lags and wall time."""
    import mlflow

    from lgals.data import load_dataset
    from lgals.tracking.runs import end_runs, open_run
    from lgals.tracking.seeds import EpochLogger
    from lgals.tracking.writer import WRITER
    from lgals.train import TrainConfig, train


    mlflow.set_tracking_uri(uri)
    experiment_id = mlflow.set_experiment("live").experiment_id
    if variant != "async":
        WRITER.close()
        WRITER.priority = variant
        WRITER.start()
        WRITER.open(uri)
        WRITER.sync()
    seeds = list(range(members))
    run_ids = [open_run(experiment_id, f"{variant}-s{s}", {}, {}) for s in seeds]
    observer = subprocess.Popen(
        [sys.executable, "-c", OBSERVER, uri, ",".join(run_ids), str(POLL_SECONDS)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert observer.stdout.readline().strip() == "ready"
    data = load_dataset()
    logger = (mlflow_async_logger() if variant == "async" else EpochLogger)(run_ids,
                                                                            flush_seconds)
    start = time.perf_counter()
    train(data, TrainConfig.of("lgals", epochs=epochs), seeds, callback=logger)
    logger.flush()
    logger.wait() if variant == "async" else WRITER.sync()
    wall = time.perf_counter() - start
    lags = json.loads(observer.communicate("")[0])
    end_runs(run_ids, "FINISHED")
    assert len(lags) == members * epochs, f"{variant}: saw {len(lags)} of {members * epochs}"
    return {"wall_s": wall, "lags_s": lags}


def summary(values: list[float]) -> dict:
    return {"median": float(np.median(values)), "p95": float(np.percentile(values, 95)),
            "max": float(np.max(values))}


def main() -> None:
    from lgals.tracking.seeds import FLUSH_SECONDS

    cli = parser(__doc__)
    cli.add_argument("--epochs", type=int, default=100)
    cli.add_argument("--repeats", type=int, default=1)
    cli.add_argument("--flush-seconds", type=float, default=FLUSH_SECONDS)
    cli.add_argument("--variants", default="idle,10,0,async",
                     help="writer priorities (idle or a nice value) and async, comma-separated")
    cli.add_argument("--stores", default="sqlite,server")
    args = cli.parse_args()
    variants = args.variants.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for store in args.stores.split(","):
            directory = Path(tmp) / store
            directory.mkdir()
            backend = f"sqlite:///{directory / 'mlflow.db'}"
            with (mlflow_server(directory, backend) if store == "server"
                  else nullcontext()) as server:
                uri = server.uri if server else backend
                for scenario, members in SCENARIOS.items():
                    with redirect_stdout(sys.stderr):  # MLflow prints each run's link
                        found = interleaved(
                            variants, args.repeats, lambda variant, _, uri=uri, members=members:
                            measure(variant, uri, members, args.epochs, args.flush_seconds))
                    for variant in variants:
                        lags = [lag for run in found[variant] for lag in run["lags_s"]]
                        rows.append({"store": store, "scenario": scenario, "members": members,
                                     "variant": variant, "lag_s": summary(lags),
                                     "wall_s": [run["wall_s"] for run in found[variant]]})
                        print(json.dumps(rows[-1]), file=sys.stderr)  # a partial result
    document = {"machine": machine(), "epochs": args.epochs, "repeats": args.repeats,
                "flush_seconds": args.flush_seconds, "poll_seconds": POLL_SECONDS,
                "rows": rows}
    if args.json:
        emit_json(document)
        return
    print(describe_machine(document["machine"]))
    print(f"{args.epochs} epochs, metrics flushed every {args.flush_seconds:g} s, observer "
          f"polling every {POLL_SECONDS:g} s; median wall of {args.repeats} repeat(s)\n")
    print("| store | scenario | variant | lag median s | lag p95 s | lag max s | wall s |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        name = row["variant"] if row["variant"] in ("idle", "async") else f"nice {row['variant']}"
        lag = row["lag_s"]
        print(f"| {row['store']} | {row['scenario']} | {name} | {lag['median']:.1f} | "
              f"{lag['p95']:.1f} | {lag['max']:.1f} | {np.median(row['wall_s']):.1f} |")


if __name__ == "__main__":
    main()
