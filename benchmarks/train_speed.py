"""Training speed: lgals' stacked engine against the plain PyTorch loop a user would write.

For each mode (baseline, fixed_ls, lgals) it times, in this one process:

* plain, 1 seed: DataLoader(TensorDataset, batch 128, shuffle) + nn.Sequential MLP + AdamW +
  cross-entropy (label_smoothing=0.1 for fixed_ls; per-sample LGALS epsilon with
  ``lgals_epsilon`` + ``smoothed_cross_entropy`` for lgals), test accuracy once per epoch.
  A user training 5 seeds runs this loop 5 times, so "plain, 5 seeds" is 5 x the measured
  1-seed time (not measured separately: sequential runs do not share anything).
* engine, 1 seed and 5 seeds: ``lgals.train.train``, one stacked run, timed by its own
  ``history["epoch_seconds"]``.

All times are wall seconds per epoch (training steps + the once-per-epoch test evaluation;
model/loader setup excluded for both), scaled to a 100-epoch run. This machine's speed drifts
by tens of percent over seconds (a shared VM), so measurements are short and interleaved:
each repeat runs every measurement once for a few epochs (the first epoch is warm-up and
dropped; the rest give a median), in an order reversed on odd repeats, and a ratio is taken
within a repeat, between runs seconds apart. Tables show medians over repeats; ratios are
medians of those paired ratios (with their interquartile range), so they can differ a little
from the ratio of the medians shown. Per-step time =
epoch time / 32 steps (ceil(4000 / 128)), i.e. it includes a share of the test evaluation.

Read the first table as: "speedup per seed" > 1 means training N seeds together in the
engine costs less per seed than the plain loop; the second table checks that LGALS' extra
work (per-sample alignment) adds at most 5% to a step.
"""

from __future__ import annotations

import math
import statistics
import time

import torch
import torch.nn.functional as F
from common import (
    ENGINE_SPEEDUP,
    LGALS_STEP_OVERHEAD,
    describe_machine,
    emit_json,
    interleaved,
    machine,
    paired_ratio,
    parser,
)
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lgals.data import NoisyDataset, load_dataset
from lgals.losses import SUITES, lgals_epsilon, smoothed_cross_entropy
from lgals.train import TrainConfig, train

BATCH, REF_EPOCHS, N_SEEDS = 128, 100, 5


def plain_loss(mode: str, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if mode == "baseline":
        return F.cross_entropy(logits, y)
    if mode == "fixed_ls":
        return F.cross_entropy(logits, y, label_smoothing=0.1)
    cfg = TrainConfig.of("lgals")
    return smoothed_cross_entropy(logits, y, lgals_epsilon(logits, y, cfg.eps_max, cfg.gamma))


def plain_epoch_seconds(data: NoisyDataset, mode: str, epochs: int, seed: int) -> float:
    """Median wall seconds per epoch of the plain single-model loop (first epoch dropped)."""
    torch.manual_seed(seed)
    x, y = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)
    x_test, y_test = torch.from_numpy(data.x_test), torch.from_numpy(data.y_test)
    loader = DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True)
    model = nn.Sequential(nn.Linear(40, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 10))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)
    seconds = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.train()
        for xb, yb in loader:
            loss = plain_loss(mode, model(xb), yb)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            (model(x_test).argmax(-1) == y_test).float().mean().item()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[1:])


def engine_epoch_seconds(data: NoisyDataset, mode: str, epochs: int, n_seeds: int) -> float:
    """Median wall seconds per epoch of one stacked engine run (first epoch dropped)."""
    results = train(data, TrainConfig.of(mode, epochs=epochs), seeds=list(range(n_seeds)))
    return statistics.median(results[0].history["epoch_seconds"][1:])


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--epochs", type=int, default=5,
                     help="epochs per timed run, the first one dropped as warm-up")
    cli.add_argument("--repeats", type=int, default=25, help="interleaved repeats (median)")
    args = cli.parse_args()
    data = load_dataset()
    info = machine()
    steps = math.ceil(len(data.y_train) / BATCH)
    modes = list(SUITES["paper"])  # the plain loop has the paper's three losses
    kinds = ("plain1", "engine1", "engine5")
    for mode in modes:  # warm-up: allocator, kernels, DataLoader machinery
        engine_epoch_seconds(data, mode, 2, 1)
        engine_epoch_seconds(data, mode, 2, N_SEEDS)
        plain_epoch_seconds(data, mode, 2, 0)

    def measure(variant: tuple[str, str], repeat: int) -> float:
        mode, kind = variant
        if kind == "plain1":
            return plain_epoch_seconds(data, mode, args.epochs, repeat)
        seeds = N_SEEDS if kind == "engine5" else 1
        return engine_epoch_seconds(data, mode, args.epochs, seeds) / seeds

    times = interleaved([(m, k) for m in modes for k in kinds], args.repeats, measure)

    def per100(mode: str, kind: str) -> float:
        return statistics.median(times[mode, kind]) * REF_EPOCHS

    speedups = {m: paired_ratio(times[m, "plain1"], times[m, "engine5"]) for m in modes}
    one_seed = {m: paired_ratio(times[m, "plain1"], times[m, "engine1"]) for m in modes}
    step_cost = {kind: paired_ratio(times["lgals", kind], times["baseline", kind])
                 for kind in ("engine5", "plain1")}
    document = {
        "machine": info, "epochs": args.epochs, "repeats": args.repeats, "steps": steps,
        "per_100_epochs_s": {m: {k: per100(m, k) for k in kinds} for m in modes},
        "speedup_per_seed": speedups, "engine_1_seed_speedup": one_seed,
        "lgals_step_vs_baseline": step_cost,
        "targets": {"speedup": ENGINE_SPEEDUP, "lgals_overhead": LGALS_STEP_OVERHEAD},
    }
    if args.json:
        emit_json(document)
        return

    print(f"\n{describe_machine(info)}\n{args.epochs - 1} timed epochs x {args.repeats} "
          f"repeats (times extrapolated to {REF_EPOCHS} epochs), {steps} steps/epoch\n")
    print("| mode | plain s/run (1 seed, per 100 ep) | engine 1 seed s/run | "
          "engine 5 seeds s per seed | speedup per seed (plain / engine-5) (IQR) | "
          "engine 1-seed speedup |")
    print("|---|---|---|---|---|---|")
    for mode in modes:
        ratio, q1, q3 = speedups[mode]
        print(f"| {mode} | {per100(mode, 'plain1'):.2f} | {per100(mode, 'engine1'):.2f} | "
              f"{per100(mode, 'engine5'):.2f} | {ratio:.2f}x ({q1:.2f}-{q3:.2f}) | "
              f"{one_seed[mode][0]:.2f}x |")
    print("\n(plain 5 seeds = 5 x plain 1 seed, i.e. "
          + ", ".join(f"{m} {5 * per100(m, 'plain1'):.1f} s" for m in modes) + ")\n")

    print("| per-step time (epoch s / 32) | baseline ms/step | lgals ms/step | lgals / baseline "
          "(IQR) |")
    print("|---|---|---|---|")
    for kind, label, scale in (("engine5", "engine, 5 seeds (whole stack)", N_SEEDS),
                               ("plain1", "plain loop, 1 seed", 1)):
        base, lg = (statistics.median(times[m, kind]) * scale * 1e3 / steps
                    for m in ("baseline", "lgals"))
        ratio, q1, q3 = step_cost[kind]
        print(f"| {label} | {base:.2f} | {lg:.2f} | {ratio:.3f}x ({q1:.2f}-{q3:.2f}) |")

    speed_ok = speedups["lgals"][0] >= ENGINE_SPEEDUP
    cost_ok = step_cost["engine5"][0] <= LGALS_STEP_OVERHEAD
    print(f"\n{'PASS' if speed_ok else 'FAIL'}: LGALS, 5 seeds together, per seed "
          f"{speedups['lgals'][0]:.2f}x faster than the plain loop "
          f"(target >= {ENGINE_SPEEDUP}x)")
    print(f"{'PASS' if cost_ok else 'FAIL'}: engine LGALS step costs "
          f"{step_cost['engine5'][0]:.3f}x a baseline step (target <= {LGALS_STEP_OVERHEAD}x)")


if __name__ == "__main__":
    main()
