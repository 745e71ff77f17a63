"""The private APIs of other packages that lgals relies on (lgals.private_apis), held to the
installed packages: an upgrade that removes or changes one fails here, naming it. Also: no
private name is used in lgals/ without an entry, the retry wrapper of lgals.storage knows
every method of Optuna's RDB storage, and pyproject.toml caps every package in the table."""

from __future__ import annotations

import ast
import datetime
import importlib
import inspect

import optuna
import pytest
import torch
from optuna.trial import TrialState
from packaging.requirements import Requirement
from support.mlflow_fixtures import PROJECT

from lgals.private_apis import PRIVATE_APIS, PrivateApi
from lgals.storage import _SERVER_CALLS, open_storage
from lgals.tuning import _CompletedTrials, _should_prune

# lgals asks trials itself and writes their heartbeats (lgals.storage.TrialRecorder)
pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")

# Optuna's RDB storage methods that lgals.storage does not retry, and why; with
# lgals.storage._SERVER_CALLS, every method it has (checked below): a method a new Optuna adds
# has to be put in one or the other.
NO_DATABASE_CALL = {
    # made inside a retried call, in the session that call opened
    "_create_unique_study_name", "_get_prepared_new_trial", "_set_trial_param_without_commit",
    "_set_trial_value_without_commit", "_set_trial_intermediate_value_without_commit",
    "_set_trial_attr_without_commit", "_build_frozen_trial_from_trial_model",
    # BaseStorage's, made of retried calls or of none
    "check_trial_is_updatable", "get_n_trials", "get_trial_number_from_id", "get_trial_params",
    # no database
    "_fill_storage_url_template", "_set_default_engine_kwargs_for_mysql", "remove_session",
    "get_heartbeat_interval", "get_heartbeat_stale_trial_callback", "get_failed_trial_callback",
    # the schema's version: made while the storage opens (retried whole, open_storage), or by
    # `optuna storage upgrade`
    "upgrade", "get_current_version", "get_head_version", "get_all_versions",
}


def resolve(path: str):
    """The object at a dotted ``path``: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            found = getattr(found, name)
        return found
    raise ImportError(path)


def parameter_names(function) -> set[str]:
    """The parameters ``function`` takes: from its signature, or for an ATen operator or one
    of torch's native functions (which have none), from the operator's schemas."""
    packet = function if hasattr(function, "overloads") else None
    if packet is None:
        try:
            return set(inspect.signature(function).parameters)
        except (TypeError, ValueError):
            packet = getattr(torch.ops.aten, function.__name__)
    return {argument.name for overload in packet.overloads()
            for argument in getattr(packet, overload)._schema.arguments}


@pytest.fixture(scope="module")
def instances(tmp_path_factory) -> dict[str, object]:
    """A real object of each class whose instances an entry names: a study and a trial in an
    lgals SQLite storage."""
    url = f"sqlite:///{tmp_path_factory.mktemp('optuna') / 'optuna.db'}"
    study = optuna.create_study(storage=open_storage(url), study_name="s")
    trial = study.ask()
    return {"optuna.study.Study": study, "optuna.trial.Trial": trial,
            "optuna.storages._cached_storage._CachedStorage": study._storage}


@pytest.mark.parametrize("api", PRIVATE_APIS, ids=lambda api: api.path)
def test_each_private_api_is_there_with_the_parameters_lgals_passes(api: PrivateApi,
                                                                    instances):
    where = f"{api.path} ({api.package}; used in {api.used_in})"
    owner_path, _, name = api.path.rpartition(".")
    try:
        if api.instance:
            assert owner_path in instances, f"{where}: add a real {owner_path} to instances()"
            found = getattr(instances[owner_path], name)
        else:
            found = resolve(api.path)
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{where} is gone: {error}")
    if api.parameters:
        missing = set(api.parameters) - parameter_names(found)
        assert not missing, f"{where} no longer takes {sorted(missing)}"


def test_optunas_private_attributes_hold_what_lgals_takes_them_for(instances):
    study, trial = instances["optuna.study.Study"], instances["optuna.trial.Trial"]
    backend = study._storage._backend
    assert isinstance(backend, optuna.storages.RDBStorage)
    assert study._study_id == backend.get_study_id_from_name("s")
    assert trial._trial_id == backend.get_trial_id_from_study_id_trial_number(
        study._study_id, trial.number)
    from optuna.storages._rdb import models

    with backend.scoped_session() as session:
        row = session.get(models.TrialModel, trial._trial_id)
        started = row._datetime_start_utc
        assert list(row.heartbeats) == []
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - started).total_seconds()) < 60  # naive UTC, as the cutoff is computed


def test_the_retry_wrapper_knows_every_method_of_optunas_rdb_storage():
    storage = optuna.storages.RDBStorage
    methods = {name for name, member in inspect.getmembers(storage, callable)
               if not name.startswith("__")
               and next(c for c in storage.__mro__ if name in vars(c)).__module__
               .startswith("optuna.")}
    unknown = methods - set(_SERVER_CALLS) - NO_DATABASE_CALL
    assert not unknown, (f"optuna.storages.RDBStorage has methods lgals.storage does not know: "
                         f"{sorted(unknown)}; add each that reads or writes the database to "
                         "_SERVER_CALLS, the others to NO_DATABASE_CALL here")
    gone = (set(_SERVER_CALLS) | NO_DATABASE_CALL) - methods
    assert not gone, f"optuna.storages.RDBStorage no longer has {sorted(gone)}"


def test_the_median_pruner_decides_on_the_round_snapshot_as_on_the_study(tmp_path):
    """lgals.tuning hands MedianPruner a stand-in holding only the complete trials: its
    decisions must be those it makes on the study itself, pruned and not."""
    pruner = optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}", direction="maximize",
                                pruner=pruner)
    for values in ([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], [0.6, 0.7, 0.8]):
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.COMPLETE, value=values[-1],
            intermediate_values=dict(enumerate(values))))
    study.add_trial(optuna.trial.create_trial(state=TrialState.PRUNED,
                                              intermediate_values={0: 0.0}))
    snapshot = _CompletedTrials(study)
    decisions = []
    for values in ({0: 0.1, 1: 0.2}, {0: 0.9, 1: 0.9}, {0: 0.1}):
        running = study.ask()
        for step, value in values.items():
            running.report(value, step)
        decisions.append(_should_prune(pruner, snapshot, values))
        assert decisions[-1] == running.should_prune(), values
        study.tell(running, state=TrialState.FAIL)
    assert decisions == [True, False, False]  # below the median; above it; still warming up


def _defined_in_lgals() -> tuple[set[str], list[tuple[str, str]]]:
    """The private names lgals defines (functions, classes, attributes, assignments), and
    every private name it reads off another object as (file:line, name)."""
    defined, used = set(), []
    for path in sorted((PROJECT / "lgals").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                defined.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                defined.add(node.id)
            elif isinstance(node, ast.Attribute):
                if isinstance(node.ctx, ast.Store):
                    defined.add(node.attr)
                else:
                    used.append((f"{path.relative_to(PROJECT)}:{node.lineno}", node.attr))
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", "") == "getattr"
                  and len(node.args) > 1 and isinstance(node.args[1], ast.Constant)):
                used.append((f"{path.relative_to(PROJECT)}:{node.lineno}", node.args[1].value))
            elif isinstance(node, ast.ImportFrom) and node.module:
                for part in [*node.module.split("."), *(alias.name for alias in node.names)]:
                    used.append((f"{path.relative_to(PROJECT)}:{node.lineno}", part))
    return defined, used


# Names with a leading underscore that are public by their library's convention.
PUBLIC_BY_CONVENTION = {"_exit", "_replace", "_asdict", "_fields", "_make"}


def test_every_private_name_lgals_reads_off_another_package_is_in_the_table():
    defined, used = _defined_in_lgals()
    tabled = {part for api in PRIVATE_APIS for part in api.path.split(".")}
    unlisted = [(where, name) for where, name in used
                if name.startswith("_") and not name.startswith("__")
                and name not in defined | tabled | PUBLIC_BY_CONVENTION]
    assert not unlisted, f"private APIs missing from lgals.private_apis.PRIVATE_APIS: {unlisted}"


def test_every_package_with_a_private_api_is_capped_in_pyproject():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11 on
    project = tomllib.loads((PROJECT / "pyproject.toml").read_text())["project"]
    requirements = {Requirement(line).name: Requirement(line)
                    for line in project["dependencies"]}
    for package in {api.package for api in PRIVATE_APIS} - {"python"}:
        upper = [s for s in requirements[package].specifier if s.operator in ("<", "<=")]
        assert upper, f"{package} has private APIs in lgals.private_apis but no upper bound"
