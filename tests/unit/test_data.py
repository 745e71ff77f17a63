"""Noisy mnist1d: exact noise counts, flip structure, seeding, splits, cache, validation.

The other datasets, the registry and mnist1d's bit-identity: ``tests/unit/test_datasets.py``.
The process-level and seconds-long tests: ``tests/system/test_data.py``.
"""

from __future__ import annotations

import math
import random
from dataclasses import replace

import numpy as np
import pytest

from lgals.data import (
    DATASETS,
    NoiseRecipe,
    cache_dir,
    cache_path,
    inject_noise,
    load_clean,
    load_dataset,
)

N_TRAIN, N_TEST, N_FEATURES = 4000, 1000, 40
NUM_CLASSES = 10

DATASET_ARRAYS = (
    "x_train", "y_train", "y_train_true", "noise_mask", "x_val", "y_val", "y_val_true",
    "val_noise_mask", "x_test", "y_test", "train_index", "val_index",
)


def assert_same_np_state(a, b) -> None:
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2:] == b[2:]


def assert_same_dataset(a, b) -> None:
    for name in DATASET_ARRAYS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def counted_loads(monkeypatch, name: str, load=None) -> list:
    """Dataset ``name`` registered with its load counted (replaced by ``load``, if given):
    the same name, version and generation, so the same cache file."""
    dataset = DATASETS[name]
    calls = []

    def counting(**generation):
        calls.append(generation)
        return (load or dataset.load)(**generation)

    monkeypatch.setitem(DATASETS.loaded.entries, name, replace(dataset, load=counting))
    return calls


# --- the clean arrays ----------------------------------------------------------------------


def test_clean_arrays_shapes_dtypes_and_balance(clean):
    assert clean["x"].shape == (N_TRAIN, N_FEATURES) and clean["x"].dtype == np.float32
    assert clean["x_test"].shape == (N_TEST, N_FEATURES) and clean["x_test"].dtype == np.float32
    assert clean["y"].shape == (N_TRAIN,) and clean["y"].dtype == np.int64
    assert clean["y_test"].shape == (N_TEST,) and clean["y_test"].dtype == np.int64
    # mnist1d makes 500 samples per class, then shuffles them into an 80/20 split
    counts = np.bincount(clean["y"], minlength=NUM_CLASSES) + np.bincount(
        clean["y_test"], minlength=NUM_CLASSES
    )
    np.testing.assert_array_equal(counts, np.full(NUM_CLASSES, 500))


def test_first_load_generates_writes_cache_and_second_load_reads_it(tmp_path, monkeypatch, clean):
    """A fresh cache dir: generation runs once (leaving the global RNGs alone), then never."""
    monkeypatch.setenv("LGALS_CACHE_DIR", str(tmp_path))
    assert cache_dir() == tmp_path
    calls = counted_loads(monkeypatch, "mnist1d")

    # mnist1d's make_dataset calls np.random.seed / random.seed: the caller must not notice
    np.random.seed(1234)
    random.seed(1234)
    np_state, py_state = np.random.get_state(), random.getstate()
    first = load_clean("mnist1d")
    assert calls == [{}]  # mnist1d's own default arguments
    assert_same_np_state(np.random.get_state(), np_state)
    assert random.getstate() == py_state
    assert [p.name for p in tmp_path.iterdir()] == [cache_path("mnist1d").name]
    assert cache_path("mnist1d").name.startswith("mnist1d-")

    counted_loads(monkeypatch, "mnist1d", load=lambda **_: pytest.fail(
        "the second load must read the .npz cache, not regenerate"))
    second = load_clean("mnist1d")
    # load_dataset uses the cache too
    dataset = load_dataset(NoiseRecipe(noise_rate=0.3, val_fraction=0.1))
    assert sorted(second) == sorted(first) == ["x", "x_test", "y", "y_test"]
    for name in first:
        np.testing.assert_array_equal(second[name], first[name])
        assert second[name].dtype == first[name].dtype
        # generation is deterministic: the same arrays as the session's cache
        np.testing.assert_array_equal(first[name], clean[name])
    np.testing.assert_array_equal(dataset.x_test, first["x_test"])


def _flip_middle_bytes(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    path.write_bytes(bytes(data))


def _resave(change):
    def damage(path):
        with np.load(path) as cached:
            kept = {name: cached[name] for name in cached.files}
        np.savez(path.with_suffix(""), **change(kept))  # np.savez adds the .npz
    return damage


CACHE_DAMAGE = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]),
    "bytes flipped": _flip_middle_bytes,
    "empty": lambda p: p.write_bytes(b""),
    "not a zip": lambda p: p.write_text("hello"),
    "an array missing": _resave(lambda a: {"x": a["x"]}),
    "a wrong shape": _resave(lambda a: {**a, "x": a["x"][:, :-1]}),
    "a wrong dtype": _resave(lambda a: {**a, "x": a["x"].astype(np.float64)}),
    "a label out of range": _resave(lambda a: {**a, "y": np.full_like(a["y"], NUM_CLASSES)}),
    "a class missing": _resave(lambda a: {**a, "y": np.where(a["y"] == 3, 4, a["y"])}),
}


@pytest.fixture(params=["mnist1d", "digits"])
def own_cache(request, tmp_path, monkeypatch):
    """A cache directory of this test's own, filled by a first load of a dataset (mnist1d's
    generated, digits' split from scikit-learn's), counting its loads."""
    name = request.param
    monkeypatch.setenv("LGALS_CACHE_DIR", str(tmp_path))
    loads = counted_loads(monkeypatch, name)
    return name, load_clean(name), loads


@pytest.mark.parametrize("damage", CACHE_DAMAGE, ids=list(CACHE_DAMAGE))
def test_a_damaged_cache_is_named_and_rebuilt(damage, own_cache, capsys):
    name, first, loads = own_cache
    npz = cache_path(name)
    CACHE_DAMAGE[damage](npz)
    capsys.readouterr()
    arrays = load_clean(name)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"lgals: {npz} is damaged (")
    assert err[0].endswith("); rebuilding it")
    assert len(loads) == 2  # the first load, then the rebuild
    for key in first:
        np.testing.assert_array_equal(arrays[key], first[key])
    assert load_clean(name).keys() == first.keys()  # rebuilt on disk: read back silently
    assert capsys.readouterr().err == "" and len(loads) == 2
    assert sorted(p.name for p in npz.parent.iterdir() if p.name.startswith(".")) == []


def test_load_dataset_leaves_global_numpy_and_python_rngs_alone():
    np.random.seed(7)
    random.seed(7)
    expected_np, expected_py = np.random.rand(), random.random()

    np.random.seed(7)
    random.seed(7)
    np_state, py_state = np.random.get_state(), random.getstate()
    load_dataset(NoiseRecipe(noise_rate=0.4, noise_type="symmetric", noise_seed=5,
                             val_fraction=0.2))
    load_dataset(NoiseRecipe(noise_rate=0.4, noise_type="pair", noise_seed=6))
    assert_same_np_state(np.random.get_state(), np_state)
    assert random.getstate() == py_state
    assert np.random.rand() == expected_np
    assert random.random() == expected_py


# --- noise ---------------------------------------------------------------------------------


@pytest.mark.parametrize("noise_type", ["symmetric", "pair"])
@pytest.mark.parametrize("noise_rate", [0.0, 0.05, 0.12345, 0.2, 0.5, 0.9])
def test_exactly_round_rate_times_n_labels_flipped(noise_rate, noise_type, clean):
    d = load_dataset(NoiseRecipe(noise_rate=noise_rate, noise_type=noise_type, noise_seed=3))
    n_flip = round(noise_rate * N_TRAIN)  # 0.12345 * 4000 = 493.8 -> 494, not 493
    assert d.noise_mask.dtype == bool
    assert int(d.noise_mask.sum()) == n_flip
    # every flipped label differs from the true one; every other label is untouched
    np.testing.assert_array_equal(d.noise_mask, d.y_train != d.y_train_true)
    np.testing.assert_array_equal(d.y_train_true, clean["y"])
    assert d.y_train.dtype == np.int64
    assert d.y_train.min() >= 0 and d.y_train.max() < NUM_CLASSES


def test_inject_noise_small_hand_checked_and_does_not_mutate_input():
    labels = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], dtype=np.int64)
    original = labels.copy()
    noisy, mask = inject_noise(labels, 0.35, "pair", 0, NUM_CLASSES)  # round(3.5) == 4
    np.testing.assert_array_equal(labels, original)
    assert mask.sum() == 4
    np.testing.assert_array_equal(noisy[mask], (original[mask] + 1) % 10)
    np.testing.assert_array_equal(noisy[~mask], original[~mask])
    noisy, mask = inject_noise(labels, 1.0, "pair", 0, NUM_CLASSES)
    np.testing.assert_array_equal(noisy, [1, 2, 3, 4, 5, 6, 7, 8, 9, 0])
    assert mask.all()


def test_symmetric_flips_cover_all_shifts_roughly_uniformly(clean):
    d = load_dataset(NoiseRecipe(noise_rate=0.9, noise_type="symmetric", noise_seed=11))
    flipped = d.noise_mask
    shift = (d.y_train[flipped] - d.y_train_true[flipped]) % NUM_CLASSES
    counts = np.bincount(shift, minlength=NUM_CLASSES)
    assert counts[0] == 0  # never back to the true class
    # 3600 flips over 9 shifts: 400 expected each, binomial sd ~19; allow 5 sd
    assert np.all(np.abs(counts[1:] - 400) < 100), counts
    targets = np.bincount(d.y_train[flipped], minlength=NUM_CLASSES)
    assert np.all(targets > 250), targets  # every class receives flipped labels


def test_symmetric_flips_at_default_rate_hit_several_targets_per_class(dataset):
    flipped = dataset.noise_mask
    for cls in range(NUM_CLASSES):
        from_cls = flipped & (dataset.y_train_true == cls)
        targets = set(dataset.y_train[from_cls].tolist())
        assert cls not in targets
        assert len(targets) >= 5, (cls, targets)


def test_pair_flips_are_next_class(clean):
    d = load_dataset(NoiseRecipe(noise_rate=0.45, noise_type="pair", noise_seed=2))
    m = d.noise_mask
    np.testing.assert_array_equal(d.y_train[m], (clean["y"][m] + 1) % NUM_CLASSES)
    np.testing.assert_array_equal(d.y_train[~m], clean["y"][~m])
    assert set(((d.y_train[m] - d.y_train_true[m]) % NUM_CLASSES).tolist()) == {1}


@pytest.mark.parametrize("val_fraction", [0.0, 0.25])
def test_same_noise_seed_same_arrays_different_seed_different(val_fraction):
    a = load_dataset(NoiseRecipe(noise_rate=0.3, noise_seed=4, val_fraction=val_fraction))
    b = load_dataset(NoiseRecipe(noise_rate=0.3, noise_seed=4, val_fraction=val_fraction))
    assert_same_dataset(a, b)
    c = load_dataset(NoiseRecipe(noise_rate=0.3, noise_seed=5, val_fraction=val_fraction))
    assert not np.array_equal(a.y_train, c.y_train) or not np.array_equal(a.x_train, c.x_train)
    full_a = load_dataset(NoiseRecipe(noise_rate=0.3, noise_seed=4))
    full_c = load_dataset(NoiseRecipe(noise_rate=0.3, noise_seed=5))
    assert not np.array_equal(full_a.noise_mask, full_c.noise_mask)
    # the two draws share some flips by chance, but far from all of them
    overlap = (full_a.noise_mask & full_c.noise_mask).sum() / full_a.noise_mask.sum()
    assert overlap < 0.6


def test_recipe_rebuilds_the_same_arrays():
    d = load_dataset(NoiseRecipe(noise_rate=0.35, noise_type="pair", noise_seed=9,
                                 val_fraction=0.15))
    assert d.recipe.params() == {
        "noise_rate": 0.35, "noise_type": "pair", "noise_seed": 9, "val_fraction": 0.15,
        "dataset": "mnist1d",
    }
    assert_same_dataset(load_dataset(d.recipe), d)



def test_recipe_round_trips_through_run_params():
    """Logged as MLflow params (strings) and read back, a recipe is the same recipe."""
    recipe = NoiseRecipe(noise_rate=0.35, noise_type="pair", noise_seed=9, val_fraction=0.15)
    logged = {key: str(value) for key, value in recipe.params().items()}
    assert NoiseRecipe.from_params(logged) == recipe
    del logged["val_fraction"]  # an evaluation run trains on the full set
    assert NoiseRecipe.from_params(logged) == NoiseRecipe(0.35, "pair", 9, 0.0)
    del logged["dataset"]  # a run from before datasets had names: mnist1d's
    assert NoiseRecipe.from_params(logged) == NoiseRecipe(0.35, "pair", 9, 0.0, "mnist1d")
    digits = NoiseRecipe(0.35, "pair", 9, 0.15, "digits")
    assert NoiseRecipe.from_params({k: str(v) for k, v in digits.params().items()}) == digits


def test_rate_0_of_any_type_is_one_noise_setting():
    """A rate of 0 flips nothing whatever the type: pair 0 is symmetric 0's setting, run as
    symmetric; the draw and the split are no part of a setting."""
    pair0, clean = NoiseRecipe(0.0, "pair", 3, 0.1), NoiseRecipe(0.0, "symmetric")
    assert pair0.canonical == NoiseRecipe(0.0, "symmetric", 3, 0.1)
    assert pair0.same_setting(clean) and clean.same_setting(pair0)
    assert NoiseRecipe(0.2, "pair").canonical == NoiseRecipe(0.2, "pair")
    assert not NoiseRecipe(0.2, "pair").same_setting(NoiseRecipe(0.2, "symmetric"))
    assert not NoiseRecipe(0.2).same_setting(NoiseRecipe(0.4))
    assert NoiseRecipe(0.2, noise_seed=1).same_setting(NoiseRecipe(0.2, val_fraction=0.1))


def test_a_sweep_of_rates_0_and_0_2_over_both_types_runs_three_settings():
    base = NoiseRecipe(val_fraction=0.1)
    asked = base.swept([0.0, 0.2], ["symmetric", "pair"])
    assert asked == [NoiseRecipe(0.0, "symmetric", 0, 0.1), NoiseRecipe(0.2, "symmetric", 0, 0.1),
                     NoiseRecipe(0.0, "pair", 0, 0.1), NoiseRecipe(0.2, "pair", 0, 0.1)]
    assert NoiseRecipe.distinct(asked) == [NoiseRecipe(0.0, "symmetric", 0, 0.1),
                                           NoiseRecipe(0.2, "symmetric", 0, 0.1),
                                           NoiseRecipe(0.2, "pair", 0, 0.1)]
    assert [r.setting for r in NoiseRecipe.distinct(base.swept([0.0, 0.2], ["pair"]))] == [
        "symmetric-0", "pair-0.2"]

# --- canonical order, test set, validation split -------------------------------------------


def test_no_split_gives_canonical_rows_in_canonical_order(dataset, clean):
    np.testing.assert_array_equal(dataset.x_train, clean["x"])
    np.testing.assert_array_equal(dataset.y_train_true, clean["y"])
    np.testing.assert_array_equal(dataset.train_index, np.arange(N_TRAIN))
    assert len(dataset.val_index) == 0 and len(dataset.y_val) == 0
    assert dataset.x_val.shape == (0, N_FEATURES)
    assert not dataset.has_val and dataset.has_test
    assert int(dataset.noise_mask.sum()) == 800


@pytest.mark.parametrize("kwargs", [{}, {"noise_rate": 0.9, "noise_type": "pair"},
                                    {"noise_rate": 0.4, "val_fraction": 0.3}])
def test_test_set_is_clean_and_untouched(kwargs, clean):
    d = load_dataset(NoiseRecipe(**kwargs))
    np.testing.assert_array_equal(d.y_test, clean["y_test"])
    np.testing.assert_array_equal(d.x_test, clean["x_test"])


@pytest.mark.parametrize("val_fraction", [0.1, 0.2, 0.5])
def test_validation_split(val_fraction, clean):
    d = load_dataset(NoiseRecipe(noise_rate=0.3, noise_seed=1, val_fraction=val_fraction))
    full = load_dataset(NoiseRecipe(noise_rate=0.3, noise_seed=1))

    # sizes: stratified by the observed labels, round(fraction * class count) per class
    observed_counts = np.bincount(full.y_train, minlength=NUM_CLASSES)
    expected_val = sum(int(round(val_fraction * c)) for c in observed_counts)
    assert len(d.val_index) == expected_val
    assert len(d.train_index) == N_TRAIN - expected_val
    assert abs(len(d.val_index) - val_fraction * N_TRAIN) <= NUM_CLASSES / 2
    np.testing.assert_array_equal(
        np.bincount(d.y_val, minlength=NUM_CLASSES),
        [int(round(val_fraction * c)) for c in observed_counts],
    )

    # disjoint, covering, sorted
    assert np.intersect1d(d.train_index, d.val_index).size == 0
    np.testing.assert_array_equal(
        np.sort(np.concatenate([d.train_index, d.val_index])), np.arange(N_TRAIN)
    )
    assert np.all(np.diff(d.train_index) > 0) and np.all(np.diff(d.val_index) > 0)

    # rows follow the indices
    np.testing.assert_array_equal(d.x_train, clean["x"][d.train_index])
    np.testing.assert_array_equal(d.x_val, clean["x"][d.val_index])
    np.testing.assert_array_equal(d.y_train_true, clean["y"][d.train_index])
    np.testing.assert_array_equal(d.y_val_true, clean["y"][d.val_index])

    # validation labels are noisy, and the mask says exactly which
    np.testing.assert_array_equal(d.val_noise_mask, d.y_val != d.y_val_true)
    np.testing.assert_array_equal(d.noise_mask, d.y_train != d.y_train_true)
    assert d.val_noise_mask.any() and not d.val_noise_mask.all()

    # the noise draw is the same with or without a split
    np.testing.assert_array_equal(full.noise_mask[d.train_index], d.noise_mask)
    np.testing.assert_array_equal(full.noise_mask[d.val_index], d.val_noise_mask)
    np.testing.assert_array_equal(full.y_train[d.train_index], d.y_train)
    np.testing.assert_array_equal(full.y_train[d.val_index], d.y_val)
    assert d.noise_mask.sum() + d.val_noise_mask.sum() == round(0.3 * N_TRAIN)
    assert d.has_val and d.has_test


def test_split_depends_on_noise_seed():
    a = load_dataset(NoiseRecipe(noise_seed=1, val_fraction=0.2))
    b = load_dataset(NoiseRecipe(noise_seed=2, val_fraction=0.2))
    assert not np.array_equal(a.val_index, b.val_index)


# --- argument validation -------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, word",
    [
        ({"noise_rate": -0.01}, "noise_rate"),
        ({"noise_rate": 0.91}, "noise_rate"),
        ({"noise_rate": 1.0}, "noise_rate"),
        ({"noise_rate": math.nan}, "noise_rate"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"val_fraction": 0.51}, "val_fraction"),
        ({"val_fraction": math.nan}, "val_fraction"),
        ({"noise_type": "asymmetric"}, "noise_type"),
        ({"noise_type": "Symmetric"}, "noise_type"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, word):
    with pytest.raises(ValueError, match=word):
        load_dataset(NoiseRecipe(**kwargs))


def test_inject_noise_rejects_unknown_noise_type():
    with pytest.raises(ValueError, match="noise_type"):
        inject_noise(np.arange(10) % 10, 0.2, "uniform", 0, NUM_CLASSES)


@pytest.mark.parametrize("noise_rate, val_fraction", [(0.0, 0.0), (0.9, 0.5)])
def test_range_endpoints_are_accepted(noise_rate, val_fraction):
    d = load_dataset(NoiseRecipe(noise_rate=noise_rate, val_fraction=val_fraction))
    assert d.noise_mask.sum() + d.val_noise_mask.sum() == round(noise_rate * N_TRAIN)
