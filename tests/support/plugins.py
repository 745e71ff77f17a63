"""Fake installed packages that register lgals plugins: a ``*.dist-info`` folder (its
``METADATA`` and ``entry_points.txt``) and a module, in a folder put on ``sys.path``, which is
what ``importlib.metadata`` finds an installed distribution by. Nothing is installed, so the
tests need no network and leave the environment as it was.
"""

from __future__ import annotations

import itertools
import sys
import textwrap
from pathlib import Path

import pytest

_NUMBERS = itertools.count()


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
        info = self.root / f"{distribution.replace('-', '_')}-{version}.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
        (info / "entry_points.txt").write_text(
            f"[{group}]\n" + "".join(f"{name} = {module}{attribute}\n"
                                     for name, attribute in entries.items()))
        return module

    def forget(self) -> None:
        """Their modules out of ``sys.modules`` (``sys.path`` is the monkeypatch's)."""
        for module in self.modules:
            sys.modules.pop(module, None)


# A package's own dataset: three Gaussian blobs in 12 dimensions, drawn from a seed.
BLOBS = """
    import numpy as np
    from lgals.data import Dataset

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
