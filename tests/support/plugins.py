"""Installed plugin packages for the registry's tests: the repository's two examples, pip
installed into a directory, and hand-written distributions that each break one rule.

A distribution is a module plus a ``*.dist-info`` with ``METADATA`` and ``entry_points.txt``:
exactly what ``importlib.metadata`` reads, so putting the directory on ``sys.path`` (or
``PYTHONPATH``) installs them for real.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# distribution -> (its module's source, what `lgals` must say about it)
BROKEN = {
    "broken-import": ("raise ImportError('no module named torchvision_nightly')\n",
                      "failed to import: ImportError: no module named torchvision_nightly"),
    "clashing-name": ("from lgals.plugin import Mode\nMODES = {'lgals': Mode(lambda z, y: z)}\n",
                      "'lgals' is already registered by lgals"),
    "bad-default": ("from lgals.plugin import Hyperparameter, Mode\n"
                    "MODES = {'bad_default': Mode(lambda z, y, q: z, {'bad_q': Hyperparameter("
                    "2.0, 0.0, 1.0)})}\n",
                    "'bad_default': hyperparameter 'bad_q': default 2 is outside [0, 1]"),
    "reserved-name": ("from lgals.plugin import Hyperparameter, Mode\n"
                      "MODES = {'own_lr': Mode(lambda z, y, lr: z, {'lr': Hyperparameter("
                      "0.1, 0.0, search=(0.01, 1.0))})}\n",
                      "'own_lr': hyperparameter 'lr': a name must be"),
    "redeclared": ("from lgals.plugin import Hyperparameter, Mode\n"
                   "MODES = {'redeclared': Mode(lambda z, y, gamma: z, {'gamma': "
                   "Hyperparameter(2.0, 0.0, search=(1.0, 3.0))})}\n",
                   "'redeclared': hyperparameter 'gamma' is already declared differently"),
    "paper-family": ("from lgals.plugin import Mode\n"
                     "MODES = {'my_paper': Mode(lambda z, y: z, family='paper')}\n",
                     "'my_paper': family must be one of ablation, peer, plugin"),
    "not-a-mapping": ("from lgals.plugin import Mode\nMODES = [Mode(lambda z, y: z)]\n",
                      "names a list, not a mapping of names to Modes"),
}


def _module(distribution: str) -> str:
    return distribution.replace("-", "_")


def write_distribution(site: Path, distribution: str, source: str) -> None:
    """A one-module distribution registering ``<module>:MODES`` under ``lgals.modes``."""
    module = _module(distribution)
    (site / f"{module}.py").write_text(source)
    info = site / f"{module}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(f"[lgals.modes]\nmodes = {module}:MODES\n")


def install_examples(site: Path) -> None:
    """pip installs both examples (no dependencies: lgals and torch are already here)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(site),
                    str(EXAMPLES / "lgals-apl"), str(EXAMPLES / "lgals-wrong-gradient")],
                   check=True, capture_output=True)
