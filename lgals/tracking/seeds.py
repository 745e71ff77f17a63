"""Seed runs: the engine trained with one MLflow run per member, and what each run keeps.

The engine knows nothing of MLflow; :class:`EpochLogger` is its callback. Metrics are
buffered and handed every :data:`FLUSH_SECONDS` to the writer process
(:mod:`lgals.tracking.writer`): one synchronous call per epoch would cost more than the epoch
itself on a server, and MLflow's own async logging runs its SQLAlchemy work in a thread that
holds this process's GIL. After training the writer logs the artifact files and draws the
figures while this process logs the models. :class:`Tracked` and
:class:`lgals.tracking.null.Untracked` give a command one way to train, tracked or not.

MLflow is imported inside the functions that use it (see :mod:`lgals.tracking.store`).
"""

from __future__ import annotations

import functools
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np

from lgals.data import DATASETS, NoisyDataset
from lgals.errors import LgalsError
from lgals.interrupts import raise_if_interrupted, shielded
from lgals.losses import MODES
from lgals.metrics import histogram_counts
from lgals.model import Compute
from lgals.schema import (
    DEVICE,
    NOTE,
    PRECISION,
    SEED,
    STAGE,
    STATUS,
    STATUS_REASON,
    Stage,
    models_of_run,
)
from lgals.tracking.runs import (
    end_runs,
    ending,
    fail_unfinished_models,
    mode_tags,
    open_run,
    run_name,
    source_info,
)
from lgals.tracking.store import check_server, impatient, mlflow_client, storing, sync_writer
from lgals.tracking.writer import WRITER, WriterDied
from lgals.train import Callback, EpochReport, MemberResult, TrainConfig, train

EDGES = {"eps": np.linspace(0.0, 1.0, 51), "alignment": np.linspace(-1.0, 1.0, 51)}


FLUSH_SECONDS = 2.0  # how often the metrics go to the writer: the UI's curves lag about this


class EpochLogger:
    """Engine callback: buffers per-epoch metrics and epsilon/alignment histograms per run."""

    def __init__(self, run_ids: Sequence[str], flush_seconds: float = FLUSH_SECONDS):
        import mlflow

        self.uri = mlflow.get_tracking_uri()
        self.run_ids = list(run_ids)
        self.flush_seconds = flush_seconds
        self.pending: list[list[tuple]] = [[] for _ in self.run_ids]  # (key, value, ms, step)
        self.histograms: list[dict[str, list[np.ndarray]]] = [
            {name: [] for name in EDGES} for _ in self.run_ids]
        self.last_flush = time.monotonic()
        WRITER.start()

    def __call__(self, report: EpochReport) -> None:
        raise_if_interrupted()
        check_server()
        timestamp = int(time.time() * 1000)
        counts = {
            "eps": histogram_counts(report.eps, report.noise_mask, EDGES["eps"]),
            "alignment": histogram_counts(report.alignment, report.noise_mask,
                                          EDGES["alignment"]),
        }
        row_of = {member: row for row, member in enumerate(report.rows)}
        for member in report.members:
            self.pending[member] += [(key, value, timestamp, report.epoch)
                                     for key, value in report.metrics[member].items()]
            for name, per_row in counts.items():
                self.histograms[member][name].append(per_row[row_of[member]])
        if time.monotonic() - self.last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Hand the buffered metrics to the writer process: the writes overlap training."""
        for run_id, metrics in zip(self.run_ids, self.pending):
            WRITER.send(self.uri, run_id, metrics)
            metrics.clear()
        self.last_flush = time.monotonic()

    def histogram_arrays(self, member: int) -> dict[str, np.ndarray]:
        return {name: np.stack(per_epoch) if per_epoch else np.zeros((0, 2, len(EDGES[name]) - 1),
                                                                     dtype=np.int64)
                for name, per_epoch in self.histograms[member].items()}


# PyTorch's index of CPU-only wheels: on Linux, PyPI's torch is the CUDA build (GBs).
CPU_TORCH_INDEX = "https://download.pytorch.org/whl/cpu"


def torch_requirements(torch_version: str, cpu_build: bool) -> list[str]:
    """torch pinned to ``torch_version`` without its local label (``+cpu``, which no index
    names in a pin); a CPU build's from PyTorch's CPU index too, so that a fresh environment
    serving the model installs the CPU build again, not PyPI's CUDA one."""
    pin = f"torch=={torch_version.split('+')[0]}"
    return [f"--extra-index-url {CPU_TORCH_INDEX}", pin] if cpu_build else [pin]


@functools.cache
def model_requirements() -> tuple[str, ...]:
    """The pip requirements of every model this process logs (MLflow adds its own pin),
    worked out once. MLflow's inference loads the model in a child process for each model
    (seconds apiece) and finds torch, numpy and pandas (and tqdm, which only MLflow's own
    optional modules import): these, pinned to the installed versions."""
    import torch

    cpu_build = torch.version.cuda is None and torch.version.hip is None
    return (*torch_requirements(torch.__version__, cpu_build),
            *(f"{name}=={version(name)}" for name in ("numpy", "pandas")))


def log_members(experiment_id: str, run_ids: Sequence[str], run_names: Sequence[str],
                results: Sequence[MemberResult], logger: EpochLogger, data: NoisyDataset,
                log_models: bool = True) -> None:
    """Each finished member's final metric, status, histograms, the data recipe, its figure and
    model (named after its run); returns once all of it is stored.

    The writer process logs the files and draws the figures while this process exports the
    models. Tuning trials (``log_models=False``) skip the model and the heat-map figure: at
    dozens of trials they would cost more than the training; their histograms are logged all
    the same.
    """
    from mlflow.entities import Metric, RunTag

    client = mlflow_client()
    logger.flush()
    with tempfile.TemporaryDirectory() as tmp:
        # Complete files are handed to MLflow; nothing is logged half-written.
        recipe = Path(tmp) / "data_recipe.npz"
        save_recipe(recipe, data)
        for member, (run_id, result) in enumerate(zip(run_ids, results)):
            histograms = logger.histogram_arrays(member)
            path = Path(tmp) / str(member) / "epsilon_distributions.npz"
            path.parent.mkdir()
            np.savez_compressed(path, eps_edges=EDGES["eps"], alignment_edges=EDGES["alignment"],
                                eps_counts=histograms["eps"],
                                alignment_counts=histograms["alignment"],
                                groups=np.array(["clean", "noisy"]))
            WRITER.log_artifacts(logger.uri, run_id, [str(path), str(recipe)])
            if log_models and len(histograms["eps"]):
                WRITER.log_heatmaps(logger.uri, run_id, str(path),
                                    f"{MODES[result.config.mode].label}, seed {result.seed}")
        for run_id, name, result in zip(run_ids, map(model_name, run_names), results):
            # the model first exists empty (PENDING): its run's final metric names it, so
            # the model's page shows the metric; its files follow
            model_id = None
            if log_models:
                with storing(f"logging the model of run {run_id}"):
                    model_id = client.create_logged_model(
                        experiment_id, name, run_id,
                        params={k: str(v) for k, v in result.config.mode_params().items()},
                    ).model_id
            metrics = []
            if result.final_test_acc is not None:
                metrics.append(Metric("final_test_acc", result.final_test_acc,
                                      int(time.time() * 1000), result.config.epochs,
                                      model_id=model_id))
            tags = [RunTag(STATUS, result.status)]
            if result.reason:
                tags.append(RunTag(STATUS_REASON, result.reason))
            with storing(f"logging the results of run {run_id}"):
                client.log_batch(run_id, metrics=metrics, tags=tags)
            if model_id:
                _log_model(run_id, name, model_id, result, data)
        with storing(f"logging the files of {len(run_ids)} run(s)"):
            sync_writer()


def _log_model(run_id: str, name: str, model_id: str, result: MemberResult,
               data: NoisyDataset) -> None:
    """The member's model into its logged model ``model_id``, or, should logging it fail (a
    full disk, an interrupt), no trace of it but a FAILED logged model."""
    import mlflow.pytorch

    try:
        with storing(f"logging the model of run {run_id}"):
            # pt2 (torch.export) on every tracking URI: MLflow's default is pickle on Databricks
            mlflow.pytorch.log_model(result.model, name=name, run_id=run_id, model_id=model_id,
                                     input_example=data.x_train[:2], serialization_format="pt2",
                                     pip_requirements=list(model_requirements()))
    except BaseException:
        with suppress(Exception):  # a full store cannot be written: the next command will
            fail_unfinished_models(mlflow_client().get_run(run_id).info.experiment_id,
                                   {run_id})
        raise


def model_name(run_name: str) -> str:
    """A logged model's name: its run's, with the characters MLflow refuses in model names
    (``/ : . % " '``; e.g. the ``.`` of a sweep's ``symmetric-0.4``) as ``_``."""
    return re.sub(r"[/:.%\"']", "_", run_name)


def model_uri(run_id: str) -> str | None:
    """``models:/<id>`` of the finished model run ``run_id`` logged, or ``None``.

    Models are named after their run, and MLflow resolves ``runs:/<id>/<name>`` by that name;
    the model's id needs no name (and finds the ``model`` of stores made before the rename).
    """
    found = logged_model_id(run_id)
    return f"models:/{found}" if found else None


def logged_model_id(run_id: str, experiment_id: str | None = None) -> str | None:
    """The id of the finished model run ``run_id`` logged (in ``experiment_id``, if known),
    or ``None``."""
    from mlflow.entities import LoggedModelStatus

    client = mlflow_client()
    experiment_id = experiment_id or client.get_run(run_id).info.experiment_id
    models = client.search_logged_models([experiment_id],
                                         filter_string=models_of_run(run_id))
    ready = [m for m in models if m.status == LoggedModelStatus.READY]
    return ready[0].model_id if ready else None


def log_dataset(run_ids: Sequence[str], data: NoisyDataset) -> None:
    """The noisy training set as each run's input dataset: named after its dataset and noise
    recipe, with a digest of its inputs and observed labels, which another noise draw
    changes; its source says what made it (the recipe, the dataset's version, digest and
    generation arguments)."""
    import mlflow.data
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.entities import DatasetInput, InputTag

    recipe = data.recipe
    split = f"-val{recipe.val_fraction:g}" if recipe.val_fraction else ""
    source = CodeDatasetSource({"generator": "lgals.data.load_dataset", **data.params(),
                                "dataset_generation": dict(DATASETS[recipe.dataset].generation)})
    dataset = mlflow.data.from_numpy(
        data.x_train, targets=data.y_train, source=source,
        name=f"{recipe.dataset}-{recipe.setting}-seed{recipe.noise_seed}{split}")
    inputs = [DatasetInput(dataset._to_mlflow_entity(),
                           [InputTag("mlflow.data.context", "training")])]
    client = mlflow_client()
    with storing("logging the training set"):
        for run_id in run_ids:
            try:
                client.log_inputs(run_id, datasets=inputs)
            except Exception as error:
                if not _made_meanwhile(error):
                    raise
                # another process (a tune worker) created the same dataset between MLflow's
                # lookup and its insert: it is there now, and this run refers to it
                client.log_inputs(run_id, datasets=inputs)


def _made_meanwhile(error: Exception) -> bool:
    """A dataset MLflow inserted while another process inserted it too (its unique key)."""
    message = str(error)
    return "datasets" in message and ("UNIQUE constraint failed" in message
                                      or "duplicate key value" in message)


def save_recipe(path: Path, data: NoisyDataset) -> None:
    """What rebuilds this run's data exactly: settings, observed labels, masks, indices."""
    np.savez_compressed(path, **data.recipe.params(), y_train=data.y_train,
                        noise_mask=data.noise_mask, y_val=data.y_val,
                        val_noise_mask=data.val_noise_mask,
                        train_index=data.train_index, val_index=data.val_index)


def run_params(config: TrainConfig, data: NoisyDataset, compute: Compute) -> dict:
    return {**config.mode_params(), **data.params(), "precision": compute.precision,
            **source_info()}


def tracked_train(
    data: NoisyDataset,
    configs: Sequence[TrainConfig],
    seeds: Sequence[int],
    *,
    experiment_id: str,
    stage: Stage,
    parent_run_id: str | Sequence[str] | None = None,
    member_tags: Sequence[dict] | None = None,
    member_names: Sequence[str] | None = None,
    log_models: bool = True,
    callback: Callback | None = None,
    on_runs_opened: Callable[[list[str]], None] | None = None,
    settle: Callable[[int, MemberResult], tuple[str, str]] | None = None,
    progress: bool = False,
    compute: Compute = Compute(),
) -> tuple[list[MemberResult], list[str], str | None]:
    """Train ``seeds`` together with one MLflow run per member.

    Members go under ``parent_run_id`` if given (one for all, or one per member); otherwise
    several seeds get a new parent run (adopting ``mlflow run``'s run) and a single seed is
    that run itself. Members are named ``<mode>-seed<N>`` unless ``member_names`` says
    otherwise. Each member's run ends with the status and reason ``settle(member, result)``
    gives just before (tuning tells the trial first, and the run ends as the study keeps
    it); without it, FAILED when the member diverged, else FINISHED. Returns the results, the
    member run ids and the parent run id (``None`` for a single adopted run).
    """
    member_tags = member_tags or [{} for _ in seeds]
    member_names = member_names or [run_name(c.mode, f"seed{seed}")
                                    for c, seed in zip(configs, seeds)]
    owned: list[str] = []
    with ending(owned):
        if parent_run_id is None and len(seeds) > 1:
            mode = configs[0].mode
            shared = {**run_params(configs[0], data, compute), "seeds": ",".join(map(str, seeds))}
            parent_run_id = open_run(experiment_id, run_name(f"{stage}-{mode}"),
                                     {**mode_tags(mode), STAGE: stage, DEVICE: compute.device,
                                      PRECISION: compute.precision,
                                      NOTE: f"{MODES[mode].label}: seeds {shared['seeds']} "
                                            "trained together, one run each below."},
                                     shared, adopt_project_run=True)
            owned.append(parent_run_id)
        parents = ([parent_run_id] * len(seeds) if parent_run_id is None
                   or isinstance(parent_run_id, str) else list(parent_run_id))
        run_ids = []
        for seed, config, extra, parent, name in zip(seeds, configs, member_tags, parents,
                                                     member_names):
            run_id = open_run(experiment_id, name,
                              {**mode_tags(config.mode), STAGE: stage, SEED: seed,
                               DEVICE: compute.device, PRECISION: compute.precision,
                               **extra},
                              {**run_params(config, data, compute), "seed": seed},
                              parent_run_id=parent, adopt_project_run=parent is None)
            owned.append(run_id)
            run_ids.append(run_id)
        log_dataset(run_ids, data)
        if on_runs_opened:
            on_runs_opened(run_ids)
        logger = EpochLogger(run_ids)

        def observe(report: EpochReport):
            logger(report)
            return callback(report) if callback else None

        epochs = max(config.epochs for config in configs)
        try:
            results = train(data, list(configs), list(seeds), callback=observe,
                            progress=progress, compute=compute)
        except WriterDied as died:
            raise _writer_lost(died, owned, run_ids, epochs, trained=False) from None
        except BaseException:  # interrupted or failed: the epochs trained are stored first
            with suppress(RuntimeError, LgalsError):  # a dead writer: the runs end all the same
                logger.flush()
                sync_writer()
            raise
        try:
            log_members(experiment_id, run_ids, member_names, results, logger, data,
                        log_models)
        except WriterDied as died:
            raise _writer_lost(died, owned, run_ids, epochs, trained=True) from None
        for member, (run_id, result) in enumerate(zip(run_ids, results)):
            # what settles a member and the end of its run are not cut in two by an interrupt
            with shielded(), storing(f"ending run {run_id}"):
                status, reason = (settle(member, result) if settle else
                                  ("FAILED" if result.status == "diverged" else "FINISHED", ""))
                end_runs([run_id], status, reason)
                owned.remove(run_id)
    return results, run_ids, parent_run_id if isinstance(parent_run_id, str) else None


def _writer_lost(died: WriterDied, owned: list[str], run_ids: Sequence[str], epochs: int,
                 trained: bool) -> WriterDied:
    """``died``, saying what the runs being trained hold (their metrics read back from the
    store) and that they end FAILED; ends the runs ``owned`` so, with that reason."""
    stored = None
    with suppress(Exception), impatient():  # a store that cannot be read: say so
        client = mlflow_client()
        stored = max(step for run_id in run_ids for step in
                     [0, *(m.step for m in client.get_metric_history(run_id, "train_loss"))])
    held = ("an unknown share of their metrics" if stored is None else
            f"their metrics up to epoch {stored} of {epochs}")
    files = ("some of their files and models" if trained else
             "none of their files and models (training stopped)")
    error = WriterDied(died.death, f"the {len(run_ids)} run(s) being trained hold {held}, and "
                                   f"{files}; they end FAILED: run the command again")
    with suppress(Exception), impatient():
        end_runs(owned, "FAILED", str(error))
        owned.clear()  # ended, with the reason: ending() has none left
    return error


@dataclass(frozen=True)
class Tracked:
    """Training that logs to the MLflow experiment ``experiment_id``: one run per seed
    (:func:`tracked_train`)."""

    experiment_id: str

    def train(self, data: NoisyDataset, configs: Sequence[TrainConfig], seeds: Sequence[int],
              *, stage: Stage, progress: bool = False, compute: Compute = Compute(),
              ) -> tuple[list[MemberResult], list[str], str | None]:
        """The results, the seed runs' ids and their parent's id (see :func:`tracked_train`)."""
        return tracked_train(data, configs, seeds, experiment_id=self.experiment_id,
                             stage=stage, progress=progress, compute=compute)
