"""The training engine: S members (seeds, or trials) trained as one stacked computation.

Each member has its own initialisation, batch order and hyperparameters; stacking them only
batches the matmuls, so a member trained in a stack matches it trained alone. There is no
tracking in here: observers get an :class:`EpochReport` through ``callback`` and the full
histories come back in :class:`MemberResult`.

Training-set metrics (loss, accuracies, memorisation, epsilon, alignment, AUROC) are measured
on the logits each optimisation step saw, every sample once per epoch, so they cost nothing
extra; held-out metrics (test, validation) come from a full pass after each epoch.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from scipy.stats import rankdata
from torch import Tensor, nn
from tqdm.auto import tqdm

from lgals.data import NoisyDataset
from lgals.losses import (
    MODES,
    logit_gradient_alignment,
    logit_gradients,
    smoothed_cross_entropy,
    smoothed_cross_entropy_grad,
)
from lgals.model import LAYER_SIZES, StackedMLP


@dataclass(frozen=True)
class TrainConfig:
    """Hyperparameters of one training run (untuned defaults; tuning picks the real ones)."""

    mode: str = "baseline"
    epochs: int = 100
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    eps: float = 0.1
    eps_max: float = 0.3
    gamma: float = 1.0

    def mode_params(self) -> dict:
        """The hyperparameters this mode actually reads (what is worth logging and tuning)."""
        names = ("mode", "epochs", "batch_size", "lr", "weight_decay") + MODES[self.mode].params
        values = asdict(self)
        return {name: values[name] for name in names}


@dataclass
class MemberResult:
    seed: int
    config: TrainConfig
    history: dict[str, list[float]]
    model: nn.Sequential
    status: str = "completed"  # "completed" | "stopped" (by the callback) | "diverged"
    reason: str = ""

    @property
    def final_test_acc(self) -> float | None:
        """Test accuracy after the last epoch (never the best epoch), if the run completed."""
        if self.status != "completed" or "test_acc" not in self.history:
            return None
        return self.history["test_acc"][-1]


@dataclass
class EpochReport:
    """What observers see after each epoch (``epoch`` counts from 1)."""

    epoch: int
    members: list[int]  # indices of the members still training
    metrics: dict[int, dict[str, float]]  # member -> this epoch's metrics
    eps: np.ndarray  # [S, N] per-sample epsilon this epoch
    alignment: np.ndarray  # [S, N] per-sample cosine s_i this epoch
    noise_mask: np.ndarray  # [N]
    diverged: dict[int, str] = field(default_factory=dict)


Callback = Callable[[EpochReport], Iterable[int] | None]


def _auroc(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Row-wise AUROC of ``scores [S, N]`` for the boolean ``positives [N]`` (ties averaged)."""
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    ranks = rankdata(scores, axis=1)
    return (ranks[:, positives].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def _adamw(stack: StackedMLP, configs: list[TrainConfig]) -> torch.optim.AdamW:
    """torch's fused AdamW stepping the flat buffer in place.

    Members that share lr and weight decay are one tensor; otherwise each member's row is
    its own param group, so trials with different hyperparameters can train together.
    """
    shared = len({(c.lr, c.weight_decay) for c in configs}) == 1
    rows = [slice(None)] if shared else [slice(i, i + 1) for i in range(len(configs))]
    groups = []
    for row, config in zip(rows, configs):
        param = stack.flat[row]
        param.grad = stack.grad[row]  # the backward writes here; the optimizer reads it
        groups.append({"params": [param], "lr": config.lr, "weight_decay": config.weight_decay})
    return torch.optim.AdamW(groups, fused=True)


def _held_out(stack: StackedMLP, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Plain (unsmoothed) cross-entropy and accuracy per member on a held-out set."""
    logits = stack.predict(x)
    loss = smoothed_cross_entropy(logits, y.expand(logits.shape[:-1]), 0.0)
    return loss, (logits.argmax(-1) == y).double().mean(-1)  # exact count / n


@torch.no_grad()
def train(
    data: NoisyDataset,
    config: TrainConfig | Sequence[TrainConfig],
    seeds: Sequence[int],
    callback: Callback | None = None,
    progress: bool = False,
) -> list[MemberResult]:
    """Train one member per seed (with one config each, or one config for all) together."""
    configs = [config] * len(seeds) if isinstance(config, TrainConfig) else list(config)
    if len(configs) != len(seeds) or not seeds:
        raise ValueError("need one config per seed and at least one seed")
    first = configs[0]
    if any((c.mode, c.epochs, c.batch_size) != (first.mode, first.epochs, first.batch_size)
           for c in configs):
        raise ValueError("members trained together must share mode, epochs and batch size")
    mode = MODES[first.mode]
    n_members, batch_size = len(seeds), first.batch_size

    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    y_true = torch.from_numpy(data.y_train_true)
    noise_mask = data.noise_mask
    n_samples = len(y)
    has_noise = bool(noise_mask.any()) and not noise_mask.all()
    held_out = {}
    if data.has_test:
        held_out["test"] = (torch.from_numpy(data.x_test), torch.from_numpy(data.y_test))
    if data.has_val:
        held_out["val"] = (torch.from_numpy(data.x_val), torch.from_numpy(data.y_val))

    stack = StackedMLP(list(seeds))
    optimizer = _adamw(stack, configs)
    hp = {name: torch.tensor([getattr(c, name) for c in configs]).view(-1, 1)
          for name in ("eps", "eps_max", "gamma")}
    batch_orders = [torch.Generator().manual_seed(seed) for seed in seeds]

    histories: list[dict[str, list[float]]] = [{} for _ in seeds]
    frozen: dict[int, nn.Sequential] = {}  # members that left the stack, as they were then
    status = ["completed"] * n_members
    reasons = [""] * n_members
    active = list(range(n_members))

    epochs = tqdm(range(1, first.epochs + 1), desc=f"{first.mode} x{n_members}", unit="epoch",
                  leave=False, disable=None if progress else True)
    for epoch in epochs:
        started = time.perf_counter()
        order = torch.stack([torch.randperm(n_samples, generator=g) for g in batch_orders])
        x_epoch, y_epoch = x[order], y[order]  # [S, N, ...]: each member's batches, in turn
        logits_seen = torch.empty(n_members, n_samples, LAYER_SIZES[-1])
        eps_seen = torch.empty(n_members, n_samples)
        align_seen = torch.empty(n_members, n_samples)
        for start in range(0, n_samples, batch_size):
            batch = slice(start, start + batch_size)
            labels = y_epoch[:, batch]
            logits, layer_inputs = stack.forward(x_epoch[:, batch])
            gradients = logit_gradients(logits, labels)  # one softmax serves both below
            alignment = logit_gradient_alignment(logits, labels, gradients)
            eps = mode.epsilon(logits, labels, alignment, hp)
            stack.backward(layer_inputs,
                           smoothed_cross_entropy_grad(logits, labels, eps, gradients))
            optimizer.step()
            logits_seen[:, batch] = logits
            eps_seen[:, batch] = eps
            align_seen[:, batch] = alignment
        train_loss = smoothed_cross_entropy(logits_seen, y_epoch, eps_seen)
        # back from batch order to sample order, where the labels and the noise mask live
        pred_seen, eps_seen, align_seen = (_to_sample_order(values, order) for values in
                                           (logits_seen.argmax(-1), eps_seen, align_seen))
        metrics = _epoch_metrics(train_loss, pred_seen, y, y_true, eps_seen,
                                 align_seen, noise_mask, has_noise)
        for name, (hx, hy) in held_out.items():
            loss, acc = _held_out(stack, hx, hy)
            metrics[f"{name}_loss"], metrics[f"{name}_acc"] = loss.tolist(), acc.tolist()
        seconds = time.perf_counter() - started

        diverged = {}
        for member in active:
            if not np.isfinite(metrics["train_loss"][member]):
                diverged[member] = f"non-finite training loss at epoch {epoch}"
                continue
            for name, values in metrics.items():
                histories[member].setdefault(name, []).append(values[member])
            histories[member].setdefault("epoch_seconds", []).append(seconds)
        for member, reason in diverged.items():
            status[member], reasons[member] = "diverged", reason
            frozen[member] = stack.module(member)
        active = [m for m in active if m not in diverged]
        if callback is not None:
            report = EpochReport(
                epoch=epoch, members=list(active),
                metrics={m: {k: histories[m][k][-1] for k in histories[m]} for m in active},
                eps=eps_seen.numpy(), alignment=align_seen.numpy(), noise_mask=noise_mask,
                diverged=diverged,
            )
            for member in callback(report) or ():
                if member in active:
                    status[member], reasons[member] = "stopped", f"stopped after epoch {epoch}"
                    frozen[member] = stack.module(member)
                    active.remove(member)
        if held_out and active:
            key = "val_acc" if "val" in held_out else "test_acc"
            epochs.set_postfix({key: f"{np.mean([histories[m][key][-1] for m in active]):.3f}"})
        if not active:
            break

    return [
        MemberResult(seed, cfg, histories[i], frozen.get(i) or stack.module(i), status[i],
                     reasons[i])
        for i, (seed, cfg) in enumerate(zip(seeds, configs))
    ]


def _to_sample_order(values: Tensor, order: Tensor) -> Tensor:
    """``values [S, N]`` seen in each member's batch ``order`` [S, N], put back by sample."""
    return torch.empty_like(values).scatter_(1, order, values)


def _epoch_metrics(train_loss, pred, y, y_true, eps, alignment, noise_mask, has_noise) -> dict:
    """Per-member training-set metrics of one epoch, as ``name -> list over members``."""
    clean = torch.from_numpy(~noise_mask)
    noisy = ~clean
    fits_observed = (pred == y).double()  # accuracies as exact count / n
    metrics = {
        "train_loss": train_loss,
        "train_acc": fits_observed.mean(1),
        "train_true_acc": (pred == y_true).double().mean(1),
        "eps_mean": eps.mean(1),
        "eps_clean_mean": eps[:, clean].mean(1),
        "align_clean_mean": alignment[:, clean].mean(1),
    }
    if has_noise:
        metrics |= {
            "memorized_frac": fits_observed[:, noisy].mean(1),
            "eps_noisy_mean": eps[:, noisy].mean(1),
            "align_noisy_mean": alignment[:, noisy].mean(1),
            "noise_auroc": torch.from_numpy(_auroc(1.0 - alignment.numpy(), noise_mask)),
        }
    return {name: value.tolist() for name, value in metrics.items()}
