"""What the mechanism checks cost: the per-epoch noise-detection scores, and `lgals diagnose`.

1. The detection scores (training loss, 1 - p_y, EL2N, AUM: each a per-sample score and its
   AUROC, every epoch) as a share of a training epoch: 5 stacked LGALS seeds train for
   ``--epochs`` epochs, and between epochs the scores are computed again on that epoch's
   logits, timed on their own; interleaved, in one process. Target: <= 5% of an epoch.
2. ``lgals diagnose`` at its defaults (train 100 epochs, 5 checkpoints x 8 batches, 1000
   bootstrap resamples per interval, tracked into a fresh store), as a whole command in a
   fresh process, ``--commands`` times. Target: <= 60 s.

    python benchmarks/diagnose_speed.py [--epochs 30] [--commands 2] [--json]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import (
    DETECTION_EPOCH_SHARE,
    DIAGNOSE_SECONDS,
    describe_machine,
    emit_json,
    machine,
    parser,
)

from lgals.data import load_dataset
from lgals.metrics import auroc, detection_scores, margins
from lgals.train import TrainConfig, train


def detection_seconds(logits: torch.Tensor, labels: torch.Tensor, mask: np.ndarray,
                      margin_sum: torch.Tensor, epoch: int, order: torch.Tensor) -> float:
    """The engine's extra work per epoch: the logits put back in sample order, the margins,
    the four scores and their AUROCs."""
    started = time.perf_counter()
    index = order.unsqueeze(-1).expand_as(logits)
    logits = torch.empty_like(logits).scatter_(1, index, logits)
    total = margin_sum + margins(logits, labels)
    scores = detection_scores(logits, labels, logits[..., 0], total / epoch)
    for score in scores.values():
        auroc(score.numpy(), mask)
    return time.perf_counter() - started


def detection_share(epochs: int) -> dict:
    data = load_dataset()
    labels = torch.from_numpy(data.y_train)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(5, len(labels), 10, generator=generator)
    margin_sum = torch.zeros(5, len(labels))
    order = torch.stack([torch.randperm(len(labels), generator=generator) for _ in range(5)])
    extra: list[float] = []

    def between_epochs(report) -> None:
        extra.append(detection_seconds(logits, labels, data.noise_mask, margin_sum,
                                       report.epoch, order))

    results = train(data, TrainConfig.of("lgals", epochs=epochs), list(range(5)),
                    callback=between_epochs)
    epoch_s = results[0].history["epoch_seconds"][1:]  # the first epoch warms up
    shares = [e / t for e, t in zip(extra[1:], epoch_s)]
    return {"epoch_s": statistics.median(epoch_s), "detection_s": statistics.median(extra[1:]),
            "share": statistics.median(shares), "share_max": max(shares)}


def diagnose_commands(count: int) -> list[float]:
    lgals = str(Path(sys.executable).parent / "lgals")
    walls = []
    for _ in range(count):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            subprocess.run([lgals, "diagnose"], cwd=tmp, check=True, capture_output=True)
            walls.append(time.perf_counter() - started)
    return walls


def main() -> None:
    cli = parser(__doc__)
    cli.add_argument("--epochs", type=int, default=30)
    cli.add_argument("--commands", type=int, default=2)
    args = cli.parse_args()
    info = machine()
    detection = detection_share(args.epochs)
    walls = diagnose_commands(args.commands)
    document = {"machine": info, "detection": detection, "diagnose_walls_s": walls}
    if args.json:
        emit_json(document)
        return
    print(f"{describe_machine(info)}\n")
    print("| measured | value |\n|---|---|")
    print(f"| LGALS epoch, 5 stacked seeds (median) | {detection['epoch_s']:.3f} s |")
    print(f"| detection scores + AUROCs per epoch (median) | {detection['detection_s']:.4f} s |")
    print(f"| their share of the epoch (median, max) | {100 * detection['share']:.1f}%, "
          f"{100 * detection['share_max']:.1f}% |")
    print("| `lgals diagnose` at its defaults | "
          + ", ".join(f"{w:.1f} s" for w in walls) + " |")
    share = detection["share"]
    print(f"\n{'PASS' if share <= DETECTION_EPOCH_SHARE else 'FAIL'}: the detection scores take "
          f"{100 * share:.1f}% of an epoch (target <= {100 * DETECTION_EPOCH_SHARE:.0f}%)")
    worst = max(walls)
    print(f"{'PASS' if worst <= DIAGNOSE_SECONDS else 'FAIL'}: `lgals diagnose` takes "
          f"{worst:.1f} s at most (target <= {DIAGNOSE_SECONDS} s)")


if __name__ == "__main__":
    main()
