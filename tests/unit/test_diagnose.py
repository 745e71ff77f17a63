"""``lgals diagnose``: closed-form per-sample weight gradients against one backward pass per
sample, the statistics against scipy, the JSON document, MLflow logging, and bad input.

The process-level and seconds-long tests: ``tests/system/test_diagnose.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from support.mlflow_fixtures import run_main

from lgals.diagnose import (
    GROUPS,
    LAYERS,
    DiagnoseSettings,
    check,
    correlate,
    per_sample_factors,
    weight_gradient_alignment,
)
from lgals.losses import logit_gradient_alignment
from lgals.model import layer_sizes, make_mlp


def batch(n: int = 24, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    return (torch.randn(n, 40, generator=generator),
            torch.randint(0, 10, (n,), generator=generator))


def autograd_cosines(model, x, y) -> dict[str, np.ndarray]:
    """One backward pass per sample: its gradient, flattened per layer, and each sample's
    cosine to the batch-mean gradient."""
    layers = [m for m in model if isinstance(m, torch.nn.Linear)]
    per_sample = []
    for xi, yi in zip(x, y):
        model.zero_grad()
        F.cross_entropy(model(xi[None]), yi[None]).backward()
        per_sample.append([torch.cat([layer.weight.grad.flatten(), layer.bias.grad])
                           for layer in layers])
    cosines = {}
    for index, name in enumerate(LAYERS):
        grads = torch.stack([sample[index] for sample in per_sample]).double()
        cosines[name] = F.cosine_similarity(grads, grads.mean(0, keepdim=True)).numpy()
    grads = torch.stack([torch.cat(sample) for sample in per_sample]).double()
    cosines["all"] = F.cosine_similarity(grads, grads.mean(0, keepdim=True)).numpy()
    return cosines


@pytest.mark.parametrize("seed", [0, 1])
def test_closed_form_weight_gradient_cosines_equal_one_backward_per_sample(seed):
    model = make_mlp(seed, layer_sizes(40, 10))
    x, y = batch(seed=seed)
    _, factors = per_sample_factors(model, x, y)
    closed, _ = weight_gradient_alignment(factors)
    expected = autograd_cosines(model, x, y)
    for group in GROUPS:
        np.testing.assert_allclose(closed[group].numpy(), expected[group], rtol=1e-4,
                                   atol=1e-5, err_msg=group)


def test_the_all_layer_cosine_is_the_layers_cosines_weighted():
    """cos_all = sum_l w_l cos_l, with w_l >= 0 and sum_l w_l <= 1 (Cauchy-Schwarz)."""
    x, y = batch(seed=2)
    _, factors = per_sample_factors(make_mlp(2, layer_sizes(40, 10)), x, y)
    cosines, weights = weight_gradient_alignment(factors)
    mixed = sum(weights[name] * cosines[name] for name in LAYERS)
    torch.testing.assert_close(mixed, cosines["all"], rtol=1e-4, atol=1e-6)
    total = sum(weights.values())
    assert torch.all(total <= 1 + 1e-5) and all(torch.all(w >= 0) for w in weights.values())


def test_last_layer_factors_are_the_logit_gradient_and_the_penultimate_activations():
    """layer3's per-sample gradient is g_i (a_i, 1): with one shared input the cosines of
    layer3 equal s_i exactly (every a_i is the same)."""
    model = make_mlp(3, layer_sizes(40, 10))
    x = torch.randn(1, 40).expand(16, 40)
    y = torch.arange(16) % 10
    logits, factors = per_sample_factors(model, x, y)
    torch.testing.assert_close(weight_gradient_alignment(factors)[0]["layer3"],
                               logit_gradient_alignment(logits, y), rtol=1e-5, atol=1e-6)


def test_correlations_and_their_intervals_match_scipy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=300)
    y = 0.6 * x + rng.normal(size=300)
    found = correlate(x, y, DiagnoseSettings(bootstrap=400))
    assert found["pearson"] == pytest.approx(stats.pearsonr(x, y).statistic, rel=1e-10)
    assert found["spearman"] == pytest.approx(stats.spearmanr(x, y).statistic, rel=1e-10)
    for name in ("pearson", "spearman"):
        low, high = found[f"{name}_ci"]
        assert low < found[name] < high and high - low < 0.3
    assert correlate(x, y, DiagnoseSettings(bootstrap=400)) == found  # seeded


@pytest.mark.parametrize("settings, epochs, message", [
    (DiagnoseSettings(checkpoints=(5, 3)), 10, "--checkpoints 5,3: must be increasing"),
    (DiagnoseSettings(checkpoints=(0, 3)), 10, "--checkpoints 0,3: must be increasing"),
    (DiagnoseSettings(checkpoints=(1, 20)), 10, "--checkpoints 1,20: beyond the run's 10"),
    (DiagnoseSettings(checkpoints=(1,), batches=40), 10,
     "--batches 40: 40 batches of 128 need 5120 training rows, there are 4000"),
])
def test_settings_a_run_cannot_honour_are_refused(settings, epochs, message):
    with pytest.raises(ValueError) as raised:
        check(settings, epochs, 128, 4000)
    assert str(raised.value).startswith(message)


@pytest.mark.parametrize("epochs, rows, checkpoints, batches", [
    (100, 4000, (1, 5, 20, 50, 100), 8),  # the defaults, as they are
    (30, 4000, (1, 5, 20, 30), 8),  # the last epoch always
    (3, 4000, (1, 3), 8),
    (1, 4000, (1,), 8),
    (3, 300, (1, 3), 2),  # as many batches as the rows fill
])
def test_settings_fitted_to_a_run_are_ones_it_honours(epochs, rows, checkpoints, batches):
    fitted = DiagnoseSettings().fitted(epochs, 128, rows)
    assert (fitted.checkpoints, fitted.batches) == (checkpoints, batches)
    check(fitted, epochs, 128, rows)


@pytest.mark.parametrize("argv, option", [
    (["--checkpoints", "5,3"], "--checkpoints"),
    (["--checkpoints", "1,200"], "--checkpoints"),
    (["--checkpoints", "one"], "--checkpoints"),
    (["--batches", "0"], "--batches"),
    (["--batches", "40"], "--batches"),
    (["--mode", "mixup"], "--mode"),
    (["--gce-q", "2"], "--gce-q"),
    (["--run", "0" * 32, "--checkpoints", "1"], "--checkpoints"),
])
def test_bad_input_is_one_line_and_creates_nothing(tmp_path, argv, option):
    result = run_main(["diagnose", *argv], tmp_path)
    assert result.code == 2, result
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and option in lines[0] and "Traceback" not in result.err
    assert list(tmp_path.iterdir()) == []


def test_json_document(tmp_path, _cache_dir):
    result = run_main(["diagnose", "--no-tracking", "--json", "--epochs", "3",
                       "--checkpoints", "1,3", "--batches", "2"], tmp_path)
    assert result.code == 0, result
    document = json.loads(result.out)
    assert document["mode"] == "lgals" and document["note_correlation"] == 0.75
    assert [c["epoch"] for c in document["checkpoints"]] == [1, 3]
    for checkpoint in document["checkpoints"]:
        assert set(checkpoint["correlation"]) == {"all", "layer1", "layer2", "layer3"}
        for values in checkpoint["correlation"].values():
            assert set(values) == {"pearson", "pearson_ci", "spearman", "spearman_ci",
                                   "confound_spearman"}
            assert values["pearson_ci"][0] <= values["pearson"] <= values["pearson_ci"][1]
        assert set(checkpoint["detection_auroc"]) == {"alignment", "weight_alignment", "loss"}
        assert all(0 <= a <= 1 for a in checkpoint["detection_auroc"].values())
    assert list(tmp_path.iterdir()) == []


def test_cli_defaults_are_the_settings():
    from lgals.cli import cli

    options = {p.name: p.default for p in cli.commands["diagnose"].params}
    defaults = DiagnoseSettings()
    assert tuple(map(int, options["checkpoints"].split(","))) == defaults.checkpoints
    assert options["batches"] == defaults.batches
