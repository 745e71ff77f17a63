"""``lgals reproduce --quick`` end to end, the report's statistics recomputed from MLflow,
``lgals report`` rebuilt from MLflow alone, and ``lgals evaluate --params-from FILE``.

The quick protocol (3 modes x 2 trials x 3 epochs, then 3 modes x 2 seeds x 3 epochs) runs
once, as the installed console script in an empty directory, and every test reads it.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from mlflow import MlflowClient
from PIL import Image
from scipy import stats
from support.mlflow_fixtures import (
    MLFLOW_LOG,
    all_runs,
    copy_database,
    registry_state,
    run_lgals,
    run_main,
    sqlite_uri,
)

from lgals.losses import MODES, SUITES

PAPER = SUITES["paper"]  # the modes `--mode all` means by default

OUTPUTS = ("results.md", "results.csv", "comparison_plot.png", "epsilon_plot.png")
CLAIM = {"baseline": ("53.12", "0.54"), "fixed_ls": ("55.33", "0.65"),
         "lgals": ("57.15", "1.17")}
LABEL_TO_MODE = {m.label: name for name, m in MODES.items()}
QUICK_TRIALS, QUICK_EPOCHS, QUICK_SEEDS = 2, 3, 2


def exact(value: str, expected: float) -> bool:
    """A CSV cell equals a recomputed number (nan equals nan) to 1e-9."""
    number = float(value)
    if math.isnan(expected):
        return math.isnan(number)
    return number == pytest.approx(expected, rel=1e-9, abs=1e-9)


@pytest.fixture(scope="module")
def quick(tmp_path_factory, _cache_dir):
    """``lgals reproduce --quick`` in an empty directory with a fresh sqlite store."""
    root = tmp_path_factory.mktemp("reproduce")
    cwd = root / "cwd"
    cwd.mkdir()
    uri = sqlite_uri(root / "mlflow.db")
    result = run_lgals(["reproduce", "--quick", "--out", str(root / "results"),
                        "--tracking-uri", uri], cwd, timeout=600)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("lgals-quick")
    runs = all_runs(client)
    return SimpleNamespace(root=root, cwd=cwd, uri=uri, result=result, client=client,
                           experiment=experiment, runs=runs, out=root / "results")


def by_stage(runs: list, stage: str) -> list:
    return [r for r in runs if r.data.tags.get("lgals.stage") == stage]


def csv_rows(path: Path) -> dict[str, dict[str, str]]:
    """results.csv keyed by mode name (``lgals``, not ``LGALS``)."""
    rows = csv.DictReader(io.StringIO(path.read_text()))
    return {LABEL_TO_MODE[row["mode"]]: row for row in rows}


def seed_accuracies(runs: list) -> dict[str, dict[int, float]]:
    """mode -> seed -> final_test_acc of the evaluate seed runs."""
    table: dict[str, dict[int, float]] = {}
    for run in by_stage(runs, "evaluate"):
        if "lgals.seed" in run.data.tags:
            seeds = table.setdefault(run.data.tags["lgals.mode"], {})
            seed = int(run.data.tags["lgals.seed"])
            assert seed not in seeds, "one evaluate run per mode and seed"
            seeds[seed] = run.data.metrics["final_test_acc"]
    return table


def test_reproduce_quick_writes_the_report(quick):
    assert quick.result.returncode == 0, quick.result.stderr
    assert "Traceback" not in quick.result.stderr
    for stage in ("[tune] ", "[evaluate] ", "[report]"):
        assert stage in quick.result.stderr
    assert quick.result.stdout.startswith("done in ")
    # the link opens MLflow's UI on the runs, whatever view the browser chose last
    assert (f"http://127.0.0.1:5000/#/experiments/{quick.experiment.experiment_id}/runs"
            "?workflowType=machine_learning") in quick.result.stdout
    for name in OUTPUTS:
        path = quick.out / name
        assert path.is_file() and path.stat().st_size > 0, name
    for name in ("comparison_plot.png", "epsilon_plot.png"):
        with Image.open(quick.out / name) as image:
            assert image.format == "PNG"
            image.verify()
        with Image.open(quick.out / name) as image:
            assert min(image.size) > 100
    assert not list(quick.out.glob("tmp*")), "the staging directory was left behind"
    # the Optuna storage lands beside mlflow.db by default
    assert (quick.root / "optuna.db").is_file()


def test_reproduce_nests_every_stage_under_one_run(quick):
    runs = quick.runs
    assert all(r.info.status == "FINISHED" for r in runs), {
        r.info.run_name: r.info.status for r in runs}
    assert all(r.info.experiment_id == quick.experiment.experiment_id for r in runs)
    (top,) = by_stage(runs, "reproduce")
    assert "mlflow.parentRunId" not in top.data.tags
    top_id = top.info.run_id
    parent = {r.info.run_id: r.data.tags.get("mlflow.parentRunId") for r in runs}
    tunes = by_stage(runs, "tune")
    (tune_all,) = [r for r in tunes if r.data.tags["lgals.mode"] == "all"]
    assert parent[tune_all.info.run_id] == top_id
    per_mode = [r for r in tunes if r.data.tags["lgals.mode"] != "all"]
    assert sorted(r.data.tags["lgals.mode"] for r in per_mode) == sorted(PAPER)
    for tune in per_mode:
        assert parent[tune.info.run_id] == tune_all.info.run_id
        assert tune.data.metrics["n_trials"] == QUICK_TRIALS
        trials = [r for r in runs if parent[r.info.run_id] == tune.info.run_id]
        assert len(trials) == QUICK_TRIALS
        assert all(r.data.tags["lgals.stage"] == "trial" for r in trials)
    evaluates = by_stage(runs, "evaluate")
    (evaluate_all,) = [r for r in evaluates if r.data.tags["lgals.mode"] == "all"]
    assert parent[evaluate_all.info.run_id] == top_id
    (report,) = by_stage(runs, "report")
    assert parent[report.info.run_id] == top_id
    table = seed_accuracies(runs)
    assert {m: sorted(s) for m, s in table.items()} == {m: [0, 1] for m in PAPER}


def test_csv_statistics_are_recomputed_from_mlflow(quick):
    rows = csv_rows(quick.out / "results.csv")
    table = seed_accuracies(quick.runs)
    assert set(rows) == set(PAPER) == set(table)
    frac = {mode: np.array([seeds[s] for s in sorted(seeds)]) for mode, seeds in table.items()}
    assert len({tuple(sorted(seeds)) for seeds in table.values()}) == 1  # the same seeds
    pct = {mode: 100 * values for mode, values in frac.items()}
    for mode, row in rows.items():
        values = pct[mode]
        n = len(values)
        assert row["n_seeds"] == str(n) == str(QUICK_SEEDS)
        mean, std = values.mean(), values.std(ddof=1)
        half = stats.t.ppf(0.975, n - 1) * std / math.sqrt(n)
        assert exact(row["final_test_acc_mean_pct"], mean)
        assert exact(row["final_test_acc_std_pct"], std)
        assert exact(row["ci95_low_pct"], mean - half)
        assert exact(row["ci95_high_pct"], mean + half)
    compared = {("lgals", "baseline"), ("lgals", "fixed_ls"), ("fixed_ls", "baseline")}
    for mode, row in rows.items():
        for other in ("baseline", "fixed_ls"):
            if (mode, other) not in compared:
                assert row[f"diff_vs_{other}_pp"] == row[f"welch_p_vs_{other}"] == ""
                assert row[f"paired_p_vs_{other}"] == ""
                continue
            a, b = pct[mode], pct[other]
            assert exact(row[f"diff_vs_{other}_pp"], a.mean() - b.mean())
            welch = stats.ttest_ind(a, b, equal_var=False).pvalue
            assert exact(row[f"welch_p_vs_{other}"], welch)
            # seed-matched final_test_acc as logged (p is scale-free; both sorted by seed)
            paired = stats.ttest_rel(frac[mode], frac[other]).pvalue
            assert exact(row[f"paired_p_vs_{other}"], paired)


def test_cost_columns_come_from_the_logged_epoch_times(quick):
    rows = csv_rows(quick.out / "results.csv")
    costs = {}
    for mode in PAPER:
        seed_run = next(r for r in by_stage(quick.runs, "evaluate")
                        if r.data.tags.get("lgals.mode") == mode and "lgals.seed" in r.data.tags)
        seconds = [m.value for m in quick.client.get_metric_history(seed_run.info.run_id,
                                                                    "epoch_seconds")]
        assert len(seconds) == QUICK_EPOCHS
        costs[mode] = np.mean(seconds) / QUICK_SEEDS  # one stack trains both seeds
        assert exact(rows[mode]["seconds_per_epoch_per_seed"], costs[mode])
    for mode in PAPER:
        assert exact(rows[mode]["cost_vs_baseline"], costs[mode] / costs["baseline"])


def test_the_claim_is_reported_unchanged(quick):
    rows = csv_rows(quick.out / "results.csv")
    markdown = (quick.out / "results.md").read_text()
    for mode, (mean, std) in CLAIM.items():
        assert (rows[mode]["claim_mean_pct"], rows[mode]["claim_std_pct"]) == (mean, std)
        label = MODES[mode].label
        line = next(li for li in markdown.splitlines() if li.startswith(f"| {label} |"))
        assert f"| {mean} ± {std} |" in line
    assert "(the claim: +4.03 pp)" in markdown  # LGALS - Baseline, from the claim's means
    assert "(the claim: +2.21 pp)" in markdown and "(the claim: +1.82 pp)" in markdown


def test_the_card_states_its_interval_method_and_the_selection_rule_it_ran(quick):
    """From the runs: 3 epochs, 2 trials on 10% of the noisy training set, 1 x 2 runs; the
    quick protocol's 1 x 2 is a size the coverage benchmark did not simulate."""
    lines = (quick.out / "results.md").read_text().splitlines()
    assert lines[2] == "## The claim card"
    assert ("**Selection.** Each run's test accuracy after its last epoch (3 epochs), never its "
            "best epoch's. Hyperparameters: Optuna, 2 trials per mode and repetition, each "
            "scored by its last epoch's accuracy on a stratified validation split of 10% of "
            "the noisy training set with its noisy labels (never the test set), then retrained "
            "on the full noisy training set. Runs per mode: 1 repetition × 2 seeds; a "
            "repetition has its own noise draw, validation split and tuning.") in lines
    method = next(line for line in lines if line.startswith("**Intervals.** "))
    assert ("Student t interval over the 2 paired seed differences (one repetition: its seeds "
            "are the units); exact for normal units, not simulated at 1 × 2") in method
    (top,) = [r for r in by_stage(quick.runs, "reproduce")]
    assert top.data.params["modes"] == ",".join(PAPER)


def test_reproduce_a_claim_file_runs_its_modes_at_its_noise_and_writes_its_card(tmp_path,
                                                                                 _cache_dir):
    """GCE > Baseline at 20% pair noise, tested with the quick protocol: exactly those two
    modes are tuned and evaluated, at the claim's setting, and the card is the claim's; `lgals
    report --claim` rebuilds it from MLflow alone."""
    claim = tmp_path / "gce.yaml"
    claim.write_text("name: a GCE paper\ndataset: mnist1d\nnoise: {rate: 0.2, type: pair}\n"
                     "accuracy:\n  gce: {mean: 58.0, std: 0.5}\n"
                     "  baseline: {mean: 53.0, std: 0.5}\norderings: [[gce, baseline]]\n")
    uri = sqlite_uri(tmp_path / "mlflow.db")
    result = run_main(["reproduce", "--claim", str(claim), "--quick", "--out",
                       str(tmp_path / "out"), "--tracking-uri", uri], tmp_path)
    assert result.code == 0, result
    runs = all_runs(MlflowClient(uri))
    for stage in ("tune", "evaluate"):
        modes = {r.data.tags["lgals.mode"] for r in by_stage(runs, stage)}
        assert modes - {"all"} == {"gce", "baseline"}  # "all": the stage's umbrella run
    assert {r.data.params["noise_type"] for r in by_stage(runs, "evaluate")} == {"pair"}
    (top,) = by_stage(runs, "reproduce")
    assert (top.data.params["modes"], top.data.params["protocol"]) == ("gce,baseline", "quick")
    text = (tmp_path / "out" / "results.md").read_text()
    lines = text.splitlines()
    assert lines[0] == ("# Claims of a GCE paper on mnist1d with 20% pair label noise: our "
                        "measurement")
    assert lines[4].startswith("1. **GCE beats Baseline: ") and lines[5] == ""
    assert "(the claim: +5.00 pp)" in text and "LGALS" not in text
    again = run_main(["report", "--claim", str(claim), "--out", str(tmp_path / "again"),
                      "--tracking-uri", uri, "--experiment-name", "lgals-quick"], tmp_path)
    assert again.code == 0, again
    assert (tmp_path / "again" / "results.md").read_text() == text


def test_markdown_table_matches_the_csv(quick):
    rows = csv_rows(quick.out / "results.csv")
    markdown = (quick.out / "results.md").read_text()
    for mode, row in rows.items():
        line = next(li for li in markdown.splitlines()
                    if li.startswith(f"| {MODES[mode].label} |"))
        mean, std = float(row["final_test_acc_mean_pct"]), float(row["final_test_acc_std_pct"])
        assert f"| {QUICK_SEEDS} | {mean:.2f} ± {std:.2f} |" in line
    assert markdown.count("paired t-test p = ") == 3  # all modes ran seeds 0 and 1


def test_evaluate_used_the_params_the_tune_recorded(quick):
    runs = quick.runs
    tunes = {r.data.tags["lgals.mode"]: r for r in by_stage(runs, "tune")}
    parents = [r for r in by_stage(runs, "evaluate")
               if "lgals.seed" not in r.data.tags and r.data.tags["lgals.mode"] != "all"]
    assert sorted(r.data.tags["lgals.mode"] for r in parents) == sorted(PAPER)
    for evaluate in parents:
        mode = evaluate.data.tags["lgals.mode"]
        tune = tunes[mode]
        params = evaluate.data.params
        assert params["tune_run_id"] == tune.info.run_id
        assert params["tune_study"] == tune.data.tags["lgals.study"] == f"lgals-quick-{mode}"
        assert params["params_source"] == "tune"
        assert evaluate.data.tags["lgals.params_source"] == "tune"
        assert params["epochs"] == str(QUICK_EPOCHS) and params["seeds"] == "0,1"
        names = ("lr", "weight_decay") + MODES[mode].params
        assert {k[len("best."):] for k in tune.data.params if k.startswith("best.")} == {
            *names, "trial"}
        for name in names:
            assert float(params[name]) == float(tune.data.params[f"best.{name}"]), name
        seeds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == evaluate.info.run_id]
        assert len(seeds) == QUICK_SEEDS
        for seed in seeds:
            for name in names:
                assert float(seed.data.params[name]) == float(tune.data.params[f"best.{name}"])
            assert seed.data.params["val_fraction"] == "0.0"  # the full training set


def test_report_rebuilt_from_mlflow_alone_is_identical(quick, tmp_path):
    again = tmp_path / "again"
    result = run_main(["report", "--out", str(again), "--tracking-uri", quick.uri,
                       "--experiment-name", "lgals-quick"], tmp_path)
    assert result.code == 0, result
    for name in OUTPUTS:
        assert (again / name).stat().st_size > 0
    assert (again / "results.csv").read_bytes() == (quick.out / "results.csv").read_bytes()
    assert (again / "results.md").read_bytes() == (quick.out / "results.md").read_bytes()
    reports = by_stage(all_runs(quick.client), "report")
    assert len(reports) == 2
    newest = max(reports, key=lambda r: r.info.start_time)
    assert "mlflow.parentRunId" not in newest.data.tags
    logged = {a.path for a in quick.client.list_artifacts(newest.info.run_id)}
    assert set(OUTPUTS) <= logged


def test_reproduce_registers_the_evaluations_it_reuses_once(quick, tmp_path):
    """The quick protocol ran without --register: nothing is registered. Rerun with it, it
    reuses every evaluation and registers their seed models; rerun again, it adds no version
    and moves no alias."""
    for name in ("mlflow.db", "optuna.db"):
        copy_database(quick.root / name, tmp_path / name)
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    assert client.search_registered_models() == []
    seed_runs = {mode: {r.info.run_id for r in by_stage(quick.runs, "evaluate")
                        if r.data.tags["lgals.mode"] == mode and "lgals.seed" in r.data.tags}
                 for mode in PAPER}
    argv = ["reproduce", "--quick", "--out", str(tmp_path / "results"), "--register", "quick",
            "--tracking-uri", uri]

    first = run_main(argv, tmp_path)
    assert first.code == 0, first.err[-3000:]
    registered = registry_state(client)
    assert set(registered) == {f"quick-{mode}" for mode in PAPER}
    for mode in PAPER:
        assert f"[evaluate] {mode}: reusing finished evaluate run" in first.err
        versions, best = registered[f"quick-{mode}"]
        assert {run_id for _, run_id, _ in versions} == seed_runs[mode]
        assert sorted(version for version, _, _ in versions) == ["1", "2"]
        assert (f"registered quick-{mode}: {QUICK_SEEDS} version(s), {QUICK_SEEDS} new; "
                f"@best = version {best} ") in first.err

    second = run_main(argv, tmp_path)
    assert second.code == 0, second.err[-3000:]
    assert registry_state(client) == registered
    for mode in PAPER:
        assert f"registered quick-{mode}: {QUICK_SEEDS} version(s), 0 new" in second.err
    assert {mode: {r.info.run_id for r in by_stage(all_runs(client), "evaluate")
                   if r.data.tags["lgals.mode"] == mode and "lgals.seed" in r.data.tags}
            for mode in PAPER} == seed_runs  # nothing trained again


# --- evaluate --params-from FILE -----------------------------------------------------------

def test_evaluate_params_from_yaml_file(tmp_path, _cache_dir):
    params = tmp_path / "params.yaml"
    params.write_text("baseline:\n  lr: 0.002\n  weight_decay: 0.001\n")
    uri = sqlite_uri(tmp_path / "mlflow.db")
    result = run_main(["evaluate", "--params-from", str(params), "--modes", "baseline",
                       "--seeds", "2", "--epochs", "2", "--tracking-uri", uri], tmp_path)
    assert result.code == 0, result
    runs = all_runs(MlflowClient(uri))
    (evaluate,) = [r for r in runs if "lgals.seed" not in r.data.tags]
    assert evaluate.data.tags["lgals.stage"] == "evaluate"
    assert evaluate.data.params["lr"] == "0.002"
    assert evaluate.data.params["weight_decay"] == "0.001"
    assert evaluate.data.params["params_source"] == f"file:{params}"
    assert evaluate.data.tags["lgals.params_source"] == f"file:{params}"
    assert evaluate.data.params.get("tune_run_id", "") == ""
    seeds = [r for r in runs if "lgals.seed" in r.data.tags]
    assert sorted(int(r.data.tags["lgals.seed"]) for r in seeds) == [0, 1]
    for seed in seeds:
        assert seed.data.tags["mlflow.parentRunId"] == evaluate.info.run_id
        assert (seed.data.params["lr"], seed.data.params["weight_decay"]) == ("0.002", "0.001")
        assert seed.data.params["epochs"] == "2"
        assert "final_test_acc" in seed.data.metrics


@pytest.mark.parametrize("content, fragment", [
    ("baseline:\n  lr: 0.002\n  momentum: 0.9\n", "momentum"),
    ("fixed_ls:\n  lr: 0.002\n", "no entry for mode 'baseline'"),
    (None, "params.yaml"),  # no such file
    ("baseline:\n", "baseline"),  # an empty entry
    # held to the command line's rules: the file, the mode, the parameter and its range
    ("baseline:\n  lr: -0.01\n", "baseline lr must be in (0, inf), got -0.01"),
    ("baseline:\n  eps: 0.1\n", "unknown hyperparameters ['eps'] for 'baseline'"),
    ("baseline:\n  lr: .nan\n", "baseline lr must be in (0, inf), got nan"),
    ("baseline:\n  lr: fast\n", "baseline lr = 'fast' is not a number"),
    ("baseline:\n  lr: true\n", "baseline lr = True is not a number"),
    ("baseline:\n  batch_size: 0\n", "baseline batch_size must be at least 2"),
    ("baseline:\n  batch_size: 2.5\n", "baseline batch_size = 2.5 is not an integer"),
], ids=["unknown-key", "no-entry", "missing-file", "empty-entry", "negative-lr", "not-its-own",
        "nan", "string", "bool", "batch-size-0", "batch-size-float"])
def test_evaluate_refuses_a_bad_params_file(tmp_path, content, fragment, _cache_dir):
    params = tmp_path / "params.yaml"
    if content is not None:
        params.write_text(content)
    uri = sqlite_uri(tmp_path / "mlflow.db")
    try:
        result = run_main(["evaluate", "--params-from", str(params), "--modes", "baseline",
                           "--seeds", "2", "--epochs", "2", "--tracking-uri", uri], tmp_path)
    except Exception as error:  # what the console script would print as a traceback
        pytest.fail(f"lgals evaluate raised {error!r} instead of a one-line error")
    assert "Traceback" not in result.err, result.err
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("lgals: error: --params-from") and fragment in lines[0]
    assert result.out == ""
    assert not (tmp_path / "mlflow.db").exists()  # checked before the store was opened


@pytest.mark.parametrize("store", ["missing", "no such experiment"])
def test_report_creates_no_store_and_no_experiment(tmp_path, store):
    """`lgals report` only reads: where there is nothing to read it says so in one line
    (exit 2) and leaves the store as it found it."""
    db = tmp_path / "mlflow.db"
    if store == "no such experiment":
        MlflowClient(sqlite_uri(db)).create_experiment("other")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = run_main(["report", "--tracking-uri", sqlite_uri(db), "--out",
                       str(tmp_path / "out")], tmp_path)
    assert result.code == 2, result
    lines = [line for line in result.err.splitlines()
             if line.strip() and not MLFLOW_LOG.match(line)]
    expected = ("no MLflow store at" if store == "missing"
                else "--experiment-name: no experiment 'lgals'")
    assert len(lines) == 1 and lines[0].startswith(f"lgals: error: {expected}"), result.err
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".lock") == before
    if store == "no such experiment":
        experiments = MlflowClient(sqlite_uri(db)).search_experiments()
        assert {e.name for e in experiments} == {"other", "Default"}


def test_report_leaves_out_unfinished_runs_and_says_how_many(quick, tmp_path):
    """Seed runs a killed process left RUNNING, or that ended KILLED, are not results."""
    copy_database(quick.root / "mlflow.db", tmp_path / "mlflow.db")
    uri = sqlite_uri(tmp_path / "mlflow.db")
    client = MlflowClient(uri)
    parent = by_stage(all_runs(client), "evaluate")[0]
    for seed, status in ((7, "RUNNING"), (8, "KILLED")):
        run = client.create_run(quick.experiment.experiment_id, tags={
            "lgals.stage": "evaluate", "lgals.mode": parent.data.tags["lgals.mode"],
            "lgals.seed": str(seed), "mlflow.parentRunId": parent.info.run_id})
        client.log_metric(run.info.run_id, "final_test_acc", 0.99)
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
    result = run_main(["report", "--tracking-uri", uri, "--experiment-name", "lgals-quick",
                       "--out", str(tmp_path / "out")], tmp_path)
    assert result.code == 0, result
    assert "left out 2 evaluate runs that did not finish (1 KILLED, 1 RUNNING)" in result.out
    assert csv_rows(tmp_path / "out" / "results.csv") == csv_rows(quick.out / "results.csv")
