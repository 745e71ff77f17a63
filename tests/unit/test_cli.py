"""The command line: one-line errors with exit code 2, and a JSON document for `train`.

The process-level and seconds-long tests: ``tests/system/test_cli.py``.
"""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import version
from pathlib import Path

import click
import pytest
from support.errors import assert_one_line_error

from lgals import losses
from lgals.losses import BUILTIN_MODES

QUICK = {"--epochs": "1", "--seeds": "1"}  # should a bad value slip through, train little


def train_argv(option: str, value: str) -> list[str]:
    args = {**QUICK, option: value}
    return ["train", "--no-tracking", *[item for pair in args.items() for item in pair]]


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
    ("--dataset", "mnist2d"),
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


def test_train_help_lists_every_option(run_main):
    code, out, _ = run_main(["train", "--help"])
    assert code == 0
    for option in ("--mode", "--seeds", "--first-seed", "--epochs", "--batch-size", "--lr",
                   "--weight-decay", "--eps", "--eps-max", "--gamma", "--noise-rate",
                   "--noise-type", "--noise-seed", "--val-fraction", "--no-tracking", "--json"):
        assert option in out


def every_command(group: click.Group, path: str = "lgals"):
    """(path, command) for ``group`` and every command under it, groups recursively."""
    yield path, group
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from every_command(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


def test_every_option_of_every_command_has_help():
    from lgals.cli import cli

    bare = [f"{path} {'/'.join(param.opts)}" for path, command in every_command(cli)
            for param in command.params
            if isinstance(param, click.Option) and not (param.help or "").strip()]
    assert bare == []


def test_a_plugin_hyperparameter_without_help_is_described_by_the_modes_that_read_it(plugins):
    from lgals.cli import hyperparameter_help
    from lgals.losses import MODES, Mode, _validate
    from lgals.registry import load

    plugins.install("lgals-terse", "lgals.modes", {"modes": ":MODES"}, """
        from lgals.plugin import Hyperparameter, Mode
        TERSE_Q = Hyperparameter(0.5, 0.0, 1.0)
        MODES = {"terse": Mode(lambda z, y, terse_q: z.sum(-1), {"terse_q": TERSE_Q}),
                 "terser": Mode(lambda z, y, terse_q: z.sum(-1), {"terse_q": TERSE_Q})}
    """)
    modes = load("lgals.modes", Mode, _validate).entries
    said = hyperparameter_help("terse_q", modes["terse"].hyperparameters["terse_q"], modes)
    assert said == "A hyperparameter of terse, terser (its package describes it)."
    gce_q = MODES["gce"].hyperparameters["gce_q"]
    assert hyperparameter_help("gce_q", gce_q, MODES) == gce_q.help == "gce exponent q."


def test_lgals_help_summarises_every_command_whole_on_one_line(run_main, monkeypatch):
    """Click cuts a docstring's first sentence to fit (``Train seeds FIRST_SEED ..``): each
    command's short help is a few words of its own, ending whole, one line at 80 columns."""
    from lgals.cli import cli

    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = run_main(["--help"])
    assert code == 0
    rows = out.split("Commands:\n")[1].splitlines()
    assert [row.split()[0] for row in rows] == sorted(cli.commands)  # none wraps
    for row in rows:
        summary = row.split(None, 1)[1]
        assert not summary.endswith(".."), row
        assert len(summary.split()) >= 4, row


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


@pytest.mark.parametrize("command", ["train", "tune", "evaluate", "report", "reproduce",
                                     "sweep", "diagnose"])
def test_an_unknown_dataset_is_one_line_naming_the_option_and_the_datasets(
        run_main, command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main([command, "--dataset", "mnist2d"])
    assert_one_line_error(code, out, err, "--dataset")
    assert err.strip() == (f"lgals {command}: error: Invalid value for '--dataset': 'mnist2d' "
                           "is not one of 'mnist1d', 'mnist1d_hard', 'digits', 'mnist_subset'.")
    assert list(tmp_path.iterdir()) == []


def test_modes_lists_every_mode_with_its_hyperparameters_by_hand(run_main):
    code, out, _ = run_main(["modes", "--json"])
    assert code == 0
    document = json.loads(out)
    assert list(document["shared"]) == ["lr", "weight_decay"]
    assert document["shared"]["lr"] == {"valid": "(0, inf)", "search": [1e-4, 3e-2],
                                        "scale": "log", "default": 1e-3}
    assert [m for m, row in document["modes"].items()
            if row["from"]["distribution"] == "lgals"] == list(BUILTIN_MODES)
    assert document["modes"]["lgals"] == {
        "label": "LGALS", "family": "paper", "suites": ["paper", "controls", "peers", "all"],
        "hyperparameters": {
            "eps_max": {"valid": "[0, 1]", "search": [0.0, 1.0], "scale": "linear",
                        "default": 0.3},
            "gamma": {"valid": "[0, inf)", "search": [0.25, 8.0], "scale": "log",
                      "default": 1.0}},
        "gradient": "closed form", "keeps_state": False, "picks_epochs": False,
        "batch_level": True, "from": {
            "distribution": "lgals", "version": version("lgals"), "module": "lgals.losses",
            "file_sha256": hashlib.sha256(Path(losses.__file__).read_bytes()).hexdigest()}}
    assert document["modes"]["baseline"]["hyperparameters"] == {}
    assert document["modes"]["elr"]["keeps_state"] is True
    assert document["modes"]["early_stop"]["suites"] == ["peers", "all"]

    code, out, _ = run_main(["modes"])
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "every mode:"
    assert (f"lgals (LGALS, paper; suites paper, controls, peers, all; closed form; from lgals "
            f"{version('lgals')}; batch_level)") in lines
    assert f"elr (ELR, peer; suites peers, all; closed form; from lgals {version('lgals')}; " \
           "keeps_state)" in lines
    assert "nls_eps         valid [-1, 0)      search -1...-0.01 (linear), default -0.2" in out


PRECISION_COMMANDS = ["train", "tune", "evaluate", "reproduce", "sweep", "diagnose"]


@pytest.mark.parametrize("command", PRECISION_COMMANDS)
def test_an_unknown_precision_is_one_line_and_starts_nothing(run_main, command, tmp_path,
                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main([command, "--precision", "fp16"])
    assert_one_line_error(code, out, err, "--precision")
    assert "'fp16' is not one of 'fp32', 'bf16'" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", PRECISION_COMMANDS)
def test_bf16_without_bf16_units_is_one_line_and_starts_nothing(run_main, command, tmp_path,
                                                                monkeypatch):
    """A CPU without AVX512-BF16 or AMX would emulate bf16, slower than fp32: refused."""
    import torch

    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main([command, "--precision", "bf16", "--device", "cpu"])
    assert_one_line_error(code, out, err, "--precision")
    assert "bf16 needs bfloat16 matrix units (AVX512-BF16 or AMX)" in err
    assert list(tmp_path.iterdir()) == []
