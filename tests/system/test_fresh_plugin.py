"""The harness's promise, end to end: a plugin package lgals has never seen, pip installed
with lgals into a fresh virtual environment (lgals built from this checkout, unchanged, not
editable), is checked, tuned, evaluated, reported and carded beside Baseline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from support.mlflow_fixtures import MLFLOW_ENV
from support.plugins import EXAMPLES

ROOT = Path(__file__).resolve().parents[2]


def test_a_plugin_in_a_fresh_environment_gets_its_claim_card(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_dir = venv / "bin"
    installed = subprocess.run([str(bin_dir / "pip"), "install", "-q", "-c",
                                str(ROOT / "constraints.txt"), str(ROOT),
                                str(EXAMPLES / "lgals-apl")],
                               capture_output=True, text=True, timeout=900)
    assert installed.returncode == 0, installed.stderr[-3000:]
    env = {k: v for k, v in os.environ.items() if k not in MLFLOW_ENV and k != "PYTHONPATH"}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"

    def lgals(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bin_dir / "lgals"), *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=600)

    # the installed lgals, not this checkout's sources
    where = subprocess.run([str(bin_dir / "python"), "-c", "import lgals; print(lgals.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert str(venv) in where.stdout

    checked = lgals("check-mode", "nce_rce")
    assert checked.returncode == 0 and checked.stdout.count("PASS ") == 4, checked.stdout

    done = lgals("reproduce", "--claim", str(EXAMPLES / "lgals-apl" / "claim.yaml"), "--quick")
    assert done.returncode == 0, done.stderr[-3000:]
    card = (tmp_path / "results" / "results.md").read_text()
    verdict = re.search(r"^1\. \*\*NCE\+RCE beats Baseline: (supported|not supported|"
                        r"inconclusive)\.\*\* NCE\+RCE − Baseline = [+-]\d+\.\d\d pp", card, re.M)
    assert verdict, card[:2000]
    assert "| NCE+RCE | 2 |" in card and "| Baseline | 2 |" in card
    assert "LGALS" not in card.split("## Final test accuracy")[0]  # the claim's modes only
