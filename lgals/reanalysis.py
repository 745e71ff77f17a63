"""Reload a logged model and its data recipe from MLflow and look at it again.

The recomputed test accuracy must equal the run's logged ``final_test_acc`` to the last digit:
that is the check that a logged model really is the model the metric came from.
"""

from __future__ import annotations

import logging
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml

from lgals.data import NoiseRecipe, load_dataset
from lgals.errors import BadSetting, LgalsError, redact_url
from lgals.plots import confusion_figure
from lgals.schema import MODE, SOURCE_RUN, STAGE, STATUS, Stage
from lgals.tracking.runs import in_run, source_info
from lgals.tracking.seeds import model_uri
from lgals.tracking.store import may_write, mlflow_client, read_run


@dataclass
class Reanalysis:
    source_run_id: str
    run_id: str
    test_acc: float
    logged_final_test_acc: float | None
    per_class_acc: np.ndarray
    confusion: np.ndarray  # rows: true class, columns: predicted
    memorized: int  # noisy training labels the model predicts
    noisy: int

    @property
    def reproduces(self) -> bool:
        return self.logged_final_test_acc == self.test_acc


def rebuild_data(client, run_id: str):
    """The source run's dataset, rebuilt from its params (the dataset they name, mnist1d for
    runs from before datasets had names) and checked against its recipe and digest."""
    params = client.get_run(run_id).data.params
    data = load_dataset(NoiseRecipe.from_params(params))
    logged = params.get("dataset_digest")
    if logged is not None and logged != data.digest:
        raise BadSetting(f"run {run_id}: its data cannot be rebuilt: dataset "
                         f"{data.recipe.dataset!r} gives arrays of digest {data.digest} here "
                         f"({data.version}), the run trained on {logged} "
                         f"({params.get('dataset_version', 'version not logged')})")
    with tempfile.TemporaryDirectory() as tmp, _artifact(run_id, "data_recipe.npz"):
        path = client.download_artifacts(run_id, "data_recipe.npz", tmp)
        with np.load(path, allow_pickle=False) as recipe:
            same = (np.array_equal(recipe["y_train"], data.y_train)
                    and np.array_equal(recipe["noise_mask"], data.noise_mask))
    if not same:
        raise BadSetting(f"run {run_id}: its data cannot be rebuilt: the noisy labels made "
                         "from its params differ from its logged data_recipe.npz (another "
                         f"{data.recipe.dataset} version?)")
    return data


class ArtifactLost(LgalsError):
    """A file a run logged is gone from its artifact store, or damaged there: the store, not
    the command, is at fault (exit 1)."""


@contextmanager
def _artifact(run_id: str, what: str, where: str = "") -> Iterator[None]:
    """Reading ``what`` of run ``run_id`` (from ``where``, else the run's artifacts): a file
    gone from the artifact store, or one that cannot be read as what it was logged as, is
    one line (:class:`ArtifactLost`); torch's own log of a damaged model says nothing more."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode

    where = where or mlflow_client().get_run(run_id).info.artifact_uri
    torch_log = logging.getLogger("torch.export")
    torch_log.disabled = True
    try:
        yield
    except (FileNotFoundError, MlflowException) as error:
        if isinstance(error, MlflowException) and error.error_code != ErrorCode.Name(
                RESOURCE_DOES_NOT_EXIST):
            raise
        raise ArtifactLost(f"run {run_id}: its {what} is gone from the artifact store "
                           f"({redact_url(where)}): {_first_line(error)}; restore the files "
                           "logged there, or pick another run") from None
    except (OSError, ValueError, KeyError, EOFError, RuntimeError, zipfile.BadZipFile,
            yaml.YAMLError) as error:
        raise ArtifactLost(f"run {run_id}: its {what} in the artifact store "
                           f"({redact_url(where)}) cannot be read (damaged?): "
                           f"{_first_line(error)}; restore the files logged there, or pick "
                           "another run") from None
    finally:
        torch_log.disabled = False


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def load_run(run_id: str, logs: bool = True):
    """A training run's MLflow run, its rebuilt data and its reloaded model; one line naming
    what is missing (exit 2) for an unknown run, one without a data recipe or a model
    (a server's refusal to show the run is exit 1: :func:`read_run`). With ``logs`` (the
    caller logs a run to the source run's experiment), the server's permission for that is
    asked before anything is loaded (:func:`may_write`)."""
    import mlflow.pytorch

    client = mlflow_client()
    source = read_run(run_id)
    if logs:
        may_write(source.info.experiment_id)
    if "data_recipe.npz" not in {a.path for a in client.list_artifacts(run_id)}:
        if STATUS in source.data.tags:  # its results were logged, and its files with them
            raise ArtifactLost(f"run {run_id} ({source.info.status}): its data_recipe.npz is "
                               "not in the artifact store "
                               f"({redact_url(source.info.artifact_uri)}), though the run "
                               "logged one; restore the files logged there, or pick another "
                               "run")
        raise BadSetting(f"run {run_id} has no data_recipe.npz: only training runs (one per "
                         "seed or trial) have one")
    data = rebuild_data(client, run_id)
    uri = model_uri(run_id)
    if uri is None:
        raise BadSetting(f"run {run_id} has no logged model (tuning trials log none): pick "
                         "a seed run of `lgals train` or `lgals evaluate`")
    model_id = uri.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    with _artifact(run_id, f"logged model {model_id}", location):
        model = mlflow.pytorch.load_model(uri)
    return source, data, model


def reanalyze(run_id: str) -> Reanalysis:
    """Recompute the run's test metrics and memorisation from its logged model; log them."""
    source, data, model = load_run(run_id)
    client = mlflow_client()
    with torch.no_grad():
        test_pred = model(torch.from_numpy(data.x_test)).argmax(-1).numpy()
        train_pred = model(torch.from_numpy(data.x_train)).argmax(-1).numpy()
    confusion = np.zeros((data.n_classes, data.n_classes), dtype=np.int64)
    np.add.at(confusion, (data.y_test, test_pred), 1)
    per_class = confusion.diagonal() / np.maximum(confusion.sum(axis=1), 1)
    memorized = int((train_pred[data.noise_mask] == data.y_train[data.noise_mask]).sum())
    test_acc = float((test_pred == data.y_test).mean())

    mode = source.data.tags.get(MODE, "")
    tags = {STAGE: Stage.REANALYZE, MODE: mode, SOURCE_RUN: run_id}
    with in_run(source.info.experiment_id, f"reanalyze-{source.info.run_name}", tags,
                {"source_run": run_id, **source_info()}) as new_run:
        noisy = int(data.noise_mask.sum())
        metrics = {"test_acc": test_acc, "memorized_count": memorized,
                   "memorized_frac": memorized / max(noisy, 1),
                   **{f"class_{k}_acc": float(a) for k, a in enumerate(per_class)}}
        for key, value in metrics.items():
            client.log_metric(new_run, key, value)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "confusion_matrix.csv"
            np.savetxt(path, confusion, fmt="%d", delimiter=",",
                       header=f"rows: true class 0-{data.n_classes - 1}, columns: predicted "
                              f"class 0-{data.n_classes - 1}")
            client.log_artifact(new_run, str(path))
        figure = confusion_figure(confusion, f"{mode} run {run_id[:8]}: test confusion")
        client.log_figure(new_run, figure, "confusion_matrix.png")
    logged = source.data.metrics.get("final_test_acc")
    return Reanalysis(run_id, new_run, test_acc, logged, per_class, confusion, memorized,
                      int(data.noise_mask.sum()))
