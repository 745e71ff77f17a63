"""Per-epoch metrics of the training set, as pure functions of what the engine saw.

Everything is per member (rows) over samples (columns): accuracies against the observed and
the true labels, memorisation of flipped labels, the mean epsilon and alignment of clean and
noisy samples, how well ``1 - s_i`` and other per-sample scores rank flipped labels (AUROC),
and the histograms of epsilon and alignment that tracking logs.
"""

from __future__ import annotations

import numpy as np
import torch

from lgals.losses import softmax


def auroc(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Row-wise AUROC of ``scores [S, N]`` for the boolean ``positives [N]``: the share of
    (positive, negative) pairs the scores order correctly, a tie counting half. Each row's
    negatives are sorted once and every positive found among them by binary search (faster
    than ranking all samples, and it runs for five scores every epoch)."""
    negatives = np.sort(np.take(scores, np.flatnonzero(~positives), axis=1), axis=1)
    # sorted positives too: binary searches in increasing order stay in cache
    positives_sorted = np.sort(np.take(scores, np.flatnonzero(positives), axis=1), axis=1)
    n_pairs = positives_sorted.shape[1] * negatives.shape[1]
    below = np.empty(len(scores))
    for row, (sorted_row, positive) in enumerate(zip(negatives, positives_sorted)):
        lower = np.searchsorted(sorted_row, positive, side="left")
        not_higher = np.searchsorted(sorted_row, positive, side="right")
        below[row] = (lower + not_higher).sum() / 2  # each tie counts half
    return below / n_pairs


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``z_y - max_{k != y} z_k`` per sample ``[S, N]``: negative when another class wins."""
    index = labels.expand(logits.shape[:-1]).unsqueeze(-1)
    others = logits.scatter(-1, index, -torch.inf)
    # the max over the classes as softmax takes it: over dim -2 of the transposed view
    return logits.gather(-1, index).squeeze(-1) - others.transpose(-1, -2).amax(-2)


def detection_scores(logits: torch.Tensor, labels: torch.Tensor, loss: torch.Tensor,
                     mean_margin: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-sample scores ``[S, N]`` that should be high for a flipped label: the training loss
    of the sample's mode, ``1 - p_y``, the logit gradient's norm ``||g||`` (EL2N) and minus
    the area under the margin (the margin averaged over the epochs so far)."""
    probs = softmax(logits)
    p_y = probs.gather(-1, labels.expand(logits.shape[:-1]).unsqueeze(-1)).squeeze(-1)
    # ||p - onehot(y)||^2 = sum(p^2) - 2 p_y + 1, without forming p - onehot
    el2n = ((probs * probs).sum(-1) - 2.0 * p_y + 1.0).clamp_min(0.0).sqrt()
    return {"loss": loss, "confidence": 1.0 - p_y, "el2n": el2n, "aum": -mean_margin}


def epoch_metrics(train_loss, pred, y, y_true, eps, alignment, noise_mask,
                  scores: dict[str, torch.Tensor]) -> dict:
    """Per-member training-set metrics of one epoch, as ``name -> list over members``; with
    noisy labels, the AUROC of ``1 - s_i`` (``noise_auroc``) and of each detection score
    (``noise_auroc_<name>``) for finding them."""
    has_noise = bool(noise_mask.any()) and not noise_mask.all()
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
            "noise_auroc": torch.from_numpy(auroc(1.0 - alignment.numpy(), noise_mask)),
            **{f"noise_auroc_{name}": torch.from_numpy(auroc(score.numpy(), noise_mask))
               for name, score in scores.items()},
        }
    return {name: value.tolist() for name, value in metrics.items()}


def histogram_counts(values: np.ndarray, noise_mask: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``[S, 2, bins]`` counts of ``values [S, N]`` on ``edges``, clean (0) and noisy (1) apart."""
    n_members, n_bins = values.shape[0], len(edges) - 1
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    cell = (np.arange(n_members)[:, None] * 2 + noise_mask[None, :]) * n_bins + bins
    return np.bincount(cell.ravel(), minlength=n_members * 2 * n_bins).reshape(
        n_members, 2, n_bins)
