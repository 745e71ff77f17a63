"""Does batching make the search worse? Best validation accuracy, --batch K vs --batch 1.

For each of several sampler seeds it tunes every mode (``tune_modes``, fresh temporary
stores, tracked as ``lgals tune`` tracks) once with each batch size, and reports the best
validation accuracy each study reached: mean ± std over sampler seeds, per mode. The batched
search passes if, for every mode, its mean is not below the one-at-a-time mean by more than
the between-seed std of the one-at-a-time search.

    python benchmarks/tune_quality.py [--seeds 5] [--epochs 30] [--batches 10,1] [--json]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from common import describe_machine, emit_json, machine, parser

from lgals.losses import MODES
from lgals.tracking.store import connect
from lgals.tuning import DEFAULT_BATCH, TuneSettings, tune_modes


def best_values(directory: Path, batch: int, sampler_seed: int, n_trials: int,
                epochs: int) -> dict[str, float]:
    experiment_id = connect(f"sqlite:///{directory / 'mlflow.db'}", "quality")
    settings = [TuneSettings(mode=m, n_trials=n_trials, epochs=epochs, sampler_seed=sampler_seed)
                for m in MODES]
    summaries = tune_modes(settings, experiment_id, f"sqlite:///{directory / 'optuna.db'}",
                           batch=batch)
    return {s["mode"]: s["best_value"] for s in summaries}


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--seeds", type=int, default=5, help="sampler seeds 0..N-1")
    cli.add_argument("--n-trials", type=int, default=20)
    cli.add_argument("--epochs", type=int, default=30)
    cli.add_argument("--batches", default=f"{DEFAULT_BATCH},1")
    args = cli.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    info = machine()
    best = {(b, m): [] for b in batches for m in MODES}
    for seed in range(args.seeds):
        for batch in batches if seed % 2 == 0 else batches[::-1]:
            with tempfile.TemporaryDirectory() as tmp:
                for mode, value in best_values(Path(tmp), batch, seed, args.n_trials,
                                               args.epochs).items():
                    best[batch, mode].append(value)
            print(f"sampler seed {seed}, --batch {batch} done", file=sys.stderr)

    reference = 1 if 1 in batches else batches[-1]
    rows = []
    for mode in MODES:
        ref = best[reference, mode]
        ref_std = statistics.stdev(ref) if len(ref) > 1 else 0.0
        for batch in batches:
            values = best[batch, mode]
            mean = statistics.mean(values)
            rows.append({"mode": mode, "batch": batch, "values": values, "mean": mean,
                         "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                         "diff_vs_reference": mean - statistics.mean(ref),
                         "passes": mean >= statistics.mean(ref) - ref_std})
    document = {"machine": info, "seeds": args.seeds, "n_trials": args.n_trials,
                "epochs": args.epochs, "reference_batch": reference, "rows": rows}
    if args.json:
        emit_json(document)
        return
    print(f"best val acc per study, {args.seeds} sampler seeds, {args.n_trials} trials x "
          f"{args.epochs} epochs per mode; {describe_machine(info)}\n")
    print(f"| mode | --batch | best val acc % mean ± std | vs --batch {reference} (pp) | "
          "within one std of it |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {MODES[row['mode']].label} | {row['batch']} | {100 * row['mean']:.2f} ± "
              f"{100 * row['std']:.2f} | {100 * row['diff_vs_reference']:+.2f} | "
              f"{'yes' if row['passes'] else 'NO'} |")
    ok = all(r["passes"] for r in rows)
    print(f"\n{'PASS' if ok else 'FAIL'}: no batch size is worse than --batch {reference} by "
          "more than its between-seed std, in any mode")


if __name__ == "__main__":
    main()
