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
from dataclasses import dataclass, field, replace
from typing import Literal

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from lgals.data import NoisyDataset
from lgals.losses import EVERY_MODE, MODES, Loss, Step, smoothed_cross_entropy
from lgals.metrics import detection_scores, epoch_metrics, margins
from lgals.model import Compute, StackedMLP, layer_sizes
from lgals.optim import StackedAdamW

# 100 times the note's 100: a run keeps ~20 metric rows per epoch in MLflow, and an extra 0
# typed by mistake would train for days.
MAX_EPOCHS = 10_000


@dataclass(frozen=True)
class TrainConfig:
    """One training run: the mode, the schedule, the optimizer's hyperparameters and the
    mode's own (``hyperparameters``: any it is not given take their declared defaults; the
    defaults here are untuned, tuning picks the real ones)."""

    mode: str = "baseline"
    epochs: int = 100
    batch_size: int = 128
    lr: float = EVERY_MODE["lr"].default
    weight_decay: float = EVERY_MODE["weight_decay"].default
    hyperparameters: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """The same rules as the command line's, for values from files and from MLflow."""
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 1 <= self.epochs <= MAX_EPOCHS:
            raise ValueError(f"epochs must be from 1 to {MAX_EPOCHS}, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (LGALS needs a batch mean), got "
                             f"{self.batch_size}")
        mode = MODES[self.mode]
        unknown = sorted(set(self.hyperparameters) - set(mode.hyperparameters))
        if unknown:
            raise ValueError(f"mode {self.mode} has no hyperparameter {', '.join(unknown)} "
                             f"(it reads: {', '.join(mode.reads)})")
        values = {name: float(self.hyperparameters.get(name, h.default))
                  for name, h in mode.hyperparameters.items()}
        object.__setattr__(self, "hyperparameters", values)
        for name, value in {"lr": self.lr, "weight_decay": self.weight_decay, **values}.items():
            hyperparameter = mode.reads[name]
            if not hyperparameter.allows(value):
                raise ValueError(f"{name} must be in {hyperparameter.describe()}, got {value}")

    @classmethod
    def of(cls, mode: str, **values) -> TrainConfig:
        """A config from flat values, as options, files, Optuna and MLflow params name them:
        the schedule's and optimizer's fields, and the mode's hyperparameters."""
        own = {name: values.pop(name) for name in ("epochs", "batch_size", *EVERY_MODE)
               if name in values}
        return cls(mode=mode, **own, hyperparameters=values)

    def mode_params(self) -> dict:
        """The values this mode actually reads (what is worth logging and tuning)."""
        return {"mode": self.mode, "epochs": self.epochs, "batch_size": self.batch_size,
                "lr": self.lr, "weight_decay": self.weight_decay, **self.hyperparameters}


Status = Literal["completed", "stopped", "diverged"]


@dataclass
class MemberResult:
    """One member's outcome: its history, and its model as it was when it stopped training.

    ``stopped`` means a callback stopped it (e.g. pruned), ``diverged`` a non-finite loss.
    """

    seed: int
    config: TrainConfig
    history: dict[str, list[float]] = field(default_factory=dict)
    model: nn.Sequential | None = None
    status: Status = "completed"
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
    rows: list[int]  # the member of each row of eps and alignment: those trained this epoch
    eps: np.ndarray  # [len(rows), N] per-sample epsilon this epoch
    alignment: np.ndarray  # [len(rows), N] per-sample cosine s_i this epoch
    noise_mask: np.ndarray  # [N]
    diverged: dict[int, str] = field(default_factory=dict)
    # a member's model as it is now (a copy, on the CPU): for observers that look inside
    model: Callable[[int], nn.Sequential] | None = None


Callback = Callable[[EpochReport], Iterable[int] | None]


class Stack:
    """The members still training, one row each: the stacked MLP, its optimizer, batch orders,
    hyperparameters and per-sample state (ELR's running targets, the margins summed for the
    area under the margin). A member that stops leaves (:meth:`drop`), so it stops costing.

    Members may differ in mode: each mode's loss is computed on its own rows, vectorised.
    """

    def __init__(self, seeds: Sequence[int], configs: Sequence[TrainConfig], compute: Compute,
                 n_samples: int, sizes: tuple[int, ...]):
        self.members = list(range(len(seeds)))  # the member of each row
        self.configs = list(configs)
        self.device = torch.device(compute.device)
        self.mlp = StackedMLP(list(seeds), self.device, sizes, matmul_dtype=compute.matmul_dtype)
        self.optimizer = StackedAdamW(self.mlp.flat, self.mlp.grad,
                                      [c.lr for c in configs], [c.weight_decay for c in configs])
        # each member's own stream: its batch order, then any random draws of its mode
        self.generators = [torch.Generator().manual_seed(seed) for seed in seeds]
        n_classes = sizes[-1]
        self.targets = (torch.zeros(len(seeds), n_samples, n_classes, device=self.device)
                        if any(MODES[c.mode].state for c in configs) else None)
        self.margin_sum = torch.zeros(len(seeds), n_samples, device=self.device)
        self._group_by_mode()

    def _group_by_mode(self) -> None:
        """Per mode: its rows (``None`` when the whole stack is one mode) and hyperparameters."""
        modes = sorted({c.mode for c in self.configs})
        self.groups = []
        for mode in modes:
            rows = [r for r, c in enumerate(self.configs) if c.mode == mode]
            hyperparameters = {
                name: torch.tensor([self.configs[r].hyperparameters[name] for r in rows],
                                   device=self.device).view(-1, 1)
                for name in MODES[mode].params}
            index = None if len(modes) == 1 else torch.tensor(rows, device=self.device)
            self.groups.append((MODES[mode], rows, index, hyperparameters))

    def _uniform(self, rows: list[int], n: int):
        """``[len(rows), n]`` uniforms, each row from its member's own generator."""
        return lambda: torch.stack([torch.rand(n, generator=self.generators[r])
                                    for r in rows]).to(self.device)

    def loss(self, logits: Tensor, labels: Tensor, samples: Tensor) -> tuple[Loss, Tensor]:
        """Each member's loss by its own mode, for a batch of ``samples [S, B]`` (indices into
        the training set); returns it and the alignment ``s_i``. ELR's targets are updated."""
        index = None
        targets = None
        if self.targets is not None:
            index = samples.unsqueeze(-1).expand(-1, -1, self.targets.shape[-1])
            targets = self.targets.gather(1, index)
        step = Step.of(logits, labels, targets=targets)
        n = labels.shape[-1]
        if len(self.groups) == 1:
            mode, rows, _, hyperparameters = self.groups[0]
            loss = mode.apply(replace(step, uniform=self._uniform(rows, n)), hyperparameters)
        else:
            values, grad = torch.empty_like(step.alignment), torch.empty_like(logits)
            eps = torch.zeros_like(step.alignment)
            new_targets = targets.clone() if targets is not None else None
            for mode, rows, selected, hyperparameters in self.groups:
                part = mode.apply(step.select(selected, self._uniform(rows, n)), hyperparameters)
                values[selected], grad[selected], eps[selected] = part.values, part.grad, part.eps
                if part.targets is not None:
                    new_targets[selected] = part.targets
            loss = Loss(values, grad, eps, new_targets)
        if loss.targets is not None:
            self.targets.scatter_(1, index, loss.targets)
        return loss, step.alignment

    def batch_order(self, n_samples: int) -> Tensor:
        """``[S, N]``: each member's shuffle of the samples this epoch, from its own seed."""
        return torch.stack([torch.randperm(n_samples, generator=g)
                            for g in self.generators]).to(self.device)

    def drop(self, members: Iterable[int]) -> None:
        """Remove ``members`` from the stack, carrying the others' weights and Adam state."""
        leaving = set(members)
        keep = [row for row, member in enumerate(self.members) if member not in leaving]
        self.mlp = self.mlp.select(keep)
        self.optimizer = self.optimizer.select(keep, self.mlp.flat, self.mlp.grad)
        self.members = [self.members[row] for row in keep]
        self.configs = [self.configs[row] for row in keep]
        self.generators = [self.generators[row] for row in keep]
        if self.targets is not None:
            self.targets = self.targets[keep]
        self.margin_sum = self.margin_sum[keep]
        self._group_by_mode()


def _held_out(mlp: StackedMLP, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Plain (unsmoothed) cross-entropy and accuracy per member on a held-out set."""
    logits = mlp.predict(x)
    loss = smoothed_cross_entropy(logits, y.expand(logits.shape[:-1]), 0.0)
    return loss, (logits.argmax(-1) == y).double().mean(-1)  # exact count / n


@torch.no_grad()
def train(
    data: NoisyDataset,
    config: TrainConfig | Sequence[TrainConfig],
    seeds: Sequence[int],
    callback: Callback | None = None,
    progress: bool = False,
    compute: Compute = Compute(),
) -> list[MemberResult]:
    """Train one member per seed (with one config each, or one config for all) together,
    on ``compute``'s device and in its precision.

    Members share epochs, batch size and data; mode and the other hyperparameters may differ.
    """
    configs = [config] * len(seeds) if isinstance(config, TrainConfig) else list(config)
    if len(configs) != len(seeds) or not seeds:
        raise ValueError("need one config per seed and at least one seed")
    schedules = {(c.epochs, c.batch_size) for c in configs}
    if len(schedules) > 1:
        raise ValueError("members trained together must share epochs and batch size")
    ((n_epochs, batch_size),) = schedules
    results = [MemberResult(seed, cfg) for seed, cfg in zip(seeds, configs)]
    stack = Stack(seeds, configs, compute, len(data.y_train),
                  layer_sizes(data.n_features, data.n_classes))
    tensors = _EpochData.of(data, stack.device)

    modes = sorted({c.mode for c in configs})
    epoch_bar = tqdm(range(1, n_epochs + 1), desc=f"{'+'.join(modes)} x{len(seeds)}",
                     unit="epoch", leave=False, disable=None if progress else True)
    for epoch in epoch_bar:
        started = time.perf_counter()
        metrics, eps_seen, align_seen = _train_epoch(stack, tensors, batch_size, epoch)
        seconds = time.perf_counter() - started

        rows = list(stack.members)
        diverged = {}
        for row, member in enumerate(rows):
            if not np.isfinite(metrics["train_loss"][row]):
                diverged[member] = f"non-finite training loss at epoch {epoch}"
                continue
            history = results[member].history
            for name, values in metrics.items():
                history.setdefault(name, []).append(values[row])
            history.setdefault("epoch_seconds", []).append(seconds)
        stopping = {member: ("diverged", reason) for member, reason in diverged.items()}
        if callback is not None:
            active = [m for m in rows if m not in diverged]
            report = EpochReport(
                epoch=epoch, members=active,
                metrics={m: {k: v[-1] for k, v in results[m].history.items()} for m in active},
                rows=rows, eps=eps_seen.numpy(), alignment=align_seen.numpy(),
                noise_mask=data.noise_mask, diverged=diverged,
                model=lambda member: stack.mlp.module(stack.members.index(member)))
            for member in callback(report) or ():
                if member in active:
                    stopping[member] = ("stopped", f"stopped after epoch {epoch}")
        if stopping:
            for member, (status, reason) in stopping.items():
                result = results[member]
                result.status, result.reason = status, reason
                result.model = stack.mlp.module(stack.members.index(member))
            if len(stopping) == len(stack.members):
                break
            stack.drop(stopping)
        key = "val_acc" if data.has_val else "test_acc"
        if key in metrics:
            epoch_bar.set_postfix({key: f"{np.mean(metrics[key]):.3f}"})

    for row, member in enumerate(stack.members):
        if results[member].model is None:
            results[member].model = stack.mlp.module(row)
    return results


@dataclass(frozen=True)
class _EpochData:
    """The training set and the held-out sets as tensors on the training device."""

    x: Tensor
    y: Tensor
    y_true: Tensor
    noise_mask: np.ndarray
    held_out: dict[str, tuple[Tensor, Tensor]]

    @classmethod
    def of(cls, data: NoisyDataset, device: torch.device) -> _EpochData:
        def put(array: np.ndarray) -> Tensor:
            return torch.from_numpy(array).to(device)

        held_out = {}
        if data.has_test:
            held_out["test"] = (put(data.x_test), put(data.y_test))
        if data.has_val:
            held_out["val"] = (put(data.x_val), put(data.y_val))
        return cls(put(data.x_train), put(data.y_train), torch.from_numpy(data.y_train_true),
                   data.noise_mask, held_out)


def _train_epoch(stack: Stack, data: _EpochData, batch_size: int, epoch: int
                 ) -> tuple[dict[str, list[float]], Tensor, Tensor]:
    """One pass over the training set for every member of the stack.

    Returns each metric as a list over the stack's rows, and the per-sample epsilon and
    alignment ``[S, N]`` (on the CPU, in sample order).
    """
    n_members, n_samples = len(stack.members), len(data.y)
    order = stack.batch_order(n_samples)
    x_epoch, y_epoch = data.x[order], data.y[order]  # [S, N, ...]: each member's batches
    logits_seen = torch.empty(n_members, n_samples, stack.mlp.sizes[-1], device=stack.device)
    loss_seen, eps_seen, align_seen = (torch.empty(n_members, n_samples, device=stack.device)
                                       for _ in range(3))
    for start in range(0, n_samples, batch_size):
        batch = slice(start, start + batch_size)
        labels = y_epoch[:, batch]
        logits, layer_inputs = stack.mlp.forward(x_epoch[:, batch])
        loss, alignment = stack.loss(logits, labels, order[:, batch])
        stack.mlp.backward(layer_inputs, loss.grad / logits.shape[-2])
        stack.optimizer.step()
        logits_seen[:, batch] = logits
        loss_seen[:, batch] = loss.values
        eps_seen[:, batch] = loss.eps
        align_seen[:, batch] = alignment
    # back from batch order to sample order, where the labels and the noise mask live
    logits_seen, loss_seen, eps_seen, align_seen = (
        _to_sample_order(values, order) for values in
        (logits_seen, loss_seen, eps_seen, align_seen))
    stack.margin_sum += margins(logits_seen, data.y)
    scores = detection_scores(logits_seen, data.y, loss_seen, stack.margin_sum / epoch)
    eps_seen, align_seen = eps_seen.cpu(), align_seen.cpu()
    metrics = epoch_metrics(loss_seen.mean(-1).cpu(), logits_seen.argmax(-1).cpu(), data.y.cpu(),
                            data.y_true, eps_seen, align_seen, data.noise_mask,
                            {name: score.cpu() for name, score in scores.items()})
    for name, (x, y) in data.held_out.items():
        loss, acc = _held_out(stack.mlp, x, y)
        metrics[f"{name}_loss"], metrics[f"{name}_acc"] = loss.tolist(), acc.tolist()
    return metrics, eps_seen, align_seen


def _to_sample_order(values: Tensor, order: Tensor) -> Tensor:
    """``values [S, N, ...]`` seen in each member's batch ``order [S, N]``, put back by
    sample."""
    index = order.view(*order.shape, *(1,) * (values.dim() - 2)).expand_as(values)
    return torch.empty_like(values).scatter_(1, index, values)
