"""MLflow's Model Registry, opt-in (``--register NAME`` of ``evaluate`` and ``reproduce``).

Each mode's evaluated seed models become versions of the registered model ``NAME-<mode>``
(always suffixed: a name means one mode, whatever was evaluated beside it), each logged model
once however often its evaluation is registered, and the alias ``best`` names one of them.

Which one: evaluation trains on every training row, so there is no validation split to
select on. Selecting on test accuracy would use the data the study reports on, and leave the
chosen model's test accuracy biased upwards; the accuracy on the observed (noisy) training
labels rewards fitting the flipped labels. ``best`` is the version whose seed run ended with
the highest accuracy on the training inputs against their true labels (``train_true_acc``):
no test data, so ``@best``'s test accuracy stays a fair estimate of that model's, but it knows
which labels were flipped, as only a study that flipped them does.

MLflow is imported inside the functions that use it (see :mod:`lgals.tracking.store`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lgals.schema import PARENT, SEED, Stage, repeat_of, runs_filter
from lgals.tracking.seeds import logged_model_id
from lgals.tracking.store import PROBE_TAG, mlflow_client, on_server, storing, user_error

BEST = "best"
SELECTED_BY = "train_true_acc"  # the seed run's final value picks the version aliased BEST


def registered_name(name: str, mode: str) -> str:
    return f"{name}-{mode}"


def name_problem(name: str) -> str | None:
    """Why ``name`` cannot be ``--register``'s: MLflow's rules for a registered model's name,
    and ``models:/NAME-<mode>@best`` must name that model; ``None`` if it can."""
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.utils.models import _parse_model_uri
    from mlflow.utils.validation import _validate_model_name

    probe = registered_name(name, "MODE")
    uri = f"models:/{probe}@{BEST}"
    try:
        _validate_model_name(name)
        read_back = _parse_model_uri(uri).name
    except MlflowException as error:
        return error.message
    return None if read_back == probe else f"MLflow would not read {uri} as that model's URI"


def may_register(name: str, modes: Sequence[str]) -> None:
    """On a tracking server, whether this account may add versions to each ``NAME-<mode>``
    registered already, asked before anything is created or trained: it deletes a tag the
    model does not hold (:data:`PROBE_TAG`: nothing is written), which the server allows
    those who may add versions and move ``best``. A model not registered yet is made by
    whoever registers it first. A refusal is :func:`user_error`'s line, naming the model."""
    if not on_server():
        return
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    for mode in modes:
        model = registered_name(name, mode)
        try:
            client.get_registered_model(model)
            client.delete_registered_model_tag(model, PROBE_TAG)
        except MlflowException as error:
            said = user_error(error, asked=f"add versions to registered model {model!r}",
                              advice="ask the server's admin for EDIT permission on it")
            if said is not None:
                raise said from None
            if error.error_code != "RESOURCE_DOES_NOT_EXIST":  # else: not registered yet
                raise


@dataclass(frozen=True)
class Registration:
    """One mode's evaluated seed models in the registry."""

    name: str  # the registered model's
    versions: tuple[str, ...]  # this evaluation's, one per seed model
    added: int  # how many of them this registration created
    best: str  # the version aliased BEST
    best_run_id: str
    best_value: float  # its seed run's final SELECTED_BY

    def summary(self) -> str:
        return (f"registered {self.name}: {len(self.versions)} version(s), {self.added} new; "
                f"@{BEST} = version {self.best} (seed run {self.best_run_id}, final "
                f"{SELECTED_BY} {self.best_value:.4f}): "
                f"mlflow.pytorch.load_model('models:/{self.name}@{BEST}')")


def register_evaluations(name: str, evaluations: Mapping[str, Sequence[str]]
                         ) -> list[Registration]:
    """The seed models of each mode's evaluate runs ``evaluations[mode]`` as versions of
    ``NAME-<mode>`` (a model registered there before keeps its version), and ``best`` set on
    the one whose seed run ended with the highest ``train_true_acc`` (a tie: the earliest
    version). A mode with no finished seed model registers nothing."""
    found = (_register(registered_name(name, mode), run_ids)
             for mode, run_ids in evaluations.items())
    return [registration for registration in found if registration]


def _register(name: str, evaluate_run_ids: Sequence[str]) -> Registration | None:
    from mlflow.exceptions import MlflowException

    client = mlflow_client()
    seeds = []  # (seed run, its model's id), in repetition and seed order
    for evaluate_run_id in evaluate_run_ids:
        experiment_id = client.get_run(evaluate_run_id).info.experiment_id
        runs = client.search_runs(
            [experiment_id], runs_filter(Stage.EVALUATE, status="FINISHED",
                                         tags={PARENT: evaluate_run_id}, has=(SEED,)),
            max_results=1000)
        for run in sorted(runs, key=lambda r: (repeat_of(r), int(r.data.tags[SEED]))):
            found = logged_model_id(run.info.run_id, experiment_id)
            if found:
                seeds.append((run, found))
    if not seeds:
        return None
    with storing(f"registering the models of {name}"):
        run_ids = ", ".join(f"'{run.info.run_id}'" for run, _ in seeds)
        # a version is known by its source, its model's URI (the stores keep no model id)
        version_of = {v.source: str(v.version)  # an int from some stores, str from others
                      for v in client.search_model_versions(f"run_id IN ({run_ids})")
                      if v.name == name}
        missing = [(run, found) for run, found in seeds
                   if f"models:/{found}" not in version_of]
        if missing:
            try:
                client.create_registered_model(
                    name, description=f"lgals seed models, one version each; @{BEST}: the "
                                      f"version whose seed run ended with the highest "
                                      f"{SELECTED_BY} (lgals' README, Model Registry).")
            except MlflowException as error:  # registered before, or meanwhile
                if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                    raise
        for run, found in missing:
            version_of[f"models:/{found}"] = str(client.create_model_version(
                name, f"models:/{found}", run_id=run.info.run_id, model_id=found).version)
        versions = [(run, version_of[f"models:/{found}"]) for run, found in seeds]
        run, best = max(versions, key=lambda pair: (pair[0].data.metrics[SELECTED_BY],
                                                    -int(pair[1])))
        client.set_registered_model_alias(name, BEST, best)
    return Registration(name, tuple(version for _, version in versions), len(missing), best,
                        run.info.run_id, run.data.metrics[SELECTED_BY])
