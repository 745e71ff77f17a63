"""The MLproject's parameters: every one that is a CLI option has the CLI's default.

End to end, ``mlflow run`` of its ``train`` entry point: ``tests/system/test_mlproject.py``.
"""

from __future__ import annotations

from support.mlflow_fixtures import PROJECT


def test_mlproject_defaults_are_the_clis():
    """Every MLproject parameter that is a CLI option has the CLI's default (which for the
    hyperparameters is TrainConfig's, for the noise NoiseRecipe's, and for tune's --batch and
    --val-fraction the tuning's)."""
    import click
    import yaml

    from lgals import cli as cli_module
    from lgals.cli import cli
    from lgals.data import NoiseRecipe
    from lgals.losses import BUILTIN_MODES, EVERY_MODE, HYPERPARAMETERS
    from lgals.train import TrainConfig
    from lgals.tuning import DEFAULT_BATCH, TuneSettings

    entry_points = yaml.safe_load((PROJECT / "MLproject").read_text())["entry_points"]
    checked = 0
    for entry, spec in entry_points.items():
        command = cli.commands["reproduce" if entry == "main" else entry]
        options = {p.name: p for p in command.params}
        for name, parameter in spec["parameters"].items():
            if name == "claim":  # no CLI default (the note's file): a value meaning "not given"
                assert cli_module.NOT_GIVEN["--claim"] == parameter["default"]
            elif name in options and options[name].is_flag:  # "true" / "false": the flag or not
                assert click.BOOL.convert(parameter["default"], None, None) is (
                    options[name].default), (entry, name)
                assert f"--{name.replace('_', '-')} {{{name}}}" in spec["command"], (entry, name)
                checked += 1
            elif name in options and options[name].default is not None:
                assert parameter["default"] == options[name].default, (entry, name)
                checked += 1
    assert checked >= 30
    train = {p.name: p.default for p in cli.commands["train"].params}
    for name in ("epochs", "batch_size"):
        assert train[name] == getattr(TrainConfig, name)
    for name, hyperparameter in HYPERPARAMETERS.items():
        assert train[name] == hyperparameter.default
    # every built-in mode's hyperparameters reach `mlflow run -e train` (a plugin's are
    # options of `lgals train`, which MLproject cannot list ahead); every suite the others
    builtin = {*EVERY_MODE, *(name for mode in BUILTIN_MODES.values() for name in mode.params)}
    assert builtin <= set(entry_points["train"]["parameters"])
    for entry in ("tune", "evaluate", "report", "reproduce", "main"):
        assert entry_points[entry]["parameters"]["suite"]["default"] == "paper", entry
    for name in ("noise_rate", "noise_type", "noise_seed", "val_fraction", "dataset"):
        assert train[name] == getattr(NoiseRecipe, name)
    # every entry point takes the dataset, with the CLI's default, and hands it on
    for entry, spec in entry_points.items():
        assert spec["parameters"]["dataset"]["default"] == NoiseRecipe.dataset, entry
        assert "--dataset {dataset}" in spec["command"], entry
    # every command that takes --system-metrics takes it from its entry points, whose
    # scripts read the value as the flag (lgals.cli.project_flags)
    for entry, spec in entry_points.items():
        command = cli.commands["reproduce" if entry == "main" else entry]
        if "system_metrics" in {p.name for p in command.params}:
            assert spec["parameters"]["system_metrics"] == {"type": "string",
                                                            "default": "false"}, entry
            script = (PROJECT / "entrypoints" / f"{command.name}.py").read_text()
            assert "project_flags(" in script or "project_argv(" in script, entry
    tune = {p.name: p.default for p in cli.commands["tune"].params}
    assert tune["val_fraction"] == TuneSettings(mode="baseline").noise.val_fraction
    for command in ("tune", "reproduce"):
        assert {p.name: p.default for p in cli.commands[command].params}["batch"] == (
            DEFAULT_BATCH)
