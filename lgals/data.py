"""mnist1d generated locally, cached as .npz, with label noise injected into the training set.

The noise is drawn over the canonical 4000 training rows *before* any validation split, so a
given ``noise_seed`` flips the same labels whether or not a split is carved out: the model
tuned on (train - val) and the model evaluated on the full training set see the same noise.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from importlib.metadata import version
from pathlib import Path

import numpy as np

from lgals.settings import cache_dir

NUM_CLASSES = 10
NOISE_TYPES = ("symmetric", "pair")
# The largest share of flipped training labels, and of labels held out for validation: the
# bounds NoiseRecipe and the command line's options share.
MAX_NOISE_RATE, MAX_VAL_FRACTION = 0.9, 0.5
# What a remembered mnist1d recipe must name (the cache key and shapes come from them).
GENERATION_KEYS = {"num_samples", "train_split", "final_seq_length", "seed"}


def generation_args() -> dict:
    """mnist1d's own default recipe (5000 samples, 80/20 split, 40 features, seed 42).

    Remembered beside the cache per mnist1d version: importing mnist1d pulls in matplotlib
    and scipy, which a cached run should not pay for just to compute a key.
    """
    path = cache_dir() / f"mnist1d-{version('mnist1d')}-default-args.json"
    if path.exists():
        try:
            args = json.loads(path.read_text())
            problem = (None if isinstance(args, dict) and GENERATION_KEYS <= args.keys()
                       else "not mnist1d's arguments")
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is None:
            return args
        _rebuilding(path, problem)
    # mnist1d's import takes seconds: imported on a cache miss only
    from mnist1d.data import get_dataset_args

    args = get_dataset_args(as_dict=True)
    args.pop("url")  # only used for downloading, which we never do
    _write_atomically(path, lambda tmp: tmp.write_text(json.dumps(args, sort_keys=True)))
    return args


def _rebuilding(path: Path, problem: str) -> None:
    """A cache file is derived data: a damaged one is named, once, and made again."""
    print(f"lgals: {path} is damaged ({problem}); rebuilding it", file=sys.stderr)


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path``, then rename it: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{os.getpid()}.tmp{path.suffix}")
    write(tmp)
    os.replace(tmp, path)


def _generate(args: dict) -> dict[str, np.ndarray]:
    from mnist1d.data import make_dataset  # as above: only when the cache has no arrays
    from mnist1d.utils import ObjectView

    # make_dataset seeds the global RNGs; give the caller theirs back untouched.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(ObjectView(dict(args, url=None)))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {
        "x": raw["x"].astype(np.float32),
        "y": raw["y"].astype(np.int64),
        "x_test": raw["x_test"].astype(np.float32),
        "y_test": raw["y_test"].astype(np.int64),
    }


def load_mnist1d(args: dict | None = None) -> dict[str, np.ndarray]:
    """Clean mnist1d arrays, generated once per recipe and then read from the .npz cache
    (rebuilt when it cannot be read back whole, with the shapes and classes its recipe
    gives)."""
    args = generation_args() if args is None else args
    key = hashlib.sha256(json.dumps(args, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / f"mnist1d-{key}.npz"
    if path.exists():
        try:  # the zip's CRC-32 of every array is checked as it is read
            with np.load(path, allow_pickle=False) as cached:
                arrays = {name: cached[name] for name in cached.files}
            problem = _cache_problem(arrays, args)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is None:
            return arrays
        _rebuilding(path, problem)
    arrays = _generate(args)
    _write_atomically(path, lambda tmp: np.savez(tmp, **arrays))
    return arrays


def _cache_problem(arrays: dict[str, np.ndarray], args: dict) -> str | None:
    """What is wrong with cached arrays for the recipe ``args``, if anything."""
    if sorted(arrays) != ["x", "x_test", "y", "y_test"]:
        return f"arrays {sorted(arrays)}"
    n_train = len(arrays["y"])
    shapes = {"x": (n_train, args["final_seq_length"]), "y": (n_train,),
              "x_test": (args["num_samples"] - n_train, args["final_seq_length"]),
              "y_test": (args["num_samples"] - n_train,)}
    for name, shape in shapes.items():
        if arrays[name].shape != shape:
            return f"{name} has shape {arrays[name].shape}, not {shape}"
    if not all(((y >= 0) & (y < NUM_CLASSES)).all() for y in (arrays["y"], arrays["y_test"])):
        return f"labels outside 0..{NUM_CLASSES - 1}"
    return None


def inject_noise(
    labels: np.ndarray, noise_rate: float, noise_type: str, noise_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly ``round(noise_rate * n)`` labels, each to a different class.

    ``symmetric``: the new class is uniform over the other nine; ``pair``: y -> (y + 1) mod 10.
    Returns ``(noisy_labels, noise_mask)``.
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
    rng = np.random.default_rng(noise_seed)
    n_flip = int(round(noise_rate * len(labels)))
    flipped = rng.choice(len(labels), size=n_flip, replace=False)
    if noise_type == "symmetric":
        shift = rng.integers(1, NUM_CLASSES, size=n_flip)  # 1..9: never back to itself
    else:
        shift = np.ones(n_flip, dtype=np.int64)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + shift) % NUM_CLASSES
    noise_mask = np.zeros(len(labels), dtype=bool)
    noise_mask[flipped] = True
    return noisy, noise_mask


def split_indices(
    labels: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split stratified by the *observed* labels (all a user has); sorted indices.

    Every class gives at least one sample when ``val_fraction > 0``, so a split never is empty.
    """
    rng = np.random.default_rng([seed, 1])  # its own stream, independent of the noise draw
    val = []
    for cls in range(NUM_CLASSES):
        members = np.flatnonzero(labels == cls)
        n_val = max(1, int(round(val_fraction * len(members)))) if val_fraction > 0 else 0
        val.append(rng.permutation(members)[:n_val])
    val_index = np.sort(np.concatenate(val))
    train_index = np.setdiff1d(np.arange(len(labels)), val_index)
    return train_index, val_index


@dataclass(frozen=True)
class NoiseRecipe:
    """What rebuilds one noisy split exactly: which labels flip (rate, type, seed) and the
    share held out, stratified, for validation. Its fields are the run params it is logged as
    (:meth:`params`) and read back from (:meth:`from_params`)."""

    noise_rate: float = 0.2
    noise_type: str = "symmetric"
    noise_seed: int = 0
    val_fraction: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise_rate <= MAX_NOISE_RATE:
            raise ValueError(f"noise_rate must be in [0, {MAX_NOISE_RATE}], got "
                             f"{self.noise_rate}")
        if self.noise_type not in NOISE_TYPES:
            raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {self.noise_type!r}")
        if not 0.0 <= self.val_fraction <= MAX_VAL_FRACTION:
            raise ValueError(f"val_fraction must be in [0, {MAX_VAL_FRACTION}], got "
                             f"{self.val_fraction}")

    def params(self) -> dict[str, float | str | int]:
        return asdict(self)

    @property
    def setting(self) -> str:
        """The noise setting a sweep varies, e.g. ``symmetric-0.2`` (a run's
        :data:`lgals.schema.NOISE` tag)."""
        return f"{self.noise_type}-{self.noise_rate:g}"

    def repeated(self, repeat: int) -> NoiseRecipe:
        """Repetition ``repeat``'s own noise draw and validation split (0: this recipe)."""
        return replace(self, noise_seed=self.noise_seed + repeat)

    @property
    def canonical(self) -> NoiseRecipe:
        """This recipe as the one noise setting it is: a rate of 0 flips nothing whatever the
        type, so every type's rate 0 is one setting, run (and looked for) as ``symmetric``."""
        return replace(self, noise_type="symmetric") if self.noise_rate == 0 else self

    def same_setting(self, other: NoiseRecipe) -> bool:
        """Whether both are one noise setting: the same rate and type, or rate 0 whatever the
        types (the draw and the split, ``noise_seed`` and ``val_fraction``, are no part of a
        setting)."""
        mine, theirs = self.canonical, other.canonical
        return (mine.noise_type, mine.noise_rate) == (theirs.noise_type, theirs.noise_rate)

    def swept(self, rates: Iterable[float], types: Iterable[str]) -> list[NoiseRecipe]:
        """This recipe at every type and rate, type by type: the settings a sweep asks for
        (:meth:`distinct` gives the ones it runs)."""
        rates = list(rates)
        return [replace(self, noise_type=noise_type, noise_rate=rate)
                for noise_type in types for rate in rates]

    @staticmethod
    def distinct(recipes: Iterable[NoiseRecipe]) -> list[NoiseRecipe]:
        """Each noise setting among ``recipes`` once, canonical, in their order: what a sweep
        runs (rate 0 once, as ``symmetric``)."""
        return list(dict.fromkeys(recipe.canonical for recipe in recipes))

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> NoiseRecipe:
        """The recipe a run logged; a run without a validation split may not log its 0."""
        return cls(float(params["noise_rate"]), params["noise_type"], int(params["noise_seed"]),
                   float(params.get("val_fraction", 0.0)))


@dataclass(frozen=True)
class NoisyDataset:
    """Arrays for one noise draw. ``*_index`` point into the canonical 4000 training rows."""

    x_train: np.ndarray
    y_train: np.ndarray  # observed (noisy)
    y_train_true: np.ndarray
    noise_mask: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray  # observed (noisy), as a user's validation labels would be
    y_val_true: np.ndarray
    val_noise_mask: np.ndarray
    x_test: np.ndarray | None  # clean; None once hidden for tuning
    y_test: np.ndarray | None
    train_index: np.ndarray
    val_index: np.ndarray
    recipe: NoiseRecipe  # what rebuilds exactly these arrays with :func:`load_dataset`

    @property
    def has_val(self) -> bool:
        return len(self.y_val) > 0

    @property
    def has_test(self) -> bool:
        return self.x_test is not None


def load_dataset(recipe: NoiseRecipe = NoiseRecipe()) -> NoisyDataset:
    """Noisy mnist1d: noise in the training labels only, optional noisy validation split."""
    clean = load_mnist1d()
    y_true = clean["y"]
    y_noisy, mask = inject_noise(y_true, recipe.noise_rate, recipe.noise_type,
                                 recipe.noise_seed)
    if recipe.val_fraction > 0:
        train_index, val_index = split_indices(y_noisy, recipe.val_fraction, recipe.noise_seed)
    else:
        train_index, val_index = np.arange(len(y_true)), np.array([], dtype=np.int64)
    x = clean["x"]
    return NoisyDataset(
        x_train=x[train_index],
        y_train=y_noisy[train_index],
        y_train_true=y_true[train_index],
        noise_mask=mask[train_index],
        x_val=x[val_index],
        y_val=y_noisy[val_index],
        y_val_true=y_true[val_index],
        val_noise_mask=mask[val_index],
        x_test=clean["x_test"],
        y_test=clean["y_test"],
        train_index=train_index,
        val_index=val_index,
        recipe=recipe,
    )
