"""Command line: ``lgals train`` (and later tune/evaluate/report/reproduce). Thin by design.

Every option is validated by its click type before any work starts; a bad value prints one
line naming the option and its allowed range, and exits with code 2.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import importlib.util
import json
import math
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import mean, stdev
from typing import NoReturn

import click

from lgals.data import (
    DATASETS,
    DEFAULT_DATASET,
    MAX_NOISE_RATE,
    MAX_VAL_FRACTION,
    NOISE_TYPES,
    NoiseRecipe,
    load_dataset,
    registered,
)
from lgals.errors import (
    BadSetting,
    LgalsError,
    NoSpaceLeft,
    keep_secret,
    out_of_space,
    redact,
    redact_url,
)
from lgals.interrupts import exit_code, install_interrupt_handlers
from lgals.losses import EVERY_MODE, HYPERPARAMETERS, MODES, SUITES, Hyperparameter, Mode
from lgals.model import PRECISIONS, Compute
from lgals.registry import Registry
from lgals.schema import MODE, REPEAT, SEED_RUNS, SOURCE_RUN, Stage
from lgals.settings import seconds_setting
from lgals.tracking.null import Untracked
from lgals.tracking.runs import end_dead_runs, logging_system_metrics, scope
from lgals.tracking.seeds import Tracked
from lgals.tracking.store import connect, open_store, url_scheme, user_error
from lgals.tracking.ui import runs_page
from lgals.train import MAX_EPOCHS, TrainConfig

# The stages' modules (Optuna, scipy, MLflow's model flavours) are imported in the command
# bodies that use them, not here: `lgals --help` and a bad option answer without them.

NOISE = NoiseRecipe()

# The most each size option takes (its help says why): past them an extra 0 typed by mistake
# would run for days or fill the memory, and no study needs more.
MAX_SEEDS = 100  # one stack, whose memory grows with it; past 100 no interval narrows much
MAX_TRIALS = 1000  # TPE's cost per trial grows with the trials before it
MAX_REPEATS = 100  # each repetition is a whole tune and evaluation
MAX_WORKERS = 64  # processes on one host, each with torch loaded
MAX_ROUND = 100  # trials of a study trained as one stack per round
# Every seed option: numpy's legacy range, which Optuna's samplers seed with (torch takes
# 64 bits); the offsets lgals adds (repetitions, seeds) stay far below 2**63.
SEED_RANGE = click.IntRange(0, 2**32 - 1)
EPOCHS_HELP = (f"Training epochs (at most {MAX_EPOCHS}: a run keeps a row per metric per "
               "epoch).")
WORKERS_HELP = (f"Local worker processes sharing each study while tuning (at most "
                f"{MAX_WORKERS}, each with torch loaded; hosts share a study through "
                "--storage).")

class FiniteRange(click.FloatRange):
    """A float range that also refuses nan and inf (they pass any pair of comparisons)."""

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{number} is not a finite number.", param, ctx)
        return number


def _apply(func, options):
    for option in reversed(options):
        func = option(func)
    return func


def hyperparameter_help(name: str, hyperparameter: Hyperparameter,
                        modes: Mapping[str, Mode]) -> str:
    """A hyperparameter's option help: its declaration's, else (a plugin that gave none) the
    modes that read it, so that no option is bare."""
    if hyperparameter.help:
        return hyperparameter.help
    readers = [mode_name for mode_name, mode in modes.items() if name in mode.params]
    return f"A hyperparameter of {', '.join(readers)} (its package describes it)."


def hyperparameter_options(func):
    """Options of one training run: its schedule, and every registered mode's
    hyperparameters (a plugin's too), handed to the command as one ``config`` of its
    ``--mode`` (the options other modes read are not part of it)."""
    @functools.wraps(func)
    def command(*args, mode, epochs, batch_size, **kwargs):
        values = {name: kwargs.pop(name) for name in HYPERPARAMETERS}
        config = TrainConfig.of(mode, epochs=epochs, batch_size=batch_size,
                                **{name: values[name] for name in MODES[mode].reads})
        return func(*args, config=config, **kwargs)

    return _apply(command, [
        click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=TrainConfig.epochs,
                     show_default=True, help=EPOCHS_HELP),
        click.option("--batch-size", type=click.IntRange(min=2), default=TrainConfig.batch_size,
                     show_default=True, help="At least 2: LGALS needs a batch mean."),
        *(click.option(f"--{name.replace('_', '-')}",
                       type=FiniteRange(h.low, h.high, h.low_open, h.high_open),
                       default=h.default, show_default=True,
                       help=hyperparameter_help(name, h, MODES))
          for name, h in HYPERPARAMETERS.items()),
    ])


def _report_plugin_problems(registry: Registry) -> None:
    """Each package ``registry`` could not register, one line on stderr (the registry skipped
    it and works on); called once per command, where the command first uses the registry."""
    for problem in registry.problems:
        click.echo(f"lgals: warning: {redact(problem)}", err=True)


class DatasetName(click.ParamType):
    """A registered dataset that can be loaded here. Checked when a command runs, not when the
    CLI is imported: only then is the registry loaded, with any plugin, and its problems
    reported (``--help`` imports no plugin)."""

    name = "dataset"

    def convert(self, value, param, ctx) -> str:
        _report_plugin_problems(DATASETS)
        if value not in DATASETS:
            self.fail(f"{value!r} is not one of {', '.join(map(repr, DATASETS))}.", param, ctx)
        try:
            registered(value)
        except BadSetting as error:  # its optional requirements are not installed
            self.fail(str(error), param, ctx)
        return value


dataset_option = click.option(
    "--dataset", type=DatasetName(), default=NOISE.dataset, show_default=True,
    help="Which dataset (`lgals datasets` lists them).")


def noise_options(split_option=None):
    """The dataset and its label-noise recipe as options, handed to the command as one
    ``noise`` :class:`NoiseRecipe`; ``split_option`` is the command's ``--val-fraction``, if
    it has one."""
    def decorate(func):
        @functools.wraps(func)
        def command(*args, dataset, noise_rate, noise_type, noise_seed,
                    val_fraction=NOISE.val_fraction, **kwargs):
            noise = NoiseRecipe(noise_rate, noise_type, noise_seed, val_fraction, dataset)
            return func(*args, noise=noise, **kwargs)

        return _apply(command, [
            dataset_option,
            click.option("--noise-rate", type=FiniteRange(0.0, MAX_NOISE_RATE),
                         default=NOISE.noise_rate, show_default=True,
                         help="Share of training labels flipped."),
            click.option("--noise-type", type=click.Choice(NOISE_TYPES),
                         default=NOISE.noise_type, show_default=True,
                         help="symmetric: a flipped label goes to any other class; pair: to "
                              "the next one."),
            click.option("--noise-seed", type=SEED_RANGE, default=NOISE.noise_seed,
                         show_default=True,
                         help="Seed of which labels flip (and of the validation split)."),
            *([split_option] if split_option else []),
        ])
    return decorate


def compute_options(func):
    """``--device`` and ``--precision``, handed to the command as one ``compute``
    (:class:`Compute`), checked before anything starts: CUDA must be there, and bf16 needs
    a device that multiplies bfloat16 matrices in hardware."""
    @functools.wraps(func)
    def command(*args, device, precision, **kwargs):
        compute = None
        for hint, given in (("'--device'", {}), ("'--precision'", {"precision": precision})):
            try:  # the device alone first, so that an error names the option it is about
                compute = Compute.of(device, **given)
            except ValueError as error:
                raise click.BadParameter(str(error), click.get_current_context(),
                                         param_hint=hint) from None
        return func(*args, compute=compute, **kwargs)

    return _apply(command, [
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto",
                     show_default=True,
                     help="Where to train: `auto` takes CUDA when torch sees a GPU."),
        click.option("--precision", type=click.Choice(list(PRECISIONS)), default="fp32",
                     show_default=True,
                     help="Of the matrix products: bf16 runs them in bfloat16 (weights, "
                          "optimizer, losses and metrics stay float32), on CPUs with "
                          "AVX512-BF16 or AMX and on CUDA."),
    ])

# tuning.DEFAULT_BATCH, written out so the CLI starts without importing Optuna (a test in
# tests/unit/test_mlproject.py keeps the two, and MLproject's, equal)
batch_option = click.option(
    "--batch", type=click.IntRange(1, MAX_ROUND), default=10, show_default=True,
    help=f"Trials per study trained together in each round (1: one at a time; at most "
         f"{MAX_ROUND}, the stack's memory grows with it).")


# The variable each option that takes a URL reads it from instead, and who reads a password
# given apart from its URL, by the URL's scheme.
URL_VARIABLES = {"--tracking-uri": "MLFLOW_TRACKING_URI", "--storage": "LGALS_STORAGE"}
PASSWORD_VARIABLES = {
    "http": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (MLflow reads them)",
    "https": "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (MLflow reads them)",
    "postgresql": "PGPASSWORD or ~/.pgpass (PostgreSQL's client reads them)"}


def _from_environment(ctx: click.Context, name: str) -> bool:
    """Whether option ``name`` took its value from its environment variable (an error about
    the value then names the variable, not the option)."""
    return ctx.get_parameter_source(name) == click.core.ParameterSource.ENVIRONMENT


def _storage(ctx, param, url: str | None) -> str | None:
    """The storage URL, its password kept out of everything lgals prints or records, checked
    before anything starts (:func:`lgals.storage.check_storage`)."""
    if url:
        keep_secret(url)
        from lgals.storage import check_storage

        check_storage(url, URL_VARIABLES["--storage"] if _from_environment(ctx, param.name)
                      else "--storage")
    return url


storage_option = click.option(
    "--storage", envvar=URL_VARIABLES["--storage"], show_envvar=True, callback=_storage,
    help="Optuna storage URL [default: optuna.db beside mlflow.db]; a URL with a password "
         "belongs in the variable, not on the command line.")

def _mode_name(item: str) -> str:
    if item not in MODES:
        raise ValueError(f"{item!r} is not a mode (`lgals modes` lists them: "
                         f"{', '.join(MODES)})")
    return item


def _modes(ctx, param, value: str) -> tuple[str, ...] | None:
    """``all`` (None: the modes of --suite), or the modes named, comma-separated."""
    return None if value == "all" else _unique_list(_mode_name)(ctx, param, value)


def modes_option(*names: str):
    return click.option(
        *names, "modes", callback=_modes, default="all", show_default=True,
        help="Comma-separated modes, built-in or from an installed package (`lgals modes`); "
             "`all`: every mode of --suite.")


suite_option = click.option(
    "--suite", type=click.Choice(list(SUITES)), default="paper", show_default=True,
    help="The modes `all` means: paper (Baseline, FixedLS, LGALS), controls (paper + the "
         "ablations), peers (paper + label-noise methods), all.")

def _claim(ctx, param, path: Path | None):
    """--claim FILE, read and checked before anything starts: a bad field is one line."""
    if path is None:
        return None
    from lgals.claim import load

    return load(path)


claim_option = click.option(
    "--claim", type=click.Path(dir_okay=False, path_type=Path), callback=_claim,
    help="A claim file (YAML; docs/claim.md) to test instead of the note's "
         "(lgals/claims/note.yaml): its modes, noise setting and protocol (robust if it names "
         "none; --protocol, --quick, --repeats, --seeds override it). --suite adds modes.")


def _register(ctx, param, name: str) -> str:
    """--register NAME, checked before anything starts; empty (the MLproject's default):
    nothing is registered."""
    if not name:
        return ""
    from lgals.tracking.register import name_problem

    problem = name_problem(name)
    if problem:
        raise click.BadParameter(f"{name!r}: {problem}", ctx, param)
    return name


register_option = click.option(
    "--register", metavar="NAME", default="", callback=_register,
    help="Register each mode's evaluated seed models in MLflow's Model Registry as versions "
         "of NAME-<mode>, the alias `best` on the one whose run ended with the highest "
         "train_true_acc [default: none].")


def _given(name: str) -> bool:
    """Whether the command line set option ``name`` (not its default)."""
    return click.get_current_context().get_parameter_source(name) not in (
        click.core.ParameterSource.DEFAULT, None)


def _chosen_modes(claim, suite: str, modes: tuple[str, ...] | None) -> tuple[str, ...]:
    """The modes a protocol runs or a report reads: the claim's, then --modes', then the
    suite's when --suite is given; () when none names any (the protocol's suite decides)."""
    claimed = claim.modes if claim is not None else ()
    if not (claimed or modes):
        return ()
    return tuple(dict.fromkeys([*claimed, *(modes or ()),
                                *(SUITES[suite] if _given("suite") else ())]))


repeats_option = click.option(
    "--repeats", type=click.IntRange(1, MAX_REPEATS), default=1, show_default=True,
    help="Independent repetitions: repetition r has its own noise draw (--noise-seed + r), "
         f"validation split and sampler seed (at most {MAX_REPEATS}: each is a whole study).")

def _tracking_uri(ctx, param, uri: str | None) -> str | None:
    """--tracking-uri as given; a value of ``$MLFLOW_TRACKING_URI`` is left for the store to
    read (:func:`lgals.tracking.store.open_store`), so that an error about it names the
    variable, not the option."""
    if _from_environment(ctx, param.name):
        return None
    return uri


tracking_uri_option = click.option(
    "--tracking-uri", envvar=URL_VARIABLES["--tracking-uri"], show_envvar=True,
    callback=_tracking_uri,
    help="MLflow tracking URI [default: MLflow's, sqlite:///mlflow.db].")


# What MLflow's own CLI reads the experiment's name from, when no option names one.
EXPERIMENT_ENV = "MLFLOW_EXPERIMENT_NAME"


# The longest experiment name every MLflow store takes: its experiments.name column is
# String(256), which PostgreSQL and MySQL stores enforce (MLflow's own check allows 500,
# SQLite any). Written out so that a bad name answers without importing MLflow (a test in
# tests/unit/test_cli.py keeps it equal to the column).
MAX_EXPERIMENT_NAME = 256


def _shown(value: str) -> str:
    """A value as an error quotes it: its first 40 characters."""
    return f"{value[:40]!r}{'...' if len(value) > 40 else ''}"


def _experiment_name(ctx, param, name: str | None) -> str | None:
    """An experiment name MLflow takes, checked before anything starts: not empty, at most
    :data:`MAX_EXPERIMENT_NAME` characters; the error names where it came from."""
    if name is None:
        return None
    problem = ("it is empty" if not name else
               f"{len(name)} characters, MLflow stores at most {MAX_EXPERIMENT_NAME}"
               if len(name) > MAX_EXPERIMENT_NAME else "")
    if problem:
        hint = EXPERIMENT_ENV if _from_environment(ctx, param.name) else repr(param.opts[0])
        raise click.BadParameter(f"{_shown(name)}: {problem}", ctx, param, param_hint=hint)
    return name


def experiment_option(**kwargs):
    """``--experiment-name``, else ``$MLFLOW_EXPERIMENT_NAME`` (as MLflow's CLI), else the
    command's default; the one rule for every command that takes an experiment."""
    return click.option("--experiment-name", envvar=EXPERIMENT_ENV, show_envvar=True,
                        callback=_experiment_name, **kwargs)


def _experiment_setting() -> str:
    """Where the command's experiment name came from, as an error about it names it."""
    from_env = _from_environment(click.get_current_context(), "experiment_name")
    return EXPERIMENT_ENV if from_env else "--experiment-name"


def tracking_options(func):
    """Where runs go: MLflow's default store unless told otherwise."""
    func = experiment_option(default="lgals", show_default=True,
                             help="MLflow experiment (inside `mlflow run`, the project's).")(func)
    return tracking_uri_option(func)


def _psutil_installed(ctx, param, enabled: bool) -> bool:
    """--system-metrics is refused before anything starts where psutil is missing, or where
    the sampling interval it reads from MLflow's variable is no number of seconds."""
    if enabled and importlib.util.find_spec("psutil") is None:
        raise click.BadParameter("needs psutil: pip install 'lgals[system-metrics]'", ctx, param)
    if enabled:
        seconds_setting("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", 10, 0.1)
    return enabled


def system_metrics_option(func):
    """``--system-metrics``: MLflow's system metrics on the command's top run
    (:func:`lgals.tracking.runs.logging_system_metrics`)."""
    @functools.wraps(func)
    def command(*args, system_metrics, **kwargs):
        if system_metrics and kwargs.get("no_tracking"):
            raise click.BadParameter("they are logged to the command's run: not with "
                                     "--no-tracking", param_hint="'--system-metrics'")
        with logging_system_metrics(system_metrics):
            return func(*args, **kwargs)

    return click.option(
        "--system-metrics", is_flag=True, default=False, callback=_psutil_installed,
        help="Log MLflow's system metrics (CPU, memory, disk, network; GPU with pynvml) to "
             "the command's top run, every 10 s (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL); "
             "needs lgals[system-metrics].")(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lgals")
def cli() -> None:
    """Put Logit-Gradient Alignment Label Smoothing to an honest test on noisy mnist1d."""
    _report_plugin_problems(MODES)  # a broken plugin is named; every other mode still works


@cli.command("train", short_help="Train seeds of one mode with given hyperparameters.")
@click.option("--mode", type=click.Choice(list(MODES)), default="baseline", show_default=True,
              help="The mode (loss) to train, built-in or from a package (`lgals modes`).")
@click.option("--seeds", type=click.IntRange(1, MAX_SEEDS), default=5, show_default=True,
              help=f"How many seeds to train together (at most {MAX_SEEDS}: one stack).")
@click.option("--first-seed", type=SEED_RANGE, default=0, show_default=True,
              help="Model seed of the first run; the others follow it.")
@hyperparameter_options
@noise_options(click.option("--val-fraction", type=FiniteRange(0.0, MAX_VAL_FRACTION),
                            default=NOISE.val_fraction, show_default=True,
                            help="Noisy validation split carved from training."))
@compute_options
@tracking_options
@system_metrics_option
@click.option("--no-tracking", is_flag=True, help="Do not log to MLflow.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def train_command(seeds, first_seed, config, noise, compute, tracking_uri, experiment_name,
                  no_tracking, as_json) -> None:
    """Train seeds FIRST_SEED .. FIRST_SEED+SEEDS-1 of one mode together.

    Each seed is one MLflow run (several seeds: under one parent run) with per-epoch metrics,
    epsilon distributions, the data recipe and the model.
    """
    mode = config.mode
    seed_list = list(range(first_seed, first_seed + seeds))
    tracker = Untracked() if no_tracking else Tracked(_experiment(tracking_uri, experiment_name))
    data = load_dataset(noise)
    results, run_ids, parent = tracker.train(data, [config] * len(seed_list), seed_list,
                                             stage=Stage.TRAIN, progress=True, compute=compute)
    if run_ids:
        suffix = f" (parent {parent})" if parent else ""
        click.echo(f"MLflow runs: {', '.join(run_ids)}{suffix}", err=True)
    params = {**config.mode_params(), **data.params(), "precision": compute.precision,
              "seeds": seed_list}
    accs = [r.final_test_acc for r in results if r.final_test_acc is not None]
    if as_json:
        document = {
            "mode": mode,
            "params": params,
            "seeds": [{"seed": r.seed, "final_test_acc": r.final_test_acc, "status": r.status,
                       "history": r.history} for r in results],
        }
        click.echo(json.dumps(document))
    else:
        for r in results:
            outcome = (f"final test accuracy {100 * r.final_test_acc:.2f}%"
                       if r.final_test_acc is not None else f"{r.status}: {r.reason}")
            click.echo(f"seed {r.seed}: {outcome}")
        if accs:
            spread = f" ± {100 * stdev(accs):.2f}" if len(accs) > 1 else ""
            click.echo(f"{MODES[mode].label}: {100 * mean(accs):.2f}%{spread} over "
                       f"{len(accs)} seed(s)")
    if len(accs) < len(results):  # the same contract with and without --json: exit 1
        raise LgalsError(f"{len(results) - len(accs)} of {len(results)} seed(s) diverged "
                         "(non-finite loss): lower --lr")


# The longest --study-name: Optuna's studies.study_name column is String(512) (PostgreSQL
# enforces it), and lgals appends -MODE (several modes) and -rN (repetitions).
MAX_STUDY_NAME = 400


def _at_most(length: int):
    """A string option of at most ``length`` characters, refused in one line before anything
    starts."""
    def callback(ctx, param, value: str | None) -> str | None:
        if value is not None and len(value) > length:
            raise click.BadParameter(f"{_shown(value)}: {len(value)} characters, at most "
                                     f"{length}", ctx, param)
        return value
    return callback


@cli.command("tune", short_help="Tune each mode's hyperparameters with Optuna.")
@modes_option("--modes", "--mode")
@suite_option
@click.option("--n-trials", type=click.IntRange(1, MAX_TRIALS), default=20, show_default=True,
              help=f"Total per study; a rerun tops the study up to this (at most {MAX_TRIALS}: "
                   "TPE's time per trial grows with the trials before it).")
@click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=TrainConfig.epochs,
              show_default=True, help=EPOCHS_HELP)
@click.option("--batch-size", type=click.IntRange(min=2), default=TrainConfig.batch_size,
              show_default=True, help="At least 2: LGALS needs a batch mean.")
# 0.1: TuneSettings' default split, written out so that --help does not import Optuna
# (a test keeps the two equal).
@noise_options(click.option("--val-fraction",
                            type=FiniteRange(0.0, MAX_VAL_FRACTION, min_open=True),
                            default=0.1, show_default=True,
                            help="Validation split (noisy labels) for the objective."))
@click.option("--val-labels", type=click.Choice(["noisy", "clean"]), default="noisy",
              show_default=True, help="`clean` is an oracle variant, tagged as such.")
@storage_option
@click.option("--study-name", type=click.STRING, callback=_at_most(MAX_STUDY_NAME),
              help="[default: lgals-MODE, lgals-DATASET-MODE on a dataset other than mnist1d; "
                   "then -oracle at --val-labels clean, -bf16 at --precision bf16, and "
                   "-KEY=VALUE for each of --epochs, --batch-size, --train-seed and the noise "
                   "options not at its default, e.g. lgals-MODE-epochs=30]; with several "
                   f"modes, a prefix. At most {MAX_STUDY_NAME} characters: Optuna keeps 512, "
                   "and lgals may add -MODE and -rN.")
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=1, show_default=True,
              help=WORKERS_HELP)
@click.option("--sampler-seed", type=SEED_RANGE, default=0, show_default=True,
              help="Seed of the TPE sampler (repetition r: this + r).")
@click.option("--train-seed", type=SEED_RANGE, default=0, show_default=True,
              help="Model seed of every trial.")
@click.option("--pruner", type=click.Choice(["median", "none"]), default="median",
              show_default=True,
              help="median: stop a trial below the median of the earlier ones at the same "
                   "epoch (after 5 trials and the first fifth of the epochs); none: never.")
@repeats_option
@batch_option
@compute_options
@tracking_options
@system_metrics_option
def tune_command(modes, suite, n_trials, epochs, batch_size, noise, val_labels, storage, study_name,
                 workers, sampler_seed, train_seed, pruner, repeats, batch, compute, tracking_uri,
                 experiment_name) -> None:
    """Tune lr, weight decay and each mode's own parameters with Optuna (TPE).

    Each round asks up to --batch trials of every study and trains them all as one stack;
    a pruned trial leaves the stack. Repetition r > 0 tunes its own studies (STUDY-rR) on its
    own noise draw and split, with sampler seed --sampler-seed + r.
    """
    from lgals.tuning import TuneSettings, describe_study, tune_modes

    experiment_id = _experiment(tracking_uri, experiment_name)
    mode_list = list(SUITES[suite] if modes is None else modes)
    prefix = study_name and len(mode_list) > 1  # --study-name names one study, or prefixes
    settings = [TuneSettings(
        mode=m, n_trials=n_trials, epochs=epochs, batch_size=batch_size,
        noise=noise, val_labels=val_labels, train_seed=train_seed,
        sampler_seed=sampler_seed, pruner=pruner, precision=compute.precision,
        study_name=f"{study_name}-{m}" if prefix else study_name or "",
    ) for m in mode_list]
    for repeat in range(repeats):
        with scope({REPEAT: repeat}, label=f"r{repeat}" if repeats > 1 else ""):
            for summary in tune_modes([s.repeated(repeat) for s in settings], experiment_id,
                                      storage, workers, batch=batch, device=compute.device):
                click.echo(describe_study(summary))


@cli.command("evaluate", short_help="Train each mode's tuned params over several seeds.")
@modes_option("--modes")
@suite_option
@click.option("--seeds", type=click.IntRange(1, MAX_SEEDS), default=5, show_default=True,
              help=f"Evaluation seeds per mode (at most {MAX_SEEDS}: one stack).")
@click.option("--first-seed", type=SEED_RANGE, default=0, show_default=True,
              help="Model seed of the first evaluation run; the others follow it.")
@click.option("--epochs", type=click.IntRange(1, MAX_EPOCHS), default=TrainConfig.epochs,
              show_default=True,
              help=f"{EPOCHS_HELP[:-1]}; early_stop's tuned count overrides it.")
@click.option("--params-from", default="tune", show_default=True,
              help="`tune` (latest finished tune per mode), a JSON/YAML file "
                   "{mode: {lr: ..}}, or `defaults`.")
@click.option("--tune-experiment", callback=_experiment_name,
              help="Experiment holding the tunes [default: this one].")
@noise_options()
@click.option("--vary-noise", is_flag=True, help="Redraw the label noise per seed too.")
@repeats_option
@register_option
@compute_options
@tracking_options
@system_metrics_option
def evaluate_command(modes, suite, seeds, first_seed, epochs, params_from, tune_experiment, noise,
                     vary_noise, repeats, register, compute, tracking_uri,
                     experiment_name) -> None:
    """Train each mode's tuned params on the full noisy training set over several seeds;
    repetition r on its own noise draw, with the params of its own tune."""
    from lgals.evaluation import describe_results, evaluate_modes, resolve_params
    from lgals.tracking.register import register_evaluations

    mode_list = list(SUITES[suite] if modes is None else modes)
    # Every mode's params are found and checked before anything is trained or logged; those
    # from a file or the defaults before the store is even opened.
    if params_from != "tune":
        fixed = {m: resolve_params(params_from, "", m) for m in mode_list}
    _may_register(tracking_uri, register, mode_list)
    if tune_experiment:  # found before this command's experiment is created
        open_store(tracking_uri, create=False)
        tune_id = _experiment_id(tune_experiment)
    experiment_id = _experiment(tracking_uri, experiment_name)
    tune_id = tune_id if tune_experiment else experiment_id
    sources = [fixed if params_from != "tune" else
               {m: resolve_params(params_from, tune_id, m, repeat) for m in mode_list}
               for repeat in range(repeats)]
    seed_list = list(range(first_seed, first_seed + seeds))
    evaluations: dict[str, list[str]] = {mode: [] for mode in mode_list}
    for repeat, repeat_sources in enumerate(sources):
        with scope({REPEAT: repeat}, label=f"r{repeat}" if repeats > 1 else ""):
            results = evaluate_modes(repeat_sources, experiment_id, seed_list, epochs,
                                     noise.repeated(repeat), vary_noise, compute=compute)
        for mode, (run_id, mode_results) in results.items():
            evaluations[mode].append(run_id)
            click.echo(("" if repeats == 1 else f"repetition {repeat}: ")
                       + describe_results(mode, mode_results))
    if register:
        for registration in register_evaluations(register, evaluations):
            click.echo(registration.summary())


def _experiment(tracking_uri: str | None, name: str, create: bool = True) -> str:
    """The experiment's id in the store (:func:`connect`), once its runs that lost their
    process are ended."""
    experiment_id = connect(tracking_uri, name, create, setting=_experiment_setting())
    end_dead_runs(experiment_id)
    return experiment_id


def _may_register(tracking_uri: str | None, name: str, modes: Sequence[str]) -> None:
    """With ``--register NAME``: the registry's permission, asked before the experiment is
    made (:func:`lgals.tracking.register.may_register`)."""
    if name:
        from lgals.tracking.register import may_register

        open_store(tracking_uri)
        may_register(name, modes)


def _experiment_id(name: str) -> str:
    import mlflow

    experiment = mlflow.get_experiment_by_name(name)
    if experiment is None:
        raise BadSetting(f"--tune-experiment: no MLflow experiment named {name!r}")
    return experiment.experiment_id


def _out_dir(ctx, param, path: Path) -> Path:
    """--out, checked before anything starts (not after hours of work): a directory, or one
    that can be made in the nearest directory above it that exists (made only when the report
    is written)."""
    existing = next(p for p in (path.absolute(), *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise click.BadParameter(f"{str(path)!r}: {existing} is a file, not a directory",
                                 ctx, param)
    if not os.access(existing, os.W_OK | os.X_OK):
        raise click.BadParameter(f"{str(path)!r}: cannot write in {existing}", ctx, param)
    return path


@cli.command("report", short_help="The claim card, tables and plots, from MLflow alone.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="results",
              show_default=True, callback=_out_dir,
              help="Directory for results.md/.csv and the plots.")
@modes_option("--modes")
@suite_option
@click.option("--repeats", type=click.IntRange(1, MAX_REPEATS), default=None,
              help="Repetitions 0..N-1 only [default: every repetition found].")
@click.option("--seeds", type=click.IntRange(1, MAX_SEEDS), default=None,
              help="Seeds 0..N-1 of each [default: the seeds every evaluation has].")
@noise_options()
@click.option("--precision", type=click.Choice(list(PRECISIONS)),
              help="Report the runs trained at this precision [default: the latest run's]; "
                   "runs of different precisions are never one set.")
@click.option("--sweep", "of_sweep", is_flag=True,
              help="Instead: the latest sweep's report (sweep.md, .csv, sweep_accuracy.png).")
@claim_option
@tracking_options
def report_command(out, modes, suite, repeats, seeds, noise, precision, of_sweep, claim,
                   tracking_uri, experiment_name) -> None:
    """The claim card, tables, statistics and plots from the latest evaluate runs of the
    suite's modes on one dataset at one noise setting, per repetition (MLflow only); without
    --dataset and the noise options, those of the latest run."""
    # imported here, not at the top, so that --help and the other commands start without them
    from lgals.report.publish import report_from_mlflow

    dataset = noise.dataset if _given("dataset") else claim.dataset if claim else None
    experiment_id = _experiment(tracking_uri, experiment_name, create=False)
    if of_sweep:
        from lgals.pipeline import sweep_report_again

        sweep_report_again(experiment_id, out, dataset, precision, echo=click.echo)
        return
    setting = noise if _given("noise_rate") or _given("noise_type") else (
        claim.protocol.noise if claim else None)
    if setting is not None and dataset is not None:
        setting = dataclasses.replace(setting, dataset=dataset)
    modes = _chosen_modes(claim, suite, modes) or SUITES[suite]
    report_from_mlflow(experiment_id, out, modes=modes, echo=click.echo, noise=setting,
                       repeats=repeats, seeds=seeds, claim=claim, dataset=dataset,
                       precision=precision)


# protocols.PROTOCOLS' names and sizes, written out so that --help imports neither them nor
# torch (a test keeps them equal)
PROTOCOL_HELP = ("claim: the note's (1 tuning run of 20 trials per mode, 5 seeds); robust: 5 "
                 "repetitions x 10 seeds; quick: a miniature (2 trials, 3 epochs, 2 seeds)")


def protocol_options(func):
    """Which protocol, its size overridden by --repeats/--seeds; handed on as one
    ``protocol``. With a --claim (the command's, if it has one): the claim's protocol unless
    --protocol/--quick name one, at the claim's noise setting, over the claim's modes."""
    @functools.wraps(func)
    def command(*args, protocol, quick, dataset, repeats, seeds, modes, suite, batch, compute,
                **kwargs):
        from lgals.protocols import PROTOCOLS

        if quick and _given("protocol") and protocol != "quick":
            raise click.BadParameter(f"is --protocol quick; not with --protocol {protocol}",
                                     param_hint="'--quick'")
        claim = kwargs.get("claim")
        chosen = PROTOCOLS["quick" if quick else protocol]
        if claim is not None:
            named = quick or _given("protocol")
            chosen = dataclasses.replace(chosen if named else claim.protocol,
                                         noise=claim.protocol.noise)
        if claim is None or _given("dataset"):  # else the claim's dataset
            chosen = dataclasses.replace(chosen, noise=dataclasses.replace(chosen.noise,
                                                                           dataset=dataset))
        chosen = dataclasses.replace(chosen, suite=suite, batch=batch,
                                     modes=_chosen_modes(claim, suite, modes),
                                     repeats=repeats or chosen.repeats,
                                     seeds=seeds or chosen.seeds, precision=compute.precision)
        return func(*args, protocol=chosen, device=compute.device, **kwargs)

    return _apply(command, [
        click.option("--protocol", type=click.Choice(["claim", "robust", "quick"]),
                     default="claim", show_default=True, help=PROTOCOL_HELP),
        click.option("--quick", is_flag=True, help="The same as --protocol quick."),
        dataset_option,
        click.option("--repeats", type=click.IntRange(1, MAX_REPEATS), default=None,
                     help="Repetitions [default: the protocol's]; each has its own noise "
                          f"draw, split, sampler seed and tuning (at most {MAX_REPEATS})."),
        click.option("--seeds", type=click.IntRange(1, MAX_SEEDS), default=None,
                     help="Evaluation seeds per repetition [default: the protocol's; at most "
                          f"{MAX_SEEDS}, one stack]."),
        modes_option("--modes"), suite_option, batch_option,
        click.option("--out", type=click.Path(file_okay=False, path_type=Path),
                     default="results", show_default=True, callback=_out_dir,
                     help="Directory for the report (results.md, .csv and the plots)."),
        click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=1,
                     show_default=True, help=WORKERS_HELP),
        storage_option, compute_options, tracking_uri_option,
        experiment_option(help="[default: lgals, or lgals-quick with the quick protocol]"),
        system_metrics_option,
    ])


def _done(timings: dict[str, float], experiment_id: str) -> None:
    import mlflow

    click.echo(f"done in {sum(timings.values()):.0f} s ("
               + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items())
               + f"). Compare runs in the MLflow UI: mlflow ui --backend-store-uri "
               f"{redact_url(mlflow.get_tracking_uri())} --host 127.0.0.1, then open "
               f"{runs_page('http://127.0.0.1:5000', experiment_id, SEED_RUNS)}")


@cli.command("reproduce", short_help="The whole study: tune, evaluate, report; resumable.")
@claim_option
@protocol_options
@register_option
def reproduce_command(protocol, claim, out, workers, storage, device, tracking_uri,
                      experiment_name, register) -> None:
    """The whole study: per repetition, tune every mode -> evaluate over seeds; then the
    report, whose card tests the note's claim or --claim's. A rerun skips what finished."""
    from lgals.pipeline import reproduce

    _may_register(tracking_uri, register, protocol.run_modes())
    experiment_id = _experiment(tracking_uri, experiment_name or protocol.experiment)
    _done(reproduce(experiment_id, out, protocol, workers=workers, storage=storage,
                    device=device, echo=lambda line: click.echo(line, err=True), claim=claim,
                    register=register),
          experiment_id)


# An MLproject parameter must have a value: an empty one ("") is an option not given, and so
# are these values on the entry points of NOT_GIVEN_ON. --repeats 0 / --seeds 0: the
# protocol's own (for `report`, all there are); --claim note: the note's claim file;
# --dataset mnist1d: the default, or a --claim file's own dataset.
NOT_GIVEN = {"--repeats": "0", "--seeds": "0", "--claim": "note", "--dataset": DEFAULT_DATASET}
NOT_GIVEN_ON = ("report", "reproduce", "sweep")


def project_argv(command: str, argv: list[str]) -> list[str]:
    """``lgals COMMAND``'s arguments from its MLproject entry point's: its flags' values read
    (:func:`project_flags`), without the options not given: those left empty, and on the
    commands of NOT_GIVEN_ON those at their NOT_GIVEN value."""
    not_given = NOT_GIVEN if command in NOT_GIVEN_ON else {}
    kept: list[str] = []
    for arg in project_flags(argv):
        if kept and kept[-1].startswith("--") and arg in ("", not_given.get(kept[-1])):
            kept.pop()
        else:
            kept.append(arg)
    return [command, *kept]


# An MLproject parameter always has a value: a flag comes as `--FLAG true` or `--FLAG false`.
PROJECT_FLAGS = ("--system-metrics",)


def project_flags(argv: list[str]) -> list[str]:
    """An MLproject entry point's arguments, each flag given as ``--FLAG VALUE`` turned into
    the flag (a true value, as click reads booleans), nothing (a false one), or
    ``--FLAG=VALUE``, which the command refuses in one line naming the flag."""
    kept: list[str] = []
    flag = None  # a flag whose value comes next
    for arg in argv:
        if flag is None and arg in PROJECT_FLAGS:
            flag = arg
            continue
        if flag is None:
            kept.append(arg)
            continue
        try:
            kept += [flag] if click.BOOL.convert(arg, None, None) else []
        except click.BadParameter:
            kept.append(f"{flag}={arg}")
        flag = None
    return kept + ([flag] if flag else [])


def _unique_list(convert):
    """A comma-separated option: each item converted (ValueError: refused), none twice."""
    def callback(ctx, param, value: str) -> tuple:
        items = [part.strip() for part in value.split(",")]
        if items == [""]:
            raise click.BadParameter("give at least one value", ctx, param)
        try:
            values = tuple(convert(item) for item in items)
        except ValueError as error:
            raise click.BadParameter(str(error), ctx, param) from None
        repeated = sorted({str(v) for v in values if values.count(v) > 1})
        if repeated:
            raise click.BadParameter(f"{', '.join(repeated)} given twice", ctx, param)
        return values
    return callback


def _noise_rate(item: str) -> float:
    try:
        rate = float(item)
    except ValueError:
        raise ValueError(f"{item!r} is not a number") from None
    if not 0.0 <= rate <= MAX_NOISE_RATE:  # also refuses nan
        raise ValueError(f"{item} is not in the range 0<=x<={MAX_NOISE_RATE}")
    return rate


def _noise_type(item: str) -> str:
    if item not in NOISE_TYPES:
        raise ValueError(f"{item!r} is not one of {', '.join(NOISE_TYPES)}")
    return item


@cli.command("sweep", short_help="The protocol at every noise setting, and its report.")
@click.option("--noise-rates", callback=_unique_list(_noise_rate), default="0,0.2,0.4",
              show_default=True, help=f"Shares of flipped training labels, in [0, "
                                      f"{MAX_NOISE_RATE}], comma-separated.")
@click.option("--noise-types", callback=_unique_list(_noise_type),
              default="symmetric,pair", show_default=True,
              help=f"Comma-separated, of: {', '.join(NOISE_TYPES)}.")
@protocol_options
def sweep_command(noise_rates, noise_types, protocol, out, workers, storage, device,
                  tracking_uri, experiment_name) -> None:
    """The protocol at every noise setting (rate 0 once: it flips nothing whatever the type),
    one umbrella run; a report per setting in OUT/<type>-<rate>/ and the sweep's in OUT."""
    # imported here, not at the top, so that --help and the other commands start without them
    from lgals.pipeline import sweep

    experiment_id = _experiment(tracking_uri, experiment_name or protocol.experiment)
    recipes = protocol.noise.swept(noise_rates, noise_types)
    _done(sweep(experiment_id, out, protocol, recipes, workers=workers, storage=storage,
                device=device, echo=lambda line: click.echo(line, err=True)), experiment_id)


@cli.command("reanalyze", short_help="Reload a seed run's model; recheck and extend its metrics.")
@click.argument("run_id")
@tracking_uri_option
def reanalyze_command(run_id, tracking_uri) -> None:
    """Reload RUN_ID's logged model and data; recheck its test accuracy, per-class accuracy,
    confusion matrix and memorised noisy labels, and log them to a new run."""
    from lgals.reanalysis import reanalyze

    _report_plugin_problems(DATASETS)  # the run's dataset may be a plugin's
    open_store(tracking_uri, create=False)  # runs are addressed by id
    result = reanalyze(run_id)
    verdict = "reproduces" if result.reproduces else "DOES NOT reproduce"
    click.echo(f"test accuracy {100 * result.test_acc:.2f}% {verdict} the logged "
               f"final_test_acc ({result.logged_final_test_acc})")
    click.echo("per-class test accuracy: " + "  ".join(
        f"{k}:{100 * a:.1f}%" for k, a in enumerate(result.per_class_acc)))
    click.echo("confusion matrix (rows true, columns predicted):")
    for row in result.confusion:
        click.echo("  " + " ".join(f"{c:4d}" for c in row))
    click.echo(f"memorised noisy training labels: {result.memorized} of {result.noisy}")
    click.echo(f"logged to run {result.run_id}")
    if not result.reproduces:
        sys.exit(1)


def _epochs_list(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list of epochs",
                                 ctx, param) from None


def _hyperparameter_row(name: str) -> dict:
    hyperparameter = HYPERPARAMETERS[name]
    return {"valid": hyperparameter.describe(), "search": list(hyperparameter.search),
            "scale": "log" if hyperparameter.log else "linear",
            "default": hyperparameter.default}


@cli.command("modes", short_help="List every mode and its hyperparameters.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def modes_command(as_json) -> None:
    """Every mode, built-in or from an installed package: its label, family, suites, where
    it comes from, and the hyperparameters it reads with the range a run accepts, the range
    tuning searches and the default."""
    def origin(name: str) -> dict:
        where = MODES.origins[name]
        return {"distribution": where.distribution, "version": where.version,
                "module": where.module, "file_sha256": where.file_sha256}

    document = {
        "shared": {name: _hyperparameter_row(name) for name in EVERY_MODE},
        "modes": {name: {"label": mode.label, "family": mode.family,
                         "suites": [suite for suite, members in SUITES.items() if name in members],
                         "hyperparameters": {p: _hyperparameter_row(p) for p in mode.params},
                         "gradient": "closed form" if mode.closed_form else "autograd",
                         "keeps_state": mode.state, "picks_epochs": mode.picks_epochs,
                         "batch_level": mode.batch_level, "from": origin(name)}
                  for name, mode in MODES.items()}}
    if as_json:
        click.echo(json.dumps(document))
        return

    def line(name: str, row: dict) -> str:
        return (f"    {name:<15} valid {row['valid']:<12} search {row['search'][0]:g}..."
                f"{row['search'][1]:g} ({row['scale']}), default {row['default']:g}")

    click.echo("every mode:")
    for name, row in document["shared"].items():
        click.echo(line(name, row))
    for name, mode in document["modes"].items():
        extras = [flag for flag in ("keeps_state", "picks_epochs", "batch_level") if mode[flag]]
        where = mode["from"]
        click.echo(f"{name} ({mode['label']}, {mode['family']}; suites "
                   f"{', '.join(mode['suites'])}; {mode['gradient']}; from "
                   f"{where['distribution']} {where['version']}"
                   f"{'; ' if extras else ''}{', '.join(extras)})")
        for parameter, row in mode["hyperparameters"].items():
            click.echo(line(parameter, row))


@cli.command("check-mode", short_help="Hold a mode to the checks every built-in passes.")
@click.argument("name", type=click.Choice(list(MODES)), metavar="MODE")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def check_mode_command(name, as_json) -> None:
    """Hold MODE to the checks every built-in passes: closed-form gradient against autograd
    (float64, random steps), finite loss and gradient at extreme logits and at the edges of
    each hyperparameter's range, stacked == alone, and one loss per sample independent of the
    batch (unless the mode is batch-level). Exits 1 naming each check that fails."""
    from lgals.checks import check_mode

    checks = check_mode(name)
    if as_json:
        click.echo(json.dumps({"mode": name, "passed": all(c.passed for c in checks),
                               "checks": [dataclasses.asdict(c) for c in checks]}))
    else:
        click.echo("\n".join(check.line() for check in checks))
    failed = [check.name for check in checks if not check.passed]
    if failed:
        raise LgalsError(f"mode {name!r} fails: {'; '.join(failed)}")
@cli.command("datasets", short_help="List every dataset, its sizes and where it comes from.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def datasets_command(as_json) -> None:
    """Every dataset, built-in or from an installed package: its training and test sizes,
    features and classes, where it comes from and its version. Loads each (generated or read
    once, then cached)."""
    from lgals.data import digest, load_clean

    _report_plugin_problems(DATASETS)
    document = {}
    for name, dataset in DATASETS.items():
        origin = DATASETS.origins[name]
        row = {"label": dataset.label, "classes": dataset.n_classes, "source": dataset.source,
               "version": dataset.version, "generation": dict(dataset.generation),
               "from": {"distribution": origin.distribution, "version": origin.version,
                        "module": origin.module, "file_sha256": origin.file_sha256},
               "train": None, "test": None, "features": None, "digest": None,
               "unavailable": None}
        try:
            arrays = load_clean(name)
        except LgalsError as error:  # its extra is not installed; a plugin's load fails
            row["unavailable"] = str(error)
        else:
            row.update(train=len(arrays["y"]), test=len(arrays["y_test"]),
                       features=arrays["x"].shape[1], digest=digest(arrays))
        document[name] = row
    if as_json:
        click.echo(json.dumps({"datasets": document}))
        return
    for name, row in document.items():
        sizes = (row["unavailable"] if row["unavailable"] else
                 f"{row['train']} train / {row['test']} test, {row['features']} features")
        where = row["from"]
        click.echo(f"{name} ({row['label']}): {sizes}, {row['classes']} classes; version "
                   f"{row['version']}; from {where['distribution']} {where['version']}")
        click.echo(f"    {row['source']}")


@cli.command("diagnose", short_help="Measure whether s_i tracks weight-gradient alignment.")
@click.option("--run", "run_id", help="Diagnose this seed run's logged model (its last epoch) "
                                      "on its own data instead of training one.")
@click.option("--mode", type=click.Choice(list(MODES)), default="lgals", show_default=True,
              help="The mode to train and diagnose.")
@click.option("--seed", type=SEED_RANGE, default=0, show_default=True,
              help="Model seed of the run trained here.")
@hyperparameter_options
@noise_options()
@click.option("--checkpoints", callback=_epochs_list, default="1,5,20,50,100",
              show_default=True, help="Epochs to measure at, increasing; not with --run.")
@click.option("--batches", type=click.IntRange(min=1), default=8, show_default=True,
              help="Fixed training batches (of the batch size) measured at each checkpoint.")
@compute_options
@tracking_options
@system_metrics_option
@click.option("--no-tracking", is_flag=True, help="Do not log to MLflow.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document on stdout.")
def diagnose_command(run_id, seed, config, noise, checkpoints, batches, compute, tracking_uri,
                     experiment_name, no_tracking, as_json) -> None:
    """Does s_i track the weight-gradient alignment? Per-sample weight gradients at
    checkpoints, their cosines to the batch mean (all layers, each layer), correlations with
    s_i and with p_y, and how well each finds the flipped labels."""
    # imported here, not at the top, so that --help and the other commands start without them
    from lgals import claim, diagnose

    given = click.get_current_context().get_parameter_source("checkpoints")
    if run_id and given != click.core.ParameterSource.DEFAULT:
        raise BadSetting("--checkpoints: a reloaded model has only its last epoch; drop "
                         "--checkpoints, or leave out --run to train one")
    settings = diagnose.DiagnoseSettings(checkpoints=checkpoints, batches=batches)
    if run_id:
        from lgals.reanalysis import load_run

        open_store(tracking_uri, create=False)
        source, data, model = load_run(run_id, logs=not no_tracking)
        params = source.data.params
        epochs, batch_size = int(params["epochs"]), int(params["batch_size"])
        settings = dataclasses.replace(settings, checkpoints=(epochs,))
        about = {"run": run_id, "mode": params.get("mode", ""), "epochs": epochs,
                 "batch_size": batch_size}
    else:
        epochs, batch_size = config.epochs, config.batch_size
        data = load_dataset(noise)
        about = {**config.mode_params(), **data.params(), "seed": seed,
                 "precision": compute.precision}
    try:
        diagnose.check(settings, epochs, batch_size, len(data.y_train))
    except ValueError as error:
        raise BadSetting(str(error)) from None
    if not no_tracking:
        experiment_id = (_experiment(tracking_uri, experiment_name) if not run_id
                         else source.info.experiment_id)
    if run_id:
        found = diagnose.diagnose_model(model, data, epochs, batch_size, settings)
    else:
        found = diagnose.diagnose_training(data, config, seed, settings, compute)
    if not no_tracking:
        logged = diagnose.log_diagnosis(
            experiment_id, found, f"diagnose-{about['mode']}",
            {**about, "checkpoints": ",".join(map(str, settings.checkpoints)),
             "batches": settings.batches},
            {MODE: about["mode"], **({SOURCE_RUN: run_id} if run_id else {})})
        click.echo(f"MLflow run: {logged}", err=True)
    if as_json:
        click.echo(json.dumps(diagnose.document(found, **about)))
    else:
        for checkpoint in found:
            click.echo(diagnose.summary_line(checkpoint))
        click.echo(f"(the note: r = {claim.note().alignment.correlation} between the two "
                   "alignments)")


def password_warning(argv: Sequence[str]) -> str | None:
    """The one line to warn of URLs in ``argv`` that carry a password (:func:`redact_url`
    masks it), which every user of the machine can read in the process list while the
    command runs: for each option, where the password goes instead; None if there is none.
    Inside ``mlflow run`` the option is an entry point's parameter, which ``mlflow run`` has
    logged as a param of its run too."""
    project = bool(os.environ.get("MLFLOW_RUN_ID"))
    found: dict[str, str] = {}  # option -> the scheme of the URL it took
    for before, arg in zip(["", *argv], argv):
        option, _, value = arg.partition("=") if arg.startswith("--") else (before, "", arg)
        if redact_url(value) != value:
            found[option] = url_scheme(value)
    if not found:
        return None
    advice = []
    for option, scheme in found.items():
        ways = ([f"leave it out of the URL and set {PASSWORD_VARIABLES[scheme]}"]
                if scheme in PASSWORD_VARIABLES else [])
        ways += [f"give the whole URL in {URL_VARIABLES[option]}"] if (
            option in URL_VARIABLES) else []
        name = f"-P {option[2:].replace('-', '_')}" if project else option
        advice.append(f"{name}: {', or '.join(ways) or 'keep it off the command line'}")
    return ("lgals: warning: every user of this machine can read a password on the command "
            "line in the process list while the command runs"
            f"{' (and mlflow run logged it as a param of its run)' if project else ''}: "
            + "; ".join(advice))


def main(argv: list[str] | None = None) -> None:
    """Console entry point: click's errors become one line and exit code 2."""
    install_interrupt_handlers()  # open runs end KILLED, never RUNNING
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("MPLBACKEND", "Agg")  # figures go to files; never needs a display
    warning = password_warning(sys.argv[1:] if argv is None else argv)
    if warning:
        click.echo(warning, err=True)
    try:
        code = cli.main(args=argv, prog_name="lgals", standalone_mode=False)
    except LgalsError as error:
        _fail(error)
    except click.UsageError as error:
        command = error.ctx.command_path if error.ctx else "lgals"
        click.echo(f"{command}: error: {redact(error.format_message())}", err=True)
        sys.exit(2)
    except click.ClickException as error:
        click.echo(f"lgals: error: {redact(error.format_message())}", err=True)
        sys.exit(error.exit_code)
    except (click.Abort, KeyboardInterrupt):
        click.echo("lgals: interrupted", err=True)
        sys.exit(exit_code())
    except Exception as error:
        if out_of_space(error):
            _fail(NoSpaceLeft("running the command"))
        said = _tracking_error(error)
        if said is None:  # a bug: its traceback, but no password in it either
            sys.stderr.write(redact("".join(traceback.format_exception(error))))
            sys.exit(1)
        _fail(said)
    sys.exit(code or 0)


def _fail(error: LgalsError) -> NoReturn:
    """The error as one line on stderr, no password in it; exit with its code."""
    click.echo(f"lgals: error: {redact(str(error))}", err=True)
    sys.exit(error.exit_code)


def _tracking_error(error: Exception) -> LgalsError | None:
    """The one line for an error of the tracking server (refused credentials, gone for longer
    than lgals waits), else None. Only once MLflow is imported can an error be its."""
    if "mlflow" not in sys.modules:
        return None
    return user_error(error)


def run(argv: list[str] | None = None) -> NoReturn:
    """The ``lgals`` command: :func:`main`, then the interpreter's exit handlers (the MLflow
    writer's close, multiprocessing's and logging's clean-up) but not its teardown of torch's,
    MLflow's and SQLAlchemy's modules, which takes seconds and writes nothing
    (``benchmarks/tracking_overhead.py --cli-pairs`` times whole commands)."""
    try:
        main(argv)
    except SystemExit as exit_:
        code = exit_.code
    if not isinstance(code, int | None):  # sys.exit("message")
        print(code, file=sys.stderr)
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code or 0)


if __name__ == "__main__":
    run()
