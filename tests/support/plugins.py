"""Installed plugin packages for the registry tests. A distribution is a module plus a
``*.dist-info`` folder (its ``METADATA`` and ``entry_points.txt``) in a folder on ``sys.path``
(or ``PYTHONPATH``): exactly what ``importlib.metadata`` finds an installed distribution by.
Hand-made ones (:class:`FakeDistributions`, :func:`write_distribution`) need no network and
leave the environment as it was; the repository's two examples are pip-installed into a
folder (:func:`install_examples`).
"""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
_NUMBERS = itertools.count()


def write_dist_info(root: Path, distribution: str, version: str, group: str,
                    entries: dict[str, str]) -> None:
    """``distribution``'s metadata, registering ``entries`` (name -> ``module:ATTRIBUTE``)."""
    info = root / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in entries.items()))


class FakeDistributions:
    """Distributions made in ``root``, on ``sys.path`` until :meth:`forget`."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch):
        self.root, self.modules = root, []
        root.mkdir(parents=True, exist_ok=True)
        monkeypatch.syspath_prepend(str(root))

    def install(self, distribution: str, group: str, entries: dict[str, str],
                source: str = "", version: str = "1.0") -> str:
        """A distribution registering ``entries`` (entry-point name -> ``:ATTRIBUTE`` of its
        module, whose code is ``source``) in ``group``; returns the module's name."""
        module = f"lgals_test_plugin_{next(_NUMBERS)}"
        (self.root / f"{module}.py").write_text(textwrap.dedent(source))
        self.modules.append(module)
        write_dist_info(self.root, distribution, version, group,
                        {name: f"{module}{attribute}" for name, attribute in entries.items()})
        return module

    def forget(self) -> None:
        """Their modules out of ``sys.modules`` (``sys.path`` is the monkeypatch's)."""
        for module in self.modules:
            sys.modules.pop(module, None)


# A package's own dataset: three Gaussian blobs in 12 dimensions, drawn from a seed.
BLOBS = """
    import numpy as np
    from lgals.plugin import Dataset

    def blobs(n_train, n_test, seed):
        rng = np.random.default_rng(seed)
        centres = 3 * rng.normal(size=(3, 12))

        def draw(n):
            y = np.arange(n) % 3
            return (centres[y] + rng.normal(size=(n, 12))).astype(np.float32), y

        (x, y), (x_test, y_test) = draw(n_train), draw(n_test)
        return {"x": x, "y": y, "x_test": x_test, "y_test": y_test}

    DATASETS = {NAME: Dataset(blobs, 3, "three blobs", "three Gaussian blobs, seeded",
                              "1", {"n_train": 300, "n_test": 90, "seed": SEED})}
"""


def blobs(name: str = "blobs", seed: int = 0) -> str:
    """The source of a module registering the blobs as ``name`` (in its ``DATASETS``)."""
    return textwrap.dedent(BLOBS).replace("NAME", repr(name)).replace("SEED", str(seed))


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


def write_distribution(site: Path, distribution: str, source: str) -> None:
    """A one-module distribution registering ``<module>:MODES`` under ``lgals.modes``."""
    module = distribution.replace("-", "_")
    (site / f"{module}.py").write_text(source)
    write_dist_info(site, distribution, "1.0", "lgals.modes", {"modes": f"{module}:MODES"})


def install_examples(site: Path) -> None:
    """pip installs both examples (no dependencies: lgals and torch are already here)."""
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(site),
                    str(EXAMPLES / "lgals-apl"), str(EXAMPLES / "lgals-wrong-gradient")],
                   check=True, capture_output=True)
