"""The command line: one-line errors with exit code 2, and a JSON document for `train`.

The fast in-process tests: ``tests/unit/test_cli.py``.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from support.errors import assert_one_line_error
from support.mlflow_fixtures import LGALS


def test_console_script_bad_value_has_no_traceback():
    proc = subprocess.run([LGALS, "train", "--no-tracking", "--gamma", "-1"],
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "--gamma")
    assert proc.stderr.startswith("lgals train: error:")


def test_console_script_help():
    proc = subprocess.run([LGALS, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "Usage: lgals" in proc.stdout


def test_train_json_document():
    env = dict(os.environ)
    proc = subprocess.run([LGALS, "train", "--epochs", "2", "--seeds", "2", "--json",
                           "--no-tracking"], capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    document = json.loads(proc.stdout)  # stdout is exactly one JSON document
    assert document["mode"] == "baseline"
    assert document["params"] == {
        "mode": "baseline", "epochs": 2, "batch_size": 128, "lr": 1e-3, "weight_decay": 1e-2,
        "noise_rate": 0.2, "noise_type": "symmetric", "noise_seed": 0, "val_fraction": 0.0,
        "dataset": "mnist1d", "dataset_version": "mnist1d 0.0.2.post1",
        "dataset_digest": "9eb232331e1204e2", "precision": "fp32", "seeds": [0, 1],
    }
    assert [s["seed"] for s in document["seeds"]] == [0, 1]
    for entry in document["seeds"]:
        assert entry["status"] == "completed"
        history = entry["history"]
        assert {"train_loss", "test_acc", "test_loss", "noise_auroc"} <= set(history)
        assert all(len(values) == 2 for values in history.values())
        assert entry["final_test_acc"] == history["test_acc"][-1]
        assert 0.0 <= entry["final_test_acc"] <= 1.0
    assert document["seeds"][0]["history"] != document["seeds"][1]["history"]


def test_train_json_lgals_params_in_process(run_main):
    code, out, err = run_main(["train", "--mode", "lgals", "--epochs", "1", "--seeds", "1",
                               "--first-seed", "3", "--eps-max", "0.2", "--gamma", "2",
                               "--val-fraction", "0.1", "--json", "--no-tracking"])
    assert code == 0, err
    document = json.loads(out)
    assert document["mode"] == "lgals"
    params = document["params"]
    assert params["seeds"] == [3] and params["eps_max"] == 0.2 and params["gamma"] == 2.0
    assert params["val_fraction"] == 0.1 and "eps" not in params
    [entry] = document["seeds"]
    assert entry["seed"] == 3
    assert len(entry["history"]["val_acc"]) == 1
    assert all(0.0 <= v <= 0.2 for v in entry["history"]["eps_mean"])


def test_text_output_summarises_seeds(run_main):
    code, out, err = run_main(["train", "--epochs", "1", "--seeds", "2", "--no-tracking"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("seed 0: final test accuracy ")
    assert lines[1].startswith("seed 1: final test accuracy ")
    assert lines[2].startswith("Baseline: ") and lines[2].endswith("over 2 seed(s)")


def test_bash_completion_script_completes_commands_and_choices():
    """Click's completion, as README documents it: the script `_LGALS_COMPLETE=bash_source
    lgals` prints, sourced in bash, completes a command and an option's choices."""
    script = """
        eval "$(_LGALS_COMPLETE=bash_source lgals)"
        COMP_WORDS=(lgals tu); COMP_CWORD=1; _lgals_completion lgals; echo "${COMPREPLY[*]}"
        COMP_WORDS=(lgals tune --noise-type ''); COMP_CWORD=3; COMPREPLY=()
        _lgals_completion lgals; echo "${COMPREPLY[*]}"
    """
    env = {**os.environ, "PATH": f"{Path(LGALS).parent}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=120,
                          env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["tune", "symmetric pair"], proc.stderr
