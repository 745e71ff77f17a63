"""Repeated studies and noise sweeps: the protocols as data, what each repetition varies,
the tags every run carries, resuming, and the options' bad values."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from mlflow import MlflowClient
from mlflow_fixtures import all_runs, isolated_mlflow, run_lgals, sqlite_uri
from test_cli import assert_one_line_error, run_main  # noqa: F401 (a fixture)

from lgals import cli
from lgals.data import NoiseRecipe
from lgals.protocols import CLAIM, PROTOCOLS, QUICK, ROBUST
from lgals.tracking.runs import end_runs, open_run, run_name, scope, scope_tags
from lgals.tracking.store import connect, mlflow_client
from lgals.tuning import TuneSettings

# --- the protocols as data -----------------------------------------------------------------


def test_the_named_protocols():
    assert (CLAIM.repeats, CLAIM.seeds, CLAIM.n_trials, CLAIM.epochs) == (1, 5, 20, 100)
    assert (ROBUST.repeats, ROBUST.seeds) == (5, 10)
    assert dataclasses.replace(ROBUST, name="claim", repeats=1, seeds=5) == CLAIM
    assert set(PROTOCOLS) == {"claim", "robust", "quick"}
    choices = {p.name: p for p in cli.cli.commands["reproduce"].params}["protocol"].type.choices
    assert set(choices) == set(PROTOCOLS)
    for protocol in PROTOCOLS.values():  # --help states each protocol's size without importing
        assert f"{protocol.name}: " in cli.PROTOCOL_HELP


def test_a_repetition_varies_noise_draw_split_and_sampler_seed_only():
    base = TuneSettings(mode="lgals", study_name="lgals-lgals", sampler_seed=3)
    assert base.repeated(0) is base  # repetition 0 is the note's protocol, its study unchanged
    second = base.repeated(2)
    assert second.noise == dataclasses.replace(base.noise, noise_seed=2)
    assert second.sampler_seed == 5 and second.study_name == "lgals-lgals-r2"
    assert dataclasses.replace(second, noise=base.noise, sampler_seed=3,
                               study_name=base.study_name) == base
    # another repetition flips other labels (as many) and holds out other rows
    from lgals.data import load_dataset

    first, other = load_dataset(base.noise), load_dataset(second.noise)
    assert not np.array_equal(first.val_index, other.val_index)
    full = [load_dataset(dataclasses.replace(s.noise, val_fraction=0.0)).noise_mask
            for s in (base, second)]
    assert not np.array_equal(*full) and full[0].sum() == full[1].sum() == 800


def test_every_repetition_of_a_protocol_has_its_own_studies():
    names = {s.study_name for r in range(ROBUST.repeats) for s in ROBUST.tune_settings(r)}
    assert len(names) == 5 * 3
    assert [s.study_name for s in CLAIM.tune_settings(0)] == [
        "lgals-baseline", "lgals-fixed_ls", "lgals-lgals"]  # today's studies resume
    pair = dataclasses.replace(CLAIM, noise=NoiseRecipe(0.4, "pair", val_fraction=0.1))
    assert [s.study_name for s in pair.tune_settings(1)][0] == "lgals-pair-0.4-baseline-r1"
    assert {s.noise for s in pair.tune_settings(1)} == {NoiseRecipe(0.4, "pair", 1, 0.1)}


def test_sweep_settings_run_rate_zero_once():
    settings = NoiseRecipe.distinct(CLAIM.noise.swept([0.0, 0.2, 0.4], ["symmetric", "pair"]))
    assert [s.setting for s in settings] == ["symmetric-0", "symmetric-0.2", "symmetric-0.4",
                                            "pair-0.2", "pair-0.4"]
    assert all(s.val_fraction == CLAIM.noise.val_fraction for s in settings)


def test_project_argv_drops_only_the_zero_sizes():
    assert cli.project_argv(["--out", "0", "--repeats", "0", "--seeds", "0", "--batch", "0"]) == [
        "--out", "0", "--batch", "0"]
    assert cli.project_argv(["--repeats", "3", "--seeds", "10"]) == [
        "--repeats", "3", "--seeds", "10"]


@pytest.mark.slow  # in-process, but seconds long
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


# --- bad values: one line, exit 2, nothing started -------------------------------------------

@pytest.mark.parametrize("argv, option", [
    (["reproduce", "--repeats", "0"], "--repeats"),
    (["reproduce", "--seeds", "0"], "--seeds"),
    (["reproduce", "--protocol", "thorough"], "--protocol"),
    (["reproduce", "--quick", "--protocol", "robust"], "--quick"),
    (["tune", "--repeats", "0"], "--repeats"),
    (["evaluate", "--repeats", "0"], "--repeats"),
    (["report", "--repeats", "0"], "--repeats"),
    (["report", "--seeds", "-1"], "--seeds"),
    (["sweep", "--repeats", "0"], "--repeats"),
    (["sweep", "--seeds", "0"], "--seeds"),
    (["sweep", "--protocol", "robustest"], "--protocol"),
    (["sweep", "--noise-rates", "0.2,0.95"], "--noise-rates"),
    (["sweep", "--noise-rates", "-0.1"], "--noise-rates"),
    (["sweep", "--noise-rates", "nan"], "--noise-rates"),
    (["sweep", "--noise-rates", "0.2,high"], "--noise-rates"),
    (["sweep", "--noise-rates", "0.2,0.4,0.2"], "--noise-rates"),
    (["sweep", "--noise-rates", ""], "--noise-rates"),
    (["sweep", "--noise-types", "gaussian"], "--noise-types"),
    (["sweep", "--noise-types", "pair,pair"], "--noise-types"),
    (["sweep", "--noise-types", ""], "--noise-types"),
])
def test_a_bad_protocol_or_sweep_value_is_one_line(run_main, argv, option, tmp_path,  # noqa: F811
                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main(argv)
    assert_one_line_error(code, out, err, option)
    assert list(tmp_path.iterdir()) == []  # no store, no cache, no report


def test_the_sweep_lists_name_what_is_wrong(run_main, tmp_path, monkeypatch):  # noqa: F811
    monkeypatch.chdir(tmp_path)
    _, _, err = run_main(["sweep", "--noise-rates", "0.2,0.4,0.2"])
    assert "0.2 given twice" in err
    _, _, err = run_main(["sweep", "--noise-rates", "0.95"])
    assert "0.95 is not in the range 0<=x<=0.9" in err
    _, _, err = run_main(["sweep", "--noise-types", "gaussian"])
    assert "'gaussian' is not one of symmetric, pair" in err


# --- end to end: repetitions, tags, resuming ------------------------------------------------

def repeated_quick(cwd: Path, uri: str, *extra: str):
    return run_lgals(["reproduce", "--quick", "--repeats", "2", "--seeds", "2", "--out",
                      str(cwd / "results"), "--tracking-uri", uri, *extra], cwd, timeout=600)


@pytest.mark.slow
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


@pytest.mark.slow
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
