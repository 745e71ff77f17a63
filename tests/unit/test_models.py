"""Logged models' requirements and the Model Registry's names (``--register``).

The process-level tests (a logged model's files, ``mlflow models serve``, registering on a
sqlite store and on a server): ``tests/system/test_models.py``.
"""

from __future__ import annotations

from importlib.metadata import version

import pytest
from support.errors import assert_one_line_error

from lgals.tracking.register import name_problem
from lgals.tracking.seeds import CPU_TORCH_INDEX, model_requirements, torch_requirements


def test_a_cpu_torch_is_pinned_from_pytorchs_cpu_index_and_a_cuda_one_from_pypi():
    assert CPU_TORCH_INDEX == "https://download.pytorch.org/whl/cpu"
    assert torch_requirements("2.13.0+cpu", cpu_build=True) == [
        "--extra-index-url https://download.pytorch.org/whl/cpu", "torch==2.13.0"]
    assert torch_requirements("2.13.0", cpu_build=True) == [
        "--extra-index-url https://download.pytorch.org/whl/cpu", "torch==2.13.0"]
    assert torch_requirements("2.13.0+cu130", cpu_build=False) == ["torch==2.13.0"]


def test_model_requirements_pin_what_is_installed_and_are_worked_out_once():
    import torch

    model_requirements.cache_clear()
    requirements = model_requirements()
    assert model_requirements() is requirements
    assert model_requirements.cache_info().misses == 1
    cpu_build = torch.version.cuda is None and torch.version.hip is None
    assert requirements == (
        *(["--extra-index-url https://download.pytorch.org/whl/cpu"] if cpu_build else []),
        f"torch=={torch.__version__.split('+')[0]}",
        f"numpy=={version('numpy')}", f"pandas=={version('pandas')}")


@pytest.mark.parametrize("name", ["study", "label smoothing v2.1", "team@lab", "x-y",
                                  "Ünïcode_名前"])
def test_names_mlflow_takes(name):
    assert name_problem(name) is None


@pytest.mark.parametrize("name, says", [
    ("a/b", "Names cannot contain '/' or ':'"),
    ("a:b", "Names cannot contain '/' or ':'"),
    ("..", "would resolve to '..'"),
    ("..study", "would resolve to '..study'"),
    (".", "would resolve to '.'"),
    ("  ", "Missing value for required parameter 'name'"),
    ("a?b", "MLflow would not read models:/a?b-MODE@best as that model's URI"),
])
def test_names_mlflow_refuses_or_cannot_load_say_why(name, says):
    assert says in name_problem(name)


@pytest.mark.parametrize("command", ["evaluate", "reproduce"])
@pytest.mark.parametrize("name", ["a/b", "..", "a?b"])
def test_a_bad_register_name_is_one_line_before_anything_starts(run_main, command, name,
                                                                 tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_main([command, "--register", name])
    assert_one_line_error(code, out, err, "--register")
    assert f"'{name}'" in err
    assert list(tmp_path.iterdir()) == []  # no store, nothing trained
