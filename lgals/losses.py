"""The math of the three modes: pure functions, no state.

Shapes: ``logits [..., B, K]`` and ``labels [..., B]``; leading dims are independent members
(seeds or trials trained together), the batch is dim -2 of the logits. Hyperparameters may be
floats or tensors broadcastable to ``[..., 1]`` (one value per member).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

Scalar = float | Tensor


def softmax(logits: Tensor, log: bool = False) -> Tensor:
    """(Log-)softmax over the classes (the last dim), contiguous like ``logits``.

    Computed over dim -2 of the transposed view: on CPU, torch's kernel over a short last dim
    (10 classes) is several times slower than over an inner one, and this is a training-step
    hot spot (``benchmarks/train_speed.py`` times the step).
    """
    fn = torch.log_softmax if log else torch.softmax
    return fn(logits.transpose(-1, -2), dim=-2).transpose(-1, -2).contiguous()


def smoothed_cross_entropy(logits: Tensor, labels: Tensor, eps: Scalar) -> Tensor:
    """Batch mean of cross-entropy against ``(1 - eps) * onehot + eps / K``.

    ``eps`` is a float, a per-sample tensor ``[..., B]`` or a per-member ``[..., 1]``.
    Returns a scalar for ``[B, K]`` logits, ``[...]`` for stacked members.
    """
    log_probs = softmax(logits, log=True)
    nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    uniform = -log_probs.mean(dim=-1)  # cross-entropy against the uniform distribution
    return ((1 - eps) * nll + eps * uniform).mean(dim=-1)


@torch.no_grad()
def logit_gradients(logits: Tensor, labels: Tensor) -> Tensor:
    """``g_i = softmax(z_i) - onehot(y_i)``: the unsmoothed cross-entropy gradient per sample."""
    g = softmax(logits)
    g.scatter_add_(-1, labels.unsqueeze(-1), torch.full_like(g[..., :1], -1.0))
    return g


@torch.no_grad()
def smoothed_cross_entropy_grad(logits: Tensor, labels: Tensor, eps: Scalar,
                                gradients: Tensor | None = None) -> Tensor:
    """Closed-form d(smoothed_cross_entropy)/d(logits): ``(softmax(z) - target) / B``.

    Since ``target = onehot - eps * (onehot - 1/K)``, that is ``(g + eps * (onehot - 1/K)) / B``
    with ``g`` the :func:`logit_gradients`, which may be passed in when already computed.
    """
    g = logit_gradients(logits, labels) if gradients is None else gradients
    n_classes = logits.shape[-1]
    pull = F.one_hot(labels, n_classes).to(logits.dtype) - 1.0 / n_classes
    return (g + eps_per_sample(eps) * pull) / logits.shape[-2]


def eps_per_sample(eps: Scalar) -> Scalar:
    """Lift ``eps`` (float, ``[..., B]`` or ``[..., 1]``) to broadcast against ``[..., B, K]``."""
    return eps.unsqueeze(-1) if isinstance(eps, Tensor) else eps


@torch.no_grad()
def logit_gradient_alignment(logits: Tensor, labels: Tensor,
                             gradients: Tensor | None = None) -> Tensor:
    """``s_i = cos(g_i, gbar)``, ``g_i = softmax(z_i) - onehot(y_i)``, ``gbar`` the batch mean.

    A zero vector has no direction, so its cosine is 0 (neutral): this is
    ``torch.nn.functional.cosine_similarity``, which clamps each norm at 1e-8, so the cosine
    fades to 0 as a vector vanishes. That happens when a sample is fitted to float precision
    (``g_i = 0``) or the batch gradients cancel (``gbar = 0``, e.g. a perfectly fitted batch);
    the result is always finite and in [-1, 1].
    """
    g = logit_gradients(logits, labels) if gradients is None else gradients
    gbar = g.mean(dim=-2, keepdim=True)
    return F.cosine_similarity(g, gbar, dim=-1).clamp_(-1.0, 1.0)


def alignment_to_epsilon(alignment: Tensor, eps_max: Scalar, gamma: Scalar) -> Tensor:
    """``eps_i = eps_max * ((1 - s_i) / 2) ** gamma``, in ``[0, eps_max]`` (``0 ** 0 = 1``)."""
    misalignment = ((1.0 - alignment) / 2.0).clamp(0.0, 1.0)
    return eps_max * misalignment**gamma


@torch.no_grad()
def lgals_epsilon(logits: Tensor, labels: Tensor, eps_max: Scalar, gamma: Scalar) -> Tensor:
    """Per-sample LGALS smoothing ``[..., B]``, carrying no gradient."""
    return alignment_to_epsilon(logit_gradient_alignment(logits, labels), eps_max, gamma)


# --- modes: one small function each, plus a registry entry -------------------------------

EpsilonFn = Callable[[Tensor, Tensor, Tensor, dict[str, Tensor]], Scalar]


@dataclass(frozen=True)
class Mode:
    """How a mode picks its smoothing.

    ``epsilon(logits, labels, alignment, hyperparameters)`` gets the step's logits, observed
    labels, the already computed alignment ``s_i`` and the hyperparameters named in
    ``params`` (tensors, one row per stacked member).
    """

    epsilon: EpsilonFn
    params: tuple[str, ...] = ()
    label: str = ""


def _baseline(logits, labels, alignment, hyperparameters):
    return 0.0


def _fixed_ls(logits, labels, alignment, hyperparameters):
    return hyperparameters["eps"]


def _lgals(logits, labels, alignment, hyperparameters):
    return alignment_to_epsilon(alignment, hyperparameters["eps_max"], hyperparameters["gamma"])


MODES: dict[str, Mode] = {
    "baseline": Mode(_baseline, (), "Baseline"),
    "fixed_ls": Mode(_fixed_ls, ("eps",), "FixedLS"),
    "lgals": Mode(_lgals, ("eps_max", "gamma"), "LGALS"),
}
