"""``lgals evaluate --register NAME``: the seed models in MLflow's Model Registry, on a sqlite
store and on a team's ``mlflow server`` with its store in PostgreSQL.

``reproduce --register`` on evaluations it reuses: ``tests/system/test_reproduce.py``; the
names: ``tests/unit/test_models.py``.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import (
    isolated_mlflow,
    model_accuracy,
    registry_state,
    run_lgals,
    sqlite_uri,
)
from support.pg_fixtures import mlflow_server_on, postgres_server

from lgals.data import load_dataset
from lgals.tracking.register import register_evaluations
from lgals.tracking.seeds import logged_model_id

MODES = ("baseline", "lgals")
SEEDS = 3


def evaluate(uri: str, cwd, name: str, modes=MODES) -> SimpleNamespace:
    """``lgals evaluate --register NAME`` of ``modes`` (default params, 3 seeds x 2 epochs)
    into ``uri``; the command's outcome and each mode's evaluate run and seed runs."""
    result = run_lgals(["evaluate", "--modes", ",".join(modes), "--seeds", str(SEEDS),
                        "--epochs", "2", "--params-from", "defaults", "--register", name,
                        "--tracking-uri", uri], cwd, timeout=420)
    assert result.returncode == 0, result.stderr[-3000:]
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lgals")
    runs = client.search_runs([experiment.experiment_id], "tags.`lgals.stage` = 'evaluate'")
    evaluations = {}
    for mode in modes:
        parent = next(r for r in runs if r.info.run_name == f"evaluate-{mode}")
        seeds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        evaluations[mode] = SimpleNamespace(run=parent, seeds=seeds)
    return SimpleNamespace(uri=uri, client=client, result=result, evaluations=evaluations)


def assert_registered(evaluated: SimpleNamespace, name: str) -> None:
    """Each mode's seed models are the versions of ``NAME-<mode>``, once each; ``best`` is the
    one whose run ended with the highest train_true_acc, and it reloads scoring that run's
    final_test_acc."""
    import mlflow.pytorch

    client, data = evaluated.client, load_dataset()
    for mode, evaluation in evaluated.evaluations.items():
        registered = f"{name}-{mode}"
        versions = client.search_model_versions(f"name = '{registered}'")
        assert len(evaluation.seeds) == SEEDS
        with isolated_mlflow():
            mlflow.set_tracking_uri(evaluated.uri)
            models = {run.info.run_id: logged_model_id(run.info.run_id) for run in evaluation.seeds}
        assert {(v.run_id, v.source) for v in versions} == {
            (run_id, f"models:/{found}") for run_id, found in models.items()}
        assert sorted(int(v.version) for v in versions) == list(range(1, SEEDS + 1))

        best = client.get_model_version_by_alias(registered, "best")
        by_version = sorted(versions, key=lambda v: int(v.version))
        true_acc = {run.info.run_id: run.data.metrics["train_true_acc"]
                    for run in evaluation.seeds}
        highest = max(true_acc.values())
        assert best.version == next(v.version for v in by_version
                                    if true_acc[v.run_id] == highest)
        source = next(run for run in evaluation.seeds if run.info.run_id == best.run_id)
        with isolated_mlflow():
            mlflow.set_tracking_uri(evaluated.uri)
            model = mlflow.pytorch.load_model(f"models:/{registered}@best")
        assert model_accuracy(model, data) == source.data.metrics["final_test_acc"]
        assert (f"registered {registered}: {SEEDS} version(s), {SEEDS} new; @best = version "
                f"{best.version} (seed run {best.run_id}, final train_true_acc {highest:.4f})"
                in evaluated.result.stdout)


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory, _cache_dir):
    tmp = tmp_path_factory.mktemp("registry")
    return evaluate(sqlite_uri(tmp / "mlflow.db"), tmp, "study")


def test_evaluate_registers_each_modes_seed_models_and_best_reloads(on_sqlite):
    assert_registered(on_sqlite, "study")
    assert {m.name for m in on_sqlite.client.search_registered_models()} == {
        "study-baseline", "study-lgals"}


def test_registering_an_evaluation_again_adds_no_version(on_sqlite):
    """The same evaluations registered again (as a rerun of ``reproduce`` does with those it
    reuses): every model keeps its one version, ``best`` its version."""
    client = on_sqlite.client
    before = registry_state(client)
    assert set(before) == {"study-baseline", "study-lgals"}
    with isolated_mlflow():
        import mlflow

        mlflow.set_tracking_uri(on_sqlite.uri)
        again = register_evaluations("study", {mode: [e.run.info.run_id] for mode, e in
                                               on_sqlite.evaluations.items()})
    assert [(r.name, r.added, r.best) for r in again] == [
        (f"study-{mode}", 0, before[f"study-{mode}"][1]) for mode in MODES]
    assert registry_state(client) == before


def test_a_team_server_on_postgresql_holds_the_registry(tmp_path, _cache_dir):
    """The same against ``mlflow server`` with its store in PostgreSQL (a registry needs a
    database-backed store), loaded through the server."""
    with postgres_server(tmp_path) as postgres, \
            mlflow_server_on(postgres, tmp_path) as server:
        (tmp_path / "work").mkdir()
        evaluated = evaluate(server.uri, tmp_path / "work", "team", modes=("lgals",))
        assert_registered(evaluated, "team")
        assert not (tmp_path / "work" / "mlflow.db").exists()
