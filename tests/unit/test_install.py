"""The install as documented: CI (``.ci/run``) installs exactly as README.md says, every README
install takes PyTorch's CPU index, and ``conda.yaml``'s torch is the one ``constraints.txt``
pins (docs/dependencies.md)."""

from __future__ import annotations

import re
import shlex

import yaml
from support.mlflow_fixtures import PROJECT

CPU_INDEX = ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]


def pip_installs(text: str) -> list[list[str]]:
    """Every ``pip install ...`` command in ``text`` (up to ``&&``, a comment or the line's
    end), as its arguments."""
    return [shlex.split(command) for command in re.findall(r"pip install [^&#\n]+", text)]


def readme_commands() -> list[str]:
    """README's install commands: the study's, then the tests'."""
    lines = (PROJECT / "README.md").read_text().splitlines()
    return [line for line in lines if line.startswith("python3 -m venv")]


def test_ci_installs_exactly_as_the_readme_says():
    study, tests = readme_commands()
    ci = [[arg for arg in command if arg != "-q"]  # CI's only addition: quiet
          for command in pip_installs((PROJECT / ".ci" / "run").read_text())]
    assert ci == pip_installs(tests)


def test_every_readme_install_takes_pytorchs_cpu_index_and_the_constraints():
    installs = [command for line in readme_commands() for command in pip_installs(line)]
    assert len(installs) == 3  # the study's, the tests' two
    for command in installs:
        assert command[2:6] == [*CPU_INDEX, "-c", "constraints.txt"], command


def test_condas_torch_is_the_version_constraints_pins():
    pins = dict(line.split("==") for line in (PROJECT / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    conda = yaml.safe_load((PROJECT / "conda.yaml").read_text())
    (torch,) = [dependency for dependency in conda["dependencies"]
                if isinstance(dependency, str) and dependency.startswith("pytorch-cpu=")]
    assert torch == f"pytorch-cpu={pins['torch']}"
