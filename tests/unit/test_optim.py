"""StackedAdamW: each row steps as torch.optim.AdamW steps that member alone, with its own
learning rate, weight decay and step count, before and after members leave."""

from __future__ import annotations

import pytest
import torch

from lgals.optim import StackedAdamW

N_PARAMS = 1000
HYPERPARAMETERS = [(1e-3, 1e-2), (3e-3, 0.0), (5e-4, 0.1), (2e-3, 1e-2)]  # (lr, weight decay)


def gradients(step: int, rows: int) -> torch.Tensor:
    """A fresh, seeded gradient per step, with some entries near zero (where Adam is most
    sensitive to rounding)."""
    gen = torch.Generator().manual_seed(step)
    grad = torch.randn(rows, N_PARAMS, generator=gen)
    return grad * (torch.rand(rows, N_PARAMS, generator=gen) > 0.1)


class Alone:
    """One member, stepped by torch.optim.AdamW on its own tensor."""

    def __init__(self, start: torch.Tensor, lr: float, weight_decay: float, **options):
        self.param = start.clone().requires_grad_(False)
        self.optimizer = torch.optim.AdamW([self.param], lr=lr, weight_decay=weight_decay,
                                           **options)

    def step(self, grad: torch.Tensor) -> None:
        self.param.grad = grad.clone()
        self.optimizer.step()


def stacked(start: torch.Tensor, hyperparameters) -> StackedAdamW:
    params = start.clone()
    lr, weight_decay = zip(*hyperparameters)
    return StackedAdamW(params, torch.zeros_like(params), lr, weight_decay)


@pytest.mark.parametrize("hyperparameters", [HYPERPARAMETERS, [HYPERPARAMETERS[0]] * 3],
                         ids=["per-row", "shared"])
def test_every_row_steps_as_torch_adamw_alone(hyperparameters):
    """Over 200 steps: equal to torch's fused AdamW bit for bit (the same kernel), and to its
    default (for-each) implementation to float32 rounding, which Adam's m / sqrt(v) can
    amplify to a few 1e-6 where a gradient is near zero."""
    start = torch.randn(len(hyperparameters), N_PARAMS, generator=torch.Generator().manual_seed(0))
    optimizer = stacked(start, hyperparameters)
    fused = [Alone(start[i], *h, fused=True) for i, h in enumerate(hyperparameters)]
    default = [Alone(start[i], *h) for i, h in enumerate(hyperparameters)]
    for step in range(200):
        grad = gradients(step, len(hyperparameters))
        optimizer.grads.copy_(grad)
        optimizer.step()
        for row, (a, b) in enumerate(zip(fused, default)):
            a.step(grad[row])
            b.step(grad[row])
    for row, (a, b) in enumerate(zip(fused, default)):
        assert torch.equal(optimizer.params[row], a.param)
        torch.testing.assert_close(optimizer.params[row], b.param, rtol=1e-5, atol=1e-5)
        assert (optimizer.params[row] - start[row]).abs().max() > 0.01  # it moved


def test_rows_that_leave_take_nothing_with_them_and_the_rest_go_on():
    """Rows 0 and 2 leave after 30 steps; rows 1 and 3 go on for 70 more, in a smaller
    buffer, exactly as each does alone for 100 steps."""
    start = torch.randn(4, N_PARAMS, generator=torch.Generator().manual_seed(1))
    optimizer = stacked(start, HYPERPARAMETERS)
    alone = [Alone(start[i], *h, fused=True) for i, h in enumerate(HYPERPARAMETERS)]
    keep = [1, 3]
    for step in range(100):
        if step == 30:
            params = optimizer.params[keep].clone()
            optimizer = optimizer.select(keep, params, torch.zeros_like(params))
        rows = keep if step >= 30 else range(4)
        grad = gradients(step, 4)
        optimizer.grads.copy_(grad[list(rows)])
        optimizer.step()
        for row in rows:
            alone[row].step(grad[row])
    assert optimizer.params.shape == (2, N_PARAMS)
    for row, member in enumerate(keep):
        assert torch.equal(optimizer.params[row], alone[member].param)


def test_members_at_different_steps_each_get_their_own_bias_correction():
    """Two members stepped 3 and 40 times alone, then stacked with their state: each goes on
    as it would alone. (A shared step count would give the first a bias correction of step
    41 and a much smaller first update.)"""
    start = torch.randn(2, N_PARAMS, generator=torch.Generator().manual_seed(2))
    alone = [Alone(start[i], *HYPERPARAMETERS[i], fused=True) for i in range(2)]
    for row, steps in enumerate((3, 40)):
        for step in range(steps):
            alone[row].step(gradients(step, 2)[row])
    states = [a.optimizer.state[a.param] for a in alone]
    params = torch.stack([a.param.clone() for a in alone])
    optimizer = StackedAdamW(
        params, torch.zeros_like(params), *zip(*HYPERPARAMETERS[:2]),
        state=(torch.stack([s["exp_avg"] for s in states]),
               torch.stack([s["exp_avg_sq"] for s in states]),
               torch.stack([s["step"] for s in states]).view(2, 1)))
    for step in range(100, 110):
        grad = gradients(step, 2)
        optimizer.grads.copy_(grad)
        optimizer.step()
        for row in range(2):
            alone[row].step(grad[row])
    assert optimizer.steps.flatten().tolist() == [13.0, 50.0]
    for row in range(2):
        assert torch.equal(optimizer.params[row], alone[row].param)


def test_one_learning_rate_per_row_is_required():
    params = torch.zeros(3, 4)
    with pytest.raises(ValueError, match="one learning rate and one weight decay per row"):
        StackedAdamW(params, params.clone(), [1e-3] * 2, [0.0] * 3)
