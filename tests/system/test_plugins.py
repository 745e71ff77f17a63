"""Plugins as a user meets them: the `lgals` command in a process that has broken and good
packages installed, `check-mode` on the examples, and a plugin mode tuned and evaluated
beside Baseline with `--modes`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.errors import stderr_lines
from support.mlflow_fixtures import cli_env, run_lgals
from support.plugins import BROKEN, install_examples, write_distribution


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    install_examples(site)
    for distribution, (source, _) in BROKEN.items():
        write_distribution(site, distribution, source)
    return site


def test_broken_plugins_are_a_line_each_and_every_other_mode_works(site, tmp_path):
    done = run_lgals(["modes", "--json"], tmp_path, PYTHONPATH=str(site))
    assert done.returncode == 0, done.stderr
    modes = json.loads(done.stdout)["modes"]
    assert {"baseline", "lgals", "nce_rce", "wrong_poly1"} <= set(modes)
    assert modes["nce_rce"]["from"]["distribution"] == "lgals-apl"
    assert modes["nce_rce"]["gradient"] == "autograd"
    lines = stderr_lines(done.stderr)
    assert len(lines) == len(BROKEN) and "Traceback" not in done.stderr
    for distribution, (_, said) in BROKEN.items():
        (line,) = [line for line in lines if f"from {distribution} 1.0" in line]
        assert line.startswith("lgals: warning: lgals.modes plugin") and said in line


def test_check_mode_passes_the_example_and_fails_the_wrong_one_naming_the_check(
        site, tmp_path):
    good = run_lgals(["check-mode", "nce_rce"], tmp_path, PYTHONPATH=str(site))
    assert good.returncode == 0, good.stdout + good.stderr
    assert good.stdout.count("PASS ") == 4
    wrong = run_lgals(["check-mode", "wrong_poly1", "--json"], tmp_path, PYTHONPATH=str(site))
    assert wrong.returncode == 1
    document = json.loads(wrong.stdout)
    assert not document["passed"]
    assert [c["name"] for c in document["checks"] if not c["passed"]] == [
        "closed form == autograd (float64)"]
    (line,) = [line for line in stderr_lines(wrong.stderr) if "warning" not in line]
    assert line == "lgals: error: mode 'wrong_poly1' fails: closed form == autograd (float64)"


def test_a_plugin_mode_is_tuned_and_evaluated_beside_baseline(site, tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    common = ["--epochs", "2", "--tracking-uri", uri]
    tuned = run_lgals(["tune", "--modes", "baseline,nce_rce", "--n-trials", "2", *common],
                      tmp_path, PYTHONPATH=str(site))
    assert tuned.returncode == 0, tuned.stderr
    assert "NCE+RCE: best val acc" in tuned.stdout and "Baseline: best val acc" in tuned.stdout
    evaluated = run_lgals(["evaluate", "--modes", "nce_rce,baseline", "--seeds", "2", *common],
                          tmp_path, PYTHONPATH=str(site))
    assert evaluated.returncode == 0, evaluated.stderr
    lines = evaluated.stdout.splitlines()
    assert lines[0].startswith("NCE+RCE: final test accuracy")
    assert lines[1].startswith("Baseline: final test accuracy")


def _block(text: str, language: str) -> str:
    """The first fenced ``language`` block of ``text``."""
    return text.split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_readmes_mode_in_under_20_lines_is_a_working_package(tmp_path):
    """README's "Bring your own method", verbatim: its module and entry point as a package,
    pip installed; the mode passes check-mode, trains, and its claim file is accepted."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Bring your own method", 1)[1].split("\n## ", 1)[0]
    module = _block(section, "python")
    assert len(module.strip().splitlines()) < 20
    package = tmp_path / "my-method"
    (package / "my_method").mkdir(parents=True)
    (package / "my_method" / "__init__.py").write_text(module)
    (package / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=68"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "my-method"\nversion = "0.1.0"\ndependencies = ["lgals"]\n'
        + _block(section, "toml"))
    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(site), str(package)],
                   check=True, capture_output=True)
    env = {"PYTHONPATH": str(site)}
    listed = run_lgals(["modes"], tmp_path, **env)
    assert "poly1 (Poly-1, plugin; suites all; autograd; from my-method 0.1.0)" in listed.stdout
    checked = run_lgals(["check-mode", "poly1"], tmp_path, **env)
    assert checked.returncode == 0 and checked.stdout.count("PASS ") == 4, checked.stdout
    trained = run_lgals(["train", "--mode", "poly1", "--poly-eps", "2", "--epochs", "1",
                         "--seeds", "1", "--no-tracking", "--json"], tmp_path, **env)
    assert trained.returncode == 0, trained.stderr
    assert json.loads(trained.stdout)["params"]["poly_eps"] == 2.0
    (tmp_path / "my_claim.yaml").write_text(_block(section, "yaml"))
    loaded = subprocess.run(
        [sys.executable, "-c", "from lgals.claim import load; c = load('my_claim.yaml'); "
                               "print(c.modes, c.orderings, c.protocol.name)"],
        cwd=tmp_path, env=cli_env(**env), capture_output=True, text=True)
    assert loaded.stdout.strip() == "('poly1', 'baseline') (('poly1', 'baseline'),) robust", (
        loaded.stderr)
