"""The command line: one-line errors with exit code 2, and a JSON document for `train`."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest
from mlflow_fixtures import LGALS

from lgals.cli import main

QUICK = {"--epochs": "1", "--seeds": "1"}  # should a bad value slip through, train little


@pytest.fixture
def run_main(capsys, monkeypatch):
    """Call ``lgals.cli.main`` in-process; return (exit code, stdout, stderr)."""
    # main() installs a SIGTERM handler and sets an MLflow variable: undo both afterwards
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    previous_handler = signal.getsignal(signal.SIGTERM)

    def run(argv: list[str]) -> tuple[int, str, str]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        out, err = capsys.readouterr()
        return exit_info.value.code, out, err

    yield run
    signal.signal(signal.SIGTERM, previous_handler)


def train_argv(option: str, value: str) -> list[str]:
    args = {**QUICK, option: value}
    return ["train", "--no-tracking", *[item for pair in args.items() for item in pair]]


def assert_one_line_error(code, out, err, option) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert option in lines[0]
    assert "Traceback" not in err and "Traceback" not in out
    assert out == ""


BAD_VALUES = [
    ("--lr", "0"),
    ("--lr", "-0.001"),
    ("--lr", "abc"),
    ("--weight-decay", "-0.01"),
    ("--eps", "1.0"),
    ("--eps", "-0.1"),
    ("--eps-max", "1.01"),
    ("--eps-max", "-0.1"),
    ("--gamma", "-0.5"),
    ("--noise-rate", "0.95"),
    ("--noise-rate", "-0.1"),
    ("--mode", "fancy"),
    ("--noise-type", "asymmetric"),
    ("--batch-size", "1"),
    ("--batch-size", "0"),
    ("--epochs", "0"),
    ("--seeds", "0"),
    ("--val-fraction", "0.6"),
    ("--val-fraction", "-0.1"),
    ("--first-seed", "-1"),
    ("--nls-eps", "0"),
    ("--nls-eps", "-1.5"),
    ("--gce-q", "0"),
    ("--gce-q", "1.1"),
    ("--sce-alpha", "-1"),
    ("--sce-beta", "-0.1"),
    ("--bootstrap-beta", "0.4"),
    ("--bootstrap-beta", "1.2"),
    ("--elr-beta", "1"),
    ("--elr-lambda", "-3"),
]


@pytest.mark.parametrize("option, value", BAD_VALUES)
def test_bad_value_exits_2_with_one_line_naming_the_option(run_main, option, value):
    assert_one_line_error(*run_main(train_argv(option, value)), option)


# NaN is inside no range, but `nan < min` and `nan > max` are both False, so a range check
# written as two comparisons lets it through. Each of these must be rejected like any other
# out-of-range value (mode fixed_ls / lgals so that --eps / --eps-max / --gamma are read).
NAN_VALUES = [
    ("--lr", "nan", "baseline"),
    ("--weight-decay", "nan", "baseline"),
    ("--eps", "nan", "fixed_ls"),
    ("--eps-max", "nan", "lgals"),
    ("--gamma", "nan", "lgals"),
    ("--noise-rate", "nan", "baseline"),
    ("--val-fraction", "nan", "baseline"),
]


@pytest.mark.parametrize("option, value, mode", NAN_VALUES)
def test_nan_is_rejected_like_any_out_of_range_value(run_main, option, value, mode):
    assert_one_line_error(*run_main([*train_argv(option, value), "--mode", mode]), option)


@pytest.mark.slow
def test_console_script_bad_value_has_no_traceback():
    proc = subprocess.run([LGALS, "train", "--no-tracking", "--gamma", "-1"],
                          capture_output=True, text=True, timeout=120)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, "--gamma")
    assert proc.stderr.startswith("lgals train: error:")


@pytest.mark.slow
def test_console_script_help():
    proc = subprocess.run([LGALS, "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "train" in proc.stdout and "Usage: lgals" in proc.stdout


def test_train_help_lists_every_option(run_main):
    code, out, _ = run_main(["train", "--help"])
    assert code == 0
    for option in ("--mode", "--seeds", "--first-seed", "--epochs", "--batch-size", "--lr",
                   "--weight-decay", "--eps", "--eps-max", "--gamma", "--noise-rate",
                   "--noise-type", "--noise-seed", "--val-fraction", "--no-tracking", "--json"):
        assert option in out


@pytest.mark.slow
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
        "seeds": [0, 1],
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


@pytest.mark.slow  # in-process, but seconds long: the inner loop stays under a minute
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


@pytest.mark.slow  # in-process, but seconds long: the inner loop stays under a minute
def test_text_output_summarises_seeds(run_main):
    code, out, err = run_main(["train", "--epochs", "1", "--seeds", "2", "--no-tracking"])
    assert code == 0, err
    lines = out.strip().splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("seed 0: final test accuracy ")
    assert lines[1].startswith("seed 1: final test accuracy ")
    assert lines[2].startswith("Baseline: ") and lines[2].endswith("over 2 seed(s)")


def test_diverged_seed_does_not_crash_the_cli(run_main):
    """A seed that diverges (lr 1e30 is in range) has no final accuracy; report, don't crash."""
    code, out, err = run_main(["train", "--lr", "1e30", "--weight-decay", "0", "--epochs", "1",
                               "--seeds", "1", "--no-tracking"])
    assert "Traceback" not in err
    assert code == 1
    assert out.startswith("seed 0: diverged: non-finite training loss at epoch 1")
    assert err.strip() == "lgals: error: 1 of 1 seed(s) diverged (non-finite loss): lower --lr"


def test_diverged_seed_in_json(run_main):
    code, out, err = run_main(["train", "--lr", "1e30", "--weight-decay", "0", "--epochs", "1",
                               "--seeds", "1", "--json", "--no-tracking"])
    assert code == 1, err  # as without --json; the document is still printed whole
    [entry] = json.loads(out)["seeds"]
    assert entry["status"] == "diverged" and entry["final_test_acc"] is None
    assert err.strip() == "lgals: error: 1 of 1 seed(s) diverged (non-finite loss): lower --lr"


def test_version(run_main):
    from importlib.metadata import version

    code, out, _ = run_main(["--version"])
    assert code == 0 and version("lgals") in out


@pytest.mark.parametrize("argv, option", [
    (["tune", "--suite", "everything"], "--suite"),
    (["evaluate", "--suite", "peer"], "--suite"),
    (["report", "--suite", ""], "--suite"),
    (["reproduce", "--suite", "ablations"], "--suite"),
    (["tune", "--mode", "mixup"], "--mode"),
    (["evaluate", "--modes", "label_smoothing"], "--modes"),
])
def test_an_unknown_suite_or_mode_is_one_line(run_main, argv, option, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert_one_line_error(*run_main(argv), option)
    assert list(tmp_path.iterdir()) == []
