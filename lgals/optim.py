"""AdamW for a stack: every member's optimizer state in ``[S, P]`` buffers beside its weights.

Each member (row) has its own learning rate, weight decay and step count, so trials with
different hyperparameters train together, and a member leaving the stack is a row selection
(:meth:`StackedAdamW.select`) instead of a rebuilt optimizer. The update is torch's fused
AdamW kernel, called directly: once over all rows when they share learning rate and weight
decay (an evaluation's seeds), once per row otherwise (a tuning round's trials). The
pure-tensor update over the whole ``[S, P]`` buffer with ``[S, 1]`` hyperparameters is the
obvious alternative and was measured slower on CPU (``benchmarks/adamw_step.py``): it makes
seven passes over memory where the fused kernel makes one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

BETAS = (0.9, 0.999)  # torch.optim.AdamW's defaults, as the note used
EPS = 1e-8


class StackedAdamW:
    """AdamW (Loshchilov & Hutter; torch.optim.AdamW's update) on ``params [S, P]`` in place,
    reading ``grads [S, P]``; ``lr`` and ``weight_decay`` are per row."""

    def __init__(self, params: Tensor, grads: Tensor, lr: Sequence[float],
                 weight_decay: Sequence[float], state: tuple[Tensor, Tensor, Tensor] | None = None):
        if not len(lr) == len(weight_decay) == params.shape[0]:
            raise ValueError("need one learning rate and one weight decay per row")
        self.params, self.grads = params, grads
        self.lr, self.weight_decay = list(map(float, lr)), list(map(float, weight_decay))
        if state is None:
            state = (torch.zeros_like(params), torch.zeros_like(params),
                     torch.zeros(params.shape[0], 1, dtype=torch.float32, device=params.device))
        self.exp_avg, self.exp_avg_sq, self.steps = state
        self._calls = self._plan()

    def _plan(self) -> list[tuple[list[list[Tensor]], float, float]]:
        """The kernel calls of one step, each as its tensor lists and hyperparameters: one
        call over all rows if they share hyperparameters and step count, else one per row."""
        buffers = (self.params, self.grads, self.exp_avg, self.exp_avg_sq, self.steps)
        shared = (len(set(zip(self.lr, self.weight_decay))) == 1
                  and bool((self.steps == self.steps[0]).all()))
        if shared:
            *whole, steps = buffers
            return [([[b] for b in whole] + [[steps[0]]], self.lr[0], self.weight_decay[0])]
        return [([[b[row]] for b in buffers], lr, weight_decay)
                for row, (lr, weight_decay) in enumerate(zip(self.lr, self.weight_decay))]

    @torch.no_grad()
    def step(self) -> None:
        """One AdamW step for every row, each with its own bias correction."""
        self.steps += 1
        for (params, grads, exp_avgs, exp_avg_sqs, steps), lr, weight_decay in self._calls:
            torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=lr,
                                beta1=BETAS[0], beta2=BETAS[1], weight_decay=weight_decay,
                                eps=EPS, amsgrad=False, maximize=False)

    def select(self, rows: list[int], params: Tensor, grads: Tensor) -> StackedAdamW:
        """The optimizer of the members at ``rows``, now stepping ``params``/``grads`` (the
        smaller stack's buffers), with their moments and step counts."""
        state = (self.exp_avg[rows], self.exp_avg_sq[rows], self.steps[rows])
        return StackedAdamW(params, grads, [self.lr[row] for row in rows],
                            [self.weight_decay[row] for row in rows], state)
