"""The math of every mode: pure functions of one optimisation step.

Shapes: ``logits [..., B, K]`` and ``labels [..., B]``; leading dims are independent members
(seeds or trials trained together), the batch is dim -2 of the logits. Hyperparameters may be
floats or tensors broadcastable to ``[..., 1]`` (one value per member).

Each mode turns a :class:`Step` into a :class:`Loss`: per-sample loss values and their
closed-form gradients with respect to the logits (the engine needs no autograd; the tests
check every gradient against it and against hand-computed values).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import Tensor

Scalar = float | Tensor
# Wang et al. 2019 clamp log 0 to this in the reverse cross-entropy of SCE.
RCE_LOG_ZERO = -4.0
# Liu et al. 2020 clamp the probabilities ELR sees to [ELR_CLAMP, 1 - ELR_CLAMP].
ELR_CLAMP = 1e-4


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
def logit_gradients(logits: Tensor, labels: Tensor, probs: Tensor | None = None) -> Tensor:
    """``g_i = softmax(z_i) - onehot(y_i)``: the unsmoothed cross-entropy gradient per sample.
    ``probs``, the softmax when already computed, is read and left as it is."""
    g = softmax(logits) if probs is None else probs.clone()
    g.scatter_add_(-1, labels.unsqueeze(-1), torch.full_like(g[..., :1], -1.0))
    return g


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


# --- one step, as every mode sees it --------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One batch of logits and observed labels, and what every mode derives from them once:
    probabilities, log-probabilities, logit gradients ``g`` and their alignment ``s``.

    ``targets`` is the batch's running ELR targets ``[..., B, K]`` (state the engine keeps per
    member and sample); ``uniform()`` draws ``[..., B]`` uniforms from each member's own
    generator (so a member's draws do not depend on what it is stacked with).
    """

    logits: Tensor
    labels: Tensor
    probs: Tensor
    log_probs: Tensor
    gradients: Tensor
    alignment: Tensor
    targets: Tensor | None = None
    uniform: Callable[[], Tensor] | None = None

    @classmethod
    @torch.no_grad()
    def of(cls, logits: Tensor, labels: Tensor, **state) -> Step:
        probs = softmax(logits)
        gradients = logit_gradients(logits, labels, probs)
        return cls(logits, labels, probs, softmax(logits, log=True), gradients,
                   logit_gradient_alignment(logits, labels, gradients), **state)

    def select(self, rows: Tensor, uniform: Callable[[], Tensor] | None = None) -> Step:
        """The members in ``rows`` only (the state and draws of those members)."""
        return replace(self, logits=self.logits[rows], labels=self.labels[rows],
                       probs=self.probs[rows], log_probs=self.log_probs[rows],
                       gradients=self.gradients[rows], alignment=self.alignment[rows],
                       targets=None if self.targets is None else self.targets[rows],
                       uniform=uniform)

    def observed(self, values: Tensor) -> Tensor:
        """Each sample's entry for its observed label: ``values [..., B, K] -> [..., B]``."""
        return values.gather(-1, self.labels.unsqueeze(-1)).squeeze(-1)

    def onehot(self) -> Tensor:
        return F.one_hot(self.labels, self.logits.shape[-1]).to(self.logits.dtype)


@dataclass(frozen=True)
class Loss:
    """Per-sample loss ``values [..., B]``, their gradients ``grad [..., B, K]`` with respect
    to each sample's own logits (the engine divides by B for the batch mean), the smoothing
    ``eps`` each sample got (0 for a mode that does not smooth) and the new ``targets`` of a
    mode with state."""

    values: Tensor
    grad: Tensor
    eps: Scalar = 0.0
    targets: Tensor | None = None


def label_smoothing(step: Step, eps: Scalar) -> Loss:
    """Cross-entropy against ``(1 - eps) * onehot + eps / K``; the gradient is
    ``softmax(z) - target = g + eps * (onehot - 1/K)``."""
    eps_column = eps.unsqueeze(-1) if isinstance(eps, Tensor) else eps
    nll = -step.observed(step.log_probs)
    uniform = -step.log_probs.mean(dim=-1)
    pull = step.onehot() - 1.0 / step.logits.shape[-1]
    return Loss((1 - eps) * nll + eps * uniform, step.gradients + eps_column * pull, eps)


# --- modes: one small function each, plus a registry entry -------------------------------

def _baseline(step: Step, hp: dict[str, Tensor]) -> Loss:
    return label_smoothing(step, 0.0)


def _fixed_ls(step, hp):
    return label_smoothing(step, hp["eps"])


def _lgals(step, hp):
    return label_smoothing(step, alignment_to_epsilon(step.alignment, hp["eps_max"],
                                                      hp["gamma"]))


def _confidence_ls(step, hp):
    """Smoothing from the model's doubt in the observed label, ``1 - p_y``."""
    doubt = (1.0 - step.observed(step.probs)).clamp(0.0, 1.0)
    return label_smoothing(step, hp["eps_max"] * doubt ** hp["gamma"])


def _el2n_ls(step, hp):
    """Smoothing from the logit gradient's magnitude ``||g|| / sqrt 2`` (in [0, 1]): EL2N."""
    magnitude = (step.gradients.norm(dim=-1) / math.sqrt(2.0)).clamp(0.0, 1.0)
    return label_smoothing(step, hp["eps_max"] * magnitude ** hp["gamma"])


def _shuffled_lgals(step, hp):
    """LGALS's epsilons, permuted at random within each member's batch."""
    eps = alignment_to_epsilon(step.alignment, hp["eps_max"], hp["gamma"])
    return label_smoothing(step, eps.gather(-1, step.uniform().argsort(dim=-1)))


def _nls(step, hp):
    """Negative label smoothing: a negative ``nls_eps`` pushes the target beyond one-hot."""
    return label_smoothing(step, hp["nls_eps"])


def _gce(step, hp):
    """``(1 - p_y ** q) / q``, whose gradient is ``p_y ** q * g``."""
    q = hp["gce_q"]
    p_q = step.observed(step.probs) ** q
    return Loss((1.0 - p_q) / q, p_q.unsqueeze(-1) * step.gradients)


def _sce(step, hp):
    """``alpha * CE + beta * RCE``; with log 0 clamped to A = -4, RCE = -A (1 - p_y) and its
    gradient is -A p_y g."""
    p_y = step.observed(step.probs)
    nll = -step.observed(step.log_probs)
    alpha, beta = hp["sce_alpha"], hp["sce_beta"]
    values = alpha * nll - RCE_LOG_ZERO * beta * (1.0 - p_y)
    weight = alpha - RCE_LOG_ZERO * beta * p_y
    return Loss(values, weight.unsqueeze(-1) * step.gradients)


def _bootstrap(step, hp):
    """Soft bootstrapping: cross-entropy against ``beta * onehot + (1 - beta) * p``, ``p``
    held fixed; the gradient is ``p - target = beta * g``."""
    beta = hp["bootstrap_beta"]
    target = beta.unsqueeze(-1) * step.onehot() + (1.0 - beta.unsqueeze(-1)) * step.probs
    values = -(target * step.log_probs).sum(dim=-1)
    return Loss(values, beta.unsqueeze(-1) * step.gradients)


def _elr(step, hp):
    """Early-learning regularisation: running targets ``t <- beta t + (1 - beta) p`` (p clamped
    and renormalised, held fixed) and the loss ``CE + lambda log(1 - <p, t>)``, with p clamped
    to [1e-4, 1 - 1e-4] as in Liu et al.'s code (the clamp has no gradient)."""
    beta, lam = hp["elr_beta"].unsqueeze(-1), hp["elr_lambda"]
    clamped = step.probs.clamp(ELR_CLAMP, 1.0 - ELR_CLAMP)
    targets = beta * step.targets + (1.0 - beta) * clamped / clamped.sum(-1, keepdim=True)
    agreement = (targets * clamped).sum(-1)
    # d log(1 - <p_c, t>) / dz_k = -(u_k - p_k sum(u)) / (1 - <p_c, t>), u = t p on the
    # unclamped classes
    u = targets * step.probs * (clamped == step.probs)
    pull = (u - step.probs * u.sum(-1, keepdim=True)) / (1.0 - agreement).unsqueeze(-1)
    values = -step.observed(step.log_probs) + lam * torch.log1p(-agreement)
    return Loss(values, step.gradients - lam.unsqueeze(-1) * pull, targets=targets)


LossFn = Callable[[Step, dict[str, Tensor]], Loss]


@dataclass(frozen=True)
class Mode:
    """How a mode trains: ``loss(step, hyperparameters)`` gets the step and the
    hyperparameters named in ``params`` (tensors ``[members, 1]``).

    ``family`` places it in the suites: ``paper`` (the claim's three), ``ablation`` (LGALS's
    form without its alignment) or ``peer`` (from the label-noise literature). ``targets``:
    the engine keeps ELR's per-sample running targets. ``picks_epochs``: tuning chooses the
    epoch count on the validation split, and evaluation trains to it.
    """

    loss: LossFn
    params: tuple[str, ...] = ()
    label: str = ""
    family: str = "paper"
    targets: bool = False
    picks_epochs: bool = False


MODES: dict[str, Mode] = {
    "baseline": Mode(_baseline, (), "Baseline"),
    "fixed_ls": Mode(_fixed_ls, ("eps",), "FixedLS"),
    "lgals": Mode(_lgals, ("eps_max", "gamma"), "LGALS"),
    "confidence_ls": Mode(_confidence_ls, ("eps_max", "gamma"), "ConfidenceLS", "ablation"),
    "el2n_ls": Mode(_el2n_ls, ("eps_max", "gamma"), "EL2N-LS", "ablation"),
    "shuffled_lgals": Mode(_shuffled_lgals, ("eps_max", "gamma"), "ShuffledLGALS", "ablation"),
    "nls": Mode(_nls, ("nls_eps",), "NLS", "ablation"),
    "gce": Mode(_gce, ("gce_q",), "GCE", "peer"),
    "sce": Mode(_sce, ("sce_alpha", "sce_beta"), "SCE", "peer"),
    "bootstrap": Mode(_bootstrap, ("bootstrap_beta",), "Bootstrap", "peer"),
    "elr": Mode(_elr, ("elr_beta", "elr_lambda"), "ELR", "peer", targets=True),
    "early_stop": Mode(_baseline, (), "EarlyStop", "peer", picks_epochs=True),
}

SUITES: dict[str, tuple[str, ...]] = {
    "paper": tuple(m for m, mode in MODES.items() if mode.family == "paper"),
    "controls": tuple(m for m, mode in MODES.items() if mode.family in ("paper", "ablation")),
    "peers": tuple(m for m, mode in MODES.items() if mode.family in ("paper", "peer")),
    "all": tuple(MODES),
}
