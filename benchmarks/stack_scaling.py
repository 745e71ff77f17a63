"""How the cost of one member grows with the stack: the engine at 1..40 members, and the bound.

Mixed stacks as tuning makes them (baseline, fixed_ls and lgals members in turn, each with its
own lr), on the tuning data (training split and the noisy validation split). For each stack
size it times short runs (the first epoch dropped as warm-up), interleaved over repeats, and
prints the wall seconds of one epoch per member next to the bound the machine's measured
single-GEMM peak gives: the FLOPs of one member's epoch (forward, both backward products,
the validation pass) divided by that peak.

    python benchmarks/stack_scaling.py [--sizes 1,2,5,10,20,40] [--repeats 5] [--json]
"""

from __future__ import annotations

import statistics
import time

import torch
from common import describe_machine, emit_json, interleaved, machine, parser

from lgals.losses import MODES
from lgals.model import layer_sizes
from lgals.train import TrainConfig, train
from lgals.tuning import TuneSettings, tuning_data


def gemm_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """Best GFLOP/s of one large float32 matmul on all torch threads."""
    a, b = torch.randn(size, size), torch.randn(size, size)
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


def epoch_seconds(data, size: int, epochs: int) -> float:
    results = train(data, stack_configs(size, epochs), list(range(size)))
    return statistics.median(results[0].history["epoch_seconds"][1:])


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--sizes", default="1,2,5,10,20,40")
    cli.add_argument("--epochs", type=int, default=4, help="per run, the first one dropped")
    cli.add_argument("--repeats", type=int, default=5)
    args = cli.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    data = tuning_data(TuneSettings(mode="baseline"))  # what tuning trains on
    info = machine()
    peak = gemm_peak_gflops()
    gflop = member_epoch_gflop(len(data.y_train), len(data.y_val))
    bound_ms = 1e3 * gflop / peak

    for size in sizes:  # warm-up
        epoch_seconds(data, size, 2)
    times = interleaved(sizes, args.repeats,
                        lambda size, _: epoch_seconds(data, size, args.epochs) / size)
    rows = [{"members": size, "ms_per_member_epoch": 1e3 * statistics.median(times[size]),
             "gflops_per_s": gflop / statistics.median(times[size]),
             "vs_bound": statistics.median(times[size]) * 1e3 / bound_ms,
             "vs_one_member": statistics.median(times[sizes[0]]) / statistics.median(times[size])}
            for size in sizes]
    document = {"machine": info, "gemm_peak_gflops": peak, "member_epoch_gflop": gflop,
                "bound_ms_per_member_epoch": bound_ms, "rows": rows}
    if args.json:
        emit_json(document)
        return
    print(f"{describe_machine(info)}; single-GEMM peak {peak:.0f} GFLOP/s; one member's epoch "
          f"{gflop:.2f} GFLOP -> bound {bound_ms:.1f} ms\n{args.epochs - 1} timed epochs x "
          f"{args.repeats} interleaved repeats, medians\n")
    print("| members | ms per member-epoch | GFLOP/s | x bound | cheaper per member than 1 |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['members']} | {row['ms_per_member_epoch']:.1f} | "
              f"{row['gflops_per_s']:.0f} | {row['vs_bound']:.2f} | "
              f"{row['vs_one_member']:.2f}x |")


if __name__ == "__main__":
    main()
