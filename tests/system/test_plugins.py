"""Plugins as a user meets them: the `lgals` command in a process that has broken and good
packages installed, `check-mode` on the examples, and a plugin mode tuned and evaluated
beside Baseline with `--modes`."""

from __future__ import annotations

import json

import pytest
from support.errors import stderr_lines
from support.mlflow_fixtures import run_lgals
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


def test_check_mode_passes_the_example_and_fails_the_wrong_one_naming_the_check(site,
                                                                                 tmp_path):
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
