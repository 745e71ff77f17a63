"""optuna-dashboard (the ``dashboard`` extra) on a study lgals made, read through its HTTP API.

docs/team.md's command, ``optuna-dashboard STORAGE --host 127.0.0.1 --port PORT``, started on a
free port and stopped by its PID; what the dashboard serves must be the study as Optuna
stores it: every trial, its state, params, value and per-epoch ``val_acc``, and the objective's
name.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import optuna
from support.mlflow_fixtures import cli_env, free_port, run_lgals, stop, wait_for

DASHBOARD = str(Path(sys.executable).parent / "optuna-dashboard")
N_TRIALS, EPOCHS = 3, 2


def get_json(url: str) -> dict | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)
    except OSError:  # not listening yet
        return None


def test_the_dashboard_serves_the_study_lgals_made(tmp_path, _cache_dir):
    result = run_lgals(["tune", "--mode", "lgals", "--n-trials", str(N_TRIALS), "--epochs",
                        str(EPOCHS), "--pruner", "none"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = optuna.load_study(study_name="lgals-lgals-epochs=2", storage=storage)

    port = free_port()
    with open(tmp_path / "dashboard.log", "w") as log:
        process = subprocess.Popen([DASHBOARD, storage, "--host", "127.0.0.1", "--port",
                                    str(port)], cwd=tmp_path, env=cli_env(), stdout=log,
                                   stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        studies = wait_for(lambda: get_json(f"{base}/api/studies"), timeout=60,
                           what="optuna-dashboard")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["lgals-lgals-epochs=2"]
        assert studies[0]["directions"] == ["maximize"]
        detail = get_json(f"{base}/api/studies/{studies[0]['study_id']}")
    finally:
        stop(process)
    assert process.returncode is not None  # stopped by its PID

    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == list(range(N_TRIALS))
    for trial in study.trials:
        shown = served[trial.number]
        assert shown["state"] == trial.state.name.capitalize() == "Complete"
        assert shown["values"] == [trial.value]
        assert {p["name"]: float(p["param_external_value"]) for p in shown["params"]} == \
            trial.params
        assert [(v["step"], v["value"]) for v in shown["intermediate_values"]] == \
            sorted(trial.intermediate_values.items())
        assert len(shown["intermediate_values"]) == EPOCHS  # val_acc after every epoch
    assert [t["number"] for t in detail["best_trials"]] == [study.best_trial.number]
    assert detail["objective_names"] == ["val_acc"]  # the dashboard names the objective
