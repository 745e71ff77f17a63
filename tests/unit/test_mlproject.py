"""The MLproject's parameters: every one that is a CLI option has the CLI's default.

End to end, ``mlflow run`` of its ``train`` entry point: ``tests/system/test_mlproject.py``.
"""

from __future__ import annotations

from support.mlflow_fixtures import PROJECT


def test_mlproject_defaults_are_the_clis():
    """Every MLproject parameter that is a CLI option has the CLI's default (which for the
    hyperparameters is TrainConfig's, for the noise NoiseRecipe's, and for tune's --batch and
    --val-fraction the tuning's)."""
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
    tune = {p.name: p.default for p in cli.commands["tune"].params}
    assert tune["val_fraction"] == TuneSettings(mode="baseline").noise.val_fraction
    for command in ("tune", "reproduce"):
        assert {p.name: p.default for p in cli.commands[command].params}["batch"] == (
            DEFAULT_BATCH)


def test_register_is_nothing_by_default_and_a_name_when_given(tmp_path):
    """``mlflow run -e evaluate|reproduce|main -P register=NAME``: the command MLflow builds
    gives the CLI that name; the default, ``""``, registers nothing (sweep takes none)."""
    import shlex

    from mlflow.projects import _project_spec

    from lgals.cli import cli, project_argv

    project = _project_spec.load_project(str(PROJECT))
    assert "register" not in project.get_entry_point("sweep").parameters
    for entry in ("evaluate", "reproduce", "main"):
        for given, expected in (({}, ""), ({"register": "my study"}, "my study")):
            command = project.get_entry_point(entry).compute_command(given, str(tmp_path))
            argv = shlex.split(command)[3:]  # python -m entrypoints.NAME ...
            name = "reproduce" if entry == "main" else entry
            if name == "reproduce":  # as entrypoints/reproduce.py hands them on
                argv = project_argv(argv)
            context = cli.commands[name].make_context(name, argv)
            assert context.params["register"] == expected, (entry, given)
