"""The MLflow schema lgals writes and searches: its tag keys, its stages, its filters.

Every ``lgals.*`` tag key and every run search filter comes from here, so that what one
stage writes and another (or the UI recipe) looks for cannot drift apart.
"""

from __future__ import annotations

from enum import Enum


class Stage(str, Enum):
    """What made a run (its ``lgals.stage`` tag)."""

    __str__ = str.__str__  # the value, in f-strings and tags alike
    __format__ = str.__format__

    TRAIN = "train"
    TRIAL = "trial"  # one Optuna trial, under its tune run
    TUNE = "tune"
    EVALUATE = "evaluate"
    REPORT = "report"
    REPRODUCE = "reproduce"
    SWEEP = "sweep"
    DIAGNOSE = "diagnose"
    REANALYZE = "reanalyze"


# Tag keys of runs
STAGE = "lgals.stage"
MODE = "lgals.mode"  # a mode's name, or "all" for a run over several modes
SEED = "lgals.seed"  # a seed run's seed
DEVICE = "lgals.device"
PRECISION = "lgals.precision"  # fp32 or bf16: the matrix products' (lgals.model.Compute)
REPEAT = "lgals.repeat"  # the repetition of a repeated study (absent: 0)
NOISE = "lgals.noise"  # a sweep's noise setting, e.g. symmetric-0.2
STUDY = "lgals.study"  # the Optuna study of a tune or trial run
TRIAL = "lgals.trial"  # a trial run's trial number
TRIAL_STATE = "lgals.trial_state"  # the trial's Optuna state, as its run ends
VAL_LABELS = "lgals.val_labels"  # noisy or clean (an oracle) validation labels
# A run trained with a mode from a user's package: the code it comes from (lgals.registry)
PLUGIN = "lgals.plugin"  # the distribution
PLUGIN_VERSION = "lgals.plugin_version"
PLUGIN_MODULE = "lgals.plugin_module"  # the module its entry point names
PLUGIN_SHA256 = "lgals.plugin_sha256"  # that module's file
PARAMS_SOURCE = "lgals.params_source"  # where an evaluation's params came from
SOURCE_RUN = "lgals.source_run"  # the run a reanalysis or diagnosis reloaded
SWEEP = "lgals.sweep"  # "true" on a sweep's report run
STATUS = "lgals.status"  # a seed run's outcome: completed, stopped, diverged
STATUS_REASON = "lgals.status_reason"  # why a run ended FAILED or KILLED
HEARTBEAT = "lgals.heartbeat"  # unix seconds of a run's last heartbeat
FIGURE = "lgals.figure"  # prefix: lgals.figure.<name> says why a figure was skipped
CLAIM = "lgals.claim"  # prefix: lgals.claim.<digest> on a top run doing that work (claims)

# MLflow's own tag keys that lgals sets (and the run context's, mlflow.user and
# mlflow.source.*, as MLflow resolves them: lgals.tracking.runs.context_tags)
NOTE = "mlflow.note.content"  # a run's (or experiment's) description in MLflow's UI
PARENT = "mlflow.parentRunId"

# The evaluate seed runs (one per mode, seed and repetition): what a comparison starts from.
# Written as the UI's search box takes it, for the README's recipe and the printed link.
SEED_RUNS = f"tags.{STAGE} = '{Stage.EVALUATE}' and tags.{SEED} != ''"


def runs_filter(stage: Stage | None = None, *, status: str | None = None,
                status_not: str | None = None, tags: dict[str, str] | None = None,
                has: tuple[str, ...] = ()) -> str:
    """An MLflow search filter: runs of ``stage`` whose ``tags`` equal the values given, that
    carry the tags in ``has``, and whose status is (or is not) the one named."""
    clauses = [f"tags.`{STAGE}` = '{stage}'"] if stage else []
    clauses += [f"tags.`{key}` = '{value}'" for key, value in (tags or {}).items()]
    clauses += [f"tags.`{key}` != ''" for key in has]
    if status:
        clauses.append(f"attributes.status = '{status}'")
    if status_not:
        clauses.append(f"attributes.status != '{status_not}'")
    return " and ".join(clauses)


# Search order: the latest run first (what "the latest tune/diagnosis/sweep" means).
LATEST_FIRST = ("attributes.start_time DESC",)


def models_of_run(run_id: str) -> str:
    """A logged-model search filter: the models run ``run_id`` logged."""
    return f"source_run_id = '{run_id}'"


def repeat_of(run) -> int:
    """The repetition a run belongs to (``lgals.repeat``; runs from before repetitions: 0)."""
    return int(run.data.tags.get(REPEAT, 0))
