"""How the cost of one member grows with the stack: the engine at 1..40 members, and the bound.

Mixed stacks as tuning makes them (baseline, fixed_ls and lgals members in turn, each with its
own lr), on the tuning data (training split and the noisy validation split). For each
precision and stack size it times short runs (the first epoch dropped as warm-up),
interleaved over repeats, and prints the wall seconds of one epoch per member next to the
bound the machine's measured single-GEMM peak in that precision gives: the FLOPs of one
member's epoch (forward, both backward products, the validation pass) divided by that peak.
(The validation pass runs in float32 at either precision, so the bf16 bound is optimistic by
its share, about a tenth of the FLOPs.)

    python benchmarks/stack_scaling.py [--sizes 1,2,5,10,20,40] [--precisions fp32,bf16]
        [--repeats 5] [--json]
"""

from __future__ import annotations

import statistics
import time

import torch
from common import describe_machine, emit_json, interleaved, machine, parser

from lgals.losses import MODES
from lgals.model import PRECISIONS, Compute, layer_sizes
from lgals.train import TrainConfig, train
from lgals.tuning import TuneSettings, tuning_data


def gemm_peak_gflops(precision: str, size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of one large matmul in ``precision`` on all torch threads."""
    dtype = PRECISIONS[precision]
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def member_epoch_gflop(n_train: int, n_held_out: int) -> float:
    """One member's epoch on mnist1d: forward + weight gradients + input gradients, held-out
    forward."""
    sizes = layer_sizes(40, 10)
    pairs = list(zip(sizes[:-1], sizes[1:]))
    forward = sum(2 * fan_in * fan_out for fan_in, fan_out in pairs)  # per sample
    input_grads = sum(2 * fan_in * fan_out for fan_in, fan_out in pairs[1:])
    return (n_train * (2 * forward + input_grads) + n_held_out * forward) / 1e9


def stack_configs(size: int, epochs: int) -> list[TrainConfig]:
    modes = list(MODES)
    return [TrainConfig.of(modes[i % len(modes)], epochs=epochs, lr=1e-3 * (1 + i % 7))
            for i in range(size)]


def epoch_seconds(data, size: int, epochs: int, precision: str) -> float:
    results = train(data, stack_configs(size, epochs), list(range(size)),
                    compute=Compute(precision=precision))
    return statistics.median(results[0].history["epoch_seconds"][1:])


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--sizes", default="1,2,5,10,20,40")
    cli.add_argument("--epochs", type=int, default=4, help="per run, the first one dropped")
    cli.add_argument("--repeats", type=int, default=5)
    cli.add_argument("--precisions", default="fp32,bf16")
    args = cli.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    precisions = args.precisions.split(",")
    data = tuning_data(TuneSettings(mode="baseline"))  # what tuning trains on
    info = machine()
    peaks = {precision: gemm_peak_gflops(precision) for precision in precisions}
    gflop = member_epoch_gflop(len(data.y_train), len(data.y_val))
    variants = [(precision, size) for precision in precisions for size in sizes]
    for precision, size in variants:  # warm-up
        epoch_seconds(data, size, 2, precision)
    times = interleaved(variants, args.repeats, lambda variant, _: epoch_seconds(
        data, variant[1], args.epochs, variant[0]) / variant[1])
    median = {variant: statistics.median(values) for variant, values in times.items()}
    rows = [{"precision": precision, "members": size,
             "ms_per_member_epoch": 1e3 * median[precision, size],
             "gflops_per_s": gflop / median[precision, size],
             "bound_ms": 1e3 * gflop / peaks[precision],
             "vs_bound": median[precision, size] * peaks[precision] / gflop,
             "vs_one_member": median[precision, sizes[0]] / median[precision, size],
             "vs_fp32": (median["fp32", size] / median[precision, size]
                         if "fp32" in precisions else None)}
            for precision, size in variants]
    document = {"machine": info, "gemm_peak_gflops": peaks, "member_epoch_gflop": gflop,
                "rows": rows}
    if args.json:
        emit_json(document)
        return
    print(f"{describe_machine(info)}; single-GEMM peak "
          + ", ".join(f"{p} {peaks[p]:.0f} GFLOP/s" for p in precisions)
          + f"; one member's epoch {gflop:.2f} GFLOP\n{args.epochs - 1} timed epochs x "
          f"{args.repeats} interleaved repeats, medians\n")
    print("| precision | members | ms per member-epoch | bound ms | x bound | GFLOP/s | "
          "cheaper per member than 1 | faster than fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for row in rows:
        versus = f"{row['vs_fp32']:.2f}x" if row["vs_fp32"] is not None else "-"
        print(f"| {row['precision']} | {row['members']} | {row['ms_per_member_epoch']:.1f} | "
              f"{row['bound_ms']:.1f} | {row['vs_bound']:.2f} | {row['gflops_per_s']:.0f} | "
              f"{row['vs_one_member']:.2f}x | {versus} |")


if __name__ == "__main__":
    main()
