"""Does the logit-gradient alignment ``s_i`` track the weight-gradient alignment it stands in for?

The note says the cosine ``s_i`` between a sample's logit gradient and the batch mean tracks
the same cosine of the *weight* gradients (~0.75). Here both are measured on fixed training
batches at checkpoints of a training run: each sample's gradient of the unsmoothed
cross-entropy with respect to every weight and bias, its cosine to the batch-mean gradient
(all layers together and per layer), their Pearson and Spearman correlations with ``s_i``
(bootstrap 95% CIs) and with ``p_y`` (the confound: both may just follow the fit), and how
well each detects the flipped labels.

Per-sample weight gradients come in closed form: for a linear layer the gradient of sample i
is the outer product ``delta_i a_i^T`` of its backpropagated error and its input (with a 1
for the bias), so ``<delta_i a_i^T, G> = delta_i^T G a_i`` and ``||delta_i a_i^T|| =
||delta_i|| ||a_i||``; nothing of size B x P is ever formed (tests check it against one
backward pass per sample).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy import stats
from torch import Tensor, nn

from lgals.claim import note
from lgals.data import NoisyDataset
from lgals.losses import logit_gradient_alignment, logit_gradients
from lgals.metrics import auroc
from lgals.model import Compute, layer_sizes, make_mlp
from lgals.plots import alignment_scatter
from lgals.schema import STAGE, Stage
from lgals.statistics import ALPHA
from lgals.tracking.claims import Work
from lgals.tracking.runs import in_run, source_info
from lgals.tracking.store import mlflow_client
from lgals.train import EpochReport, TrainConfig, train

LAYERS = ("layer1", "layer2", "layer3")
GROUPS = ("all", *LAYERS)


@dataclass(frozen=True)
class DiagnoseSettings:
    """Where and on what the alignments are measured."""

    checkpoints: tuple[int, ...] = (1, 5, 20, 50, 100)
    batches: int = 8  # fixed training batches of the run's batch size
    bootstrap: int = 1000  # resamples for each confidence interval
    seed: int = 0  # picks the batches and the bootstrap resamples

    def fitted(self, epochs: int, batch_size: int, n_samples: int) -> DiagnoseSettings:
        """These settings cut to what a run of ``epochs`` on ``n_samples`` rows can honour
        (see :func:`check`): the checkpoints before its end and its last epoch, whose model is
        the one evaluated; as many batches as the rows fill."""
        return replace(self, checkpoints=(*(c for c in self.checkpoints if c < epochs), epochs),
                       batches=max(1, min(self.batches, n_samples // batch_size)))


@dataclass
class Checkpoint:
    """The measurements at one epoch, over every sample of the fixed batches."""

    epoch: int
    alignment: np.ndarray  # [n] logit-gradient cosine s_i
    weight_alignment: dict[str, np.ndarray]  # group -> [n] weight-gradient cosine
    confidence: np.ndarray  # [n] p_y
    loss: np.ndarray  # [n] unsmoothed cross-entropy
    noise_mask: np.ndarray  # [n]
    layer_weights: dict[str, float]  # layer -> mean weight of its cosine in the all-layer one
    correlation: dict[str, dict] = field(default_factory=dict)
    detection_auroc: dict[str, float] = field(default_factory=dict)

    def document(self) -> dict:
        return {"epoch": self.epoch, "correlation": self.correlation,
                "detection_auroc": self.detection_auroc, "layer_weights": self.layer_weights}


def linear_layers(model: nn.Sequential) -> list[nn.Linear]:
    return [m for m in model if isinstance(m, nn.Linear)]


def as_mlp(model: nn.Module, sizes: tuple[int, ...]) -> nn.Sequential:
    """A reloaded model (MLflow gives back the exported graph) as the protocol's
    ``nn.Sequential`` of layer ``sizes`` with the same weights, whose layers can be read."""
    mlp = make_mlp(0, sizes)
    mlp.load_state_dict(model.state_dict())
    return mlp.eval()


@torch.no_grad()
def per_sample_factors(model: nn.Sequential, x: Tensor, y: Tensor
                       ) -> tuple[Tensor, list[tuple[Tensor, Tensor]]]:
    """Logits ``[B, K]`` and, per linear layer, the factors ``(delta [B, out], a [B, in + 1])``
    of each sample's gradient ``delta_i a_i^T`` of its own cross-entropy (weights, then the
    bias as the last column)."""
    layers = linear_layers(model)
    inputs, pre_activations = [], []
    h = x
    for i, layer in enumerate(layers):
        inputs.append(h)
        h = layer(h)
        if i < len(layers) - 1:
            pre_activations.append(h)
            h = torch.relu(h)
    logits = h
    delta = logit_gradients(logits, y)  # d CE_i / d logits_i
    factors = []
    for i in reversed(range(len(layers))):
        ones = torch.ones_like(inputs[i][:, :1])
        factors.append((delta, torch.cat([inputs[i], ones], dim=1)))
        if i:
            delta = (delta @ layers[i].weight) * (pre_activations[i - 1] > 0)
    return logits, factors[::-1]


@torch.no_grad()
def weight_gradient_alignment(factors: list[tuple[Tensor, Tensor]]
                              ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Each sample's cosine ``[B]`` to the batch-mean weight gradient, per layer and over all
    layers; and each layer's weight in the all-layer cosine, which is ``sum_l w_l cos_l`` with
    ``w_l = ||g_i^l|| ||G^l|| / (||g_i|| ||G||)`` (``G``: the batch-mean gradient)."""
    dots, norms, mean_norms = {}, {}, {}
    for name, (delta, a) in zip(LAYERS, factors):
        mean = delta.T @ a / len(delta)  # [out, in + 1]
        dots[name] = ((delta @ mean) * a).sum(-1)
        norms[name] = delta.norm(dim=-1) * a.norm(dim=-1)
        mean_norms[name] = mean.norm()
    overall = (torch.sqrt(sum(n**2 for n in norms.values()))
               * torch.sqrt(sum(n**2 for n in mean_norms.values()))).clamp_min(1e-12)
    cosines = {name: dots[name] / (norms[name] * mean_norms[name]).clamp_min(1e-12)
               for name in LAYERS}
    weights = {name: norms[name] * mean_norms[name] / overall for name in LAYERS}
    return {"all": sum(dots.values()) / overall, **cosines}, weights


def measure(model: nn.Sequential, data: NoisyDataset, batches: np.ndarray, epoch: int
            ) -> Checkpoint:
    """Both alignments, ``p_y`` and the loss for every sample of ``batches [n_batches, B]``
    (each batch with its own mean gradient)."""
    parts: dict[str, list] = {"alignment": [], "confidence": [], "loss": [],
                              **{group: [] for group in GROUPS},
                              **{f"weight.{layer}": [] for layer in LAYERS}}
    for rows in batches:
        x = torch.from_numpy(data.x_train[rows])
        y = torch.from_numpy(data.y_train[rows])
        logits, factors = per_sample_factors(model, x, y)
        p_y = torch.softmax(logits.double(), -1).gather(-1, y[:, None])[:, 0]
        last_delta = factors[-1][0]  # the last layer's error is the logit gradient g_i
        parts["alignment"].append(logit_gradient_alignment(logits, y, last_delta))
        parts["confidence"].append(p_y)
        parts["loss"].append(-torch.log(p_y))
        cosines, weights = weight_gradient_alignment(factors)
        for group, cosine in cosines.items():
            parts[group].append(cosine)
        for layer, weight in weights.items():
            parts[f"weight.{layer}"].append(weight)
    joined = {name: torch.cat(values).double().numpy() for name, values in parts.items()}
    return Checkpoint(epoch, joined["alignment"], {g: joined[g] for g in GROUPS},
                      joined["confidence"], joined["loss"],
                      data.noise_mask[batches.reshape(-1)],
                      {layer: float(joined[f"weight.{layer}"].mean()) for layer in LAYERS})


def _pearson(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    """Pearson's r along ``axis`` (vectorised, for the bootstrap)."""
    x = x - x.mean(axis=axis, keepdims=True)
    y = y - y.mean(axis=axis, keepdims=True)
    return (x * y).sum(axis) / np.sqrt((x * x).sum(axis) * (y * y).sum(axis))


def _spearman(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return _pearson(stats.rankdata(x, axis=axis), stats.rankdata(y, axis=axis), axis)


def correlate(x: np.ndarray, y: np.ndarray, settings: DiagnoseSettings) -> dict:
    """Pearson's and Spearman's correlation of paired samples with percentile bootstrap 95%
    CIs (samples resampled in pairs)."""
    summary = {}
    for name, statistic in (("pearson", _pearson), ("spearman", _spearman)):
        ci = stats.bootstrap((x, y), statistic, paired=True, vectorized=True,
                             n_resamples=settings.bootstrap, confidence_level=1 - ALPHA,
                             method="percentile",
                             rng=np.random.default_rng(settings.seed)).confidence_interval
        summary[name] = float(statistic(x, y))
        summary[f"{name}_ci"] = [float(ci.low), float(ci.high)]
    return summary


def analyse(checkpoint: Checkpoint, settings: DiagnoseSettings) -> Checkpoint:
    """Fill in the correlations and the detection AUROCs."""
    for group, cosine in checkpoint.weight_alignment.items():
        checkpoint.correlation[group] = {
            **correlate(checkpoint.alignment, cosine, settings),
            "confound_spearman": float(_spearman(checkpoint.confidence, cosine)),
        }
    mask = checkpoint.noise_mask
    if mask.any() and not mask.all():
        scores = {"alignment": 1 - checkpoint.alignment,
                  "weight_alignment": 1 - checkpoint.weight_alignment["all"],
                  "loss": checkpoint.loss}
        checkpoint.detection_auroc = {name: float(auroc(score[None], mask)[0])
                                      for name, score in scores.items()}
    return checkpoint


def fixed_batches(n_samples: int, batch_size: int, settings: DiagnoseSettings) -> np.ndarray:
    """``[batches, batch_size]`` distinct training rows, drawn once from ``settings.seed``."""
    rows = np.random.default_rng(settings.seed).permutation(n_samples)
    return rows[: settings.batches * batch_size].reshape(settings.batches, batch_size)


def diagnose_training(data: NoisyDataset, config: TrainConfig, train_seed: int,
                      settings: DiagnoseSettings, compute: Compute = Compute()
                      ) -> list[Checkpoint]:
    """Train one model and measure at each checkpoint epoch (1 = after the first epoch)."""
    batches = fixed_batches(len(data.y_train), config.batch_size, settings)
    checkpoints: list[Checkpoint] = []

    def observe(report: EpochReport) -> None:
        if report.epoch in settings.checkpoints:
            model = report.model(0)
            checkpoints.append(analyse(measure(model, data, batches, report.epoch), settings))

    train(data, config, [train_seed], callback=observe, progress=True, compute=compute)
    return checkpoints


def diagnose_model(model: nn.Sequential, data: NoisyDataset, epoch: int, batch_size: int,
                   settings: DiagnoseSettings) -> list[Checkpoint]:
    """The measurements of a trained (reloaded) model, as one checkpoint."""
    batches = fixed_batches(len(data.y_train), batch_size, settings)
    mlp = as_mlp(model, layer_sizes(data.n_features, data.n_classes))
    return [analyse(measure(mlp, data, batches, epoch), settings)]


def check(settings: DiagnoseSettings, epochs: int, batch_size: int, n_samples: int) -> None:
    """The settings a run of ``epochs`` on ``n_samples`` rows can honour; ValueError naming the
    option otherwise."""
    points = settings.checkpoints
    if not points or any(b <= a for a, b in zip(points, points[1:])) or points[0] < 1:
        raise ValueError(f"--checkpoints {','.join(map(str, points))}: must be increasing "
                         "epochs, each at least 1")
    if points[-1] > epochs:
        raise ValueError(f"--checkpoints {','.join(map(str, points))}: beyond the run's "
                         f"{epochs} epochs")
    if settings.batches * batch_size > n_samples:
        raise ValueError(f"--batches {settings.batches}: {settings.batches} batches of "
                         f"{batch_size} need {settings.batches * batch_size} training rows, "
                         f"there are {n_samples}")


def summary_line(checkpoint: Checkpoint) -> str:
    all_layers = checkpoint.correlation["all"]
    low, high = all_layers["pearson_ci"]
    line = (f"epoch {checkpoint.epoch}: r(s_i, weight-gradient cosine) = "
            f"{all_layers['pearson']:.3f} [{low:.3f}, {high:.3f}], Spearman "
            f"{all_layers['spearman']:.3f}; per layer "
            + ", ".join(f"{layer} {checkpoint.correlation[layer]['pearson']:.3f}"
                        for layer in LAYERS))
    line += f"; layer3's weight in the all-layer cosine {checkpoint.layer_weights['layer3']:.2f}"
    if checkpoint.detection_auroc:
        line += "; AUROC for flipped labels: " + ", ".join(
            f"{name} {value:.3f}" for name, value in checkpoint.detection_auroc.items())
    return line


def document(checkpoints: Sequence[Checkpoint], /, **about) -> dict:
    """The ``--json`` document."""
    return {**about, "note_correlation": note().alignment.correlation,
            "checkpoints": [c.document() for c in checkpoints]}


def log_diagnosis(experiment_id: str, checkpoints: Sequence[Checkpoint], name: str,
                  params: dict, tags: dict, parent_run_id: str | None = None) -> str:
    """One MLflow run: every measurement as a metric per checkpoint (step = epoch), a scatter
    figure per checkpoint, and the JSON document; returns the run's id."""
    from mlflow.entities import Metric  # MLflow: see lgals.tracking.store

    with in_run(experiment_id, name, {STAGE: Stage.DIAGNOSE, **tags},
                {**params, **source_info()}, parent_run_id) as run_id:
        client = mlflow_client()
        metrics, stamp = [], int(time.time() * 1000)
        for c in checkpoints:
            values = {f"{group}.{stat}": c.correlation[group][stat] for group in GROUPS
                      for stat in ("pearson", "spearman", "confound_spearman")}
            values |= {f"auroc.{score}": value for score, value in c.detection_auroc.items()}
            values |= {f"weight.{layer}": value for layer, value in c.layer_weights.items()}
            metrics += [Metric(key, value, stamp, c.epoch) for key, value in values.items()]
        client.log_batch(run_id, metrics=metrics)
        for c in checkpoints:
            figure = alignment_scatter(c.alignment, c.weight_alignment, c.noise_mask,
                                       f"{name}, epoch {c.epoch}")
            client.log_figure(run_id, figure, f"scatter/epoch_{c.epoch:04d}.png")
            plt.close(figure)
        client.log_text(run_id, json.dumps(document(checkpoints, **params), indent=1),
                        "diagnosis.json")
    return run_id


def diagnosis_work(experiment_id: str, params: dict) -> Work:
    """The diagnosis of exactly ``params`` (mode, hyperparameters, data, seed, checkpoints,
    batches): a finished one is reused instead of trained again, one under way in another
    process waited for (:mod:`lgals.tracking.claims`)."""
    return Work(experiment_id, Stage.DIAGNOSE, params["mode"],
                {key: str(value) for key, value in params.items()})
