"""Optuna studies, one per mode: a leak-free objective, nested MLflow runs, resume, workers.

The objective is validation accuracy after the last epoch, on a split carved from the *noisy*
training set (the labels a user would have). The test set is removed from the data before
any trial runs, so no trial can read it.

Counting: ``n_trials`` is the total of trials in any finished state (complete, pruned,
failed) plus the ones under way; a trial failed because its process died (stale heartbeat)
is retried and does not count, its retry does. Rerunning tops a study up to ``n_trials``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from lgals.data import DEFAULT_DATASET, NoiseRecipe, NoisyDataset, load_dataset
from lgals.errors import AllTrialsFailed, BadSetting, redact_url
from lgals.losses import MODES
from lgals.model import Compute
from lgals.schema import (
    DEVICE,
    FIGURE,
    NOTE,
    PRECISION,
    STAGE,
    STUDY,
    TRIAL,
    TRIAL_STATE,
    VAL_LABELS,
    Stage,
)
from lgals.storage import (
    StorageUnavailable,
    TrialRecorder,
    asking,
    default_storage,
    experimental,
    open_storage,
    setting_up,
    trial_grace_seconds,
)
from lgals.tracking.runs import (
    end_runs,
    ending,
    group_run,
    mode_tags,
    open_run,
    run_name,
    set_tags,
    source_info,
)
from lgals.tracking.seeds import tracked_train
from lgals.tracking.store import mlflow_client
from lgals.train import EpochReport, MemberResult, TrainConfig
from lgals.workers import run_pool

# WAITING trials (queued retries, enqueued trials) are work still to do: not counted, so a
# worker is started for them and pops them first.
COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
# What a trial's value is: the MLflow metric it is (the study's metric name, which
# optuna-dashboard and Optuna's importance figure show), and as the other figures name it.
METRIC = "val_acc"
OBJECTIVE = f"{METRIC} (noisy validation accuracy, last epoch)"
# Trials per study trained together in one round (benchmarks/tune_quality.py and
# tune_speed.py compare it with 1 trial at a time).
DEFAULT_BATCH = 10
# Why the run of a trial that another host failed (stale) and retried while this process was
# paused ends FAILED: what one line says as the trial leaves the stack.
TAKEN_OVER = "taken over by another process while this one was paused (stale heartbeat)"
# A trial's state from its member's outcome (a trial taken over stops as if pruned).
STATES = {"completed": TrialState.COMPLETE, "stopped": TrialState.PRUNED,
          "diverged": TrialState.FAIL}
# Rounds of workers that tune_modes runs at most to top the studies up: a round more if
# trials of a dead process were retried meanwhile (a retry is still to run; the dead one's
# trials do not count), bounded so that a process dying round after round cannot loop.
TOPUP_ROUNDS = 3
# The settings a default study name says in its stem (the dataset, the oracle and the precision
# where they are not the defaults): each other setting a study keeps is a suffix when it is not
# the default (TuneSettings.__post_init__).
IN_STEM = ("mode", "dataset", "val_labels", "precision")


@dataclass(frozen=True)
class TuneSettings:
    """One study's fixed settings; a resumed study must have been created with the same."""

    mode: str
    n_trials: int = 20
    epochs: int = 100
    batch_size: int = 128
    noise: NoiseRecipe = NoiseRecipe(val_fraction=0.1)  # trials learn on train, score on val
    val_labels: str = "noisy"  # "clean" is the oracle variant, tagged as such
    train_seed: int = 0
    sampler_seed: int = 0
    pruner: str = "median"
    precision: str = "fp32"  # the matrix products' (lgals.model.Compute)
    study_name: str = ""
    # A default name as it was before it carried the settings after its stem: a study made
    # under it with these settings is resumed there (resumable()).
    former_name: str = ""

    def __post_init__(self):
        """The default name: ``lgals-[DATASET-]MODE[-oracle][-PRECISION]``, then
        ``-KEY=VALUE`` for every other setting a study keeps that is not the default, so that
        a study is never asked to resume with other settings under its default name.
        mnist1d's fp32 studies at the defaults keep the names they had before."""
        if self.study_name:
            return
        dataset = "" if self.noise.dataset == DEFAULT_DATASET else f"{self.noise.dataset}-"
        suffix = "-oracle" if self.val_labels == "clean" else ""
        suffix += "" if self.precision == "fp32" else f"-{self.precision}"
        stem = f"lgals-{dataset}{self.mode}{suffix}"
        settings = "".join(f"-{key}={value}" for key, value in self.study_attrs().items()
                           if key not in IN_STEM and value != DEFAULT_ATTRS[key])
        object.__setattr__(self, "study_name", stem + settings)
        object.__setattr__(self, "former_name", stem if settings else "")

    def repeated(self, repeat: int) -> TuneSettings:
        """Repetition ``repeat`` of this study: its own noise draw, validation split, sampler
        seed and study (``<name>-r<repeat>``); repetition 0 is this study itself."""
        if repeat == 0:
            return self
        return dataclasses.replace(
            self, noise=self.noise.repeated(repeat), sampler_seed=self.sampler_seed + repeat,
            study_name=f"{self.study_name}-r{repeat}",
            former_name=f"{self.former_name}-r{repeat}" if self.former_name else "")

    def params(self) -> dict:
        """Every setting, the noise recipe as its own run params."""
        return {**{k: v for k, v in asdict(self).items() if k not in ("noise", "former_name")},
                **self.noise.params()}

    def study_attrs(self) -> dict:
        """What must match when a study is resumed (not n_trials: topping up is the point)."""
        return {k: v for k, v in self.params().items()
                if k not in ("n_trials", "sampler_seed", "pruner", "study_name")}


# What a study keeps when every setting is the default (the mode aside).
DEFAULT_ATTRS = TuneSettings(mode="", study_name="default").study_attrs()


def suggest(trial: optuna.Trial, mode: str) -> dict[str, float]:
    """lr and weight decay for every mode, plus the mode's own hyperparameters."""
    return {name: trial.suggest_float(name, *hyperparameter.search, log=hyperparameter.log)
            for name, hyperparameter in MODES[mode].reads.items()}


def tuning_data(settings: TuneSettings) -> NoisyDataset:
    """Training and validation split only: the test set is not there to be read."""
    data = load_dataset(settings.noise)
    data = dataclasses.replace(data, x_test=None, y_test=None)
    if settings.val_labels == "clean":
        data = dataclasses.replace(data, y_val=data.y_val_true)
    return data


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail the trials of dead processes (stale heartbeat);
    :func:`lgals.storage._fail_and_retry` follows."""
    with experimental():
        optuna.storages.fail_stale_trials(study)


def counted_trials(study: optuna.Study) -> int:
    """Trials that count towards ``n_trials`` (stale-failed ones that were retried do not)."""
    trials = study.get_trials(deepcopy=False)
    with experimental():
        retried = {optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(t)
                   for t in trials} - {None}  # the retry may still be WAITING
    return sum(1 for t in trials if t.state in COUNTED and t.number not in retried)


def create_study(settings: TuneSettings, storage: str, worker: int = 0) -> optuna.Study:
    """Create or load the study, its objective named (:data:`METRIC`); refuse to resume one
    made with other settings."""
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=5,
                                          n_warmup_steps=max(1, settings.epochs // 5))
              if settings.pruner == "median" else optuna.pruners.NopPruner())
    with setting_up(storage):  # hosts starting together: one creates, the others load
        study = optuna.create_study(study_name=settings.study_name,
                                    storage=open_storage(storage), direction="maximize",
                                    pruner=pruner, load_if_exists=True)
        attrs = settings.study_attrs()
        recorded = _recorded(study, attrs)
        if recorded and recorded != attrs:
            diff = ", ".join(f"{k}={recorded[k]!r}" for k in attrs
                             if recorded.get(k) != attrs[k])
            raise BadSetting(f"study {settings.study_name!r} was created with {diff}; "
                             "pick another --study-name, or another --storage")
        for key, value in attrs.items():
            if key not in study.user_attrs:
                study.set_user_attr(key, value)
        if study.metric_names != [METRIC]:  # a new study, or one made before it was named
            with experimental():
                study.set_metric_names([METRIC])
    # The sampler's stream: seeded, one per worker (identical streams propose identical
    # trials) and per resume point (a resumed study would otherwise replay its first random
    # proposals). From scratch it depends on --sampler-seed and the worker only.
    seed = np.random.SeedSequence([settings.sampler_seed, worker, len(study.trials)])
    # constant_liar (Optuna 5's default, stated here because batching relies on it): TPE
    # counts the RUNNING trials of a round as if they had scored badly, so the trials asked
    # together do not all crowd the same point.
    study.sampler = optuna.samplers.TPESampler(seed=int(seed.generate_state(1)[0]),
                                               constant_liar=True)
    return study


def _recorded(study: optuna.Study, attrs: dict) -> dict:
    """The settings ``study`` was created with, of those in ``attrs`` (none: a new study)."""
    recorded = {k: study.user_attrs[k] for k in attrs if k in study.user_attrs}
    if recorded:  # a study made before datasets (precisions) had names: mnist1d (fp32)
        recorded.setdefault("dataset", DEFAULT_DATASET)
        recorded.setdefault("precision", "fp32")
    return recorded


def resumable(settings: TuneSettings, storage: str) -> TuneSettings:
    """``settings``, renamed to its former name when a study of that name was created with
    these very settings and none has the new name yet: a default-named study made before
    default names carried its settings resumes where it is."""
    if not settings.former_name:
        return settings
    with setting_up(storage):
        opened = open_storage(storage)
        names = set(optuna.get_all_study_names(opened))
        if settings.study_name in names or settings.former_name not in names:
            return settings
        former = optuna.load_study(study_name=settings.former_name, storage=opened)
        attrs = settings.study_attrs()
        if _recorded(former, attrs) != attrs:
            return settings
    return dataclasses.replace(settings, study_name=settings.former_name, former_name="")


@dataclass
class _Trial:
    """A trial asked in a round, with what it trains."""

    settings: TuneSettings
    study: optuna.Study
    trial: optuna.Trial
    config: TrainConfig


class _CompletedTrials:
    """What the pruner reads of a study, taken once a round: its direction and complete
    trials. No trial of this process completes during a round, so ``trial.should_prune()``
    would read the same; trials other workers complete meanwhile count from the next round.
    (One query a round instead of one per trial and epoch, each reading every trial.)
    """

    def __init__(self, study: optuna.Study):
        self.direction = study.direction
        self.complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))

    def get_trials(self, deepcopy: bool = False, states=None) -> list:
        assert states == (TrialState.COMPLETE,), states  # all the median pruner asks for
        return self.complete


def _should_prune(pruner: optuna.pruners.BasePruner, completed: _CompletedTrials,
                  values: dict[int, float]) -> bool:
    """Optuna's pruning decision for a running trial with intermediate ``values``."""
    running = optuna.trial.create_trial(state=TrialState.RUNNING, intermediate_values=values)
    return pruner.prune(completed, running)


def say_taken_over(number: int, study_name: str) -> None:
    """One line: trial ``number`` of the study is another host's now (:data:`TAKEN_OVER`)."""
    notice(f"lgals: trial {number} of study {study_name!r} was {TAKEN_OVER}; it stops here")


def ask_round(studies: list[tuple[TuneSettings, optuna.Study]], left: dict[str, int],
              batch: int) -> list[_Trial]:
    """Up to ``batch`` new trials per study: never more than the study is missing. A trial
    another host failed (stale) before it got its params, this process having been paused
    right after asking it, is left to that host's retry."""
    asked = []
    for settings, study in studies:
        fail_stale_trials(study)  # a dead process's trials are retried
        with asking(study):
            n = min(batch, left[settings.mode], settings.n_trials - counted_trials(study))
            for _ in range(max(0, n)):
                with warnings.catch_warnings():  # "heartbeat ... used with Study.optimize":
                    warnings.simplefilter("ignore", UserWarning)  # TrialRecorder records them
                    trial = study.ask()
                study._storage.record_heartbeat(trial._trial_id)  # stale from now if we die
                try:
                    config = TrainConfig.of(settings.mode, epochs=settings.epochs,
                                            batch_size=settings.batch_size,
                                            **suggest(trial, settings.mode))
                except optuna.exceptions.UpdateFinishedTrialError:  # failed (stale) meanwhile
                    say_taken_over(trial.number, settings.study_name)
                    continue
                asked.append(_Trial(settings, study, trial, config))
        left[settings.mode] -= max(0, n)
    return asked


def train_round(asked: list[_Trial], data: NoisyDataset, experiment_id: str,
                tune_runs: dict[str, str], device: str, progress: bool = False) -> None:
    """Train a round's trials as one stack and ``tell`` each its state.

    Each trial reports its validation accuracy every epoch and is pruned on its own: a
    pruned trial leaves the stack. Its MLflow run nests under its mode's tune run, and ends
    once its trial is told, as the study keeps it. A trial another host took over while this
    process was paused (:data:`TAKEN_OVER`) leaves the stack at the next epoch, one line says
    so, and its run ends FAILED with the reason. An interrupt or error fails every trial not
    yet told, and re-raises; a storage that stopped answering (:class:`StorageUnavailable`)
    cannot be told anything: the runs of the trials not told end FAILED with the reason, and
    the trials go stale (the next ``lgals tune`` on the study, or another host's, fails and
    retries them).
    """
    storage = asked[0].study._storage
    completed = {id(a.study): _CompletedTrials(a.study) for a in asked}
    values: list[dict[int, float]] = [{} for _ in asked]
    told: set[int] = set()
    announced: set[int] = set()
    opened: list[str] = []  # the trials' MLflow runs, once opened

    def taken_over(member: int) -> None:
        if member not in announced:
            announced.add(member)
            say_taken_over(asked[member].trial.number, asked[member].settings.study_name)

    def prune(report: EpochReport) -> list[int]:
        """Record each trial's validation accuracy; return the trials to prune, and those
        another host took over."""
        pruned = []
        for member in report.members:
            item = asked[member]
            if item.trial._trial_id in recorder.taken_over:
                taken_over(member)
                pruned.append(member)
                continue
            values[member][report.epoch] = report.metrics[member]["val_acc"]
            recorder.report(item.trial._trial_id, report.epoch, values[member][report.epoch])
            if _should_prune(item.study.pruner, completed[id(item.study)], values[member]):
                pruned.append(member)
        return pruned

    def point_to_runs(run_ids: list[str]) -> None:
        opened.extend(run_ids)
        for item, run_id in zip(asked, run_ids):
            try:
                item.trial.set_user_attr("mlflow_run_id", run_id)
            except optuna.exceptions.UpdateFinishedTrialError:  # leaves at the first epoch
                recorder.taken_over.add(item.trial._trial_id)

    def settle(member: int, result: MemberResult) -> tuple[str, str]:
        """Tell the member's trial its state; its run's status and reason follow the state
        the study keeps (another host's FAIL for a trial it took over)."""
        recorder.write()  # every value reported is stored before the trial is told
        item, state = asked[member], STATES[result.status]
        stored = _tell(item, result, state)
        set_tags(opened[member], {TRIAL_STATE: stored.state.name})
        told.add(member)
        if stored.state != state:
            taken_over(member)
            return "FAILED", TAKEN_OVER
        return ("FAILED" if state == TrialState.FAIL else "FINISHED"), ""

    tags = [{TRIAL: a.trial.number, STUDY: a.settings.study_name,
             VAL_LABELS: a.settings.val_labels} for a in asked]
    try:
        with TrialRecorder(storage, [a.trial._trial_id for a in asked]) as recorder:
            tracked_train(
                data, [a.config for a in asked], [a.settings.train_seed for a in asked],
                experiment_id=experiment_id, stage=Stage.TRIAL,
                parent_run_id=[tune_runs[a.settings.mode] for a in asked], member_tags=tags,
                member_names=[f"{a.settings.mode}-trial{a.trial.number:02d}" for a in asked],
                log_models=False, callback=prune, on_runs_opened=point_to_runs, settle=settle,
                progress=progress, compute=Compute(device, asked[0].settings.precision))
    except BaseException as error:
        if isinstance(error, StorageUnavailable):
            _unsaved([run_id for member, run_id in enumerate(opened) if member not in told],
                     error)
            raise
        with contextlib.suppress(StorageUnavailable):  # gone meanwhile: the rest go stale
            for member, item in enumerate(asked):
                if member not in told:
                    item.study.tell(item.trial, state=TrialState.FAIL, skip_if_finished=True)
        raise


def _tell(item: _Trial, result: MemberResult, state: TrialState) -> optuna.trial.FrozenTrial:
    """Tell ``item``'s trial ``state`` (its value, a diverged trial's reason) and return the
    trial as the study keeps it: FAIL, untouched, where another host failed it (stale)
    before or while this process told it."""
    try:
        if result.status == "diverged":
            item.trial.set_user_attr("fail_reason", result.reason)
        value = _objective(item, result.history["val_acc"]) if state == TrialState.COMPLETE \
            else None
        return item.study.tell(item.trial, value, state=state, skip_if_finished=True)
    except optuna.exceptions.UpdateFinishedTrialError:  # failed between Optuna's check and write
        return item.study._storage.get_trial(item.trial._trial_id)


def _unsaved(run_ids: list[str], error: StorageUnavailable) -> None:
    """End FAILED, saying why, the runs of trials the storage could not take (best effort:
    the command's one line says it all the same)."""
    with contextlib.suppress(Exception):
        end_runs(run_ids, "FAILED", f"its trial was not stored: {error}")


def _objective(item: _Trial, val_acc: list[float]) -> float:
    """The last epoch's validation accuracy; for a mode that picks its epoch count
    (``early_stop``), the best epoch's, which the trial keeps as ``best_epoch``."""
    if not MODES[item.settings.mode].picks_epochs:
        return val_acc[-1]
    best = int(np.argmax(val_acc))  # the first of equal maxima: fewer epochs
    item.trial.set_user_attr("best_epoch", best + 1)
    return val_acc[best]


@dataclass(frozen=True)
class TrialJob:
    """One worker's share of a tuning call: what :func:`run_trials` needs, picklable for a
    worker process."""

    settings: tuple[TuneSettings, ...]  # the studies, sharing data and schedule
    storage: str
    tracking_uri: str
    experiment_id: str
    tune_runs: dict[str, str]  # mode -> its tune run, the parent of its trials' runs
    quotas: dict[str, int]  # mode -> trials this worker runs at most
    batch: int
    device: str = "cpu"
    worker: int = 0  # its sampler stream (see create_study)
    progress: bool = False


def run_trials(job: TrialJob) -> None:
    """One worker: rounds of up to ``job.batch`` trials per study, within its ``quotas``.

    With ``batch`` 1 the studies are tuned one after the other, one trial at a time; with
    more, every study's trials of a round train together in one stack.
    """
    import mlflow

    from lgals.tracking.deadline import install

    mlflow.set_tracking_uri(job.tracking_uri)
    install()  # a worker process waits for a server that stopped answering as its parent does
    # Optuna logs each told failure with a traceback; the trial's FAIL state, its fail_reason
    # and our summary line say it without one.
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    studies = [(s, create_study(s, job.storage, job.worker)) for s in job.settings]
    data = tuning_data(job.settings[0])  # the studies of one call share data and schedule
    left = dict(job.quotas)
    for group in ([[pair] for pair in studies] if job.batch == 1 else [studies]):
        while asked := ask_round(group, left, job.batch):
            train_round(asked, data, job.experiment_id, job.tune_runs, job.device, job.progress)


def notice(line: str) -> None:
    """A line about the command's progress, on stderr (the summaries go to stdout), above an
    epoch bar being drawn there (tqdm clears it and draws it again below)."""
    tqdm.write(line, file=sys.stderr)
    sys.stderr.flush()


def await_running(study: optuna.Study, echo: Callable[[str], None] = notice) -> None:
    """Wait until no trial of ``study`` is running, saying so once: this process's trials are
    told by now, so those are other processes'. Stale trials are failed every second (and
    retried): the trials of a process that died are not waited for past their heartbeats'
    grace."""
    said = False
    while running := len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))):
        if not said:
            echo(f"waiting for {running} trial{'s' * (running > 1)} of study "
                 f"{study.study_name!r} running in other processes (failed and retried if "
                 f"silent for {trial_grace_seconds()} s)")
            said = True
        time.sleep(1)
        fail_stale_trials(study)


def tune_modes(settings: list[TuneSettings], experiment_id: str, storage: str | None = None,
               workers: int = 1, parent_run_id: str | None = None, batch: int = DEFAULT_BATCH,
               device: str = "cpu", echo: Callable[[str], None] = notice) -> list[dict]:
    """Top every mode's study up to ``n_trials``: one tune run per study (under one umbrella
    run when several), trials in rounds of up to ``batch`` per study; return the summaries.

    Each round tops up what is missing, then waits for every trial still running, those of
    other processes too (:func:`await_running`): a study is summarised only once it is full
    of finished trials, or after :data:`TOPUP_ROUNDS` rounds. A process that finds the study
    full of others' running trials (a second command on the same store, a host joining a
    shared study at its end) waits for them, and goes on with the finished study."""
    import mlflow

    if len({tuple(sorted((k, v) for k, v in s.study_attrs().items() if k != "mode"))
            for s in settings}) > 1:
        raise ValueError("studies tuned together must share data, schedule and train seed")
    storage = storage or default_storage()
    tracking_uri = mlflow.get_tracking_uri()
    settings = [resumable(s, storage) for s in settings]
    studies = [create_study(s, storage) for s in settings]  # once, before any worker
    for study in studies:
        fail_stale_trials(study)
    group = {"n_trials": settings[0].n_trials, "epochs": settings[0].epochs, "batch": batch}
    with group_run(experiment_id, Stage.TUNE, [s.mode for s in settings], group,
                   parent_run_id) as parent:
        owned: list[str] = []
        with ending(owned):
            for s in settings:
                tags = {**mode_tags(s.mode), STAGE: Stage.TUNE, STUDY: s.study_name,
                        VAL_LABELS: s.val_labels, DEVICE: device, PRECISION: s.precision,
                        NOTE: f"Optuna study `{s.study_name}`: {s.n_trials} trials of "
                              f"{MODES[s.mode].label}, {s.epochs} epochs each, scored "
                              f"on a {s.val_labels} validation split "
                              f"({s.noise.val_fraction:g} of the training set); one "
                              "child run per trial (`<mode>-trial<NN>`), the best "
                              "params as `best.*`, Optuna's figures under `optuna/`."}
                params = {**s.params(), "workers": workers, "batch": batch, "device": device,
                          "storage": redact_url(storage), **source_info()}
                owned.append(open_run(experiment_id, run_name(f"tune-{s.mode}"), tags, params,
                                      parent_run_id=parent, adopt_project_run=parent is None))
            tune_runs = {s.mode: run_id for s, run_id in zip(settings, owned)}
            for _ in range(TOPUP_ROUNDS):
                missing = {s.mode: s.n_trials - counted_trials(study)
                           for s, study in zip(settings, studies)}
                if max(missing.values()) > 0:
                    _run_workers(settings, storage, tracking_uri, experiment_id, tune_runs,
                                 missing, batch, device, workers)
                for study in studies:
                    await_running(study, echo)
                if all(counted_trials(study) >= s.n_trials
                       for s, study in zip(settings, studies)):
                    break
            summaries = []
            for s, study, run_id in zip(settings, studies, owned):
                summary = summarize(study)
                log_study(run_id, study, summary)
                summaries.append({**summary, "run_id": run_id, "study_name": s.study_name,
                                  "mode": s.mode})
    for summary in summaries:
        if summary["n_complete"] == 0:
            raise AllTrialsFailed(f"study {summary['study_name']!r}: every trial failed "
                                  f"({summary['n_fail']} failed, {summary['n_pruned']} pruned)")
    return summaries


def split_quotas(missing: dict[str, int], workers: int) -> list[dict[str, int]]:
    """The ``missing`` trials per mode split exactly between ``workers``, the first ones
    taking the remainder; a worker left without any is dropped (not started). Those are the
    last ones, so a quota's index is its worker's number."""
    quotas = [{mode: max(0, n) // workers + (i < max(0, n) % workers)
               for mode, n in missing.items()} for i in range(workers)]
    return [quota for quota in quotas if any(quota.values())]


def _run_workers(settings: list[TuneSettings], storage: str, tracking_uri: str,
                 experiment_id: str, tune_runs: dict[str, str], missing: dict[str, int],
                 batch: int, device: str, workers: int) -> None:
    """The missing trials in this process, or split exactly between ``workers`` processes
    (:func:`lgals.workers.run_pool`; a worker killed outright leaves its trials RUNNING:
    they go stale and are retried, see :func:`tune_modes`)."""
    job = TrialJob(tuple(settings), storage, tracking_uri, experiment_id, tune_runs, missing,
                   batch, device)
    if workers == 1:
        run_trials(dataclasses.replace(job, progress=True))
        return
    run_pool(run_trials, [dataclasses.replace(job, quotas=quota, worker=i)
                          for i, quota in enumerate(split_quotas(missing, workers))],
             workers=workers, name="lgals-tune")


def summarize(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials) for state in TrialState}
    summary = {"n_trials": len(trials), "n_complete": counts[TrialState.COMPLETE],
               "n_pruned": counts[TrialState.PRUNED], "n_fail": counts[TrialState.FAIL]}
    if summary["n_complete"]:
        best = study.best_trial
        # early_stop's epoch count is chosen, not suggested: it joins the best params
        epochs = {"epochs": best.user_attrs["best_epoch"]} if "best_epoch" in best.user_attrs \
            else {}
        summary |= {"best_value": best.value, "best_params": {**best.params, **epochs},
                    "best_trial": best.number}
    return summary


def log_study(run_id: str, study: optuna.Study, summary: dict) -> None:
    """Best params as ``best.<name>``, best value, trial counts and Optuna's figures."""
    import matplotlib.pyplot as plt

    client = mlflow_client()
    for name, value in summary.get("best_params", {}).items():
        client.log_param(run_id, f"best.{name}", value)
    if "best_value" in summary:
        client.log_param(run_id, "best.trial", summary["best_trial"])
        client.log_metric(run_id, "best_val_acc", summary["best_value"])
    for key in ("n_trials", "n_complete", "n_pruned", "n_fail"):
        client.log_metric(run_id, key, summary[key])
    for name, figure in study_figures(study).items():
        if isinstance(figure, str):
            client.set_tag(run_id, f"{FIGURE}.{name}", f"skipped: {figure}")
            continue
        # cropped to what is drawn, so no label is cut (param_importances' long names)
        client.log_figure(run_id, figure, f"optuna/{name}.png",
                          save_kwargs={"bbox_inches": "tight"})
        plt.close(figure)


def study_figures(study: optuna.Study) -> dict:
    """Optuna's history, importance and slice figures, the objective named on their axes,
    readable ticks and the legend inside the plot; a figure Optuna cannot draw is the reason
    why."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter
    from optuna.visualization import matplotlib as optuna_plots

    plots = {"optimization_history": optuna_plots.plot_optimization_history,
             "param_importances": optuna_plots.plot_param_importances,
             "slice": optuna_plots.plot_slice}
    figures: dict = {}
    for name, plot in plots.items():
        try:
            with plt.rc_context(), experimental():  # Optuna's style stays in its figures
                axes = plot(study, target_name=OBJECTIVE)
        except (ValueError, RuntimeError) as error:  # e.g. fewer than two complete trials
            figures[name] = str(error)
            continue
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).get_figure()
        figure.set_size_inches(max(6.4, figure.get_figwidth()), 4.8)
        for ax in figure.axes:  # slice's panels share a row: their ticks must not collide
            ax.tick_params(axis="x", labelrotation=30, labelsize="small")
            if ax.get_xscale() == "log":  # labels on a few major ticks, none on the minor ones
                low, high = ax.get_xlim()
                ax.xaxis.set_major_locator(LogLocator(subs=(1.0,) if high / low > 30
                                                      else (1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            if ax.get_legend() is not None and name == "optimization_history":
                ax.legend(loc="best", fontsize="small")  # Optuna's sits outside the plot
        figures[name] = figure
    return figures


def describe_study(summary: dict) -> str:
    """One line per study: best value and params, trials by state, where to find it."""
    best = ", ".join(f"{k}={v:.4g}" for k, v in summary.get("best_params", {}).items())
    return (f"{MODES[summary['mode']].label}: best val acc {100 * summary['best_value']:.2f}% "
            f"({best}); trials {summary['n_complete']} complete, {summary['n_pruned']} pruned, "
            f"{summary['n_fail']} failed [study {summary['study_name']}, run {summary['run_id']}]")
