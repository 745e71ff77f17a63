"""Commands running together on one store, as real processes: two ``lgals reproduce --quick``
started at the same moment share the work (one tunes and evaluates, the other waits for it
and reuses it) and both end with the same report; a tune that finds its study full of another
process's running trials waits for them, alive or dead.

The claim protocol itself, in-process: ``tests/unit/test_claims.py``.
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from support.mlflow_fixtures import (
    all_runs,
    all_succeed,
    popen_lgals,
    sqlite_query,
    sqlite_uri,
    wait_for,
)
from support.tuning import children, client_of, load_study, tune_group, tune_main, tune_runs

from lgals.losses import SUITES

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

PAPER = SUITES["paper"]  # the quick protocol's modes


def by_stage(runs: list, stage: str) -> list:
    return [r for r in runs if r.data.tags.get("lgals.stage") == stage]


def test_two_quick_protocols_started_at_once_share_the_work(tmp_path, _cache_dir):
    """Both exit 0 with the same report; every study holds exactly its 2 trials, every mode
    one evaluation of 2 seeds; for each mode, one of the two says it reused the other's."""
    uri = sqlite_uri(tmp_path / "mlflow.db")
    processes = [popen_lgals(["reproduce", "--quick", "--out", str(tmp_path / name),
                              "--tracking-uri", uri], tmp_path) for name in ("a", "b")]
    errs = [err for _, err in all_succeed(processes, timeout=600)]
    assert (tmp_path / "a" / "results.csv").read_text() == \
        (tmp_path / "b" / "results.csv").read_text()
    assert (tmp_path / "a" / "results.md").read_text() == \
        (tmp_path / "b" / "results.md").read_text()
    for mode in PAPER:
        study = optuna.load_study(study_name=f"lgals-quick-{mode}",
                                  storage=sqlite_uri(tmp_path / "optuna.db"))
        assert len(study.trials) == 2 and all(t.state.is_finished() for t in study.trials)
        reused = [f"[evaluate] {mode}: reusing finished evaluate run" in err for err in errs]
        assert sorted(reused) == [False, True], errs  # one evaluated it, the other reused it
    runs = all_runs(MlflowClient(uri))
    assert [r.info.run_name for r in runs if r.info.status != "FINISHED"] == []
    evaluations = [r for r in by_stage(runs, "evaluate") if "lgals.seed" not in r.data.tags]
    assert Counter(r.data.tags["lgals.mode"] for r in evaluations) == {
        "all": 1, **{mode: 1 for mode in PAPER}}
    seeds = [r for r in by_stage(runs, "evaluate") if "lgals.seed" in r.data.tags]
    assert Counter(r.data.tags["lgals.mode"] for r in seeds) == {mode: 2 for mode in PAPER}
    trials = by_stage(runs, "trial")
    assert Counter(r.data.tags["lgals.mode"] for r in trials) == {mode: 2 for mode in PAPER}
    tops = by_stage(runs, "reproduce")
    assert len(tops) == 2 and len(by_stage(runs, "report")) == 2
    assert [k for top in tops for k in top.data.tags if k.startswith("lgals.claim.")] == []


# --- a tune that finds its study full of another process's running trials -----------------

TUNE = ("--mode", "baseline", "--n-trials", "2", "--epochs", "60")
STUDY = "lgals-baseline-epochs=60"


def training(optuna_db: Path) -> int:
    """Trials that reported an epoch (their runs open and named on the trial), read without
    Optuna."""
    rows = sqlite_query(optuna_db, "SELECT COUNT(DISTINCT trial_id) FROM "
                        "trial_intermediate_values")
    return rows[0][0] if rows else 0


@pytest.mark.parametrize("other", ["alive", "dead"])
def test_a_tune_finding_its_study_full_waits_for_the_other_processs_trials(
        tmp_path, _cache_dir, monkeypatch, other):
    """The first tune's 2 trials are training when a second tune starts on the same study
    (in this process: it starts in a second, well within their training): the second says
    it waits for them. Alive, they finish and the second summarises the full study, training
    nothing. Killed (``kill -9``), their heartbeats stop: once silent past the grace the
    second fails them, ends their runs FAILED, trains their retries, and the study holds
    exactly 2 counted trials."""
    monkeypatch.setenv("LGALS_STALE_SECONDS", "20")  # both: a trial is stale after 10 s
    with tune_group(tmp_path, *TUNE) as first:
        wait_for(lambda: first.poll() is not None or training(tmp_path / "optuna.db") == 2,
                 timeout=180, interval=0.05, what="the first tune's 2 trials training")
        assert first.poll() is None, first.communicate()[1][-3000:]
        if other == "dead":
            os.killpg(first.pid, signal.SIGKILL)
            first.wait(timeout=30)
        second = tune_main(tmp_path, *TUNE)
        if other == "alive":
            assert first.wait(timeout=300) == 0, first.stderr.read()[-3000:]
    assert second.code == 0, second.err[-3000:]
    waits = [line for line in second.err.splitlines() if line.startswith("waiting for")]
    assert waits == [f"waiting for 2 trials of study '{STUDY}' running in other processes "
                     "(failed and retried if silent for 10 s)"]  # said once
    failed = {"alive": 0, "dead": 2}[other]
    assert f"trials 2 complete, 0 pruned, {failed} failed [study {STUDY}, run " in second.out
    study = load_study(tmp_path, STUDY)
    states = [t.state.name for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == (["COMPLETE"] * 2 if other == "alive" else ["FAIL"] * 2 + ["COMPLETE"] * 2)
    runs = all_runs(client_of(tmp_path))
    firsts, seconds = tune_runs(runs)
    assert seconds.info.status == "FINISHED" and seconds.data.metrics["n_complete"] == 2
    trained = [sorted(r.info.status for r in children(runs, run.info.run_id))
               for run in (firsts, seconds)]
    if other == "alive":
        assert firsts.info.status == "FINISHED"
        assert trained == [["FINISHED"] * 2, []]  # the second trained nothing
    else:
        assert firsts.info.status == "FAILED"
        assert firsts.data.tags["lgals.status_reason"] == "process died (stale heartbeat)"
        assert trained == [["FAILED"] * 2, ["FINISHED"] * 2]
