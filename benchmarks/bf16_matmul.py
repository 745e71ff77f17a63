"""The engine's matrix products in float32 and in bfloat16, side by side: groundwork for issue 25.

One stacked training step of the MLP (mnist1d: 40 -> 256 -> 256 -> 10, batch 128) is, in its
matrix products, a forward product per layer, a weight-gradient product per layer and an
input-gradient product per layer but the first: what ``StackedMLP.forward``/``backward`` run
with ``torch.bmm``. For each stack size this times those products in float32, in bfloat16
with the operands already bfloat16, and in bfloat16 with the casts the engine would pay
(float32 operands cast to bfloat16, the product cast back), interleaved over repeats; and it
measures each variant's relative error against float64 on the same operands. Nothing in lgals
uses bfloat16 yet: this measures the lever before it is pulled.

    python benchmarks/bf16_matmul.py [--sizes 5,20,40] [--repeats 7] [--steps 20] [--json]
"""

from __future__ import annotations

import time

import torch
from common import describe_machine, emit_json, interleaved_medians, machine, parser

from lgals.model import layer_sizes

BATCH = 128
SIZES = layer_sizes(40, 10)  # mnist1d's network
VARIANTS = ("fp32", "bf16", "bf16+casts")


def operands(members: int, dtype: torch.dtype, seed: int = 0) -> list[tuple]:
    """Every product of one step, as ``(a, b)`` pairs ``[S, n, k] x [S, k, m]``."""
    generator = torch.Generator().manual_seed(seed)

    def draw(*shape):
        return torch.randn(members, *shape, generator=generator, dtype=torch.float64).to(dtype)

    pairs = []
    for layer, (fan_in, fan_out) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        pairs.append((draw(BATCH, fan_in), draw(fan_in, fan_out)))  # forward
        pairs.append((draw(fan_in, BATCH), draw(BATCH, fan_out)))  # weight gradient
        if layer > 0:
            pairs.append((draw(BATCH, fan_out), draw(fan_out, fan_in)))  # input gradient
    return pairs


def step_gflop(members: int) -> float:
    """The step's products' floating-point operations, in GFLOP: 2 n k m per member each."""
    return sum(2 * a.numel() * b.shape[2] for a, b in operands(members, torch.float32)) / 1e9


def products(variant: str, pairs: list[tuple]) -> list[torch.Tensor]:
    if variant == "bf16+casts":
        return [torch.bmm(a.bfloat16(), b.bfloat16()).float() for a, b in pairs]
    return [torch.bmm(a, b) for a, b in pairs]


def seconds_per_step(variant: str, members: int, steps: int) -> float:
    pairs = operands(members, torch.bfloat16 if variant == "bf16" else torch.float32)
    products(variant, pairs)  # warm-up: oneDNN picks its kernels
    started = time.perf_counter()
    for _ in range(steps):
        products(variant, pairs)
    return (time.perf_counter() - started) / steps


def relative_error(variant: str, members: int) -> float:
    """The largest, over the step's products, of ||product - float64's|| / ||float64's||."""
    exact = operands(members, torch.float64)
    pairs = operands(members, torch.bfloat16 if variant == "bf16" else torch.float32)
    worst = 0.0
    for (a, b), got in zip(exact, products(variant, pairs)):
        reference = torch.bmm(a, b)
        worst = max(worst, float((got.double() - reference).norm() / reference.norm()))
    return worst


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--sizes", default="5,20,40", help="stack sizes, comma-separated")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--steps", type=int, default=20, help="steps timed per repeat")
    args = p.parse_args()
    rows = []
    for members in (int(s) for s in args.sizes.split(",")):
        median = interleaved_medians(VARIANTS, args.repeats, lambda variant, _, members=members:
                                     seconds_per_step(variant, members, args.steps))
        rows.append({
            "members": members, "gflop_per_step": step_gflop(members),
            **{f"{v}_ms": 1e3 * median[v] for v in VARIANTS},
            **{f"{v}_gflops": step_gflop(members) / median[v] for v in VARIANTS},
            "speedup_bf16": median["fp32"] / median["bf16"],
            "speedup_bf16_with_casts": median["fp32"] / median["bf16+casts"],
            **{f"{v}_rel_error": relative_error(v, members) for v in ("fp32", "bf16+casts")},
        })
    document = {"machine": machine(), "batch": BATCH, "layers": list(SIZES), "rows": rows}
    if args.json:
        emit_json(document)
        return
    print(describe_machine(document["machine"]))
    print(f"one step's matrix products, MLP {SIZES}, batch {BATCH} (median of "
          f"{args.repeats} interleaved repeats of {args.steps} steps)")
    print("members | fp32 ms (GFLOP/s) | bf16 ms (GFLOP/s) | bf16+casts ms | speed-up bf16, "
          "with casts | rel. error fp32, bf16")
    for r in rows:
        print(f"{r['members']:7d} | {r['fp32_ms']:6.3f} ({r['fp32_gflops']:5.0f}) | "
              f"{r['bf16_ms']:6.3f} ({r['bf16_gflops']:5.0f}) | {r['bf16+casts_ms']:6.3f} | "
              f"{r['speedup_bf16']:.2f}x, {r['speedup_bf16_with_casts']:.2f}x | "
              f"{r['fp32_rel_error']:.1e}, {r['bf16+casts_rel_error']:.1e}")


if __name__ == "__main__":
    main()
