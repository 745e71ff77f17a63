"""Repeated studies and noise sweeps: the protocols as data, what each repetition varies,
the tags every run carries, resuming, the options' bad values, and the diagnostic a protocol
runs.

The fast in-process tests: ``tests/unit/test_protocols.py``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from mlflow import MlflowClient
from support.mlflow_fixtures import all_runs, isolated_mlflow, run_lgals, run_main, sqlite_uri

from lgals.pipeline import reproduce
from lgals.protocols import QUICK
from lgals.tracking.runs import end_runs, open_run, run_name, scope, scope_tags
from lgals.tracking.store import connect, mlflow_client

# --- the protocols as data -----------------------------------------------------------------


def test_every_run_opened_in_a_scope_carries_its_tags(tmp_path):
    with isolated_mlflow():
        experiment_id = connect(sqlite_uri(tmp_path / "mlflow.db"), "scoped")
        outside = open_run(experiment_id, "outside", {}, {})
        with scope({"lgals.noise": "pair-0.4"}, label="pair-0.4"):
            with scope({"lgals.repeat": 2}, label="r2"):
                inner = open_run(experiment_id, "inner", {"lgals.stage": "x"}, {})
                assert scope_tags() == (
                    {"lgals.noise": "pair-0.4", "lgals.repeat": "2"}, "pair-0.4-r2")
                assert run_name("lgals", "seed3") == "lgals-pair-0.4-r2-seed3"
            # a run's own tag wins over the scope's
            own = open_run(experiment_id, "own", {"lgals.noise": "mine"}, {})
            assert run_name("tune-lgals") == "tune-lgals-pair-0.4"
        assert scope_tags() == ({}, "")
        assert run_name("lgals", "seed3") == "lgals-seed3"
        client = mlflow_client()
        tags = {run_id: client.get_run(run_id).data.tags for run_id in (outside, inner, own)}
        end_runs([outside, inner, own], "FINISHED")
    assert "lgals.repeat" not in tags[outside] and "lgals.noise" not in tags[outside]
    assert (tags[inner]["lgals.repeat"], tags[inner]["lgals.noise"]) == ("2", "pair-0.4")
    assert tags[inner]["lgals.stage"] == "x"
    assert tags[own]["lgals.noise"] == "mine" and "lgals.repeat" not in tags[own]


# --- end to end: repetitions, tags, resuming ------------------------------------------------

def repeated_quick(cwd: Path, uri: str, *extra: str):
    return run_lgals(["reproduce", "--quick", "--repeats", "2", "--seeds", "2", "--out",
                      str(cwd / "results"), "--tracking-uri", uri, *extra], cwd, timeout=600)


def test_repetitions_are_tagged_paired_and_resumed(tmp_path, _cache_dir):
    """Two repetitions of the quick protocol: each its own studies and noise draw, every run
    tagged with its repetition, modes evaluated on the same draws and seeds; the same command
    again trains nothing (studies full, evaluations reused) and reports the same numbers."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    first = repeated_quick(tmp_path, uri)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "repetition 2 of 2" in first.stderr
    client = MlflowClient(uri)
    runs = all_runs(client)
    (top,) = [r for r in runs if r.data.tags.get("lgals.stage") == "reproduce"]
    assert (top.data.params["repeats"], top.data.params["seeds"]) == ("2", "2")
    assert top.data.params["protocol"] == "quick"
    inside = [r for r in runs if r.info.run_id != top.info.run_id
              and r.data.tags.get("lgals.stage") != "report"]
    assert {r.data.tags.get("lgals.repeat") for r in inside} == {"0", "1"}
    seed_runs = [r for r in inside if r.data.tags.get("lgals.stage") == "evaluate"
                 and "lgals.seed" in r.data.tags]
    cells = {(r.data.tags["lgals.mode"], r.data.tags["lgals.repeat"], r.data.tags["lgals.seed"])
             for r in seed_runs}
    assert len(seed_runs) == len(cells) == 3 * 2 * 2  # modes x repetitions x seeds, paired
    assert {r.info.run_name for r in seed_runs} == {f"{m}-r{r}-seed{s}" for m, r, s in cells}
    draws = {(r.data.tags["lgals.repeat"], r.data.params["noise_seed"]) for r in seed_runs}
    assert draws == {("0", "0"), ("1", "1")}  # repetition r: noise seed 0 + r
    trials = [r for r in runs if r.data.tags.get("lgals.stage") == "trial"]
    studies = {r.data.tags["lgals.study"] for r in trials}
    assert studies == {f"lgals-quick-{m}{suffix}" for m in ("baseline", "fixed_ls", "lgals")
                       for suffix in ("", "-r1")}
    assert len(trials) == 2 * 3 * QUICK.n_trials
    report = (tmp_path / "results" / "results.md").read_text()

    again = repeated_quick(tmp_path, uri)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("reusing finished evaluate run") == 3 * 2
    runs_after = all_runs(client)
    new = [r for r in runs_after if r.info.run_id not in {x.info.run_id for x in runs}]
    assert not [r for r in new if r.data.tags.get("lgals.stage") in ("trial", "evaluate")]
    assert (tmp_path / "results" / "results.md").read_text() == report


def test_a_sweep_runs_the_protocol_per_setting_under_one_run(tmp_path, _cache_dir):
    uri = sqlite_uri(tmp_path / "mlflow.db")
    out = tmp_path / "sweep"
    result = run_lgals(["sweep", "--quick", "--noise-rates", "0,0.4", "--noise-types",
                        "symmetric,pair", "--out", str(out), "--tracking-uri", uri],
                       tmp_path, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    settings = ["symmetric-0", "symmetric-0.4", "pair-0.4"]  # rate 0 once
    for setting in settings:
        assert (out / setting / "results.md").is_file(), setting
    for name in ("sweep.md", "sweep.csv", "sweep_accuracy.png"):
        assert (out / name).is_file(), name
    runs = all_runs(MlflowClient(uri))
    (umbrella,) = [r for r in runs if r.data.tags.get("lgals.stage") == "sweep"]
    assert "mlflow.parentRunId" not in umbrella.data.tags
    assert (umbrella.data.params["noise_rates"], umbrella.data.params["noise_types"]) == (
        "0,0.4", "symmetric,pair")  # as asked: what `report --sweep` rebuilds the sweep from
    reproduces = [r for r in runs if r.data.tags.get("lgals.stage") == "reproduce"]
    assert sorted(r.data.tags["lgals.noise"] for r in reproduces) == sorted(settings)
    assert {r.data.tags["mlflow.parentRunId"] for r in reproduces} == {umbrella.info.run_id}
    assert sorted(r.info.run_name for r in reproduces) == sorted(
        f"reproduce-quick-{s}" for s in settings)
    evaluated = {(r.data.params["noise_type"], r.data.params["noise_rate"])
                 for r in runs if r.data.tags.get("lgals.stage") == "evaluate"
                 and "lgals.seed" in r.data.tags}
    assert evaluated == {("symmetric", "0.0"), ("symmetric", "0.4"), ("pair", "0.4")}
    assert all(r.data.tags.get("lgals.noise") in settings for r in runs
               if r.data.tags.get("lgals.stage") in ("trial", "tune", "evaluate"))
    # the sweep's report rebuilt from MLflow alone is the same, byte for byte
    rebuilt = run_lgals(["report", "--sweep", "--experiment-name", "lgals-quick", "--out",
                         str(tmp_path / "rebuilt"), "--tracking-uri", uri], tmp_path)
    assert rebuilt.returncode == 0, rebuilt.stderr[-3000:]
    for name in ("sweep.md", "sweep.csv"):
        assert (tmp_path / "rebuilt" / name).read_text() == (out / name).read_text(), name


# --- the diagnostic inside a protocol --------------------------------------------------------

DIAGNOSING = replace(QUICK, diagnose=True)  # 3 epochs: checkpoints 1 and 3


def diagnosed_reproduce(uri: str, out: Path) -> tuple[dict[str, float], list[str]]:
    """``pipeline.reproduce`` of :data:`DIAGNOSING` in this process: its timings and lines."""
    lines: list[str] = []
    with isolated_mlflow():
        experiment_id = connect(uri, DIAGNOSING.experiment)
        timings = reproduce(experiment_id, out, DIAGNOSING, echo=lines.append)
    return timings, lines


def of_stage(runs: list, stage: str) -> list:
    return [r for r in runs if r.data.tags.get("lgals.stage") == stage]


def claim_3(out: Path) -> str:
    """The card's line for the note's claim 3 (numbered after each ordering of claim 1)."""
    (line,) = [line for line in (out / "results.md").read_text().splitlines()
               if "Logit-gradient alignment tracks weight-gradient alignment" in line]
    return line


def test_a_diagnosing_protocol_measures_claim_3_in_its_own_run_and_reuses_it(tmp_path,
                                                                             _cache_dir):
    """The diagnostic runs inside the reproduce run, before the report, on the tuned LGALS
    that evaluation trained, and the card quotes it; the same command again reuses it, and
    its card still quotes it, not a newer diagnosis of the same data."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    timings, lines = diagnosed_reproduce(uri, tmp_path / "first")
    assert list(timings) == ["tuning", "evaluation", "diagnosis", "report"]
    assert "[diagnose] lgals, seed 0 x 3 epochs, checkpoints 1,3" in lines
    assert lines.index("[report]") > lines.index("[diagnose] lgals, seed 0 x 3 epochs, "
                                                 "checkpoints 1,3")
    client = MlflowClient(uri)
    runs = all_runs(client)
    (top,) = of_stage(runs, "reproduce")
    (diagnosis,) = of_stage(runs, "diagnose")
    assert diagnosis.data.tags["mlflow.parentRunId"] == top.info.run_id
    assert "`lgals diagnose`" in top.data.tags["mlflow.note.content"]
    assert top.data.params["diagnose"] == "True"
    params = diagnosis.data.params
    assert (params["mode"], params["seed"], params["epochs"], params["checkpoints"]) == (
        "lgals", "0", "3", "1,3")
    assert (params["noise_seed"], params["val_fraction"]) == ("0", "0.0")  # evaluation's draw
    assert params["precision"] == diagnosis.data.tags["lgals.precision"] == "fp32"
    (evaluated,) = [r for r in of_stage(runs, "evaluate")
                    if r.data.tags["lgals.mode"] == "lgals" and "lgals.seed" not in r.data.tags]
    assert {k: params[k] for k in ("lr", "weight_decay", "eps_max", "gamma")} == {
        k: evaluated.data.params[k] for k in ("lr", "weight_decay", "eps_max", "gamma")}
    r = [m.value for m in client.get_metric_history(diagnosis.info.run_id, "all.pearson")]
    assert len(r) == 2
    first = claim_3(tmp_path / "first")
    assert "Not measured" not in first
    assert f"all layers {min(r):.3f}–{max(r):.3f}" in first
    assert diagnosis.info.run_id in (tmp_path / "first" / "results.md").read_text()

    newer = run_main(["diagnose", "--epochs", "1", "--checkpoints", "1", "--batches", "2",
                      "--experiment-name", DIAGNOSING.experiment, "--tracking-uri", uri],
                     tmp_path)
    assert newer.code == 0, newer
    timings, lines = diagnosed_reproduce(uri, tmp_path / "again")
    assert f"[diagnose] lgals: reusing finished diagnose run {diagnosis.info.run_id}" in lines
    assert len(of_stage(all_runs(client), "diagnose")) == 2  # its own and the newer one
    assert claim_3(tmp_path / "again") == first
