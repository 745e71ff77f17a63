"""The MLproject's parameters: every one that is a CLI option has the CLI's default.

End to end, ``mlflow run`` of its ``train`` entry point: ``tests/system/test_mlproject.py``.
"""

from __future__ import annotations

import ast
import re
import shlex
from pathlib import Path

import click
from click.core import ParameterSource
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
            elif parameter["default"] == "":  # left out: the option has no default of its own
                assert options[name].default in (None, "", click.core.UNSET), (entry, name)
            elif name in options and options[name].default not in (None, click.core.UNSET):
                assert parameter["default"] == options[name].default, (entry, name)
                checked += 1
    assert checked >= 30
    train = {p.name: p.default for p in cli.commands["train"].params}
    for name in ("epochs", "batch_size"):
        assert train[name] == getattr(TrainConfig, name)
    for name, hyperparameter in HYPERPARAMETERS.items():
        assert train[name] == hyperparameter.default
    # every built-in mode's hyperparameters reach `mlflow run -e train` and `-e diagnose` (a
    # plugin's are options of the commands, which MLproject cannot list ahead); every suite the
    # others
    builtin = {*EVERY_MODE, *(name for mode in BUILTIN_MODES.values() for name in mode.params)}
    assert builtin <= set(entry_points["train"]["parameters"])
    assert builtin <= set(entry_points["diagnose"]["parameters"])
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
            assert "project_argv(" in script, entry
    tune = {p.name: p.default for p in cli.commands["tune"].params}
    assert tune["val_fraction"] == TuneSettings(mode="baseline").noise.val_fraction
    for command in ("tune", "reproduce"):
        assert {p.name: p.default for p in cli.commands[command].params}["batch"] == (
            DEFAULT_BATCH)


# --- every entry point's command line, as `mlflow run` makes it ------------------------------

def project_entry_points() -> dict:
    """MLflow's own reading of the MLproject: entry point name -> its EntryPoint."""
    from mlflow.projects._project_spec import load_project

    project = load_project(str(PROJECT))
    return {name: project.get_entry_point(name) for name in project._entry_points}


def parsed(entry, user_parameters: dict) -> click.Context:
    """``mlflow run -e ENTRY -P ...``'s command line, through its entry point script's
    :func:`lgals.cli.project_argv`, parsed by the lgals command it runs (not invoked)."""
    from lgals.cli import cli, project_argv

    python, dash_m, module, *argv = shlex.split(entry.compute_command(user_parameters, None))
    assert (python, dash_m) == ("python", "-m") and module.startswith("entrypoints.")
    command, *args = project_argv(module.removeprefix("entrypoints."), argv)
    return cli.commands[command].make_context(command, args)


def test_every_parameter_reaches_its_entry_points_command():
    """Each declared parameter is in its command (else `-P` would be ignored silently), and
    the default command line of every entry point parses: an empty parameter is the option
    left out, and a value given reaches its option."""
    for name, entry in project_entry_points().items():
        placeholders = set(re.findall(r"{(\w+)}", entry.command))
        assert placeholders == set(entry.parameters), name
        defaults = parsed(entry, {})
        for parameter, spec in entry.parameters.items():
            if spec.default == "":
                assert defaults.get_parameter_source(parameter) == ParameterSource.DEFAULT, (
                    name, parameter)
    tune = parsed(project_entry_points()["tune"], {"study_name": "check",
                                                   "storage": "sqlite:///other.db"})
    assert (tune.params["study_name"], tune.params["storage"]) == ("check", "sqlite:///other.db")
    report = parsed(project_entry_points()["report"], {"precision": "bf16"})
    assert report.params["precision"] == "bf16"
    evaluate = parsed(project_entry_points()["evaluate"], {"tune_experiment": "tuning"})
    assert evaluate.params["tune_experiment"] == "tuning"
    diagnose = parsed(project_entry_points()["diagnose"], {"lr": "0.01", "noise_rate": "0.4"})
    assert (diagnose.params["lr"], diagnose.params["noise_rate"]) == (0.01, 0.4)


# --- what lgals advises, an MLflow user can do -------------------------------------------------

OPTION = re.compile(r"--[a-z][a-z0-9-]*")
# Options lgals advises that no entry point takes as a parameter, and why none needs to.
NOT_PARAMETERS = {
    "no_tracking": "a project run is tracked: `mlflow run` made its run before lgals starts",
    "run_id": "diagnose --run is advised only to be left out",
}


def _text(node: ast.AST) -> str:
    """A string literal, an f-string's values as {}."""
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}"
                       for part in node.values)
    return node.value


def _strings(node: ast.AST) -> list[str]:
    """Every string literal in an expression (``param_hint=``, which names the option at
    fault, left out)."""
    if isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant)
                                           and isinstance(node.value, str)):
        return [_text(node)]
    if isinstance(node, ast.keyword) and node.arg == "param_hint":
        return []
    return [text for child in ast.iter_child_nodes(node) for text in _strings(child)]


def advised_options() -> dict[str, set[str]]:
    """Each ``--option`` that a message of lgals (what a ``raise`` or an ``echo`` says) tells a
    user to use, with the files that do: a message that starts with an option names the one
    at fault, so that option does not count in it."""
    import lgals

    advised: dict[str, set[str]] = {}
    for path in sorted(Path(lgals.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Raise) and node.exc is not None:
                texts = _strings(node.exc)
            elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(
                    node.func, "id", None)) == "echo":
                texts = [text for arg in node.args for text in _strings(arg)]
            else:
                continue
            for text in texts:
                at_fault = OPTION.match(text)
                for option in set(OPTION.findall(text)) - {at_fault and at_fault.group()}:
                    advised.setdefault(option, set()).add(path.name)
    return advised


def test_the_advice_is_found_where_lgals_gives_it():
    advised = advised_options()
    assert {"tuning.py"} <= advised["--study-name"]
    assert {"tuning.py"} <= advised["--storage"]
    assert {"evaluation.py"} <= advised["--params-from"] and "evaluation.py" in advised[
        "--tune-experiment"]
    assert "publish.py" in advised["--precision"]
    assert "--sweep" not in advised  # "--sweep: no finished sweep" names the option at fault


def test_every_option_lgals_advises_is_a_parameter_of_each_entry_point_that_takes_it():
    """Advice an `mlflow run` user cannot follow is no advice: where an entry point's command
    takes an option that lgals advises somewhere, the entry point has it as a parameter."""
    from lgals.cli import cli

    advised = advised_options()
    missing, excused = [], set()
    for name, entry in project_entry_points().items():
        command = cli.commands[re.search(r"entrypoints\.(\w+)", entry.command).group(1)]
        for option in command.params:
            if not isinstance(option, click.Option) or not set(option.opts) & set(advised):
                continue
            if option.name in NOT_PARAMETERS:
                excused.add(option.name)
            elif option.name not in entry.parameters:
                where = set().union(*(advised.get(opt, set()) for opt in option.opts))
                missing.append(f"{name}: {'/'.join(option.opts)} (advised in "
                               f"{', '.join(sorted(where))})")
    assert missing == []
    assert excused == set(NOT_PARAMETERS)  # each excuse is still needed


def test_register_is_nothing_by_default_and_a_name_when_given():
    """``mlflow run -e evaluate|reproduce|main -P register=NAME``: the command MLflow builds
    gives the CLI that name; the default, ``""``, registers nothing (sweep takes none)."""
    entries = project_entry_points()
    assert "register" not in entries["sweep"].parameters
    for entry in ("evaluate", "reproduce", "main"):
        for given, expected in (({}, ""), ({"register": "my study"}, "my study")):
            assert parsed(entries[entry], given).params["register"] == expected, (entry, given)
