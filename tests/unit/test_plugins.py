"""Modes from other packages: the registry that built-ins and plugins fill the same way, the
autograd path a plugin trains by, the checks every mode is held to, and provenance."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import lgals_apl
import pytest
import torch
from mlflow import MlflowClient
from support.mlflow_fixtures import all_runs, run_main
from support.plugins import BROKEN, install_examples, write_distribution

from lgals import checks
from lgals.losses import BUILTIN_MODES, MODES, Hyperparameter, Mode, Step, _validate
from lgals.registry import load
from lgals.schema import MODE, PLUGIN, PLUGIN_MODULE, PLUGIN_SHA256, PLUGIN_VERSION
from lgals.train import TrainConfig, train


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """The two examples pip-installed, and one distribution per rule a plugin can break."""
    site = tmp_path_factory.mktemp("site")
    install_examples(site)
    for distribution, (source, _) in BROKEN.items():
        write_distribution(site, distribution, source)
    return site


@pytest.fixture
def registry(site, monkeypatch):
    monkeypatch.syspath_prepend(str(site))
    return load("lgals.modes", Mode, _validate)


def test_the_built_in_modes_come_through_the_registry_first():
    assert list(MODES)[:len(BUILTIN_MODES)] == list(BUILTIN_MODES)
    for name, mode in BUILTIN_MODES.items():
        assert MODES[name] is mode
        assert MODES.origins[name].builtin and MODES.origins[name].module == "lgals.losses"


def test_each_broken_plugin_is_one_line_naming_it_and_the_others_still_load(registry):
    assert registry.entries["nce_rce"] is not None and "wrong_poly1" in registry.entries
    assert list(registry.entries)[:len(BUILTIN_MODES)] == list(BUILTIN_MODES)
    for name in ("bad_default", "own_lr", "redeclared", "my_paper"):
        assert name not in registry.entries
    assert registry.entries["lgals"] is BUILTIN_MODES["lgals"]  # the clash did not replace it
    assert len(registry.problems) == len(BROKEN)
    for distribution, (_, said) in BROKEN.items():
        (line,) = [p for p in registry.problems if f"from {distribution} 1.0" in p]
        assert said in line and "\n" not in line, line


def test_a_plugins_origin_names_its_distribution_version_and_file(registry, site):
    origin = registry.origins["nce_rce"]
    source = site / "lgals_apl" / "__init__.py"
    assert (origin.distribution, origin.version, origin.module) == ("lgals-apl", "0.1.0",
                                                                    "lgals_apl")
    assert origin.file_sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert not origin.builtin


@pytest.mark.parametrize("mode", list(MODES))
def test_every_registered_mode_passes_check_mode(mode):
    failed = [c.line() for c in checks.check_mode(mode) if not c.passed]
    assert not failed


def test_check_mode_catches_a_closed_form_that_is_not_the_losss_gradient(registry):
    results = {c.name: c for c in checks.check_mode(registry.entries["wrong_poly1"])}
    wrong = results["closed form == autograd (float64)"]
    assert not wrong.passed and "disagree on the gradient" in wrong.detail
    assert all(c.passed for name, c in results.items() if c is not wrong)
    with pytest.raises(AssertionError, match="FAIL closed form == autograd"):
        checks.assert_mode_passes(registry.entries["wrong_poly1"])


def test_check_mode_catches_non_finite_losses_batch_dependence_and_wrong_shapes():
    def log_p_y(logits, labels):
        return torch.log(torch.softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1))

    unstable = Mode(lambda z, y: -log_p_y(z, y))  # log of a softmax that underflows to 0
    assert not checks.check_finite(unstable).passed
    centred = Mode(lambda z, y: -log_p_y(z - z.mean(-2, keepdim=True), y))  # reads the batch
    found = checks.check_per_sample(centred)
    assert not found.passed and "batch_level=True" in found.detail
    assert checks.check_per_sample(dataclasses.replace(centred, batch_level=True)).passed
    mean_loss = Mode(lambda z, y: -log_p_y(z, y).mean(-1))
    assert "one value per sample" in checks.check_per_sample(mean_loss).detail
    assert not checks.check_per_sample(mean_loss).passed


@pytest.mark.parametrize("mode", list(BUILTIN_MODES))
def test_the_autograd_path_gives_each_built_ins_closed_form(mode):
    """What a plugin without a closed form gets is what the built-ins compute by hand."""
    closed = BUILTIN_MODES[mode]
    autograd = dataclasses.replace(closed, closed_form=None)
    hp = checks._members(closed, torch.float64)
    for seed, scale in checks.SEEDS_AND_SCALES:
        step = checks.random_step(closed, seed, scale)
        expected, got = closed.apply(step, hp), autograd.apply(step, hp)
        torch.testing.assert_close(got.values, expected.values, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got.grad, expected.grad, rtol=1e-9, atol=1e-11)
        if closed.state:
            torch.testing.assert_close(got.targets, expected.targets)


def test_a_plugin_mode_trains_stacked_as_it_trains_alone(dataset):
    """The autograd path, vectorised over members: two seeds with different hyperparameters
    together are each of them alone (float32 rounding of batched matmuls aside)."""
    configs = [TrainConfig.of("nce_rce", epochs=2, apl_alpha=1.0, apl_beta=1.0),
               TrainConfig.of("nce_rce", epochs=2, apl_alpha=0.3, apl_beta=4.0, lr=3e-3)]
    together = train(dataset, configs, [0, 1])
    for member, (config, seed) in enumerate(zip(configs, [0, 1])):
        (alone,) = train(dataset, config, [seed])
        for key in ("train_loss", "test_acc", "test_loss"):
            assert together[member].history[key] == pytest.approx(alone.history[key],
                                                                  rel=1e-4, abs=1e-4), key
    assert together[0].history["test_acc"] != together[1].history["test_acc"]


def test_a_plugin_losss_wrong_shape_is_named_when_it_trains():
    mean_loss = Mode(lambda z, y: torch.log_softmax(z, -1).mean((-2, -1)), label="MeanLoss")
    step = Step.of(torch.zeros(2, 4, 3), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"MeanLoss's loss must return per-sample values of "
                                         r"shape \(2, 4\), got torch.Size\(\[2\]\)"):
        mean_loss.apply(step, {})


def test_a_run_trained_with_a_plugin_mode_names_its_code(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_main(["train", "--mode", "nce_rce", "--epochs", "1", "--seeds", "1",
                       "--apl-beta", "2.5", "--tracking-uri", uri], tmp_path)
    assert result.code == 0, result.err
    (run,) = all_runs(MlflowClient(uri))
    source = Path(lgals_apl.__file__)
    assert run.data.tags[MODE] == "nce_rce"
    assert (run.data.tags[PLUGIN], run.data.tags[PLUGIN_VERSION],
            run.data.tags[PLUGIN_MODULE]) == ("lgals-apl", "0.1.0", "lgals_apl")
    assert run.data.tags[PLUGIN_SHA256] == hashlib.sha256(source.read_bytes()).hexdigest()
    assert run.data.params["apl_beta"] == "2.5" and run.data.params["apl_alpha"] == "1.0"


def test_a_built_in_run_carries_no_plugin_tags(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    result = run_main(["train", "--mode", "lgals", "--epochs", "1", "--seeds", "1",
                       "--tracking-uri", uri], tmp_path)
    assert result.code == 0, result.err
    (run,) = all_runs(MlflowClient(uri))
    assert not {PLUGIN, PLUGIN_VERSION, PLUGIN_MODULE, PLUGIN_SHA256} & set(run.data.tags)


def test_a_plugins_signal_and_state_reach_the_engine(dataset, monkeypatch):
    """``signal`` is logged where LGALS logs its ε; ``state`` comes back per sample, as ELR's
    targets do: a mode whose state counts how often each sample was seen."""
    def counted(logits, labels, state, lr_scale):
        """The loss is how often each sample was seen before (no gradient to speak of)."""
        ce = torch.nn.functional.cross_entropy(logits.transpose(-1, -2), labels,
                                               reduction="none")
        return 0.0 * lr_scale * ce + state[..., 0], state + 1.0

    mode = Mode(counted, {"lr_scale": Hyperparameter(1.0, 0.0, search=(0.5, 2.0))},
                "Counted", state=True,
                signal=lambda logits, labels, lr_scale: torch.full(labels.shape, 0.25))
    monkeypatch.setitem(MODES.loaded.entries, "counted", mode)
    seen = []

    def callback(report):
        seen.append(report.eps.copy())

    (result,) = train(dataset, TrainConfig.of("counted", epochs=2), [0], callback=callback)
    assert result.history["eps_mean"] == pytest.approx([0.25, 0.25])
    assert result.history["train_loss"] == [0.0, 1.0]
    assert all((eps == 0.25).all() for eps in seen)
