"""The training engine: stacked == alone, determinism, metrics, callbacks, divergence."""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lgals.data import NoiseRecipe, load_dataset
from lgals.losses import (
    BUILTIN_MODES,
    EVERY_MODE,
    HYPERPARAMETERS,
    MODES,
    SUITES,
    alignment_to_epsilon,
)
from lgals.model import Compute, bf16_supported
from lgals.train import TrainConfig, train
from unit.test_model import flat

EPOCHS = 3
BUILTIN_HYPERPARAMETERS = {*EVERY_MODE, *(n for m in BUILTIN_MODES.values() for n in m.params)}
SEEDS = [0, 1, 2]
CONFIGS = {
    "baseline": TrainConfig.of("baseline", epochs=EPOCHS),
    "fixed_ls": TrainConfig.of("fixed_ls", epochs=EPOCHS, eps=0.1),
    "lgals": TrainConfig.of("lgals", epochs=EPOCHS, eps_max=0.3, gamma=1.0),
}
TRAIN_KEYS = {"train_loss", "train_acc", "train_true_acc", "eps_mean", "eps_clean_mean",
              "align_clean_mean", "epoch_seconds"}
NOISE_KEYS = {"memorized_frac", "eps_noisy_mean", "align_noisy_mean", "noise_auroc",
              "noise_auroc_loss", "noise_auroc_confidence", "noise_auroc_el2n",
              "noise_auroc_aum"}
TEST_KEYS = {"test_loss", "test_acc"}
VAL_KEYS = {"val_loss", "val_acc"}
ACCURACY_KEYS = ("train_acc", "train_true_acc", "memorized_frac", "test_acc", "noise_auroc",
                 "noise_auroc_loss", "noise_auroc_confidence", "noise_auroc_el2n",
                 "noise_auroc_aum")


class Recorder:
    """A callback keeping a copy of every epoch report."""

    def __init__(self, stop: dict[int, list[int]] | None = None):
        self.reports = []
        self.stop = stop or {}

    def __call__(self, report):
        report.eps = report.eps.copy()
        report.alignment = report.alignment.copy()
        self.reports.append(report)
        return self.stop.get(report.epoch)


def assert_histories_close(a: dict, b: dict, rtol=1e-5, atol=1e-5) -> None:
    assert set(a) == set(b)
    for key in a:
        if key == "epoch_seconds":
            continue
        assert len(a[key]) == len(b[key]), key
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


def assert_params_close(a, b, lr: float) -> None:
    """Same weights up to float noise that Adam may amplify.

    Batched and unbatched matmuls round differently; where a gradient is ~0, Adam's update
    m / sqrt(v) turns that rounding into a step of up to ~lr. So: nearly all parameters agree
    to 1e-5, and none differs by more than a few steps of size lr.
    """
    diff = (flat(a) - flat(b)).abs()
    assert diff.max().item() <= 10 * lr, diff.max().item()
    assert (diff > 1e-5).float().mean().item() < 0.01


def brute_force_auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    pos, neg = scores[positives].astype(np.float64), scores[~positives].astype(np.float64)
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)


@pytest.fixture(scope="module")
def runs(dataset):
    """Per mode, trained lazily once: SEEDS as one stack (with reports) and each seed alone."""

    @functools.cache
    def get(mode: str):
        recorder = Recorder()
        stacked = train(dataset, CONFIGS[mode], SEEDS, callback=recorder)
        alone = [train(dataset, CONFIGS[mode], [seed])[0] for seed in SEEDS]
        return stacked, recorder.reports, alone

    return get


# --- stacked members are independent ------------------------------------------------------


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_stacked_seeds_equal_each_seed_alone(runs, mode):
    stacked, _, alone = runs(mode)
    for together, single, seed in zip(stacked, alone, SEEDS):
        assert together.seed == single.seed == seed
        assert together.status == single.status == "completed"
        assert_histories_close(together.history, single.history)
        assert_params_close(together.model, single.model, CONFIGS[mode].lr)


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_members_with_different_seeds_differ(runs, mode):
    stacked, _, _ = runs(mode)
    assert len({tuple(r.history["train_loss"]) for r in stacked}) == len(SEEDS)
    assert len({tuple(r.history["test_loss"]) for r in stacked}) == len(SEEDS)
    assert not torch.allclose(flat(stacked[0].model), flat(stacked[1].model))


def test_training_is_deterministic_and_leaves_global_rng_alone(dataset):
    config = TrainConfig.of("lgals", epochs=2, eps_max=0.4, gamma=2.0)
    torch.manual_seed(2024)
    expected_draw = torch.rand(4)
    torch.manual_seed(2024)
    first = train(dataset, config, [5, 6])
    second = train(dataset, config, [5, 6])
    assert torch.equal(torch.rand(4), expected_draw)
    for a, b in zip(first, second):
        assert a.history.keys() == b.history.keys()
        for key in a.history:
            if key != "epoch_seconds":
                assert a.history[key] == b.history[key], key
        assert torch.equal(flat(a.model), flat(b.model))
    assert first[0].history["train_loss"] != first[1].history["train_loss"]


@pytest.mark.parametrize(
    "configs",
    [
        [TrainConfig.of("lgals", epochs=2, lr=1e-3, weight_decay=1e-2, eps_max=0.3, gamma=1.0),
         TrainConfig.of("lgals", epochs=2, lr=3e-3, weight_decay=0.0, eps_max=0.6, gamma=2.0)],
        [TrainConfig.of("fixed_ls", epochs=2, eps=0.05),
         TrainConfig.of("fixed_ls", epochs=2, eps=0.3)],
    ],
    ids=["lgals-lr-wd-eps_max-gamma", "fixed_ls-eps"],
)
def test_per_member_hyperparameters_equal_training_alone(dataset, configs):
    stacked = train(dataset, configs, [3, 4])
    for result, config, seed in zip(stacked, configs, [3, 4]):
        assert result.config == config
        single = train(dataset, config, [seed])[0]
        assert_histories_close(result.history, single.history)
        assert_params_close(result.model, single.model, config.lr)
    # the members really were trained differently
    assert stacked[0].history["eps_mean"] != stacked[1].history["eps_mean"]


# --- histories ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_history_keys_lengths_and_final_test_acc(runs, mode):
    stacked, _, _ = runs(mode)
    for result in stacked:
        assert result.status == "completed" and result.reason == ""
        assert set(result.history) == TRAIN_KEYS | NOISE_KEYS | TEST_KEYS
        assert all(len(values) == EPOCHS for values in result.history.values())
        assert all(math.isfinite(v) for values in result.history.values() for v in values)
        assert result.final_test_acc == result.history["test_acc"][-1]
        assert result.config == CONFIGS[mode]


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_metric_ranges_and_epsilon_by_mode(runs, mode):
    stacked, _, _ = runs(mode)
    config = CONFIGS[mode]
    for result in stacked:
        h = result.history
        for key in ACCURACY_KEYS:
            assert all(0.0 <= v <= 1.0 for v in h[key]), key
        assert all(-1.0 <= v <= 1.0 for key in ("align_clean_mean", "align_noisy_mean")
                   for v in h[key])
        assert all(v > 0 for v in h["train_loss"] + h["test_loss"])
        eps_keys = ("eps_mean", "eps_clean_mean", "eps_noisy_mean")
        if mode == "baseline":
            assert all(v == 0.0 for key in eps_keys for v in h[key])
        elif mode == "fixed_ls":
            for key in eps_keys:
                assert h[key] == pytest.approx([config.hyperparameters["eps"]] * EPOCHS, rel=1e-6)
        else:
            eps_max = config.hyperparameters["eps_max"]
            assert all(0.0 <= v <= eps_max for key in eps_keys for v in h[key])
            assert all(0.0 < v < eps_max for v in h["eps_mean"])
        # three epochs of AdamW at lr 1e-3 learn something
        assert h["test_acc"][-1] > 0.2 and h["train_loss"][-1] < h["train_loss"][0]


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_training_metrics_agree_with_per_sample_report(runs, dataset, mode):
    """eps/alignment/AUROC summaries recomputed from the callback's per-sample arrays."""
    stacked, reports, _ = runs(mode)
    config = CONFIGS[mode]
    mask = dataset.noise_mask
    assert [r.epoch for r in reports] == list(range(1, EPOCHS + 1))
    for report in reports:
        assert report.members == [0, 1, 2] and report.diverged == {}
        assert report.eps.shape == report.alignment.shape == (len(SEEDS), len(mask))
        np.testing.assert_array_equal(report.noise_mask, mask)
        for member, result in enumerate(stacked):
            h, e = result.history, report.epoch - 1
            assert report.metrics[member] == {key: values[e] for key, values in h.items()}
            eps, align = report.eps[member], report.alignment[member]
            assert h["eps_mean"][e] == pytest.approx(eps.mean(dtype=np.float64), rel=1e-5)
            assert h["eps_clean_mean"][e] == pytest.approx(eps[~mask].mean(dtype=np.float64),
                                                           rel=1e-5, abs=1e-7)
            assert h["eps_noisy_mean"][e] == pytest.approx(eps[mask].mean(dtype=np.float64),
                                                           rel=1e-5, abs=1e-7)
            assert h["align_clean_mean"][e] == pytest.approx(
                align[~mask].mean(dtype=np.float64), rel=1e-4, abs=1e-6)
            assert h["align_noisy_mean"][e] == pytest.approx(
                align[mask].mean(dtype=np.float64), rel=1e-4, abs=1e-6)
            assert h["noise_auroc"][e] == pytest.approx(brute_force_auroc(1 - align, mask),
                                                        abs=1e-9)
            assert np.all(np.abs(align) <= 1)
            if mode == "baseline":
                assert np.all(eps == 0)
            elif mode == "fixed_ls":
                np.testing.assert_array_equal(eps, np.float32(config.hyperparameters["eps"]))
            else:
                expected = alignment_to_epsilon(torch.from_numpy(align),
                                                **config.hyperparameters)
                np.testing.assert_allclose(eps, expected.numpy(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("mode", list(CONFIGS))
def test_test_metrics_match_the_returned_model(runs, dataset, mode):
    stacked, _, _ = runs(mode)
    x, y = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    for result in stacked:
        with torch.no_grad():
            logits = result.model(x)
        correct = int((logits.argmax(-1) == y).sum())
        assert result.history["test_acc"][-1] == correct / len(y)
        assert result.history["test_loss"][-1] == pytest.approx(
            F.cross_entropy(logits, y).item(), rel=1e-5)


def test_validation_split_adds_val_metrics(dataset):
    data = load_dataset(NoiseRecipe(noise_rate=0.2, val_fraction=0.2))
    recorder = Recorder()
    [result] = train(data, TrainConfig.of("fixed_ls", epochs=2), [0], callback=recorder)
    assert set(result.history) == TRAIN_KEYS | NOISE_KEYS | TEST_KEYS | VAL_KEYS
    assert all(len(values) == 2 for values in result.history.values())
    assert recorder.reports[0].eps.shape == (1, len(data.y_train))
    x, y = torch.from_numpy(data.x_val), torch.from_numpy(data.y_val)  # noisy, as a user's
    with torch.no_grad():
        logits = result.model(x)
    assert result.history["val_acc"][-1] == int((logits.argmax(-1) == y).sum()) / len(y)
    assert result.history["val_loss"][-1] == pytest.approx(F.cross_entropy(logits, y).item(),
                                                           rel=1e-5)
    assert result.final_test_acc == result.history["test_acc"][-1]
    # without a split there are no val metrics at all
    [plain] = train(dataset, TrainConfig.of("fixed_ls", epochs=1), [0])
    assert not VAL_KEYS & set(plain.history)


def test_clean_labels_have_no_noise_metrics():
    data = load_dataset(NoiseRecipe(noise_rate=0.0))
    [result] = train(data, TrainConfig.of("lgals", epochs=1), [0])
    assert set(result.history) == TRAIN_KEYS | TEST_KEYS
    # with clean labels, fitting the observed labels is fitting the true ones
    assert result.history["train_acc"] == result.history["train_true_acc"]


# --- callbacks: stopping ------------------------------------------------------------------


@pytest.fixture(scope="module")
def stopped_run(dataset):
    recorder = Recorder(stop={1: [1]})
    results = train(dataset, CONFIGS["lgals"], [0, 1], callback=recorder)
    return results, recorder.reports


def test_callback_stops_a_member(stopped_run, runs):
    (kept, stopped), reports = stopped_run
    _, _, alone = runs("lgals")
    assert stopped.status == "stopped" and "epoch 1" in stopped.reason
    assert stopped.final_test_acc is None
    assert all(len(values) == 1 for values in stopped.history.values())
    assert kept.status == "completed"
    assert all(len(values) == EPOCHS for values in kept.history.values())
    assert [r.members for r in reports] == [[0, 1], [0], [0]]  # stopped after its report
    # stopping one member does not change the other, nor the stopped one's first epoch
    assert_histories_close(kept.history, alone[0].history)
    first_epoch = {key: values[:1] for key, values in alone[1].history.items()}
    assert_histories_close(stopped.history, first_epoch)


def test_stopped_member_model_is_the_model_at_the_stop(stopped_run, dataset):
    """The returned model must be the one the history describes: one epoch of training.

    (A member stopped by the callback must not keep training inside the stack.)
    """
    (_, stopped), _ = stopped_run
    one_epoch = train(dataset, TrainConfig.of("lgals", epochs=1), [1])[0]
    x, y = torch.from_numpy(dataset.x_test), torch.from_numpy(dataset.y_test)
    with torch.no_grad():
        acc = (stopped.model(x).argmax(-1) == y).double().mean().item()
    assert acc == pytest.approx(stopped.history["test_acc"][-1], abs=1e-9)
    assert_params_close(stopped.model, one_epoch.model, CONFIGS["lgals"].lr)


# --- divergence ---------------------------------------------------------------------------


def test_diverging_member_is_reported_and_the_other_member_completes(dataset, runs):
    configs = [CONFIGS["lgals"],
               TrainConfig.of("lgals", epochs=EPOCHS, lr=1e30, weight_decay=0.0)]
    recorder = Recorder()
    healthy, diverged = train(dataset, configs, [0, 1], callback=recorder)

    assert diverged.status == "diverged"
    assert diverged.reason == "non-finite training loss at epoch 1"
    assert diverged.final_test_acc is None
    assert all(len(values) == 0 for values in diverged.history.values())
    assert recorder.reports[0].diverged == {1: diverged.reason}
    assert [r.members for r in recorder.reports] == [[0]] * EPOCHS

    _, _, alone = runs("lgals")
    assert healthy.status == "completed"
    assert healthy.final_test_acc == healthy.history["test_acc"][-1]
    assert_histories_close(healthy.history, alone[0].history)
    assert all(math.isfinite(v) for values in healthy.history.values() for v in values)


# --- mixed stacks and compaction -----------------------------------------------------------

MIXED = [
    TrainConfig.of("baseline", epochs=EPOCHS, lr=2e-3, weight_decay=1e-3),
    TrainConfig.of("lgals", epochs=EPOCHS, lr=1e-3, eps_max=0.5, gamma=0.5),
    TrainConfig.of("fixed_ls", epochs=EPOCHS, lr=3e-3, weight_decay=0.05, eps=0.2),
    TrainConfig.of("lgals", epochs=EPOCHS, lr=5e-4, weight_decay=0.0, eps_max=0.2, gamma=2.0),
    TrainConfig.of("baseline", epochs=EPOCHS, lr=1e-3),
]
MIXED_SEEDS = [0, 1, 2, 3, 4]


@pytest.fixture(scope="module")
def mixed(dataset):
    recorder = Recorder()
    return train(dataset, MIXED, MIXED_SEEDS, callback=recorder), recorder.reports


def test_mixed_stack_members_equal_each_member_alone(mixed, dataset):
    """Members differing in mode, lr, weight decay and smoothing share one computation."""
    results, reports = mixed
    for result, config, seed in zip(results, MIXED, MIXED_SEEDS):
        alone = train(dataset, config, [seed])[0]
        assert result.config == config and result.status == "completed"
        assert_histories_close(result.history, alone.history)
        assert_params_close(result.model, alone.model, config.lr)
    # each member's epsilon is its own mode's: 0, a constant eps, or LGALS's from s_i
    last = reports[-1]
    np.testing.assert_array_equal(last.eps[0], 0.0)
    np.testing.assert_allclose(last.eps[2], 0.2, rtol=1e-6)
    expected = alignment_to_epsilon(torch.from_numpy(last.alignment[1]), 0.5, 0.5).numpy()
    np.testing.assert_allclose(last.eps[1], expected, rtol=1e-5, atol=1e-6)


EVERY_MODE = [TrainConfig.of(mode, epochs=2) for mode in MODES]
STOPPED = [list(MODES).index("baseline"), list(MODES).index("gce")]


def test_every_mode_in_one_stack_equals_each_alone_through_compaction(dataset):
    """All twelve modes, each with its own seed, as one stack; two members leave after epoch
    1. Every member, ELR's running targets and the shuffle's draws included, trains exactly as
    it does alone."""
    recorder = Recorder(stop={1: STOPPED})
    seeds = list(range(len(EVERY_MODE)))
    results = train(dataset, EVERY_MODE, seeds, callback=recorder)
    assert [r.rows for r in recorder.reports][1] == [m for m in seeds if m not in STOPPED]
    for member, (result, config) in enumerate(zip(results, EVERY_MODE)):
        alone = train(dataset, config, [member])[0]
        if member in STOPPED:
            assert result.status == "stopped"
            alone.history = {k: v[:1] for k, v in alone.history.items()}
        else:
            assert result.status == "completed"
            assert_params_close(result.model, alone.model, config.lr)
        assert_histories_close(result.history, alone.history)
        assert {f"noise_auroc_{s}" for s in ("loss", "confidence", "el2n", "aum")} <= set(
            result.history)


def test_detection_aurocs_are_those_of_the_models_own_scores(dataset):
    """At lr 1e-12 the model does not move in its one epoch: each per-sample score is the
    returned model's, and each AUROC is the brute-force one of that score."""
    config = TrainConfig.of("fixed_ls", epochs=1, lr=1e-12, weight_decay=0.0, eps=0.2)
    (result,) = train(dataset, config, [0])
    with torch.no_grad():
        logits = result.model(torch.from_numpy(dataset.x_train)).double()
    y = torch.from_numpy(dataset.y_train)
    log_p = torch.log_softmax(logits, -1)
    p_y = log_p.exp().gather(-1, y[:, None])[:, 0]
    onehot = F.one_hot(y, 10).double()
    others = logits.masked_fill(onehot.bool(), -torch.inf).max(-1).values
    scores = {
        "loss": 0.8 * -torch.log(p_y) + 0.2 * -log_p.mean(-1),
        "confidence": 1 - p_y,
        "el2n": (log_p.exp() - onehot).norm(dim=-1),
        "aum": -(logits.gather(-1, y[:, None])[:, 0] - others),
    }
    mask = dataset.noise_mask
    for name, score in scores.items():
        assert result.history[f"noise_auroc_{name}"][0] == pytest.approx(
            brute_force_auroc(score.numpy(), mask), abs=1e-3), name
    assert result.history["train_loss"][0] == pytest.approx(scores["loss"].mean().item(),
                                                            rel=1e-5)


@pytest.fixture(scope="module")
def compacted(dataset):
    """The mixed stack again, with members 1 and 3 stopped after epoch 1."""
    recorder = Recorder(stop={1: [1, 3]})
    return train(dataset, MIXED, MIXED_SEEDS, callback=recorder), recorder.reports


def test_a_stopped_member_leaves_the_stack(compacted, mixed):
    results, reports = compacted
    assert [r.rows for r in reports] == [[0, 1, 2, 3, 4], [0, 2, 4], [0, 2, 4]]
    assert [r.eps.shape[0] for r in reports] == [5, 3, 3]  # the stack shrank
    full, _ = mixed
    for member in (0, 2, 4):  # the others go on exactly as if no one had left
        assert results[member].status == "completed"
        assert results[member].history == {**full[member].history, "epoch_seconds":
                                           results[member].history["epoch_seconds"]}
        torch.testing.assert_close(flat(results[member].model), flat(full[member].model),
                                   rtol=0, atol=0)
    for member in (1, 3):
        assert results[member].status == "stopped"
        first_epoch = {k: v[:1] for k, v in full[member].history.items()}
        assert_histories_close(results[member].history, first_epoch)


def test_every_member_stopping_ends_training(dataset):
    recorder = Recorder(stop={1: [0, 1]})
    results = train(dataset, MIXED[:2], MIXED_SEEDS[:2], callback=recorder)
    assert len(recorder.reports) == 1
    assert [r.status for r in results] == ["stopped", "stopped"]
    assert all(r.model is not None for r in results)


# --- device ---------------------------------------------------------------------------------


def test_device_names_resolve():
    assert Compute.of("cpu").device == "cpu"
    assert Compute.of("auto").device == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="allowed: auto, cpu, cuda"):
        Compute.of("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_cuda_is_refused():
    with pytest.raises(ValueError, match="CUDA is not available"):
        Compute.of("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="needs CUDA; these machines have no GPU (the benchmarks print theirs)")
def test_cuda_stack_matches_cpu_and_returns_cpu_models(dataset):
    on_gpu = train(dataset, MIXED, MIXED_SEEDS, compute=Compute("cuda"))
    on_cpu = train(dataset, MIXED, MIXED_SEEDS)
    for gpu, cpu, config in zip(on_gpu, on_cpu, MIXED):
        assert all(p.device.type == "cpu" for p in gpu.model.parameters())
        assert_histories_close(gpu.history, cpu.history, rtol=1e-3, atol=1e-3)
        assert_params_close(gpu.model, cpu.model, config.lr)


# bfloat16 keeps 8 significant bits (a unit in the last place is 2**-8 of a value). A member
# trained in a stack runs the same bf16 products as alone, so it rounds them the same way up
# to the order a kernel accumulates in (bit for bit here, with oneDNN); the tolerance leaves
# room for one unit of difference in a product, which training can carry to about 1e-2 in a
# loss and to a few of the 1000 test samples in an accuracy.
BF16_RTOL, BF16_ACC_ATOL = 1e-2, 5e-3


@pytest.mark.skipif(not bf16_supported("cpu"), reason="this CPU has no bfloat16 matrix units")
def test_bf16_stacked_members_equal_each_member_alone_through_compaction(dataset):
    """Mixed modes and hyperparameters in bf16, two members leaving after epoch 1: each
    trains as it does alone in bf16, and not as in float32 (the products are rounded)."""
    bf16 = Compute(precision="bf16")
    recorder = Recorder(stop={1: [0, 2]})
    results = train(dataset, MIXED, MIXED_SEEDS, callback=recorder, compute=bf16)
    fp32 = train(dataset, MIXED, MIXED_SEEDS, callback=Recorder(stop={1: [0, 2]}))
    moved = 0.0
    for member, (result, config, seed) in enumerate(zip(results, MIXED, MIXED_SEEDS)):
        alone = train(dataset, config, [seed], compute=bf16)[0]
        if member in (0, 2):
            alone.history = {k: v[:1] for k, v in alone.history.items()}
        for key, values in result.history.items():
            tolerance = {"atol": BF16_ACC_ATOL} if key.endswith("_acc") else {"rtol": BF16_RTOL}
            if key != "epoch_seconds":
                np.testing.assert_allclose(values, alone.history[key], err_msg=key, **tolerance)
        moved = max(moved, abs(result.history["train_loss"][-1]
                               - fp32[member].history["train_loss"][-1]))
        assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert moved > 1e-6  # bf16 really ran: float32 rounds otherwise


# --- configuration ------------------------------------------------------------------------


def test_mode_params_lists_what_each_mode_reads():
    common = {"mode", "epochs", "batch_size", "lr", "weight_decay"}
    assert set(TrainConfig.of("baseline").mode_params()) == common
    assert TrainConfig.of("fixed_ls", eps=0.2).mode_params()["eps"] == 0.2
    assert set(TrainConfig.of("fixed_ls").mode_params()) == common | {"eps"}
    assert set(TrainConfig.of("lgals").mode_params()) == common | {"eps_max", "gamma"}
    assert set(CONFIGS) == set(SUITES["paper"])
    assert set(TrainConfig.of("elr").mode_params()) == common | {"elr_beta", "elr_lambda"}


@pytest.mark.parametrize(
    "configs, seeds",
    [
        ([TrainConfig(epochs=2), TrainConfig(epochs=3)], [0, 1]),
        ([TrainConfig(batch_size=64), TrainConfig(batch_size=128)], [0, 1]),
        ([TrainConfig(), TrainConfig()], [0]),
        ([], []),
        (TrainConfig(), []),
    ],
)
def test_invalid_member_configurations_raise(dataset, configs, seeds):
    with pytest.raises(ValueError):
        train(dataset, configs, seeds)


@pytest.mark.parametrize("mode, values, message", [
    ("baseline", {"lr": 0.0}, "lr must be in (0, inf), got 0.0"),
    ("baseline", {"weight_decay": -1e-9}, "weight_decay must be in [0, inf)"),
    ("fixed_ls", {"eps": 1.0}, "eps must be in [0, 1), got 1.0"),
    ("lgals", {"eps_max": 1.01}, "eps_max must be in [0, 1], got 1.01"),
    ("lgals", {"gamma": math.inf}, "gamma must be in [0, inf), got inf"),
    ("baseline", {"lr": math.nan}, "lr must be in (0, inf), got nan"),
    ("baseline", {"batch_size": 1}, "batch_size must be at least 2"),
    ("baseline", {"epochs": 0}, "epochs must be from 1 to 10000, got 0"),
        ("baseline", {"epochs": 10_001}, "epochs must be from 1 to 10000, got 10001"),
    ("label_smoothing", {}, "mode must be one of baseline, fixed_ls, lgals, "),
    ("nls", {"nls_eps": 0.0}, "nls_eps must be in [-1, 0), got 0.0"),
    ("gce", {"gce_q": 0.0}, "gce_q must be in (0, 1], got 0.0"),
    ("bootstrap", {"bootstrap_beta": 0.4}, "bootstrap_beta must be in [0.5, 1], got 0.4"),
    ("elr", {"elr_beta": 1.0}, "elr_beta must be in [0, 1), got 1.0"),
    ("baseline", {"eps": 0.1}, "mode baseline has no hyperparameter eps (it reads: lr, "),
])
def test_a_config_is_held_to_the_command_lines_rules(mode, values, message):
    """Configs from files and from MLflow meet the same rules as the CLI's options."""
    with pytest.raises(ValueError) as raised:
        TrainConfig.of(mode, **values)
    assert str(raised.value).startswith(message)


def test_the_edges_of_every_range_are_what_the_cli_accepts():
    TrainConfig.of("baseline", weight_decay=0.0, batch_size=2, epochs=1)
    for mode, values in {"fixed_ls": {"eps": 0.0}, "lgals": {"eps_max": 1.0, "gamma": 0.0},
                         "nls": {"nls_eps": -1.0}, "gce": {"gce_q": 1.0},
                         "sce": {"sce_alpha": 0.0, "sce_beta": 0.0},
                         "bootstrap": {"bootstrap_beta": 0.5},
                         "elr": {"elr_beta": 0.0, "elr_lambda": 0.0}}.items():
        assert TrainConfig.of(mode, **values).hyperparameters == values
    TrainConfig.of("bootstrap", bootstrap_beta=1.0)
    assert {name: h.describe() for name, h in HYPERPARAMETERS.items()
            if name in BUILTIN_HYPERPARAMETERS} == {
        "lr": "(0, inf)", "weight_decay": "[0, inf)", "eps": "[0, 1)", "eps_max": "[0, 1]",
        "gamma": "[0, inf)", "nls_eps": "[-1, 0)", "gce_q": "(0, 1]", "sce_alpha": "[0, inf)",
        "sce_beta": "[0, inf)", "bootstrap_beta": "[0.5, 1]", "elr_beta": "[0, 1)",
        "elr_lambda": "[0, inf)"}
