"""The smoothing math: hand-computed LGALS epsilons, equivalences with torch, properties."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from lgals.losses import (
    MODES,
    Step,
    alignment_to_epsilon,
    label_smoothing,
    lgals_epsilon,
    logit_gradient_alignment,
    smoothed_cross_entropy,
    softmax,
)

# --- hand-computed LGALS epsilon -----------------------------------------------------------


def test_lgals_epsilon_uniform_logits_hand_computed():
    """K=3, zero logits, labels (0, 1): every cosine is exactly 1/2.

    p = (1/3, 1/3, 1/3); g1 = (-2/3, 1/3, 1/3), g2 = (1/3, -2/3, 1/3); gbar = (-1/6, -1/6, 1/3).
    g1.gbar = 2/18 - 1/18 + 2/18 = 1/6; |g1| = sqrt(6)/3, |gbar| = sqrt(6)/6, product 1/3.
    cos = 1/2, so eps = eps_max * ((1 - 1/2) / 2) ** gamma = eps_max * 0.25 ** gamma.
    """
    logits = torch.zeros(2, 3)
    labels = torch.tensor([0, 1])
    torch.testing.assert_close(logit_gradient_alignment(logits, labels), torch.tensor([0.5, 0.5]))
    eps = lgals_epsilon(logits, labels, eps_max=0.4, gamma=2.0)
    torch.testing.assert_close(eps, torch.tensor([0.4 * 0.0625, 0.4 * 0.0625]))
    eps = lgals_epsilon(logits, labels, eps_max=0.3, gamma=1.0)
    torch.testing.assert_close(eps, torch.tensor([0.075, 0.075]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_lgals_epsilon_three_samples_hand_computed(dtype):
    """B=3, K=3, logits = log(p) so the softmax is exactly the chosen p."""
    p = np.array([[0.5, 0.25, 0.25], [0.2, 0.6, 0.2], [1 / 3, 1 / 3, 1 / 3]])
    labels = np.array([0, 2, 1])
    # g_i = p_i - onehot(y_i), written out
    g1 = np.array([0.5 - 1, 0.25, 0.25])  # (-0.5, 0.25, 0.25)
    g2 = np.array([0.2, 0.6, 0.2 - 1])  # (0.2, 0.6, -0.8)
    g3 = np.array([1 / 3, 1 / 3 - 1, 1 / 3])  # (1/3, -2/3, 1/3)
    gbar = (g1 + g2 + g3) / 3  # (2, 11, -13) / 60
    cos = np.array([
        g @ gbar / (np.sqrt(g @ g) * np.sqrt(gbar @ gbar)) for g in (g1, g2, g3)
    ])
    # by hand with d = (2, 11, -13), |d| = sqrt(294):
    #   g1 = (-2, 1, 1)/4:  g1.d = -6/4,  |g1| = sqrt(6)/4  -> cos = -6 / sqrt(1764) = -1/7
    #   g2 = (1, 3, -4)/5:  g2.d = 87/5,  |g2| = sqrt(26)/5 -> cos = 87 / sqrt(7644)
    #   g3 = (1, -2, 1)/3:  g3.d = -33/3, |g3| = sqrt(6)/3  -> cos = -33 / 42 = -11/14
    np.testing.assert_allclose(cos, [-1 / 7, 87 / np.sqrt(7644), -11 / 14], rtol=1e-12)
    # sample 2's gradient dominates the mean, so it is by far the best aligned
    assert cos[1] > 0.99 and cos[0] > cos[2]
    eps_max, gamma = 0.3, 1.5
    expected = eps_max * ((1 - cos) / 2) ** gamma

    logits = torch.tensor(np.log(p), dtype=dtype)
    labels_t = torch.from_numpy(labels)
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1e-12, "atol": 0}
    torch.testing.assert_close(
        logit_gradient_alignment(logits, labels_t), torch.tensor(cos, dtype=dtype), **tol
    )
    torch.testing.assert_close(
        lgals_epsilon(logits, labels_t, eps_max, gamma), torch.tensor(expected, dtype=dtype),
        **tol,
    )
    # shifting each row's logits by a constant changes nothing
    shifted = logits + torch.tensor([[3.0], [-7.0], [100.0]], dtype=dtype)
    torch.testing.assert_close(
        lgals_epsilon(shifted, labels_t, eps_max, gamma), torch.tensor(expected, dtype=dtype),
        rtol=1e-5, atol=1e-6,
    )


def test_alignment_to_epsilon_hand_values():
    s = torch.tensor([1.0, 0.0, -1.0, 0.5, -0.5])
    torch.testing.assert_close(
        alignment_to_epsilon(s, 0.2, 1.0), torch.tensor([0.0, 0.1, 0.2, 0.05, 0.15])
    )
    torch.testing.assert_close(
        alignment_to_epsilon(s, 0.2, 2.0), 0.2 * torch.tensor([0.0, 0.25, 1.0, 0.0625, 0.5625])
    )
    # gamma = 0: eps_max everywhere, including s = 1 (0 ** 0 = 1)
    torch.testing.assert_close(alignment_to_epsilon(s, 0.2, 0.0), torch.full((5,), 0.2))
    # slightly out-of-range cosines from rounding are clamped, never negative or above eps_max
    out = alignment_to_epsilon(torch.tensor([1.0000001, -1.0000001]), 0.2, 0.5)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.2]))


# --- the zero-vector convention ------------------------------------------------------------


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 3.0])
def test_fitted_sample_has_zero_alignment(gamma):
    """A sample fitted to float precision has g_i = 0 exactly: cosine 0, eps = eps_max/2**gamma."""
    logits = torch.tensor([[1e4, 0.0, 0.0], [0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    labels = torch.tensor([0, 1, 2])
    g0 = torch.softmax(logits[0], -1) - F.one_hot(labels[0], 3)
    assert torch.equal(g0, torch.zeros(3))  # the premise: exactly zero
    s = logit_gradient_alignment(logits, labels)
    assert s[0].item() == 0.0
    assert torch.all(s[1:] != 0)
    eps = lgals_epsilon(logits, labels, 0.3, gamma)
    assert eps[0].item() == pytest.approx(0.3 * 0.5**gamma, rel=1e-6)


@pytest.mark.parametrize("gamma", [0.0, 1.0, 2.5])
def test_perfectly_fitted_batch_gbar_zero(gamma):
    labels = torch.tensor([0, 2, 1, 2, 0])
    logits = 1e4 * F.one_hot(labels, 4).float()
    eps = lgals_epsilon(logits, labels, 0.25, gamma)
    torch.testing.assert_close(eps, torch.full((5,), 0.25 * 0.5**gamma))
    assert torch.equal(logit_gradient_alignment(logits, labels), torch.zeros(5))


def test_cancelling_gradients_gbar_zero():
    """K=2, zero logits, labels (0, 1): g = (-1/2, 1/2) and (1/2, -1/2), gbar = 0 exactly."""
    logits = torch.zeros(2, 2)
    labels = torch.tensor([0, 1])
    assert torch.equal(logit_gradient_alignment(logits, labels), torch.zeros(2))
    torch.testing.assert_close(lgals_epsilon(logits, labels, 0.4, 1.0), torch.tensor([0.2, 0.2]))


def test_single_sample_batch_is_perfectly_aligned():
    logits = torch.tensor([[0.3, -1.0, 2.0]])
    labels = torch.tensor([1])
    torch.testing.assert_close(logit_gradient_alignment(logits, labels), torch.tensor([1.0]))
    torch.testing.assert_close(lgals_epsilon(logits, labels, 0.3, 1.0), torch.tensor([0.0]))


# --- stacked members -----------------------------------------------------------------------


def test_stacked_alignment_and_epsilon_equal_per_member():
    gen = torch.Generator().manual_seed(0)
    S, B, K = 4, 7, 5
    logits = 3 * torch.randn(S, B, K, generator=gen)
    labels = torch.randint(0, K, (S, B), generator=gen)
    eps_max = torch.tensor([0.1, 0.2, 0.3, 0.0]).view(S, 1)
    gamma = torch.tensor([0.0, 1.0, 2.0, 1.0]).view(S, 1)
    stacked_s = logit_gradient_alignment(logits, labels)
    stacked_eps = lgals_epsilon(logits, labels, eps_max, gamma)
    assert stacked_s.shape == stacked_eps.shape == (S, B)
    for i in range(S):
        torch.testing.assert_close(stacked_s[i], logit_gradient_alignment(logits[i], labels[i]))
        torch.testing.assert_close(
            stacked_eps[i],
            lgals_epsilon(logits[i], labels[i], eps_max[i].item(), gamma[i].item()),
        )
    torch.testing.assert_close(stacked_eps[0], torch.full((B,), 0.1))  # gamma 0
    torch.testing.assert_close(stacked_eps[3], torch.zeros(B))  # eps_max 0


# --- hypothesis properties -----------------------------------------------------------------

shapes = st.tuples(st.integers(1, 8), st.integers(2, 10))
eps_maxes = st.sampled_from([0.0, 1e-3, 0.1, 0.3, 0.5, 1.0]) | st.floats(0.0, 1.0)
gammas = st.sampled_from([0.0, 0.5, 1.0, 2.0]) | st.floats(0.0, 8.0)


@st.composite
def logit_batches(draw, bound: float = 1e4, dtype=np.float32):
    batch, classes = draw(shapes)
    logits = draw(arrays(dtype, (batch, classes),
                         elements=st.floats(-bound, bound, width=np.dtype(dtype).itemsize * 8)))
    labels = draw(arrays(np.int64, (batch,), elements=st.integers(0, classes - 1)))
    return torch.from_numpy(logits), torch.from_numpy(labels)


def check_eps(logits, labels, eps_max, gamma) -> torch.Tensor:
    eps = lgals_epsilon(logits, labels, eps_max, gamma)
    assert eps.shape == labels.shape
    assert torch.isfinite(eps).all()
    assert (eps >= 0).all() and (eps <= eps_max).all(), eps
    s = logit_gradient_alignment(logits, labels)
    assert torch.isfinite(s).all() and (s.abs() <= 1).all()
    return eps


@settings(max_examples=150, deadline=None)
@given(logit_batches(), eps_maxes, gammas)
def test_eps_finite_and_bounded_for_any_logits(batch, eps_max, gamma):
    check_eps(*batch, eps_max, gamma)


@settings(max_examples=60, deadline=None)
@given(shapes, st.floats(-1e4, 1e4), st.data(), eps_maxes, gammas)
def test_eps_bounded_for_all_equal_logits(shape, value, data, eps_max, gamma):
    batch, classes = shape
    logits = torch.full((batch, classes), value)
    labels = torch.tensor(data.draw(st.lists(st.integers(0, classes - 1), min_size=batch,
                                             max_size=batch)))
    check_eps(logits, labels, eps_max, gamma)


@settings(max_examples=60, deadline=None)
@given(shapes, st.data(), eps_maxes, gammas)
def test_perfectly_fitted_batch_gives_half_weighted_eps_max(shape, data, eps_max, gamma):
    batch, classes = shape
    labels = torch.tensor(data.draw(st.lists(st.integers(0, classes - 1), min_size=batch,
                                             max_size=batch)))
    logits = 1e4 * F.one_hot(labels, classes).float()
    eps = check_eps(logits, labels, eps_max, gamma)
    torch.testing.assert_close(eps, torch.full((batch,), eps_max * 0.5**gamma))


@settings(max_examples=60, deadline=None)
@given(logit_batches(), st.data(), eps_maxes, gammas)
def test_single_class_batch(batch, data, eps_max, gamma):
    logits, labels = batch
    label = data.draw(st.integers(0, logits.shape[-1] - 1))
    check_eps(logits, torch.full_like(labels, label), eps_max, gamma)


@settings(max_examples=60, deadline=None)
@given(logit_batches(), eps_maxes)
def test_gamma_zero_gives_eps_max_everywhere(batch, eps_max):
    logits, labels = batch
    eps = check_eps(logits, labels, eps_max, 0.0)
    torch.testing.assert_close(eps, torch.full(labels.shape, eps_max))


@settings(max_examples=60, deadline=None)
@given(logit_batches(), gammas)
def test_eps_max_zero_gives_zero(batch, gamma):
    logits, labels = batch
    eps = check_eps(logits, labels, 0.0, gamma)
    assert torch.equal(eps, torch.zeros(labels.shape))


@settings(max_examples=60, deadline=None)
@given(logit_batches(bound=20.0, dtype=np.float64), eps_maxes, gammas)
def test_eps_matches_numpy_reference(batch, eps_max, gamma):
    """Away from zero vectors: eps_i = eps_max * ((1 - cos(g_i, gbar)) / 2) ** gamma."""
    logits, labels = batch
    z = logits.numpy()
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    g = p - np.eye(z.shape[-1])[labels.numpy()]
    gbar = g.mean(0)
    norms = np.linalg.norm(g, axis=-1)
    assume(np.linalg.norm(gbar) > 1e-4 and (norms > 1e-4).all())
    cos = (g @ gbar) / (norms * np.linalg.norm(gbar))
    s = logit_gradient_alignment(logits, labels).numpy()
    np.testing.assert_allclose(s, np.clip(cos, -1, 1), rtol=0, atol=1e-9)
    # compare eps through the library's own s: x ** gamma amplifies rounding near x = 0
    expected = eps_max * np.clip((1 - s) / 2, 0, 1) ** gamma
    eps = lgals_epsilon(logits, labels, eps_max, gamma)
    np.testing.assert_allclose(eps.numpy(), expected, rtol=1e-9, atol=1e-12)


# --- smoothed cross-entropy ----------------------------------------------------------------


def random_batch(shape=(6, 10), seed=0, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    logits = 2 * torch.randn(*shape, generator=gen, dtype=dtype)
    labels = torch.randint(0, shape[-1], shape[:-1], generator=gen)
    return logits, labels


@pytest.mark.parametrize("shape", [(7, 10), (3, 128, 10), (2, 5, 4)])
def test_softmax_equals_torch_over_the_last_dim(shape):
    """The transposed-view kernel gives torch's softmax and log-softmax, laid out contiguously."""
    logits = 5 * torch.randn(shape, generator=torch.Generator().manual_seed(0))
    probs, log_probs = softmax(logits), softmax(logits, log=True)
    assert probs.is_contiguous() and log_probs.is_contiguous()
    torch.testing.assert_close(probs, torch.softmax(logits, -1), rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(log_probs, torch.log_softmax(logits, -1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("eps", [0.0, 0.05, 0.1, 0.3, 0.9, 1.0])
def test_smoothed_ce_float_eps_equals_torch_label_smoothing(eps):
    logits, labels = random_batch()
    torch.testing.assert_close(
        smoothed_cross_entropy(logits, labels, eps),
        F.cross_entropy(logits, labels, label_smoothing=eps),
    )


def test_smoothed_ce_hand_value():
    """Uniform logits over K=4: every target distribution gives log 4."""
    logits = torch.zeros(3, 4, dtype=torch.float64)
    labels = torch.tensor([0, 3, 1])
    for eps in (0.0, 0.2, torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)):
        assert smoothed_cross_entropy(logits, labels, eps).item() == pytest.approx(np.log(4))
    # K=2, logits (0, log 3): p = (1/4, 3/4); eps = 0.5 targets (0.25, 0.75) or (0.75, 0.25)
    logits = torch.tensor([[0.0, np.log(3)], [0.0, np.log(3)]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    expected = np.mean([
        -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)),
        -(0.75 * np.log(0.25) + 0.25 * np.log(0.75)),
    ])
    assert smoothed_cross_entropy(logits, labels, 0.5).item() == pytest.approx(expected)


def test_smoothed_ce_per_sample_eps_is_mean_of_per_sample_losses():
    logits, labels = random_batch()
    eps = torch.tensor([0.0, 0.1, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    expected = torch.stack([
        F.cross_entropy(logits[i:i + 1], labels[i:i + 1], label_smoothing=eps[i].item())
        for i in range(len(labels))
    ]).mean()
    torch.testing.assert_close(smoothed_cross_entropy(logits, labels, eps), expected)


def test_smoothed_ce_stacked_members():
    logits, labels = random_batch(shape=(3, 5, 7), seed=1)
    per_member = torch.tensor([[0.0], [0.2], [0.6]], dtype=torch.float64)
    loss = smoothed_cross_entropy(logits, labels, per_member)
    assert loss.shape == (3,)
    for i in range(3):
        torch.testing.assert_close(
            loss[i],
            F.cross_entropy(logits[i], labels[i], label_smoothing=per_member[i].item()),
        )
    per_sample = torch.rand(3, 5, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    loss = smoothed_cross_entropy(logits, labels, per_sample)
    for i in range(3):
        torch.testing.assert_close(loss[i],
                                   smoothed_cross_entropy(logits[i], labels[i], per_sample[i]))


def per_sample_eps(shape):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64)


@pytest.mark.parametrize(
    "shape, eps",
    [
        ((6, 10), 0.0),
        ((6, 10), 0.15),
        ((6, 10), "per_sample"),
        ((3, 5, 7), 0.3),
        ((3, 5, 7), "per_sample"),
        ((3, 5, 7), "per_member"),
        ((1, 128, 10), "per_sample"),
    ],
)
def test_closed_form_grad_equals_autograd(shape, eps):
    """:func:`label_smoothing`'s per-sample gradient, over the batch size, is the gradient of
    :func:`smoothed_cross_entropy` (the batch mean), for every way to give ``eps``."""
    logits, labels = random_batch(shape=shape, seed=4)
    if eps == "per_sample":
        eps = per_sample_eps(shape[:-1])
    elif eps == "per_member":
        eps = per_sample_eps((shape[0], 1))
    closed = label_smoothing(Step.of(logits, labels), eps)
    logits.requires_grad_(True)
    smoothed_cross_entropy(logits, labels, eps).sum().backward()
    assert closed.grad.shape == logits.shape
    torch.testing.assert_close(closed.grad / shape[-2], logits.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(closed.values.mean(-1),
                               smoothed_cross_entropy(logits.detach(), labels, eps))


def test_closed_form_grad_float32_matches_autograd():
    logits, labels = random_batch(shape=(4, 32, 10), seed=5, dtype=torch.float32)
    eps = lgals_epsilon(logits, labels, 0.3, 1.0)
    closed = label_smoothing(Step.of(logits, labels), eps)
    logits.requires_grad_(True)
    smoothed_cross_entropy(logits, labels, eps).sum().backward()
    torch.testing.assert_close(closed.grad / 32, logits.grad, rtol=1e-5, atol=1e-8)


# --- mode registry -------------------------------------------------------------------------


def test_the_papers_modes_smooth_as_the_note_says():
    """Baseline: eps 0; FixedLS: its constant eps; LGALS: eps_max ((1 - s_i) / 2) ** gamma,
    each member with its own hyperparameters; and each eps feeds label smoothing."""
    logits, labels = random_batch(shape=(3, 9, 10), seed=6, dtype=torch.float32)
    hyperparameters = {
        "eps": torch.tensor([[0.05], [0.1], [0.2]]),
        "eps_max": torch.tensor([[0.3], [0.1], [0.5]]),
        "gamma": torch.tensor([[1.0], [0.0], [2.0]]),
    }
    step = Step.of(logits, labels)
    torch.testing.assert_close(step.alignment, logit_gradient_alignment(logits, labels))
    baseline = MODES["baseline"].closed_form(step, hyperparameters)
    assert float(baseline.eps) == 0.0
    fixed = MODES["fixed_ls"].closed_form(step, hyperparameters)
    assert fixed.eps is hyperparameters["eps"]
    lgals = MODES["lgals"].closed_form(step, hyperparameters)
    torch.testing.assert_close(lgals.eps, lgals_epsilon(
        logits, labels, hyperparameters["eps_max"], hyperparameters["gamma"]))
    for loss in (baseline, fixed, lgals):
        torch.testing.assert_close(loss.values.mean(-1),
                                   smoothed_cross_entropy(logits, labels, loss.eps))
