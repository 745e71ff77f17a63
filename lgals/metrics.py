"""Per-epoch metrics of the training set, as pure functions of what the engine saw.

Everything is per member (rows) over samples (columns): accuracies against the observed and
the true labels, memorisation of flipped labels, the mean epsilon and alignment of clean and
noisy samples, how well ``1 - s_i`` ranks flipped labels (AUROC), and the histograms of
epsilon and alignment that tracking logs.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata


def auroc(scores: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Row-wise AUROC of ``scores [S, N]`` for the boolean ``positives [N]`` (ties averaged)."""
    n_pos = int(positives.sum())
    n_neg = len(positives) - n_pos
    ranks = rankdata(scores, axis=1)
    return (ranks[:, positives].sum(axis=1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def epoch_metrics(train_loss, pred, y, y_true, eps, alignment, noise_mask) -> dict:
    """Per-member training-set metrics of one epoch, as ``name -> list over members``."""
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
        }
    return {name: value.tolist() for name, value in metrics.items()}


def histogram_counts(values: np.ndarray, noise_mask: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``[S, 2, bins]`` counts of ``values [S, N]`` on ``edges``, clean (0) and noisy (1) apart."""
    n_members, n_bins = values.shape[0], len(edges) - 1
    bins = np.clip(np.searchsorted(edges, values, side="right") - 1, 0, n_bins - 1)
    cell = (np.arange(n_members)[:, None] * 2 + noise_mask[None, :]) * n_bins + bins
    return np.bincount(cell.ravel(), minlength=n_members * 2 * n_bins).reshape(
        n_members, 2, n_bins)
