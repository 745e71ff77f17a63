"""Where the time of ``lgals sweep`` goes, at its defaults.

Runs the real pipeline (``lgals.pipeline.sweep``, tracked) in fresh temporary stores: the
claim protocol (paper suite) at noise rates 0, 0.2, 0.4 for symmetric and pair noise (rate 0
once: 5 settings). For each setting it prints the wall time, the part spent in training
epochs (tuning's and evaluation's, the sum of logged ``epoch_seconds``, a stack counted once)
and the rest. Target: <= 30 minutes in all.

    python benchmarks/sweep_speed.py [--protocol P] [--rates 0,0.2,0.4]
        [--types symmetric,pair] [--out DIR] [--keep DIR] [--json]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from common import SWEEP_SECONDS, describe_machine, emit_json, machine, parser, training_seconds

from lgals.pipeline import sweep
from lgals.protocols import PROTOCOLS
from lgals.schema import NOISE, SEED, runs_filter
from lgals.tracking.store import connect, mlflow_client


def setting_training(experiment_id: str, setting: str) -> float:
    runs = mlflow_client().search_runs(
        [experiment_id], runs_filter(tags={NOISE: setting}, has=(SEED,)),
        max_results=5000)
    return training_seconds(mlflow_client(), [r.info.run_id for r in runs])


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--protocol", choices=list(PROTOCOLS), default="claim")
    cli.add_argument("--rates", default="0,0.2,0.4")
    cli.add_argument("--types", default="symmetric,pair")
    cli.add_argument("--out", type=Path, help="keep the reports here (default: discarded)")
    cli.add_argument("--keep", type=Path, help="keep the stores here (an empty directory)")
    args = cli.parse_args()
    info = machine()
    rates = [float(r) for r in args.rates.split(",")]
    types = args.types.split(",")
    with tempfile.TemporaryDirectory() as tmp:
        directory = args.keep or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        experiment_id = connect(f"sqlite:///{directory / 'mlflow.db'}", "bench")
        protocol = PROTOCOLS[args.protocol]
        timings = sweep(experiment_id, args.out or directory / "results", protocol,
                        protocol.noise.swept(rates, types),
                        storage=f"sqlite:///{directory / 'optuna.db'}",
                        echo=lambda line: print(line, file=sys.stderr))
        rows = [{"setting": setting, "wall_s": wall,
                 "training_s": setting_training(experiment_id, setting)
                 if setting != "sweep report" else 0.0} for setting, wall in timings.items()]
    wall = sum(row["wall_s"] for row in rows)
    training = sum(row["training_s"] for row in rows)
    document = {"machine": info, "protocol": args.protocol, "rates": rates, "types": types,
                "rows": rows, "wall_s": wall, "training_s": training}
    if args.json:
        emit_json(document)
        return
    print(f"lgals sweep --protocol {args.protocol} --noise-rates {args.rates} --noise-types "
          f"{args.types}, tracked, fresh stores; {describe_machine(info)}\n")
    print("| setting | wall s | training s | outside training s |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['setting']} | {row['wall_s']:.1f} | {row['training_s']:.1f} | "
              f"{row['wall_s'] - row['training_s']:.1f} |")
    print(f"| **total** | {wall:.1f} | {training:.1f} | {wall - training:.1f} "
          f"({100 * (wall - training) / wall:.0f}%) |")
    if (args.protocol, args.rates, args.types) == ("claim", "0,0.2,0.4", "symmetric,pair"):
        print(f"\n{'PASS' if wall <= SWEEP_SECONDS else 'FAIL'}: the default sweep takes "
              f"{wall / 60:.1f} min (target <= {SWEEP_SECONDS / 60:.0f} min)")


if __name__ == "__main__":
    main()
