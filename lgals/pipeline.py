"""The one place that sequences the stages.

The library below never orchestrates: ``tuning`` tunes, ``evaluation`` evaluates, ``diagnose``
diagnoses, ``report`` reads MLflow and writes. :func:`reproduce` runs them in order for a
:class:`~lgals.protocols.Protocol`, under one top MLflow run that logs the protocol
verbatim; :func:`sweep` runs a protocol per noise setting under one umbrella run.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path

from lgals.claim import Claim
from lgals.data import DEFAULT_DATASET, NoiseRecipe, NoisyDataset, load_dataset
from lgals.diagnose import (
    DiagnoseSettings,
    diagnose_training,
    diagnosis_work,
    log_diagnosis,
    summary_line,
)
from lgals.errors import BadSetting
from lgals.evaluation import (
    ParamsSource,
    describe_results,
    evaluate_modes,
    evaluation_work,
    make_config,
    tune_source,
)
from lgals.losses import SUITES
from lgals.model import Compute
from lgals.protocols import CLAIM, Protocol
from lgals.report.publish import report_from_mlflow
from lgals.report.sweep import sweep_report
from lgals.schema import (
    DEVICE,
    LATEST_FIRST,
    MODE,
    NOISE,
    NOTE,
    PRECISION,
    REPEAT,
    STAGE,
    Stage,
    runs_filter,
)
from lgals.tracking.claims import done_once
from lgals.tracking.register import register_evaluations
from lgals.tracking.runs import in_run, run_name, scope, source_info
from lgals.tracking.store import mlflow_client
from lgals.train import TrainConfig
from lgals.tuning import describe_study, tune_modes


def run_protocol(experiment_id: str, protocol: Protocol, parent_run_id: str, workers: int = 1,
                 storage: str | None = None, device: str = "cpu",
                 echo: Callable[[str], None] = print,
                 register: str = "") -> tuple[dict[str, float], str | None]:
    """Every repetition: tune every mode, evaluate each over the seeds; then, with a
    ``register`` name, every evaluated seed model into the Model Registry; then the
    diagnostic, if the protocol runs it. Return the seconds spent in each stage, and the
    diagnose run's id. Finished work is skipped: studies are topped up, and an evaluation or a
    diagnosis that finished before (same params, seeds, noise draw) is reused; one that
    another process is running is waited for, then reused (:mod:`lgals.tracking.claims`)."""
    timings = {"tuning": 0.0, "evaluation": 0.0}
    tuned: dict[str, ParamsSource] = {}  # repetition 0's
    evaluations: dict[str, list[str]] = {}  # each mode's evaluate runs, new or reused
    seeds = list(range(protocol.seeds))
    for repeat in range(protocol.repeats):
        of = f" (repetition {repeat + 1} of {protocol.repeats})" if protocol.repeats > 1 else ""
        settings = protocol.tune_settings(repeat)
        with scope({REPEAT: repeat}, label=f"r{repeat}" if protocol.repeats > 1 else ""):
            echo(f"[tune{of}] {len(settings)} modes x {protocol.n_trials} trials x "
                 f"{protocol.epochs} epochs, in rounds of up to {protocol.batch} per mode")
            started = time.perf_counter()
            summaries = tune_modes(settings, experiment_id, storage, workers, parent_run_id,
                                   batch=protocol.batch, device=device, echo=echo)
            timings["tuning"] += time.perf_counter() - started
            for summary in summaries:
                echo(describe_study(summary))

            started = time.perf_counter()
            noise = replace(settings[0].noise, val_fraction=0.0)  # the repetition's draw
            sources = {s["mode"]: tune_source(s, TrainConfig.batch_size) for s in summaries}
            if repeat == 0:
                tuned = dict(sources)
            works = {mode: evaluation_work(experiment_id, mode, source, seeds, protocol.epochs,
                                           noise, repeat, protocol.precision)
                     for mode, source in sources.items()}
            evaluate = partial(_evaluate, sources, experiment_id, protocol, noise, parent_run_id,
                               device, echo, of)
            done = done_once(works, parent_run_id, evaluate,
                             lambda mode, line, of=of: echo(f"[evaluate{of}] {mode}: {line}"))
            for mode in sources:
                evaluations.setdefault(mode, []).append(done[mode])
            timings["evaluation"] += time.perf_counter() - started
    if register:
        echo(f"[register] {len(evaluations)} modes as {register}-<mode>")
        started = time.perf_counter()
        for registration in register_evaluations(register, evaluations):
            echo(registration.summary())
        timings["registry"] = time.perf_counter() - started
    if not protocol.diagnose:
        return timings, None
    started = time.perf_counter()
    with scope({REPEAT: 0}, label="r0" if protocol.repeats > 1 else ""):
        diagnosis = _diagnosis(experiment_id, protocol, tuned, parent_run_id, device, echo)
    timings["diagnosis"] = time.perf_counter() - started
    return timings, diagnosis


def _evaluate(sources: dict[str, ParamsSource], experiment_id: str, protocol: Protocol,
              noise: NoiseRecipe, parent_run_id: str, device: str,
              echo: Callable[[str], None], of: str, modes: list[str]) -> dict[str, str]:
    """Evaluate ``modes`` (claimed by this process) over the protocol's seeds, saying how
    each did; their evaluate runs."""
    echo(f"[evaluate{of}] {len(modes)} modes x {protocol.seeds} seeds x {protocol.epochs} "
         "epochs")
    results = evaluate_modes({mode: sources[mode] for mode in modes}, experiment_id,
                             list(range(protocol.seeds)), protocol.epochs, noise,
                             parent_run_id=parent_run_id,
                             compute=Compute(device, protocol.precision))
    for mode, (_, mode_results) in results.items():
        echo(describe_results(mode, mode_results))
    return {mode: run_id for mode, (run_id, _) in results.items()}


def diagnosed_mode(protocol: Protocol) -> str:
    """LGALS, whose s_i the alignment claim is about; else the protocol's first mode."""
    modes = protocol.run_modes()
    return "lgals" if "lgals" in modes else modes[0]


def diagnosis_inputs(protocol: Protocol, mode: str, tuned: ParamsSource,
                     ) -> tuple[TrainConfig, NoisyDataset, DiagnoseSettings]:
    """What the protocol's diagnostic trains: ``mode`` as ``tuned`` set it, on the draw its
    evaluation trained on, with checkpoints fitted to the protocol's epochs."""
    config = make_config(mode, protocol.epochs, tuned)
    data = load_dataset(replace(protocol.noise, val_fraction=0.0))
    settings = DiagnoseSettings().fitted(protocol.epochs, config.batch_size, len(data.y_train))
    return config, data, settings


def _diagnosis(experiment_id: str, protocol: Protocol, tuned: dict[str, ParamsSource],
               parent_run_id: str, device: str, echo: Callable[[str], None]) -> str:
    """``lgals diagnose`` of :func:`diagnosed_mode` as repetition 0 tuned it, seed 0 (see
    :func:`diagnosis_inputs`), under ``parent_run_id``; a finished one of the same params is
    reused. The run's id."""
    mode = diagnosed_mode(protocol)
    config, data, settings = diagnosis_inputs(protocol, mode, tuned[mode])
    checkpoints = ",".join(map(str, settings.checkpoints))
    compute = Compute(device, protocol.precision)
    params = {**config.mode_params(), **data.params(), "seed": 0, "checkpoints": checkpoints,
              "batches": settings.batches, "precision": compute.precision}

    def diagnose(_: list[str]) -> dict[str, str]:
        echo(f"[diagnose] {mode}, seed 0 x {protocol.epochs} epochs, checkpoints {checkpoints}")
        found = diagnose_training(data, config, 0, settings, compute)
        for checkpoint in found:
            echo(summary_line(checkpoint))
        return {mode: log_diagnosis(experiment_id, found, run_name(f"diagnose-{mode}"), params,
                                    {MODE: mode, DEVICE: compute.device,
                                     PRECISION: compute.precision}, parent_run_id)}

    done = done_once({mode: diagnosis_work(experiment_id, params)}, parent_run_id, diagnose,
                     lambda _, line: echo(f"[diagnose] {mode}: {line}"))
    return done[mode]


def _run_params(protocol: Protocol, workers: int, device: str) -> dict:
    return {**protocol.params(), "workers": workers, "device": device, **source_info()}


def reproduce(experiment_id: str, out: Path, protocol: Protocol = CLAIM, workers: int = 1,
              storage: str | None = None, device: str = "cpu",
              echo: Callable[[str], None] = print,
              parent_run_id: str | None = None, claim: Claim | None = None,
              register: str = "") -> dict[str, float]:
    """Tune every mode -> evaluate over seeds (per repetition) -> register the seed models
    (with a ``register`` name) -> diagnose (if the protocol does) -> report, the card testing
    ``claim`` (default: the note's); return each stage's seconds."""
    tags = {STAGE: Stage.REPRODUCE, MODE: "all", NOISE: protocol.noise.setting,
            DEVICE: device, PRECISION: protocol.precision,
            NOTE: f"The {protocol.name} protocol: {protocol.repeats} repetition(s), "
                  f"each tuning {', '.join(protocol.run_modes())} ({protocol.n_trials} "
                  f"trials) and evaluating each over {protocol.seeds} seeds, on "
                  f"{protocol.noise.dataset} at noise {protocol.noise.setting}; "
                  + ("then `lgals diagnose` of repetition 0's tuned model (its `diagnose` "
                     "run), whether s_i tracks the weight-gradient alignment; "
                     if protocol.diagnose else "")
                  + "then the report (its `report` run)."}
    with in_run(experiment_id, run_name(f"reproduce-{protocol.name}"), tags,
                _run_params(protocol, workers, device), parent_run_id) as top:
        timings, diagnosis = run_protocol(experiment_id, protocol, top, workers, storage,
                                          device, echo, register)
        echo("[report]")
        started = time.perf_counter()
        report_from_mlflow(experiment_id, out, top, modes=protocol.run_modes(), echo=echo,
                           noise=protocol.noise, repeats=protocol.repeats, seeds=protocol.seeds,
                           claim=claim, precision=protocol.precision, diagnosis_run=diagnosis)
        timings["report"] = time.perf_counter() - started
    return timings


def sweep_report_again(experiment_id: str, out: Path, dataset: str | None = None,
                       precision: str | None = None,
                       echo: Callable[[str], None] = print) -> None:
    """The latest finished sweep's report (of ``dataset`` and ``precision``, if given),
    rebuilt from MLflow alone: its dataset, settings, precision and size are its run's params
    (a sweep from before datasets and precisions had names was on mnist1d, in fp32)."""
    runs = mlflow_client().search_runs(
        [experiment_id], runs_filter(Stage.SWEEP, status="FINISHED"),
        order_by=list(LATEST_FIRST), max_results=500)
    of = [run for run in runs
          if dataset in (None, run.data.params.get("dataset", DEFAULT_DATASET))
          and precision in (None, run.data.params.get("precision", "fp32"))]
    if not of:
        on = (f" on {dataset}" if dataset else "") + (f" at {precision}" if precision else "")
        raise BadSetting(f"--sweep: no finished sweep{on} in this experiment: run `lgals "
                         "sweep`")
    params = of[0].data.params
    noise = replace(CLAIM.noise, dataset=params.get("dataset", DEFAULT_DATASET))
    recipes = noise.swept([float(rate) for rate in params["noise_rates"].split(",")],
                          params["noise_types"].split(","))
    modes = params["modes"].split(",") if params.get("modes") else SUITES[params["suite"]]
    sweep_report(experiment_id, out, recipes, modes=modes,
                 repeats=int(params["repeats"]), seeds=int(params["seeds"]),
                 precision=params.get("precision", "fp32"), echo=echo)


def sweep(experiment_id: str, out: Path, protocol: Protocol, recipes: Sequence[NoiseRecipe],
          workers: int = 1, storage: str | None = None, device: str = "cpu",
          echo: Callable[[str], None] = print) -> dict[str, float]:
    """The protocol at every noise setting of ``recipes`` (each once: a rate of 0 once, see
    :meth:`NoiseRecipe.distinct`), each a ``reproduce`` with its report in ``out/<setting>/``,
    under one sweep run; then the sweep's report in ``out``. Returns the seconds per setting
    and for the sweep report."""
    settings = NoiseRecipe.distinct(recipes)
    rates = dict.fromkeys(recipe.noise_rate for recipe in recipes)
    types = dict.fromkeys(recipe.noise_type for recipe in recipes)
    params = {**_run_params(protocol, workers, device),
              "noise_rates": ",".join(f"{r:g}" for r in rates), "noise_types": ",".join(types)}
    timings: dict[str, float] = {}
    tags = {STAGE: Stage.SWEEP, MODE: "all", DEVICE: device, PRECISION: protocol.precision,
            NOTE: f"The {protocol.name} protocol on {protocol.noise.dataset} at "
                  f"{len(settings)} noise settings "
                  f"({', '.join(r.setting for r in settings)}): one `reproduce` run "
                  "each, then the sweep's report."}
    with in_run(experiment_id, f"sweep-{protocol.name}", tags, params) as top:
        for number, recipe in enumerate(settings, 1):
            echo(f"[sweep {number}/{len(settings)}] noise {recipe.setting}")
            started = time.perf_counter()
            with scope({NOISE: recipe.setting}, label=recipe.setting):
                reproduce(experiment_id, out / recipe.setting, replace(protocol, noise=recipe),
                          workers, storage, device, echo, parent_run_id=top)
            timings[recipe.setting] = time.perf_counter() - started
        started = time.perf_counter()
        sweep_report(experiment_id, out, recipes, modes=protocol.run_modes(),
                     repeats=protocol.repeats, seeds=protocol.seeds, parent_run_id=top,
                     precision=protocol.precision, echo=echo)
        timings["sweep report"] = time.perf_counter() - started
    return timings
