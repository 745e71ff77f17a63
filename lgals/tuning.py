"""Optuna studies, one per mode: a leak-free objective, nested MLflow runs, resume, workers.

The objective is validation accuracy after the last epoch, on a split carved from the *noisy*
training set (the labels a user would have). The test set is removed from the data before
any trial runs, so no trial can read it.

Counting: ``n_trials`` is the total of trials in any finished state (complete, pruned,
failed) plus the ones under way; a trial failed because its process died (stale heartbeat)
is retried and does not count, its retry does. Rerunning tops a study up to ``n_trials``.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.trial import TrialState

from lgals import tracking
from lgals.data import NoisyDataset, load_dataset
from lgals.errors import AllTrialsFailed, BadSetting
from lgals.losses import MODES
from lgals.train import EpochReport, TrainConfig

# The search space, in one place: name -> (low, high, log scale).
SEARCH_SPACE: dict[str, tuple[float, float, bool]] = {
    "lr": (1e-4, 3e-2, True),
    "weight_decay": (1e-6, 1e-1, True),
    "eps": (0.0, 0.6, False),  # fixed_ls
    "eps_max": (0.0, 1.0, False),  # lgals
    "gamma": (0.25, 8.0, True),  # lgals
}
# WAITING trials (queued retries, enqueued trials) are work still to do: not counted, so a
# worker is started for them and pops them first.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
warnings.filterwarnings("ignore", category=ExperimentalWarning)  # heartbeat API, plots
HEARTBEAT_SECONDS = 5
GRACE_SECONDS = 15


class TrialDiverged(Exception):
    """The trial's training loss became NaN/inf: recorded as a failed trial, study goes on."""


@dataclass(frozen=True)
class TuneSettings:
    """One study's fixed settings; a resumed study must have been created with the same."""

    mode: str
    n_trials: int = 20
    epochs: int = 100
    batch_size: int = 128
    val_fraction: float = 0.1
    val_labels: str = "noisy"  # "clean" is the oracle variant, tagged as such
    noise_rate: float = 0.2
    noise_type: str = "symmetric"
    noise_seed: int = 0
    train_seed: int = 0
    sampler_seed: int = 0
    pruner: str = "median"
    study_name: str = ""

    def __post_init__(self):
        if not self.study_name:
            suffix = "-oracle" if self.val_labels == "clean" else ""
            object.__setattr__(self, "study_name", f"lgals-{self.mode}{suffix}")

    def study_attrs(self) -> dict:
        """What must match when a study is resumed (not n_trials: topping up is the point)."""
        return {k: v for k, v in asdict(self).items()
                if k not in ("n_trials", "sampler_seed", "pruner", "study_name")}


def suggest(trial: optuna.Trial, mode: str) -> dict[str, float]:
    """lr and weight decay for every mode, plus the mode's own hyperparameters."""
    names = ("lr", "weight_decay") + MODES[mode].params
    return {name: trial.suggest_float(name, SEARCH_SPACE[name][0], SEARCH_SPACE[name][1],
                                      log=SEARCH_SPACE[name][2]) for name in names}


def tuning_data(settings: TuneSettings) -> NoisyDataset:
    """Training and validation split only: the test set is not there to be read."""
    data = load_dataset(settings.noise_rate, settings.noise_type, settings.noise_seed,
                        settings.val_fraction)
    data = dataclasses.replace(data, x_test=None, y_test=None)
    if settings.val_labels == "clean":
        data = dataclasses.replace(data, y_val=data.y_val_true)
    return data


def default_storage() -> str:
    """A SQLite file beside the MLflow store (``optuna.db`` next to ``mlflow.db``)."""
    import mlflow

    uri = mlflow.get_tracking_uri()
    if uri.startswith("sqlite:///"):
        return f"sqlite:///{Path(uri[len('sqlite:///'):]).parent / 'optuna.db'}"
    return f"sqlite:///{Path('optuna.db').resolve()}"


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An RDB storage with heartbeats, so trials of a killed process are failed and retried."""
    return optuna.storages.RDBStorage(
        url, heartbeat_interval=HEARTBEAT_SECONDS, grace_period=GRACE_SECONDS,
        heartbeat_stale_trial_callback=_fail_and_retry,
    )


def _fail_and_retry(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A stale trial's MLflow run ends FAILED too; then Optuna retries the trial once."""
    run_id = trial.user_attrs.get("mlflow_run_id")
    if run_id:
        from mlflow import MlflowClient

        client = MlflowClient()
        client.set_tag(run_id, "lgals.trial_state", "FAIL")
        client.set_tag(run_id, "lgals.status_reason", "process died (stale heartbeat)")
        client.set_terminated(run_id, "FAILED")
    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)(study, trial)


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials`` (stale-failed ones that were retried do not)."""
    trials = study.get_trials(deepcopy=False)
    retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
               for t in trials} - {None}  # the retry may still be WAITING
    return sum(1 for t in trials if t.state in COUNTED and t.number not in retried)


def create_study(settings: TuneSettings, storage: str, worker: int = 0) -> optuna.Study:
    """Create or load the study; refuse to resume one made with other settings."""
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=5,
                                          n_warmup_steps=max(1, settings.epochs // 5))
              if settings.pruner == "median" else optuna.pruners.NopPruner())
    study = optuna.create_study(study_name=settings.study_name, storage=open_storage(storage),
                                direction="maximize", pruner=pruner, load_if_exists=True)
    # The sampler's stream: seeded, one per worker (identical streams propose identical
    # trials) and per resume point (a resumed study would otherwise replay its first random
    # proposals). From scratch it depends on --sampler-seed and the worker only.
    seed = np.random.SeedSequence([settings.sampler_seed, worker, len(study.trials)])
    study.sampler = optuna.samplers.TPESampler(seed=int(seed.generate_state(1)[0]))
    attrs = settings.study_attrs()
    recorded = {k: study.user_attrs[k] for k in attrs if k in study.user_attrs}
    if recorded and recorded != attrs:
        diff = ", ".join(f"{k}={recorded[k]!r}" for k in attrs if recorded.get(k) != attrs[k])
        raise BadSetting(f"study {settings.study_name!r} was created with {diff}; "
                         "pick another --study-name")
    for key, value in attrs.items():
        if key not in study.user_attrs:
            study.set_user_attr(key, value)
    return study


def make_objective(settings: TuneSettings, data: NoisyDataset, experiment_id: str,
                   parent_run_id: str):
    """``objective(trial)``: train one model, report val accuracy each epoch for pruning."""

    def objective(trial: optuna.Trial) -> float:
        config = TrainConfig(mode=settings.mode, epochs=settings.epochs,
                             batch_size=settings.batch_size, **suggest(trial, settings.mode))

        def report(epoch: EpochReport):
            if epoch.members:
                trial.report(epoch.metrics[0]["val_acc"], epoch.epoch)
                if trial.should_prune():
                    return [0]
            return None

        tags = {"lgals.trial": trial.number, "lgals.study": settings.study_name,
                "lgals.val_labels": settings.val_labels}
        results, (run_id,), _ = tracking.tracked_train(
            data, [config], [settings.train_seed], experiment_id=experiment_id, stage="trial",
            parent_run_id=parent_run_id, member_tags=[tags], log_models=False,
            callback=report, on_runs_opened=lambda ids: trial.set_user_attr("mlflow_run_id",
                                                                            ids[0]))
        result = results[0]
        state = {"completed": "COMPLETE", "stopped": "PRUNED", "diverged": "FAIL"}[result.status]
        tracking.set_tags(run_id, {"lgals.trial_state": state})
        if result.status == "diverged":
            trial.set_user_attr("fail_reason", result.reason)
            raise TrialDiverged(result.reason)
        if result.status == "stopped":
            raise optuna.TrialPruned(result.reason)
        return result.history["val_acc"][-1]

    return objective


def run_trials(settings: TuneSettings, storage: str, tracking_uri: str, experiment_id: str,
               parent_run_id: str, quota: int, worker: int = 0,
               progress: bool = False) -> None:
    """One worker: run at most ``quota`` trials, stopping once the study has its total."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    # Optuna logs every caught trial failure with a traceback; the trial's own FAIL state, its
    # fail_reason and our summary line say it without one.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = create_study(settings, storage, worker)
    optuna.storages.fail_stale_trials(study)
    objective = make_objective(settings, tuning_data(settings), experiment_id, parent_run_id)

    def stop_when_full(study: optuna.Study, trial) -> None:
        if counted_trials(study) >= settings.n_trials:
            study.stop()

    study.optimize(objective, n_trials=quota, catch=(TrialDiverged,), callbacks=[stop_when_full],
                   show_progress_bar=progress, gc_after_trial=False)


def _worker(args: tuple) -> None:
    settings, storage, tracking_uri, experiment_id, parent, quota, worker, threads = args
    import torch

    torch.set_num_threads(threads)  # N workers share the cores instead of fighting for them
    run_trials(settings, storage, tracking_uri, experiment_id, parent, quota, worker)


def tune(settings: TuneSettings, experiment_id: str, storage: str | None = None,
         workers: int = 1, parent_run_id: str | None = None) -> dict:
    """Top the study up to ``n_trials`` under one MLflow tune run; return its summary."""
    import mlflow

    storage = storage or default_storage()
    tracking_uri = mlflow.get_tracking_uri()
    study = create_study(settings, storage)  # once, before any worker: no creation races
    optuna.storages.fail_stale_trials(study)
    tags = {"lgals.mode": settings.mode, "lgals.stage": "tune",
            "lgals.study": settings.study_name, "lgals.val_labels": settings.val_labels}
    params = {**asdict(settings), "workers": workers, "storage": _redact(storage),
              **tracking.source_info()}
    owned = [tracking.open_run(experiment_id, f"tune-{settings.mode}", tags, params,
                               parent_run_id=parent_run_id,
                               adopt_project_run=parent_run_id is None)]
    with tracking.ending(owned):
        for _ in range(3):  # a round more if trials of a dead process were retried meanwhile
            missing = settings.n_trials - counted_trials(study)
            if missing <= 0:
                break
            if workers == 1:
                run_trials(settings, storage, tracking_uri, experiment_id, owned[0], missing,
                           progress=True)
            else:
                quotas = [missing // workers + (i < missing % workers) for i in range(workers)]
                threads = max(1, (os.cpu_count() or 1) // workers)
                jobs = [(settings, storage, tracking_uri, experiment_id, owned[0], q, i, threads)
                        for i, q in enumerate(quotas) if q]
                with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
                    pool.map(_worker, jobs)
            while any(t.state == TrialState.RUNNING for t in study.get_trials(deepcopy=False)):
                time.sleep(1)  # another machine's trials: wait so the summary is final
                optuna.storages.fail_stale_trials(study)
        summary = summarize(study)
        log_study(owned[0], study, summary)
    if summary["n_complete"] == 0:
        raise AllTrialsFailed(f"study {settings.study_name!r}: every trial failed "
                           f"({summary['n_fail']} failed, {summary['n_pruned']} pruned)")
    return {**summary, "run_id": owned[0], "study_name": settings.study_name,
            "mode": settings.mode}


def summarize(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    summary = {"n_trials": len(trials), "n_complete": counts[TrialState.COMPLETE],
               "n_pruned": counts[TrialState.PRUNED], "n_fail": counts[TrialState.FAIL]}
    if summary["n_complete"]:
        summary |= {"best_value": study.best_value, "best_params": study.best_params,
                    "best_trial": study.best_trial.number}
    return summary


def log_study(run_id: str, study: optuna.Study, summary: dict) -> None:
    """Best params as ``best.<name>``, best value, trial counts and Optuna's figures."""
    import matplotlib.pyplot as plt
    from mlflow import MlflowClient
    from optuna.visualization import matplotlib as optuna_plots

    client = MlflowClient()
    for name, value in summary.get("best_params", {}).items():
        client.log_param(run_id, f"best.{name}", value)
    if "best_value" in summary:
        client.log_param(run_id, "best.trial", summary["best_trial"])
        client.log_metric(run_id, "best_val_acc", summary["best_value"])
    for key in ("n_trials", "n_complete", "n_pruned", "n_fail"):
        client.log_metric(run_id, key, summary[key])
    plots = {"optimization_history": optuna_plots.plot_optimization_history,
             "param_importances": optuna_plots.plot_param_importances,
             "slice": optuna_plots.plot_slice}
    for name, plot in plots.items():
        try:
            with plt.rc_context():  # Optuna switches the global style; keep it to its figures
                axes = plot(study)
        except (ValueError, RuntimeError) as error:  # e.g. fewer than two complete trials
            client.set_tag(run_id, f"lgals.figure.{name}", f"skipped: {error}")
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.set_size_inches(max(6.4, figure.get_figwidth()), 4.8)
        client.log_figure(run_id, figure, f"optuna/{name}.png")
        plt.close(figure)


def _redact(url: str) -> str:
    """Storage URL without a password, fit for a param."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def tune_modes(settings: list[TuneSettings], experiment_id: str, storage: str | None = None,
               workers: int = 1, parent_run_id: str | None = None) -> list[dict]:
    """One study per mode, one after the other, under one umbrella run when several."""
    group = {"n_trials": settings[0].n_trials, "epochs": settings[0].epochs}
    with tracking.group_run(experiment_id, "tune", [s.mode for s in settings], group,
                            parent_run_id) as parent:
        return [tune(s, experiment_id, storage, workers, parent) for s in settings]


def describe(summary: dict) -> str:
    """One line per study: best value and params, trials by state, where to find it."""
    best = ", ".join(f"{k}={v:.4g}" for k, v in summary.get("best_params", {}).items())
    return (f"{MODES[summary['mode']].label}: best val acc {100 * summary['best_value']:.2f}% "
            f"({best}); trials {summary['n_complete']} complete, {summary['n_pruned']} pruned, "
            f"{summary['n_fail']} failed [study {summary['study_name']}, run {summary['run_id']}]")
