"""One AdamW step for a stack of S members, three ways, side by side.

- ``param groups``: ``torch.optim.AdamW(fused=True)`` with one param group per member (each
  trial has its own learning rate and weight decay): what the engine did before issue 25;
- ``vectorised``: one pure-tensor update over the whole ``[S, P]`` buffer with per-member
  ``[S, 1]`` learning rate, weight decay and bias corrections (seven elementwise passes);
- ``StackedAdamW``: the engine's optimizer (``lgals.optim``): torch's fused kernel called
  directly, one call per member (one for all when they share hyperparameters).

Members have distinct learning rates, as in a tuning round; P is the MLP's 78,858 parameters.
Interleaved repeats, medians; microseconds per member-step. Each variant's parameters after
the timed steps are checked against the param-group optimizer's (largest relative gap).

    python benchmarks/adamw_step.py [--sizes 1,5,20,40] [--repeats 7] [--steps 20] [--json]
"""

from __future__ import annotations

import time

import torch
from common import describe_machine, emit_json, interleaved_medians, machine, parser

from lgals.model import layer_sizes
from lgals.optim import BETAS, EPS, StackedAdamW

N_PARAMS = sum(fan_in * fan_out + fan_out
               for fan_in, fan_out in zip(layer_sizes(40, 10)[:-1], layer_sizes(40, 10)[1:]))
VARIANTS = ("param groups", "vectorised", "StackedAdamW")
WEIGHT_DECAY = 1e-2


def learning_rates(members: int) -> list[float]:
    return [1e-3 * (1 + i / members) for i in range(members)]


def param_groups(params: torch.Tensor, grads: torch.Tensor):
    groups = []
    for row, lr in enumerate(learning_rates(len(params))):
        param = params[row:row + 1]
        param.grad = grads[row:row + 1]
        groups.append({"params": [param], "lr": lr, "weight_decay": WEIGHT_DECAY})
    return torch.optim.AdamW(groups, fused=True).step


def vectorised(params: torch.Tensor, grads: torch.Tensor):
    members = len(params)
    exp_avg, exp_avg_sq = torch.zeros_like(params), torch.zeros_like(params)
    denominator = torch.empty_like(params)
    lr = torch.tensor(learning_rates(members), dtype=torch.float64).view(-1, 1)
    steps = torch.zeros(members, 1, dtype=torch.float64)
    decay = (1 - lr * WEIGHT_DECAY).float()

    def step():
        steps.add_(1)
        step_size = lr / (1 - BETAS[0] ** steps)
        root = (1 - BETAS[1] ** steps).sqrt()
        scale, eps = (1 / (root * step_size)).float(), (EPS / step_size).float()
        params.mul_(decay)
        exp_avg.lerp_(grads, 1 - BETAS[0])
        exp_avg_sq.mul_(BETAS[1]).addcmul_(grads, grads, value=1 - BETAS[1])
        torch.sqrt(exp_avg_sq, out=denominator)
        torch.addcmul(eps, denominator, scale, out=denominator)  # (sqrt(v)/root + eps)/size
        params.addcdiv_(exp_avg, denominator, value=-1)
    return step


def stacked(params: torch.Tensor, grads: torch.Tensor):
    members = len(params)
    return StackedAdamW(params, grads, learning_rates(members), [WEIGHT_DECAY] * members).step


MAKERS = {"param groups": param_groups, "vectorised": vectorised, "StackedAdamW": stacked}


def buffers(members: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(members)
    return (torch.randn(members, N_PARAMS, generator=generator),
            torch.randn(members, N_PARAMS, generator=generator))


def micros_per_member_step(variant: str, members: int, steps: int) -> float:
    params, grads = buffers(members)
    step = MAKERS[variant](params, grads)
    step()  # warm-up
    started = time.perf_counter()
    for _ in range(steps):
        step()
    return 1e6 * (time.perf_counter() - started) / steps / members


def largest_gap(variant: str, members: int, steps: int = 20) -> float:
    """After ``steps`` steps from the same start: max |variant - param groups| / max |param|."""
    results = []
    for name in ("param groups", variant):
        params, grads = buffers(members)
        step = MAKERS[name](params, grads)
        for _ in range(steps):
            step()
        results.append(params)
    reference, got = results
    return float((got - reference).abs().max() / reference.abs().max())


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--sizes", default="1,5,20,40")
    cli.add_argument("--repeats", type=int, default=7)
    cli.add_argument("--steps", type=int, default=20)
    args = cli.parse_args()
    rows = []
    for members in (int(s) for s in args.sizes.split(",")):
        median = interleaved_medians(VARIANTS, args.repeats, lambda variant, _, members=members:
                                     micros_per_member_step(variant, members, args.steps))
        rows.append({"members": members, **{f"{v}_us": median[v] for v in VARIANTS},
                     **{f"{v}_gap": largest_gap(v, members) for v in VARIANTS[1:]}})
    document = {"machine": machine(), "n_params": N_PARAMS, "rows": rows}
    if args.json:
        emit_json(document)
        return
    print(describe_machine(document["machine"]))
    print(f"one AdamW step, {N_PARAMS} parameters per member, distinct learning rates; "
          f"microseconds per member-step (median of {args.repeats} interleaved repeats of "
          f"{args.steps} steps)\n")
    print("| members | param groups | vectorised [S, P] | StackedAdamW | StackedAdamW vs param "
          "groups | largest gap to param groups (vectorised, StackedAdamW) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['members']} | {r['param groups_us']:.1f} | {r['vectorised_us']:.1f} | "
              f"{r['StackedAdamW_us']:.1f} | "
              f"{r['param groups_us'] / r['StackedAdamW_us']:.2f}x faster | "
              f"{r['vectorised_gap']:.1e}, {r['StackedAdamW_gap']:.1e} |")


if __name__ == "__main__":
    main()
