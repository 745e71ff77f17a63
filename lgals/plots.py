"""Matplotlib figures from plain arrays (no MLflow, no training), for runs and reports."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def distribution_heatmaps(
    histograms: dict[str, np.ndarray], edges: dict[str, np.ndarray], title: str
) -> Figure:
    """Per-epoch distributions as heat maps, clean vs noisy side by side.

    ``histograms[q]`` is ``[epochs, 2, bins]`` counts (index 1 of axis 1: 0 clean, 1 noisy) for
    each quantity ``q`` (e.g. ``eps``, ``alignment``); each column is normalised to a share of
    that group's samples so clean and noisy are comparable despite their sizes.
    """
    quantities = list(histograms)
    fig, axes = plt.subplots(len(quantities), 2, figsize=(11, 3.2 * len(quantities)),
                             squeeze=False, sharex=True, constrained_layout=True)
    for row, quantity in enumerate(quantities):
        counts = histograms[quantity].astype(float)
        share = counts / np.maximum(counts.sum(axis=2, keepdims=True), 1)
        lo, hi = edges[quantity][0], edges[quantity][-1]
        for col, group in enumerate(("clean", "noisy")):
            ax = axes[row, col]
            image = ax.imshow(share[:, col].T, origin="lower", aspect="auto", cmap="viridis",
                              extent=(0.5, len(share) + 0.5, lo, hi), vmin=0)
            ax.set_title(f"{quantity}: {group} samples")
            ax.set_ylabel(quantity)
            fig.colorbar(image, ax=ax, label="share of samples")
        for ax in axes[-1]:
            ax.set_xlabel("epoch")
    fig.suptitle(title)
    return fig


def confusion_figure(confusion: np.ndarray, title: str) -> Figure:
    """Confusion matrix (rows: true class, columns: predicted), counts annotated."""
    fig, ax = plt.subplots(figsize=(6, 5.4), constrained_layout=True)
    image = ax.imshow(confusion, cmap="Blues")
    for (i, j), count in np.ndenumerate(confusion):
        ax.text(j, i, str(count), ha="center", va="center", fontsize=7,
                color="white" if count > confusion.max() / 2 else "black")
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_xticks(range(len(confusion)))
    ax.set_yticks(range(len(confusion)))
    ax.set_title(title)
    fig.colorbar(image, ax=ax, label="test samples")
    return fig
