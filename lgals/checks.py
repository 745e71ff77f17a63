"""The checks every mode is held to, built-in or a user's: ``lgals check-mode NAME`` runs
them, and a plugin's own test suite can call :func:`assert_mode_passes`.

1. ``closed_form`` (when given) against autograd of ``loss``, in float64 on random steps;
2. finite loss and gradient at extreme logits and at the edges of each hyperparameter's range;
3. stacked == alone: a member's loss and gradient do not depend on the members beside it;
4. a sample's loss does not depend on the other samples of its batch, unless the mode says
   it is ``batch_level``; and ``loss`` returns one value per sample.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lgals.losses import MODES, Hyperparameter, Loss, Mode, Step

N_CLASSES, BATCH, MEMBERS = 10, 16, 3
SEEDS_AND_SCALES = ((0, 1.0), (1, 3.0), (2, 12.0))  # 12: saturated softmax, ELR's clamp
EXTREME_SCALES = (0.0, 1e2, 1e4)  # all-equal logits, and softmax at float precision
# The built-ins' closed forms meet autograd to these (tests/unit/test_modes.py).
RTOL, ATOL = 1e-9, 1e-10


@dataclass(frozen=True)
class Check:
    """One check's outcome: its name, whether it passed and what it found."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'} {self.name}: {self.detail}"


def _values(hyperparameter: Hyperparameter) -> tuple[float, float, float]:
    """Three members' values: the default, and a third and all of the way up the search."""
    low, high = hyperparameter.search
    if hyperparameter.log:
        return (hyperparameter.default, math.exp(math.log(low) + (math.log(high) - math.log(low))
                                                 / 3), high)
    return hyperparameter.default, low + (high - low) / 3, high


def _members(mode: Mode, dtype: torch.dtype, values: dict[str, tuple[float, ...]] | None = None
             ) -> dict[str, Tensor]:
    """Each hyperparameter as ``[members, 1]``, one value per member."""
    values = values or {name: _values(h) for name, h in mode.hyperparameters.items()}
    return {name: torch.tensor(v, dtype=dtype).view(-1, 1) for name, v in values.items()}


def random_step(mode: Mode, seed: int, scale: float, dtype: torch.dtype = torch.float64,
                members: int = MEMBERS) -> Step:
    """A seeded step of ``members`` x ``BATCH`` samples, with random state and draws where the
    mode keeps state or draws at random."""
    generator = torch.Generator().manual_seed(seed)
    shape = (members, BATCH, N_CLASSES)
    logits = (scale * torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)
    labels = torch.randint(0, N_CLASSES, shape[:-1], generator=generator)
    state = (torch.softmax(torch.randn(shape, generator=generator, dtype=torch.float64), -1)
             .to(dtype) if mode.state else None)
    draws = torch.rand(shape[:-1], generator=generator, dtype=torch.float64).to(dtype)
    return Step.of(logits, labels, targets=state, uniform=lambda: draws)


def _largest_gap(a: Tensor, b: Tensor) -> str:
    gap = (a - b).abs()
    where = tuple(int(i) for i in (gap == gap.max()).nonzero()[0])
    return f"largest difference {gap.max().item():.3g} at index {where}"


def check_closed_form(mode: Mode) -> Check:
    name = "closed form == autograd (float64)"
    if mode.closed_form is None:
        return Check(name, True, "no closed form: the engine differentiates loss by autograd")
    hp = _members(mode, torch.float64)
    for seed, scale in SEEDS_AND_SCALES:
        step = random_step(mode, seed, scale)
        loss = mode.closed_form(step, hp)
        expected = mode.autograd(step, hp)
        for what, got, want, rtol, atol in (("values", loss.values, expected.values, RTOL, RTOL),
                                            ("gradient", loss.grad, expected.grad, RTOL, ATOL)):
            if got.shape != want.shape or not torch.allclose(got, want, rtol, atol):
                detail = (f"shape {tuple(got.shape)} != {tuple(want.shape)}"
                          if got.shape != want.shape else _largest_gap(got, want))
                return Check(name, False, f"the closed form and loss's autograd disagree on "
                                          f"the {what} at logits scale {scale:g}: {detail}")
    return Check(name, True, f"values and gradients agree on {len(SEEDS_AND_SCALES)} random "
                             f"steps (rtol {RTOL:g})")


def _edge_points(mode: Mode) -> list[tuple[str, dict[str, float]]]:
    """The defaults, then each hyperparameter at each of its edges with the others at their
    defaults."""
    defaults = {name: h.default for name, h in mode.hyperparameters.items()}
    points = [("defaults", defaults)]
    for name, hyperparameter in mode.hyperparameters.items():
        points += [(f"{name}={edge:g}", {**defaults, name: edge})
                   for edge in hyperparameter.edges()]
    return points


def check_finite(mode: Mode) -> Check:
    name = "finite at extreme logits and range edges"
    tried = 0
    for label, point in _edge_points(mode):
        for dtype in (torch.float32, torch.float64):
            hp = _members(mode, dtype, {k: (v,) * MEMBERS for k, v in point.items()})
            for scale in EXTREME_SCALES:
                loss = mode.apply(random_step(mode, 3, scale, dtype), hp)
                tried += 1
                bad = [what for what, t in (("loss", loss.values), ("gradient", loss.grad))
                       if not torch.isfinite(t).all()]
                if bad:
                    return Check(name, False, f"non-finite {' and '.join(bad)} at {label}, "
                                              f"logits scale {scale:g}, {dtype}")
    return Check(name, True, f"{tried} steps: every hyperparameter edge x logits scale "
                             f"{', '.join(f'{s:g}' for s in EXTREME_SCALES)} x float32/64")


def _same(a: Loss, b: Loss, rows: Tensor | slice) -> bool:
    return (torch.allclose(a.values[rows], b.values, RTOL, RTOL)
            and torch.allclose(a.grad[rows], b.grad, RTOL, ATOL))


def check_stacked(mode: Mode) -> Check:
    name = "stacked == alone"
    hp = _members(mode, torch.float64)
    step = random_step(mode, 4, 3.0)
    stacked = mode.apply(step, hp)
    for member in range(MEMBERS):
        row = torch.tensor([member])
        alone = mode.apply(step.select(row, uniform=lambda row=row: step.uniform()[row]),
                           {k: v[row] for k, v in hp.items()})
        if not _same(stacked, alone, row):
            return Check(name, False, f"member {member}'s loss or gradient changes when it is "
                                      f"stacked with {MEMBERS - 1} others")
    return Check(name, True, f"each of {MEMBERS} members with its own hyperparameters equals "
                             "it trained alone")


def check_per_sample(mode: Mode) -> Check:
    name = "per-sample loss"
    hp = _members(mode, torch.float64)
    step = random_step(mode, 5, 3.0)
    values, _ = mode.values(step.logits, step, hp)
    if not isinstance(values, Tensor) or values.shape != step.labels.shape:
        return Check(name, False, f"loss must return one value per sample, shape "
                                  f"{tuple(step.labels.shape)}; got "
                                  f"{getattr(values, 'shape', type(values).__name__)}")
    if mode.batch_level:
        return Check(name, True, "one value per sample; declared batch-level, so a sample's "
                                 "loss may depend on its batch")
    before = mode.apply(step, hp)
    changed = step.logits.clone()
    changed[:, 0] = changed[:, 0] + torch.linspace(-2.0, 2.0, N_CLASSES, dtype=torch.float64)
    after = mode.apply(Step.of(changed, step.labels, targets=step.targets,
                               uniform=step.uniform), hp)
    others = slice(1, None)
    if not (torch.allclose(before.values[:, others], after.values[:, others], RTOL, RTOL)
            and torch.allclose(before.grad[:, others], after.grad[:, others], RTOL, ATOL)):
        return Check(name, False, "changing one sample's logits changes the others' loss or "
                                  "gradient: declare the mode batch_level=True if it is")
    return Check(name, True, "one value per sample, each independent of the rest of its batch")


CHECKS: tuple[Callable[[Mode], Check], ...] = (
    check_closed_form, check_finite, check_stacked, check_per_sample)


def check_mode(mode: Mode | str) -> list[Check]:
    """Every check on ``mode`` (a :class:`Mode`, or a registered mode's name), in order; an
    exception inside a check is that check's failure."""
    mode = MODES[mode] if isinstance(mode, str) else mode
    results = []
    for check in CHECKS:
        try:
            results.append(check(mode))
        except Exception as error:  # a user's loss may fail in any way: that is the finding
            name = check.__name__.removeprefix("check_").replace("_", " ")
            results.append(Check(name, False, f"raised {type(error).__name__}: {error}"))
    return results


def assert_mode_passes(mode: Mode | str) -> None:
    """For a plugin's own tests: raise ``AssertionError`` naming every check that fails."""
    failed = [check.line() for check in check_mode(mode) if not check.passed]
    assert not failed, "\n".join(failed)
