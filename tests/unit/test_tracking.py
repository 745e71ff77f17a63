"""MLflow tracking of ``lgals train`` / ``lgals reanalyze`` against a real sqlite store.

Training runs in this process through ``lgals.cli.main`` where that is enough (torch and
MLflow are imported once); what needs a process of its own (signals, the default store,
reloading a model with nothing in memory) runs the installed ``lgals`` console script.

The process-level and seconds-long tests: ``tests/system/test_tracking.py``.
"""

from __future__ import annotations

import time

import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import history, isolated_mlflow, run_main, sqlite_runs, sqlite_uri

from lgals.model import bf16_supported
from lgals.schema import HEARTBEAT
from lgals.settings import stale_seconds
from lgals.tracking.runs import HEARTBEATS, end_dead_runs, end_runs, ending, open_run
from lgals.tracking.seeds import model_name, model_uri, tracked_train
from lgals.tracking.store import connect


def test_an_experiment_keeps_its_own_description_and_a_reader_writes_none(tmp_path):

    uri = sqlite_uri(tmp_path / "mlflow.db")
    with isolated_mlflow():
        client = MlflowClient(uri)
        own = client.create_experiment("own", tags={"mlflow.note.content": "ours"})
        bare = client.create_experiment("bare")
        connect(uri, "own")
        connect(uri, "bare", create=False)
    assert client.get_experiment(own).tags == {
        "mlflow.note.content": "ours", "mlflow.experimentKind": "custom_model_development"}
    assert client.get_experiment(bare).tags == {}


def test_ending_sets_finished_failed_and_killed(tmp_path):
    """``ending`` with a real store: every run it holds (even ones added inside)
    ends FINISHED, FAILED on an exception, KILLED on an interrupt."""
    import mlflow


    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    with isolated_mlflow():
        mlflow.set_tracking_uri(uri)
        experiment_id = client.create_experiment("ending")

        def new_run(name):
            return open_run(experiment_id, name, {"lgals.stage": "test"}, {"x": 1})

        with ending([new_run("ok")]) as finished:
            finished.append(new_run("ok-added"))
        with pytest.raises(RuntimeError), ending([new_run("failed")]) as failed:
            failed.append(new_run("failed-added"))
            raise RuntimeError("boom")
        with pytest.raises(KeyboardInterrupt), ending([new_run("killed")]) as killed:
            raise KeyboardInterrupt
    statuses = {run_id: client.get_run(run_id).info.status
                for run_id in [*finished, *failed, *killed]}
    assert [statuses[r] for r in finished] == ["FINISHED", "FINISHED"]
    assert [statuses[r] for r in failed] == ["FAILED", "FAILED"]
    assert [statuses[r] for r in killed] == ["KILLED"]
    assert client.get_run(finished[0]).data.params == {"x": "1"}
    assert client.get_run(finished[0]).data.tags["lgals.stage"] == "test"


def test_bad_input_with_tracking_creates_no_run(tmp_path):
    db = tmp_path / "mlflow.db"
    result = run_main(["train", "--lr", "0", "--epochs", "1", "--tracking-uri",
                       sqlite_uri(db)], tmp_path)
    assert result.code == 2
    assert result.out == ""
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "--lr" in lines[0]
    assert not db.exists() or sqlite_runs(db) == []
    assert not (tmp_path / "mlruns").exists()


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no bfloat16 matrix units")
def test_a_bf16_run_says_so_and_its_float32_model_rescores_exactly(tmp_path, dataset):
    """Every run of ``train --precision bf16`` carries the precision as a param and a tag;
    each seed's logged model (float32 master weights) reloads and scores the test accuracy
    the run logged, to the last digit (held-out sets are scored in float32)."""
    import mlflow.pytorch
    import torch

    uri = sqlite_uri(tmp_path / "mlflow.db")
    result = run_main(["train", "--precision", "bf16", "--epochs", "2", "--seeds", "2",
                       "--tracking-uri", uri], tmp_path)
    assert result.code == 0, result.err
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("lgals").experiment_id])
    assert len(runs) == 3
    for run in runs:
        assert run.data.params["precision"] == run.data.tags["lgals.precision"] == "bf16"
    for child in (r for r in runs if "mlflow.parentRunId" in r.data.tags):
        with isolated_mlflow():
            mlflow.set_tracking_uri(uri)
            model = mlflow.pytorch.load_model(model_uri(child.info.run_id))
        assert all(p.dtype == torch.float32 for p in model.parameters())
        with torch.no_grad():
            predictions = model(torch.from_numpy(dataset.x_test)).argmax(-1).numpy()
        assert float((predictions == dataset.y_test).mean()) == child.data.metrics["test_acc"]


def test_diverged_training_fails_its_runs_and_exits_without_a_traceback(tmp_path, _cache_dir):
    """A learning rate that blows the weights up: each seed's run ends FAILED, tagged
    diverged, and the command still reports instead of crashing."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    try:
        result = run_main(["train", "--lr", "1e30", "--epochs", "1", "--seeds", "2",
                           "--tracking-uri", uri], tmp_path)
        crash = None
    except Exception as error:  # the CLI must not raise at all
        result, crash = None, error
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("lgals").experiment_id])
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(runs) == 3 and len(children) == 2
    for child in children:
        assert child.info.status == "FAILED"
        assert child.data.tags["lgals.status"] == "diverged"
        assert "non-finite" in child.data.tags["lgals.status_reason"]
        assert "final_test_acc" not in child.data.metrics
    assert all(r.info.status != "RUNNING" for r in runs)
    assert crash is None, f"lgals train crashed on diverged seeds: {crash!r}"
    assert result.code not in (0, None)  # nothing was trained: the command did not succeed
    assert "diverged" in result.err.strip().splitlines()[-1]
    assert "Traceback" not in result.err
    for seed in (0, 1):
        assert f"seed {seed}: diverged" in result.out


def test_an_interrupt_stores_every_epoch_trained_before_the_runs_end(tmp_path, dataset):
    """Metrics are flushed every few seconds; an interrupt in between must not drop the
    epochs since the last flush: they are stored, then the runs end KILLED."""
    import mlflow

    from lgals.train import TrainConfig

    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)

    def interrupt_at_epoch_7(report):
        if report.epoch == 7:
            raise KeyboardInterrupt

    with isolated_mlflow():
        mlflow.set_tracking_uri(uri)
        experiment_id = client.create_experiment("interrupted")
        opened = []
        with pytest.raises(KeyboardInterrupt):
            tracked_train(dataset, [TrainConfig(epochs=50)] * 2, [0, 1],
                          experiment_id=experiment_id, stage="test",
                          callback=interrupt_at_epoch_7, on_runs_opened=opened.extend)
    for run_id in opened:
        assert client.get_run(run_id).info.status == "KILLED"
        steps, _ = history(client, run_id, "test_acc")
        assert steps == list(range(1, 8))  # well within the first 5 s: none flushed before


def test_runs_that_stopped_beating_end_failed_and_live_ones_stay(tmp_path):
    """The heartbeat tag decides: stale -> FAILED with the reason (its PENDING model too),
    fresh -> untouched, no heartbeat (not lgals' run) -> untouched."""
    import mlflow
    from mlflow.entities import LoggedModelStatus


    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    with isolated_mlflow():
        mlflow.set_tracking_uri(uri)
        experiment_id = client.create_experiment("beats")
        dead = open_run(experiment_id, "dead", {"lgals.stage": "test"}, {})
        alive = open_run(experiment_id, "alive", {"lgals.stage": "test"}, {})
        foreign = client.create_run(experiment_id).info.run_id
        HEARTBEATS.discard(dead)  # as if its process had died
        stale = int(time.time() - stale_seconds() - 5)
        client.set_tag(dead, HEARTBEAT, str(stale))
        model = client.create_logged_model(experiment_id, source_run_id=dead)
        assert model.status == LoggedModelStatus.PENDING

        assert end_dead_runs(experiment_id) == [dead]
        assert end_dead_runs(experiment_id) == []  # once
        end_runs([alive], "FINISHED")
    assert client.get_run(dead).info.status == "FAILED"
    assert client.get_run(dead).data.tags["lgals.status_reason"].startswith(
        "its process stopped: no heartbeat since ")
    assert client.get_logged_model(model.model_id).status == LoggedModelStatus.FAILED
    assert client.get_run(alive).info.status == "FINISHED"
    assert client.get_run(foreign).info.status == "RUNNING"


@pytest.mark.parametrize("status", ["FINISHED", "KILLED"])
def test_a_run_taken_for_dead_ends_as_its_owner_ends_it(tmp_path, status):
    """A run whose process was paused past the stale limit is ended FAILED, with the reason,
    by another command (:func:`end_dead_runs`); its owner, alive after all, ends it later:
    the owner's status holds and the other command's reason goes. A reason of the owner's own
    replaces it; a run nobody else ended keeps what its owner tagged (a pruned trial's)."""
    import mlflow

    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    with isolated_mlflow():
        mlflow.set_tracking_uri(uri)
        experiment_id = client.create_experiment("paused")
        paused, replaced, own = (open_run(experiment_id, name, {"lgals.stage": "test"}, {})
                                 for name in ("paused", "replaced", "own"))
        for run_id in (paused, replaced):  # its heartbeat thread stopped with the process
            client.set_tag(run_id, HEARTBEAT, str(int(time.time() - stale_seconds() - 5)))
        client.set_tag(own, "lgals.status_reason", "stopped after epoch 3")
        assert sorted(end_dead_runs(experiment_id)) == sorted([paused, replaced])
        assert client.get_run(paused).info.status == "FAILED"

        end_runs([paused, own], status)
        end_runs([replaced], "FAILED", "its trial was not stored")
    ended = {run_id: client.get_run(run_id) for run_id in (paused, replaced, own)}
    assert ended[paused].info.status == status
    assert "lgals.status_reason" not in ended[paused].data.tags
    assert (ended[replaced].info.status, ended[replaced].data.tags["lgals.status_reason"]) == \
        ("FAILED", "its trial was not stored")
    assert (ended[own].info.status, ended[own].data.tags["lgals.status_reason"]) == \
        (status, "stopped after epoch 3")


def test_reanalyze_where_there_is_no_store_creates_none(tmp_path):
    result = run_main(["reanalyze", "0" * 32], tmp_path)
    assert result.code == 2, result
    assert result.err.strip().splitlines() == [
        f"lgals: error: no MLflow store at {tmp_path / 'mlflow.db'}, so nothing to read: "
        "point --tracking-uri at the store that holds the runs"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("run_name, expected", [
    ("lgals-seed0", "lgals-seed0"),
    ("lgals-r2-seed3", "lgals-r2-seed3"),
    ("lgals-symmetric-0.4-seed0", "lgals-symmetric-0_4-seed0"),  # a sweep's setting
    ("a/b:c%d\"e'f", "a_b_c_d_e_f"),
])
def test_a_models_name_is_its_runs_as_mlflow_accepts_it(run_name, expected):
    from mlflow.utils.validation import _validate_logged_model_name


    assert model_name(run_name) == expected
    _validate_logged_model_name(model_name(run_name))  # raises on a name MLflow refuses
