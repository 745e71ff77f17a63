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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import Tensor

from lgals.registry import NAME, Registry

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


# --- hyperparameters and modes: what the registry holds ----------------------------------

@dataclass(frozen=True)
class Hyperparameter:
    """A tunable value, declared once: the range a run accepts, the narrower range tuning
    searches (on a log scale or not) and the untuned default. From it a hyperparameter gets
    its CLI option, its ``--params-from`` key, its Optuna search space, its MLflow param and
    its validation."""

    default: float
    low: float
    high: float | None = None  # None: no upper bound
    low_open: bool = False
    high_open: bool = False
    search: tuple[float, float] = (0.0, 1.0)
    log: bool = False  # search on a log scale
    help: str = ""

    def allows(self, value: float) -> bool:
        """Finite, and within the range a run accepts."""
        above = value > self.low if self.low_open else value >= self.low
        below = (self.high is None
                 or (value < self.high if self.high_open else value <= self.high))
        return math.isfinite(value) and above and below

    def describe(self) -> str:
        """The range a run accepts, e.g. ``[0, 1)``."""
        high = "inf)" if self.high is None else f"{self.high:g}{')' if self.high_open else ']'}"
        return f"{'(' if self.low_open else '['}{self.low:g}, {high}"

    def problem(self) -> str | None:
        """What is wrong with this declaration, if anything."""
        low, high = self.search
        if not (math.isfinite(self.low) and (self.high is None or self.low < self.high)):
            return f"range {self.describe()} is empty or not finite"
        if not self.allows(self.default):
            return f"default {self.default:g} is outside {self.describe()}"
        if not (low < high and self.allows(low) and self.allows(high)):
            return f"search range ({low:g}, {high:g}) is not an interval inside {self.describe()}"
        if self.log and low <= 0:
            return f"a log-scale search range must be positive, got ({low:g}, {high:g})"
        return None

    def edges(self) -> tuple[float, ...]:
        """The values nearest the ends of what a run accepts, and the search range's ends:
        where a loss most often breaks (an open end is approached to 1e-6)."""
        low = self.low + 1e-6 * max(1.0, abs(self.low)) if self.low_open else self.low
        high = (max(self.search[1], 1.0) * 10 if self.high is None
                else self.high - 1e-6 * max(1.0, abs(self.high)) if self.high_open
                else self.high)
        return tuple(dict.fromkeys((low, *self.search, high)))


LossFn = Callable[[Step, dict[str, Tensor]], Loss]
FAMILIES = ("paper", "ablation", "peer", "plugin")


@dataclass(frozen=True)
class Mode:
    """A way to train, as the registry holds it (built-in or from a user's package).

    ``loss(logits, labels, **hyperparameters)`` is the per-sample loss ``[..., B]``; the
    engine differentiates it by autograd with respect to the logits only (anything a mode
    holds fixed, it detaches). ``closed_form(step, hyperparameters) -> Loss`` is the fast path
    the built-ins take; when given, ``lgals check-mode`` holds it to ``loss``'s autograd.
    Hyperparameters are tensors ``[members, 1]``, one value per stacked member.

    ``signal(logits, labels, **hyperparameters)`` is a per-sample value ``[..., B]`` logged
    where LGALS logs its epsilon (e.g. a smoothing or a weight). ``state``: ``loss`` also
    gets ``state=`` the per-sample ``[..., B, K]`` it returned for these samples last epoch
    (zeros at first) and returns ``(values, new_state)``, as ELR keeps its targets.
    ``random``: ``loss`` also gets ``uniform=``, a function drawing ``[..., B]`` uniforms
    from each member's own seeded generator. ``batch_level``: a sample's loss may depend on
    the other samples of its batch. ``picks_epochs``: tuning chooses the epoch count on the
    validation split, and evaluation trains to it.

    ``family`` places it in the suites: ``paper`` (the note's three), ``ablation``,
    ``peer`` (from the label-noise literature) or ``plugin``.
    """

    loss: Callable[..., Tensor | tuple[Tensor, Tensor]]
    hyperparameters: Mapping[str, Hyperparameter] = field(default_factory=dict)
    label: str = ""
    family: str = "plugin"
    closed_form: LossFn | None = None
    signal: Callable[..., Tensor] | None = None
    state: bool = False
    random: bool = False
    batch_level: bool = False
    picks_epochs: bool = False

    @property
    def params(self) -> tuple[str, ...]:
        """The names of the hyperparameters it reads, besides the optimizer's."""
        return tuple(self.hyperparameters)

    @property
    def reads(self) -> dict[str, Hyperparameter]:
        """Every hyperparameter a run of it reads, by name: the optimizer's, then its own."""
        return {**EVERY_MODE, **self.hyperparameters}

    def values(self, logits: Tensor, step: Step, hyperparameters: dict[str, Tensor]
               ) -> tuple[Tensor, Tensor | None]:
        """``loss`` of ``logits`` with the step's labels (and its state and draws, for a mode
        that keeps or draws them): the per-sample values, and the new state or None."""
        context = {**({"state": step.targets} if self.state else {}),
                   **({"uniform": step.uniform} if self.random else {})}
        out = self.loss(logits, step.labels, **context, **hyperparameters)
        return out if self.state else (out, None)

    def apply(self, step: Step, hyperparameters: dict[str, Tensor]) -> Loss:
        """This step's loss and its gradient with respect to each sample's logits: the
        closed form when there is one, else :meth:`autograd`."""
        if self.closed_form is not None:
            return self.closed_form(step, hyperparameters)
        return self.autograd(step, hyperparameters)

    def autograd(self, step: Step, hyperparameters: dict[str, Tensor]) -> Loss:
        """``loss`` and its autograd gradient with respect to the logits only, vectorised over
        members: how a mode without a closed form trains, and what ``check-mode`` holds a
        closed form to."""
        with torch.enable_grad():
            logits = step.logits.detach().requires_grad_(True)
            values, new_state = self.values(logits, step, hyperparameters)
            if not isinstance(values, Tensor) or values.shape != step.labels.shape:
                raise ValueError(f"{self.label or 'a mode'}'s loss must return per-sample "
                                 f"values of shape {tuple(step.labels.shape)}, got "
                                 f"{getattr(values, 'shape', type(values).__name__)}")
            (grad,) = torch.autograd.grad(values.sum(), logits)
        eps = (self.signal(step.logits, step.labels, **hyperparameters).detach()
               if self.signal is not None else 0.0)
        return Loss(values.detach(), grad, eps,
                    None if new_state is None else new_state.detach())


# --- the built-in modes: a closed form each, and the plain loss it must be the gradient of -

def _smoothed(logits: Tensor, labels: Tensor, eps: Scalar) -> Tensor:
    """Per-sample cross-entropy against ``(1 - eps) onehot + eps / K``, ``eps`` held fixed."""
    eps = eps.detach() if isinstance(eps, Tensor) else eps
    log_probs = torch.log_softmax(logits, -1)
    nll = -log_probs.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return (1 - eps) * nll + eps * -log_probs.mean(-1)


def _p_observed(logits: Tensor, labels: Tensor) -> Tensor:
    return torch.softmax(logits, -1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def _lgals_eps(step: Step, hp: dict[str, Tensor]) -> Tensor:
    return alignment_to_epsilon(step.alignment, hp["eps_max"], hp["gamma"])


def _confidence_eps(step, hp):
    """Smoothing from the model's doubt in the observed label, ``1 - p_y``."""
    doubt = (1.0 - step.observed(step.probs)).clamp(0.0, 1.0)
    return hp["eps_max"] * doubt ** hp["gamma"]


def _el2n_eps(step, hp):
    """Smoothing from the logit gradient's magnitude ``||g|| / sqrt 2`` (in [0, 1]): EL2N."""
    magnitude = (step.gradients.norm(dim=-1) / math.sqrt(2.0)).clamp(0.0, 1.0)
    return hp["eps_max"] * magnitude ** hp["gamma"]


def _shuffled_eps(step, hp):
    """LGALS's epsilons, permuted at random within each member's batch."""
    return _lgals_eps(step, hp).gather(-1, step.uniform().argsort(dim=-1))


def _fixed(name: str) -> Callable[[Step, dict[str, Tensor]], Scalar]:
    """A smoothing that is the hyperparameter ``name`` itself, one value per member."""
    return lambda step, hp: hp[name]


def _ls_mode(eps_of: Callable[[Step, dict[str, Tensor]], Scalar], label: str, family: str,
             hyperparameters: Mapping[str, Hyperparameter], random: bool = False,
             batch_level: bool = False) -> Mode:
    """A label-smoothing mode whose per-sample smoothing ``eps_of(step, hp)`` is held fixed:
    its closed form and the plain loss it is checked against both come from ``eps_of``.
    ``batch_level``: the smoothing reads the batch (LGALS's alignment to the batch mean)."""
    def loss(logits, labels, uniform=None, **hp):
        step = Step.of(logits.detach(), labels, uniform=uniform)
        return _smoothed(logits, labels, eps_of(step, hp))

    def closed_form(step, hp):
        return label_smoothing(step, eps_of(step, hp))

    return Mode(loss, hyperparameters, label, family, closed_form, random=random,
                batch_level=batch_level)


def _ce(logits, labels):
    return _smoothed(logits, labels, 0.0)


def _baseline(step: Step, hp: dict[str, Tensor]) -> Loss:
    return label_smoothing(step, 0.0)


def _gce_loss(logits, labels, gce_q):
    return (1 - _p_observed(logits, labels) ** gce_q) / gce_q


def _gce(step, hp):
    """``(1 - p_y ** q) / q``, whose gradient is ``p_y ** q * g``."""
    q = hp["gce_q"]
    p_q = step.observed(step.probs) ** q
    return Loss((1.0 - p_q) / q, p_q.unsqueeze(-1) * step.gradients)


def _sce_loss(logits, labels, sce_alpha, sce_beta):
    return sce_alpha * _ce(logits, labels) - RCE_LOG_ZERO * sce_beta * (
        1 - _p_observed(logits, labels))


def _sce(step, hp):
    """``alpha * CE + beta * RCE``; with log 0 clamped to A = -4, RCE = -A (1 - p_y) and its
    gradient is -A p_y g."""
    p_y = step.observed(step.probs)
    nll = -step.observed(step.log_probs)
    alpha, beta = hp["sce_alpha"], hp["sce_beta"]
    values = alpha * nll - RCE_LOG_ZERO * beta * (1.0 - p_y)
    weight = alpha - RCE_LOG_ZERO * beta * p_y
    return Loss(values, weight.unsqueeze(-1) * step.gradients)


def _bootstrap_loss(logits, labels, bootstrap_beta):
    beta = bootstrap_beta.unsqueeze(-1)
    onehot = F.one_hot(labels, logits.shape[-1]).to(logits.dtype)
    target = beta * onehot + (1 - beta) * torch.softmax(logits, -1).detach()
    return -(target * torch.log_softmax(logits, -1)).sum(-1)


def _bootstrap(step, hp):
    """Soft bootstrapping: cross-entropy against ``beta * onehot + (1 - beta) * p``, ``p``
    held fixed; the gradient is ``p - target = beta * g``."""
    beta = hp["bootstrap_beta"]
    target = beta.unsqueeze(-1) * step.onehot() + (1.0 - beta.unsqueeze(-1)) * step.probs
    values = -(target * step.log_probs).sum(dim=-1)
    return Loss(values, beta.unsqueeze(-1) * step.gradients)


def _elr_loss(logits, labels, state, elr_beta, elr_lambda):
    clamped = torch.softmax(logits, -1).clamp(ELR_CLAMP, 1 - ELR_CLAMP)
    fixed = clamped.detach()
    beta = elr_beta.unsqueeze(-1)
    targets = beta * state + (1 - beta) * fixed / fixed.sum(-1, keepdim=True)
    values = _ce(logits, labels) + elr_lambda * torch.log(1 - (targets * clamped).sum(-1))
    return values, targets


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


# The optimizer's hyperparameters, which every mode reads and tuning always searches.
EVERY_MODE: dict[str, Hyperparameter] = {
    "lr": Hyperparameter(1e-3, 0.0, low_open=True, search=(1e-4, 3e-2), log=True,
                         help="AdamW learning rate (every mode)."),
    "weight_decay": Hyperparameter(1e-2, 0.0, search=(1e-6, 1e-1), log=True,
                                   help="AdamW weight decay (every mode)."),
}
EPS_MAX = Hyperparameter(0.3, 0.0, 1.0, search=(0.0, 1.0),
                         help="Largest smoothing of lgals and its ablations.")
GAMMA = Hyperparameter(1.0, 0.0, search=(0.25, 8.0), log=True,
                       help="Exponent of lgals and its ablations.")
ADAPTIVE = {"eps_max": EPS_MAX, "gamma": GAMMA}

BUILTIN_MODES: dict[str, Mode] = {
    "baseline": Mode(_ce, {}, "Baseline", "paper", _baseline),
    "fixed_ls": _ls_mode(_fixed("eps"), "FixedLS", "paper", {"eps": Hyperparameter(
        0.1, 0.0, 1.0, high_open=True, search=(0.0, 0.6), help="fixed_ls smoothing.")}),
    "lgals": _ls_mode(_lgals_eps, "LGALS", "paper", ADAPTIVE, batch_level=True),
    "confidence_ls": _ls_mode(_confidence_eps, "ConfidenceLS", "ablation", ADAPTIVE),
    "el2n_ls": _ls_mode(_el2n_eps, "EL2N-LS", "ablation", ADAPTIVE),
    "shuffled_lgals": _ls_mode(_shuffled_eps, "ShuffledLGALS", "ablation", ADAPTIVE,
                               random=True, batch_level=True),
    "nls": _ls_mode(_fixed("nls_eps"), "NLS", "ablation", {"nls_eps": Hyperparameter(
        -0.2, -1.0, 0.0, high_open=True, search=(-1.0, -0.01),
        help="nls smoothing (negative).")}),
    "gce": Mode(_gce_loss, label="GCE", family="peer", closed_form=_gce, hyperparameters={
        "gce_q": Hyperparameter(0.7, 0.0, 1.0, low_open=True, search=(0.05, 1.0),
                                help="gce exponent q.")}),
    "sce": Mode(_sce_loss, label="SCE", family="peer", closed_form=_sce, hyperparameters={
        "sce_alpha": Hyperparameter(0.1, 0.0, search=(0.01, 10.0), log=True,
                                    help="sce weight of cross-entropy."),
        "sce_beta": Hyperparameter(1.0, 0.0, search=(0.01, 10.0), log=True,
                                   help="sce weight of reverse cross-entropy.")}),
    "bootstrap": Mode(_bootstrap_loss, label="Bootstrap", family="peer",
                      closed_form=_bootstrap, hyperparameters={
                          "bootstrap_beta": Hyperparameter(
                              0.95, 0.5, 1.0, search=(0.5, 1.0),
                              help="bootstrap weight of the observed label.")}),
    "elr": Mode(_elr_loss, label="ELR", family="peer", closed_form=_elr, state=True,
                hyperparameters={
                    "elr_beta": Hyperparameter(0.7, 0.0, 1.0, high_open=True,
                                               search=(0.5, 0.99),
                                               help="elr momentum of the running targets."),
                    "elr_lambda": Hyperparameter(3.0, 0.0, search=(0.1, 10.0), log=True,
                                                 help="elr weight of the regulariser.")}),
    "early_stop": Mode(_ce, {}, "EarlyStop", "peer", _baseline, picks_epochs=True),
}


# --- the registry: lgals' own modes and users' packages', through one entry-point group ---

# Names a mode's hyperparameter may not take: the run's own settings and options.
RESERVED = frozenset({*EVERY_MODE, "mode", "modes", "epochs", "batch_size", "seed", "seeds",
                      "first_seed", "device", "dataset", "noise_rate", "noise_type",
                      "noise_seed", "val_fraction", "val_labels", "trial", "repeat", "suite"})


def _validate(name: str, mode: Mode, registered: Mapping[str, Mode]) -> None:
    """What the registry refuses: a loss that is not a function, an unknown family (only
    lgals' own modes are the paper's), a hyperparameter with a bad declaration, a reserved
    name, or a different declaration of a name another mode already declared."""
    if not callable(mode.loss) or not (mode.closed_form is None or callable(mode.closed_form)):
        raise ValueError("loss (and closed_form, when given) must be functions")
    if mode.family not in FAMILIES or (mode.family == "paper"
                                       and BUILTIN_MODES.get(name) is not mode):
        raise ValueError(f"family must be one of {', '.join(FAMILIES[1:])}, got {mode.family!r}")
    declared = {n: h for m in registered.values() for n, h in m.hyperparameters.items()}
    for hp_name, hyperparameter in mode.hyperparameters.items():
        where = f"hyperparameter {hp_name!r}"
        if not isinstance(hyperparameter, Hyperparameter):
            raise ValueError(f"{where} must be declared with lgals.plugin.Hyperparameter")
        if not NAME.match(hp_name) or hp_name in RESERVED:
            raise ValueError(f"{where}: a name must be lowercase letters, digits and "
                             f"underscores and not one of {', '.join(sorted(RESERVED))}")
        problem = hyperparameter.problem()
        if problem is not None:
            raise ValueError(f"{where}: {problem}")
        if declared.get(hp_name, hyperparameter) != hyperparameter:
            raise ValueError(f"{where} is already declared differently by another mode")


MODES: Registry[Mode] = Registry("lgals.modes", Mode, _validate)


class _Suites(Mapping[str, tuple[str, ...]]):
    """The suites by name, read from the registry when asked: ``paper`` (the note's three),
    ``controls`` (with the ablations), ``peers`` (with the peers) and ``all``."""

    FAMILIES = {"paper": ("paper",), "controls": ("paper", "ablation"),
                "peers": ("paper", "peer"), "all": FAMILIES}

    def __getitem__(self, name: str) -> tuple[str, ...]:
        families = self.FAMILIES[name]
        return tuple(m for m, mode in MODES.items() if mode.family in families)

    def __iter__(self):
        return iter(self.FAMILIES)

    def __len__(self) -> int:
        return len(self.FAMILIES)


SUITES: Mapping[str, tuple[str, ...]] = _Suites()


class _Hyperparameters(Mapping[str, Hyperparameter]):
    """Every hyperparameter any registered mode reads, the optimizer's first."""

    @property
    def _all(self) -> dict[str, Hyperparameter]:
        return {**EVERY_MODE, **{name: h for mode in MODES.values()
                                 for name, h in mode.hyperparameters.items()}}

    def __getitem__(self, name: str) -> Hyperparameter:
        return self._all[name]

    def __iter__(self):
        return iter(self._all)

    def __len__(self) -> int:
        return len(self._all)


HYPERPARAMETERS: Mapping[str, Hyperparameter] = _Hyperparameters()
