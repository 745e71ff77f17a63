"""Every mode's loss: closed-form gradients against autograd, values against hand-computed
ones, the ablations' and peers' defining properties, and the suites."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from lgals.losses import (
    BUILTIN_MODES,
    ELR_CLAMP,
    HYPERPARAMETERS,
    MODES,
    SUITES,
    Step,
    alignment_to_epsilon,
    logit_gradient_alignment,
)
from lgals.train import TrainConfig

K = 10
# two members with different hyperparameters each, as the engine stacks them
HP = {
    "eps": (0.1, 0.4), "eps_max": (0.3, 0.9), "gamma": (1.0, 2.5), "nls_eps": (-0.2, -0.7),
    "gce_q": (0.7, 0.2), "sce_alpha": (0.1, 2.0), "sce_beta": (1.0, 0.3),
    "bootstrap_beta": (0.95, 0.6), "elr_beta": (0.7, 0.3), "elr_lambda": (3.0, 0.5),
}


def hyperparameters(mode: str, dtype=torch.float64) -> dict[str, torch.Tensor]:
    return {name: torch.tensor(HP[name], dtype=dtype).view(-1, 1)
            for name in MODES[mode].params}


def fixed_uniform(shape, seed=0):
    draws = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return lambda: draws


def random_step(seed: int = 0, batch: int = 16, scale: float = 3.0) -> Step:
    generator = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(2, batch, K, generator=generator, dtype=torch.float64)
    labels = torch.randint(0, K, (2, batch), generator=generator)
    targets = torch.softmax(torch.randn(2, batch, K, generator=generator,
                                        dtype=torch.float64), -1)
    return Step.of(logits, labels, targets=targets, uniform=fixed_uniform((2, batch), seed))


def reference_values(mode: str, logits: torch.Tensor, step: Step, hp: dict) -> torch.Tensor:
    """Each mode's per-sample loss written plainly, for autograd to differentiate."""
    log_p = torch.log_softmax(logits, -1)
    p = log_p.exp()
    onehot = F.one_hot(step.labels, K).to(logits.dtype)
    ce = -(onehot * log_p).sum(-1)

    def smoothed(eps):
        eps = eps.detach() if isinstance(eps, torch.Tensor) else eps
        eps_column = eps.unsqueeze(-1) if isinstance(eps, torch.Tensor) and eps.dim() == 2 \
            else eps
        target = (1 - eps_column) * onehot + eps_column / K
        return -(target * log_p).sum(-1)

    p_y = (p * onehot).sum(-1)
    s = logit_gradient_alignment(logits.detach(), step.labels)
    if mode in ("baseline", "early_stop"):
        return ce
    if mode == "fixed_ls":
        return smoothed(hp["eps"])
    if mode == "nls":
        return smoothed(hp["nls_eps"])
    if mode == "lgals":
        return smoothed(alignment_to_epsilon(s, hp["eps_max"], hp["gamma"]))
    if mode == "shuffled_lgals":
        eps = alignment_to_epsilon(s, hp["eps_max"], hp["gamma"])
        return smoothed(eps.gather(-1, step.uniform().argsort(-1)))
    if mode == "confidence_ls":
        return smoothed(hp["eps_max"] * (1 - p_y.detach()) ** hp["gamma"])
    if mode == "el2n_ls":
        norm = (p.detach() - onehot).norm(dim=-1)
        return smoothed(hp["eps_max"] * (norm / math.sqrt(2)) ** hp["gamma"])
    if mode == "gce":
        return (1 - p_y ** hp["gce_q"]) / hp["gce_q"]
    if mode == "sce":
        rce = -(p * torch.log(onehot.clamp(min=math.exp(-4)))).sum(-1)
        return hp["sce_alpha"] * ce + hp["sce_beta"] * rce
    if mode == "bootstrap":
        beta = hp["bootstrap_beta"].unsqueeze(-1)
        target = beta * onehot + (1 - beta) * p.detach()
        return -(target * log_p).sum(-1)
    if mode == "elr":
        beta = hp["elr_beta"].unsqueeze(-1)
        clamped = p.clamp(ELR_CLAMP, 1 - ELR_CLAMP)
        fixed = clamped.detach()
        targets = beta * step.targets + (1 - beta) * fixed / fixed.sum(-1, keepdim=True)
        return ce + hp["elr_lambda"] * torch.log(1 - (targets * clamped).sum(-1))
    raise AssertionError(f"no reference for {mode}")


@pytest.mark.parametrize("mode", list(BUILTIN_MODES))
@pytest.mark.parametrize("seed, scale", [(0, 1.0), (1, 3.0), (2, 12.0)])
def test_closed_form_gradient_equals_autograd(mode, seed, scale):
    """Each sample's gradient is d(its own loss)/d(its own logits): the autograd gradient of
    the summed loss. Large logits (scale 12) put ELR's clamp to work."""
    step = random_step(seed, scale=scale)
    hp = hyperparameters(mode)
    loss = MODES[mode].closed_form(step, hp)
    logits = step.logits.clone().requires_grad_(True)
    expected = reference_values(mode, logits, step, hp)
    (grad,) = torch.autograd.grad(expected.sum(), logits)
    torch.testing.assert_close(loss.values, expected.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(loss.grad, grad, rtol=1e-9, atol=1e-11)


def one_sample(p, label: int) -> Step:
    """A single sample whose softmax is exactly ``p``; hyperparameters must be [1, 1]."""
    logits = torch.log(torch.tensor([[p]], dtype=torch.float64))
    return Step.of(logits, torch.tensor([[label]]))


def scalars(**values) -> dict[str, torch.Tensor]:
    return {k: torch.tensor([[v]], dtype=torch.float64) for k, v in values.items()}


P = (0.5, 0.25, 0.25)  # label 0: g = (-0.5, 0.25, 0.25), ||g|| = sqrt(0.375)
G = torch.tensor([[[-0.5, 0.25, 0.25]]], dtype=torch.float64)


def test_gce_hand_computed():
    """q = 1/2: (1 - sqrt(1/2)) / (1/2) = 2 - sqrt 2; the gradient is sqrt(1/2) g."""
    loss = MODES["gce"].closed_form(one_sample(P, 0), scalars(gce_q=0.5))
    torch.testing.assert_close(loss.values, torch.tensor([[2 - math.sqrt(2)]],
                                                         dtype=torch.float64))
    torch.testing.assert_close(loss.grad, math.sqrt(0.5) * G)


def test_gce_with_q_1_is_the_mean_absolute_error():
    loss = MODES["gce"].closed_form(one_sample(P, 0), scalars(gce_q=1.0))
    torch.testing.assert_close(loss.values, torch.tensor([[0.5]], dtype=torch.float64))


def test_sce_hand_computed():
    """alpha = 0.1, beta = 1: 0.1 ln 2 + 4 (1 - 1/2); the gradient is (0.1 + 4 / 2) g."""
    loss = MODES["sce"].closed_form(one_sample(P, 0), scalars(sce_alpha=0.1, sce_beta=1.0))
    torch.testing.assert_close(loss.values, torch.tensor([[0.1 * math.log(2) + 2.0]],
                                                         dtype=torch.float64))
    torch.testing.assert_close(loss.grad, 2.1 * G)


def test_bootstrap_hand_computed():
    """beta = 0.8: 0.8 ln 2 + 0.2 H(p) with H(p) = 1.5 ln 2; the gradient is 0.8 g."""
    loss = MODES["bootstrap"].closed_form(one_sample(P, 0), scalars(bootstrap_beta=0.8))
    torch.testing.assert_close(loss.values, torch.tensor([[1.1 * math.log(2)]],
                                                         dtype=torch.float64))
    torch.testing.assert_close(loss.grad, 0.8 * G)


def test_elr_hand_computed():
    """p = (1/2, 1/2), label 0, old target (1, 0), beta = 1/2, lambda = 1: the new target is
    (3/4, 1/4), <p, t> = 1/2, the loss ln 2 + ln(1/2) = 0; u = t p = (3/8, 1/8), sum 1/2,
    u - p sum(u) = (1/8, -1/8), over 1 - 1/2 -> (1/4, -1/4); g = (-1/2, 1/2), so the
    gradient is g - (1/4, -1/4) = (-3/4, 3/4)."""
    step = one_sample((0.5, 0.5), 0)
    step = Step.of(step.logits, step.labels,
                   targets=torch.tensor([[[1.0, 0.0]]], dtype=torch.float64))
    loss = MODES["elr"].closed_form(step, scalars(elr_beta=0.5, elr_lambda=1.0))
    torch.testing.assert_close(loss.targets, torch.tensor([[[0.75, 0.25]]], dtype=torch.float64))
    torch.testing.assert_close(loss.values, torch.zeros(1, 1, dtype=torch.float64))
    torch.testing.assert_close(loss.grad, torch.tensor([[[-0.75, 0.75]]], dtype=torch.float64))


def test_confidence_and_el2n_smoothing_hand_computed():
    """p_y = 1/2: confidence eps = 0.4 (1/2)^2 = 0.1; ||g|| / sqrt 2 = sqrt(0.1875)."""
    step = one_sample(P, 0)
    loss = MODES["confidence_ls"].closed_form(step, scalars(eps_max=0.4, gamma=2.0))
    torch.testing.assert_close(loss.eps, torch.tensor([[0.1]], dtype=torch.float64))
    loss = MODES["el2n_ls"].closed_form(step, scalars(eps_max=0.4, gamma=1.0))
    torch.testing.assert_close(loss.eps, torch.tensor([[0.4 * math.sqrt(0.1875)]],
                                                      dtype=torch.float64))


def test_nls_target_goes_beyond_one_hot():
    """eps = -0.3, K = 3: target (1.3 - 0.1, -0.1, -0.1) = (1.2, -0.1, -0.1); the gradient
    is p - target = (-0.7, 0.35, 0.35)."""
    loss = MODES["nls"].closed_form(one_sample(P, 0), scalars(nls_eps=-0.3))
    torch.testing.assert_close(loss.grad, torch.tensor([[[-0.7, 0.35, 0.35]]],
                                                       dtype=torch.float64))


def test_shuffled_lgals_permutes_lgals_epsilons_within_each_batch():
    step = random_step(3, batch=64)
    hp = hyperparameters("lgals")
    lgals = MODES["lgals"].closed_form(step, hp).eps
    shuffled = MODES["shuffled_lgals"].closed_form(step, hp).eps
    torch.testing.assert_close(shuffled.sort(-1).values, lgals.sort(-1).values)
    assert not torch.equal(shuffled, lgals)
    torch.testing.assert_close(shuffled, lgals.gather(-1, step.uniform().argsort(-1)))


@pytest.mark.parametrize("mode", list(BUILTIN_MODES))
def test_selected_rows_give_each_members_loss(mode):
    """A member's loss does not depend on the rows it is stacked with."""
    step = random_step(4)
    hp = hyperparameters(mode)
    both = MODES[mode].closed_form(step, hp)
    row = torch.tensor([1])
    alone = MODES[mode].closed_form(step.select(row, uniform=lambda: step.uniform()[row]),
                             {k: v[row] for k, v in hp.items()})
    torch.testing.assert_close(alone.values, both.values[row])
    torch.testing.assert_close(alone.grad, both.grad[row])


def test_suites():
    assert SUITES["paper"] == ("baseline", "fixed_ls", "lgals")
    assert SUITES["controls"] == ("baseline", "fixed_ls", "lgals", "confidence_ls", "el2n_ls",
                                  "shuffled_lgals", "nls")
    assert SUITES["peers"] == ("baseline", "fixed_ls", "lgals", "gce", "sce", "bootstrap",
                               "elr", "early_stop")
    assert SUITES["all"] == tuple(MODES)
    assert SUITES["all"][:12] == tuple(BUILTIN_MODES) and len(BUILTIN_MODES) == 12


@pytest.mark.parametrize("mode", list(MODES))
def test_every_modes_parameters_are_tunable_with_defaults_a_run_accepts(mode):
    defaults = TrainConfig.of(mode)
    for name in MODES[mode].params:
        hyperparameter = HYPERPARAMETERS[name]
        assert hyperparameter.allows(defaults.hyperparameters[name])
        assert all(hyperparameter.allows(v) for v in hyperparameter.search)
