"""Does bf16 give the study the same answers as fp32? The robust protocol at both precisions.

Runs the real pipeline (``lgals.pipeline.reproduce``, tracked) with the robust protocol (5
repetitions x 10 seeds, 20 trials per mode, 100 epochs) once with float32 and once with bf16
matrix products, each in stores of its own under ``--keep`` (a rerun reuses what finished
there), and compares them over the repetitions, the independent units (each has its own noise
draw, split and tuning; its seeds share them):

- per mode, the mean final test accuracy, fp32 - bf16: its 95% t interval, and TOST
  (Schuirmann's two one-sided tests) against a margin of +-0.5 pp; equivalent when p < 0.05,
  that is when the 90% interval lies inside the margin;
- the same for each claim's paired difference (LGALS - FixedLS, FixedLS - Baseline,
  LGALS - Baseline): the difference between the precisions of a difference between modes;
- the same for the flipped-label AUROC of 1 - s_i in LGALS' runs (mean over epochs), in
  AUROC points x 100 against the same margin;
- the claim card's verdicts at each precision, which must agree.

Each precision tunes its own hyperparameters, so those comparisons carry the variation
between two independent tunings as well as bf16's rounding. A second comparison holds the
hyperparameters fixed: each repetition's fp32-tuned params are evaluated again in bf16 on
the same noise draw and seeds (in the fp32 stores, where a report keeps the two precisions
apart), and compared with their fp32 evaluation, per mode, likewise; and repetition 0's
fp32-tuned LGALS is diagnosed again in bf16 (not logged), its Pearson r per checkpoint beside
the fp32 diagnosis'.

bf16 passes when every TOST of the protocol comparison is below 0.05 and every verdict
agrees. ``--epochs``,
``--trials``, ``--repeats`` and ``--seeds`` shrink the protocol for a trial run.

    python benchmarks/precision_equivalence.py --keep DIR [--epochs N] [--trials N]
        [--repeats R] [--seeds S] [--json]
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from pathlib import Path

import numpy as np
from common import describe_machine, emit_json, machine, parser

from lgals.claim import note
from lgals.diagnose import diagnose_training
from lgals.evaluation import evaluate_modes, evaluation_work, latest_tune
from lgals.model import Compute
from lgals.pipeline import diagnosis_inputs, reproduce
from lgals.protocols import ROBUST
from lgals.report.analysis import build, claim_card
from lgals.report.collect import collect, collect_diagnosis
from lgals.schema import REPEAT
from lgals.statistics import ALPHA, equivalence_test, t_interval
from lgals.tracking.runs import scope
from lgals.tracking.store import connect

PRECISIONS = ("fp32", "bf16")
MARGIN_PP = 0.5
CLAIMS = (("lgals", "fixed_ls"), ("fixed_ls", "baseline"), ("lgals", "baseline"))


def run(directory: Path, protocol) -> tuple[str, float]:
    """The protocol in ``directory``'s stores; its experiment id and wall seconds."""
    directory.mkdir(parents=True, exist_ok=True)
    experiment_id = connect(f"sqlite:///{directory / 'mlflow.db'}", "equivalence")
    started = time.perf_counter()
    reproduce(experiment_id, directory / "results", protocol,
              storage=f"sqlite:///{directory / 'optuna.db'}",
              echo=lambda line: print(line, file=sys.stderr))
    return experiment_id, time.perf_counter() - started


def evaluate_fixed(directory: Path, experiment_id: str, protocol) -> None:
    """Each repetition's fp32-tuned params evaluated in bf16 on its draw and seeds, beside
    their fp32 evaluation (finished ones reused)."""
    connect(f"sqlite:///{directory / 'mlflow.db'}", "equivalence")
    seeds = list(range(protocol.seeds))
    for repeat in range(protocol.repeats):
        noise = dataclasses.replace(protocol.noise, val_fraction=0.0).repeated(repeat)
        sources = {mode: latest_tune(experiment_id, mode, repeat)
                   for mode in protocol.run_modes()}
        sources = {mode: source for mode, source in sources.items()
                   if not evaluation_work(experiment_id, mode, source, seeds, protocol.epochs,
                                          noise, repeat, "bf16").finished()}
        if sources:
            with scope({REPEAT: repeat}, label=f"r{repeat}"):
                evaluate_modes(sources, experiment_id, seeds, protocol.epochs, noise,
                               compute=Compute(precision="bf16"))


def alignment_in_bf16(experiment_id: str, protocol) -> dict[int, float]:
    """Pearson's r (all layers) per checkpoint of repetition 0's fp32-tuned LGALS trained and
    diagnosed in bf16, as the protocol's diagnostic does it in fp32."""
    config, data, settings = diagnosis_inputs(protocol, "lgals",
                                              latest_tune(experiment_id, "lgals", 0))
    found = diagnose_training(data, config, 0, settings, Compute(precision="bf16"))
    return {c.epoch: c.correlation["all"]["pearson"] for c in found}


def evaluated(experiment_id: str, protocol, precision: str) -> dict:
    """Per mode, the protocol's evaluate runs at ``precision``, as the report collects them."""
    return collect(experiment_id, protocol.run_modes(), dataclasses.replace(
        protocol.noise, val_fraction=0.0), protocol.repeats, protocol.seeds,
        precision=precision)


def accuracies(experiment_id: str, protocol, precision: str) -> dict:
    """Per mode, the final test accuracies ``[R, S]`` (pp) of the runs at ``precision``."""
    return {mode: 100 * r.matrix()
            for mode, r in evaluated(experiment_id, protocol, precision).items()}


def results(directory: Path, experiment_id: str, protocol) -> tuple[dict, list]:
    """Per quantity compared, its ``[R, S]`` values (pp); and the claim card's verdicts."""
    connect(f"sqlite:///{directory / 'mlflow.db'}", "equivalence")
    runs = evaluated(experiment_id, protocol, protocol.precision)
    values = {mode: 100 * r.matrix() for mode, r in runs.items()}
    for a, b in CLAIMS:
        values[f"{a} - {b}"] = values[a] - values[b]
    values["AUROC of 1 - s_i (x100)"] = 100 * runs["lgals"].curve_matrix("noise_auroc")
    report = build(runs, note())
    report.diagnosis = collect_diagnosis(experiment_id, runs)
    return values, [(v.claim, v.status) for v in claim_card(report)]


def compare(fp32: np.ndarray, bf16: np.ndarray) -> dict:
    differences = fp32 - bf16
    mean, low, high = t_interval(differences)
    _, low90, high90 = t_interval(differences, level=1 - 2 * ALPHA)
    p = equivalence_test(differences, MARGIN_PP)
    return {"fp32": float(fp32.mean()), "bf16": float(bf16.mean()), "difference": mean,
            "ci95": [low, high], "ci90": [low90, high90], "tost_p": p,
            "equivalent": bool(p < ALPHA)}


def table(rows: dict) -> None:
    print(f"| quantity (pp) | fp32 | bf16 | fp32 - bf16 [95% CI] | 90% CI | TOST p (±{MARGIN_PP}) "
          "| equivalent |")
    print("|---|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['fp32']:.2f} | {r['bf16']:.2f} | {r['difference']:+.2f} "
              f"[{r['ci95'][0]:+.2f}, {r['ci95'][1]:+.2f}] | [{r['ci90'][0]:+.2f}, "
              f"{r['ci90'][1]:+.2f}] | {r['tost_p']:.3f} | {'yes' if r['equivalent'] else 'no'} |")


def main() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    cli = parser(__doc__)
    cli.add_argument("--keep", type=Path, required=True, help="the stores go (or are) here")
    cli.add_argument("--epochs", type=int, default=ROBUST.epochs)
    cli.add_argument("--trials", type=int, default=ROBUST.n_trials)
    cli.add_argument("--repeats", type=int, default=ROBUST.repeats)
    cli.add_argument("--seeds", type=int, default=ROBUST.seeds)
    args = cli.parse_args()
    args.keep = args.keep.resolve()
    args.keep.mkdir(parents=True, exist_ok=True)
    os.chdir(args.keep)  # where new experiments keep their artifacts, beside their stores
    protocol = dataclasses.replace(ROBUST, epochs=args.epochs, n_trials=args.trials,
                                   repeats=args.repeats, seeds=args.seeds)
    info = machine()
    walls, values, verdicts, experiments = {}, {}, {}, {}
    Compute(precision="bf16")  # refused here, before anything runs, if unsupported
    for precision in PRECISIONS:
        directory = args.keep / precision
        at = dataclasses.replace(protocol, precision=precision)
        experiments[precision], walls[precision] = run(directory, at)
        values[precision], verdicts[precision] = results(directory, experiments[precision], at)
    rows = {name: compare(values["fp32"][name], values["bf16"][name])
            for name in values["fp32"]}
    evaluate_fixed(args.keep / "fp32", experiments["fp32"], protocol)
    fixed = {precision: accuracies(experiments["fp32"], protocol, precision)
             for precision in PRECISIONS}
    fixed_rows = {mode: compare(fixed["fp32"][mode], fixed["bf16"][mode])
                  for mode in protocol.run_modes()}
    measured = collect_diagnosis(experiments["fp32"], collect(
        experiments["fp32"], protocol.run_modes(), precision="fp32"))
    fixed_alignment = {"fp32": measured.values["all.pearson"] if measured else {},
                       "bf16": alignment_in_bf16(experiments["fp32"], protocol)}
    same_verdicts = verdicts["fp32"] == verdicts["bf16"]
    document = {"machine": info, "protocol": dataclasses.asdict(protocol) | {
                    "noise": protocol.noise.params()},
                "margin_pp": MARGIN_PP, "wall_s": walls, "rows": rows,
                "fixed_params_rows": fixed_rows, "fixed_params_alignment": fixed_alignment,
                "verdicts": {p: [list(v) for v in verdicts[p]] for p in PRECISIONS},
                "same_verdicts": same_verdicts,
                "bf16_passes": same_verdicts and all(r["equivalent"] for r in rows.values())}
    if args.json:
        emit_json(document)
        return
    print(f"robust protocol ({protocol.repeats} x {protocol.seeds} seeds, {protocol.n_trials} "
          f"trials, {protocol.epochs} epochs) in fp32 and bf16; {describe_machine(info)}; "
          f"wall: fp32 {walls['fp32'] / 60:.1f} min, bf16 {walls['bf16'] / 60:.1f} min "
          "(a rerun reuses finished work)\n")
    table(rows)
    print("\nthe same hyperparameters (each repetition's fp32-tuned ones) evaluated at both:\n")
    table(fixed_rows)
    print("\nPearson's r of s_i and the weight-gradient cosine, per checkpoint, repetition 0's "
          "fp32-tuned LGALS: fp32 "
          + ", ".join(f"{e}: {r:.3f}" for e, r in sorted(fixed_alignment["fp32"].items()))
          + "; bf16 "
          + ", ".join(f"{e}: {r:.3f}" for e, r in sorted(fixed_alignment["bf16"].items())))
    print("\n| claim | fp32 | bf16 |\n|---|---|---|")
    for (claim, a), (_, b) in zip(verdicts["fp32"], verdicts["bf16"]):
        print(f"| {claim} | {a} | {b} |")
    shown = sum(r["equivalent"] for r in rows.values())
    print(f"\n{'PASS' if document['bf16_passes'] else 'FAIL'}: bf16 shown equivalent to fp32 "
          f"within ±{MARGIN_PP} pp on {shown} of {len(rows)} quantities (target: all), and the "
          f"card's verdicts {'agree' if same_verdicts else 'differ'} (target: agree)")


if __name__ == "__main__":
    main()
