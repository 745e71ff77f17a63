"""The study's protocols as data, and the one place that sequences the stages.

The library below never orchestrates: ``tuning`` tunes, ``evaluation`` evaluates, ``report``
reads MLflow and writes. :func:`reproduce` runs them in order for a :class:`Protocol`, under
one top MLflow run that logs the protocol verbatim.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lgals import tracking
from lgals.data import NoiseRecipe
from lgals.evaluation import describe_results, evaluate_modes, tune_source
from lgals.losses import SUITES
from lgals.report import report_from_mlflow
from lgals.train import TrainConfig
from lgals.tuning import DEFAULT_BATCH, TuneSettings, describe_study, tune_modes


@dataclass(frozen=True)
class Protocol:
    """One study end to end: tuning budget, evaluation seeds, the noise recipe.

    ``experiment`` is the default MLflow experiment and the prefix of the Optuna studies.
    """

    name: str
    n_trials: int
    epochs: int
    seeds: int
    batch: int = DEFAULT_BATCH  # trials per study trained together in a tuning round
    noise: NoiseRecipe = NoiseRecipe(val_fraction=0.1)  # tuning's; evaluation's has no split
    experiment: str = "lgals"
    suite: str = "paper"  # which modes are tuned, evaluated and reported (losses.SUITES)

    def params(self) -> dict:
        """The protocol verbatim as run params, its noise recipe as its own params."""
        return {**{k: v for k, v in asdict(self).items() if k not in ("name", "noise")},
                "protocol": self.name, **self.noise.params()}


# The note's protocol: 20 trials per mode, 100 epochs, 5 evaluation seeds.
CLAIM = Protocol("claim", n_trials=20, epochs=TrainConfig.epochs, seeds=5)
# A miniature of it for a first look (and the end-to-end tests).
QUICK = Protocol("quick", n_trials=2, epochs=3, seeds=2, experiment="lgals-quick")


def reproduce(experiment_id: str, out: Path, protocol: Protocol = CLAIM, workers: int = 1,
              storage: str | None = None, device: str = "cpu",
              echo: Callable[[str], None] = print) -> dict[str, float]:
    """Tune every mode -> evaluate over seeds -> report; return each stage's seconds."""
    settings = [TuneSettings(mode=mode, n_trials=protocol.n_trials, epochs=protocol.epochs,
                             noise=protocol.noise, study_name=f"{protocol.experiment}-{mode}")
                for mode in SUITES[protocol.suite]]
    params = {**protocol.params(), "workers": workers, "device": device,
              **tracking.source_info()}
    timings: dict[str, float] = {}
    with tracking.run(experiment_id, "reproduce", {"lgals.stage": "reproduce",
                                                   "lgals.mode": "all"}, params) as top:
        echo(f"[1/3] tuning {len(settings)} modes x {protocol.n_trials} trials x "
             f"{protocol.epochs} epochs, in rounds of up to {protocol.batch} trials per mode")
        started = time.perf_counter()
        summaries = tune_modes(settings, experiment_id, storage, workers, top,
                               batch=protocol.batch, device=device)
        timings["tuning"] = time.perf_counter() - started
        for summary in summaries:
            echo(describe_study(summary))

        echo(f"[2/3] evaluating {len(settings)} modes x {protocol.seeds} seeds x "
             f"{protocol.epochs} epochs")
        started = time.perf_counter()
        sources = {s["mode"]: tune_source(s, TrainConfig.batch_size) for s in summaries}
        results = evaluate_modes(sources, experiment_id, list(range(protocol.seeds)),
                                 protocol.epochs, replace(protocol.noise, val_fraction=0.0),
                                 parent_run_id=top, device=device)
        timings["evaluation"] = time.perf_counter() - started
        for mode, mode_results in results.items():
            echo(describe_results(mode, mode_results))

        echo("[3/3] report")
        started = time.perf_counter()
        report_from_mlflow(experiment_id, out, top, suite=protocol.suite, echo=echo)
        timings["report"] = time.perf_counter() - started
    return timings
