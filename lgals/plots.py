"""Matplotlib figures from plain arrays (no MLflow, no training), for runs and reports."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator


def group_heatmaps(fig: Figure, axes, counts: np.ndarray, edges: np.ndarray, title: str,
                   ylabel: str) -> None:
    """Clean and noisy panels of ``counts [epochs, 2, bins]`` (axis 1: 0 clean, 1 noisy).

    Each column is a share of that group's samples, so clean and noisy are comparable
    despite their sizes.
    """
    share = counts.astype(float) / np.maximum(counts.sum(axis=2, keepdims=True), 1)
    for col, (ax, group) in enumerate(zip(axes, ("clean", "noisy"))):
        image = ax.imshow(share[:, col].T, origin="lower", aspect="auto", cmap="viridis",
                          extent=(0.5, len(share) + 0.5, edges[0], edges[-1]), vmin=0)
        ax.set_title(f"{title}, {group} samples")
        ax.set_ylabel(ylabel)
        fig.colorbar(image, ax=ax, label="share of samples")


def distribution_heatmaps(
    histograms: dict[str, np.ndarray], edges: dict[str, np.ndarray], title: str
) -> Figure:
    """Per-epoch distributions of each quantity (``histograms[q]``: ``[epochs, 2, bins]``
    counts, e.g. ``eps``, ``alignment``) as heat maps, clean vs noisy side by side.

    Drawn for every tracked seed, so the layout is fixed: constrained layout measured every
    tick label again and made saving the figure about twice as slow.
    """
    quantities = list(histograms)
    fig, axes = plt.subplots(len(quantities), 2, figsize=(11, 3.2 * len(quantities)),
                             squeeze=False, sharex=True)
    for row, quantity in enumerate(quantities):
        group_heatmaps(fig, axes[row], histograms[quantity], edges[quantity], quantity, quantity)
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.08, top=0.9, hspace=0.3, wspace=0.3)
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


# One colour per mode for up to twelve modes (matplotlib's default cycle has ten).
COLORS = [plt.get_cmap("tab20")(i) for i in (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 1, 3)]


def _band(ax, values: np.ndarray, label: str, scale: float = 1.0) -> None:
    """Mean over seeds (rows) as a line, ± one standard deviation as a band."""
    epochs = np.arange(1, values.shape[1] + 1)
    mean = scale * values.mean(axis=0)
    std = scale * (values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean))
    (line,) = ax.plot(epochs, mean, label=label)
    ax.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2)


def comparison_figure(finals: dict[str, np.ndarray], claim: dict[str, tuple[float, float]],
                      curves: dict[str, dict[str, np.ndarray]]) -> Figure:
    """Left: final test accuracy, every seed a dot, mean ± std, the claim beside it.
    Right: test-accuracy learning curves, mean ± std over seeds."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(13 + 0.4 * max(len(finals) - 3, 0), 4.8),
                                      constrained_layout=True)
    right.set_prop_cycle(color=COLORS)
    rng = np.random.default_rng(0)  # horizontal jitter only, so dots do not hide each other
    for i, (label, accs) in enumerate(finals.items()):
        color = COLORS[i % len(COLORS)]
        left.scatter(i + rng.uniform(-0.08, 0.08, len(accs)), accs, s=22, alpha=0.7,
                     color=color, label="seeds (ours)" if i == 0 else None)
        std = accs.std(ddof=1) if len(accs) > 1 else 0.0
        left.errorbar(i - 0.22, accs.mean(), yerr=std, fmt="o", color=color, capsize=5,
                      markersize=7, label="mean ± std (ours)" if i == 0 else None)
        if label in claim:
            mean_c, std_c = claim[label]
            left.errorbar(i + 0.25, mean_c, yerr=std_c, fmt="s", mfc="white", color="grey",
                          capsize=5, label="the claim" if i == 0 else None)
    left.set_xticks(range(len(finals)), list(finals), rotation=30 if len(finals) > 3 else 0,
                    ha="right" if len(finals) > 3 else "center")
    left.set_ylabel("final test accuracy (%)")
    left.set_title("Final test accuracy per mode")
    left.legend(loc="best", fontsize=8)
    left.grid(axis="y", alpha=0.3)
    for label, values in curves.get("test_acc", {}).items():
        _band(right, values, label, scale=100)
    right.set_xlabel("epoch")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("test accuracy (%)")
    right.set_title("Test accuracy over training (mean ± std over seeds)")
    right.legend(fontsize=8, ncols=2 if len(finals) > 6 else 1)
    right.grid(alpha=0.3)
    return fig


def epsilon_figure(eps: tuple[np.ndarray, np.ndarray] | None,
                   curves: dict[str, dict[str, np.ndarray]]) -> Figure:
    """Top: LGALS epsilon distribution over epochs, clean vs noisy samples (all seeds).
    Bottom: LGALS mean epsilon clean vs noisy, and noise-detection AUROC for every mode."""
    fig, axes = plt.subplots(2, 2, figsize=(13, 8), constrained_layout=True)
    if eps is not None:
        counts, edges = eps
        top = edges[np.nonzero(counts.sum(axis=(0, 1)))[0].max() + 1] if counts.any() else 1
        group_heatmaps(fig, axes[0], counts, edges, "LGALS per-sample ε", "ε (label smoothing)")
        for ax in axes[0]:
            ax.set_ylim(edges[0], top)
            ax.set_xlabel("epoch")
        eps_curves = {"clean": curves.get("eps_clean_mean", {}).get("LGALS"),
                      "noisy": curves.get("eps_noisy_mean", {}).get("LGALS")}
        for group, values in eps_curves.items():
            if values is not None:
                _band(axes[1, 0], values, f"{group} samples")
    else:
        for ax in axes[0]:
            ax.text(0.5, 0.5, "no LGALS evaluation", ha="center", va="center")
    axes[1, 0].set_title("LGALS mean ε per epoch")
    axes[1, 0].set_xlabel("epoch")
    axes[1, 0].set_ylabel("mean ε")
    axes[1, 0].legend()
    for label, values in curves.get("noise_auroc", {}).items():
        _band(axes[1, 1], values, label)
    axes[1, 1].axhline(0.5, color="grey", linestyle=":", label="chance")
    axes[1, 1].set_title("Detecting flipped labels by 1 − s_i (AUROC)")
    axes[1, 1].set_xlabel("epoch")
    axes[1, 1].set_ylabel("AUROC")
    axes[1, 1].legend()
    return fig


def detection_figure(detectors: dict[str, dict[str, np.ndarray]]) -> Figure:
    """One panel per noise-detection score: its AUROC per epoch for every mode, mean ± std
    over seeds (``detectors[score][mode]``: ``[seeds, epochs]``)."""
    n = max(len(detectors), 1)
    columns = min(n, 3)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(5.2 * columns, 4 * rows), squeeze=False,
                             sharey=True, constrained_layout=True)
    for ax, (score, per_mode) in zip(axes.flat, detectors.items()):
        ax.set_prop_cycle(color=COLORS)
        for label, values in per_mode.items():
            _band(ax, values, label)
        ax.axhline(0.5, color="grey", linestyle=":", label="chance")
        ax.set_title(score)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel("AUROC, flipped vs clean labels")
    for ax in list(axes.flat)[len(detectors):]:
        ax.axis("off")
    if detectors:
        handles, labels = axes.flat[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 7),
                   fontsize=8)
    fig.suptitle("Detecting flipped training labels per epoch")
    return fig


def alignment_scatter(alignment: np.ndarray, weight_alignment: dict[str, np.ndarray],
                      noise_mask: np.ndarray, title: str) -> Figure:
    """``s_i`` against the weight-gradient cosine, one panel per group (all layers, each
    layer), clean and flipped-label samples in their own colours, Pearson's r in the title."""
    fig, axes = plt.subplots(1, len(weight_alignment), figsize=(4.2 * len(weight_alignment), 4),
                             sharex=True, sharey=True, squeeze=False, constrained_layout=True)
    for ax, (group, cosine) in zip(axes[0], weight_alignment.items()):
        for noisy, (label, color) in enumerate((("clean", "C0"), ("flipped label", "C3"))):
            rows = noise_mask == bool(noisy)
            ax.scatter(alignment[rows], cosine[rows], s=5, alpha=0.4, color=color, label=label)
        r = np.corrcoef(alignment, cosine)[0, 1]
        ax.set_title(f"{group}: r = {r:.3f}")
        ax.set_xlabel("logit-gradient cosine s_i")
        ax.grid(alpha=0.3)
    axes[0, 0].set_ylabel("weight-gradient cosine")
    axes[0, 0].legend(markerscale=3, fontsize=8)
    fig.suptitle(title)
    return fig


def sweep_figure(points: dict[str, dict[str, list[tuple[float, float, float, float]]]]) -> Figure:
    """Final test accuracy against the noise rate, one panel per noise type, one line per
    mode with its 95% CI as error bars and a band (``points[type][mode]``: ``(rate %, mean,
    CI low, CI high)`` per setting)."""
    fig, axes = plt.subplots(1, max(len(points), 1), figsize=(6 * max(len(points), 1), 4.6),
                             sharey=True, squeeze=False, constrained_layout=True)
    for ax, (noise_type, per_mode) in zip(axes[0], points.items()):
        for color, (label, rows) in zip(COLORS, per_mode.items()):
            rate, mean, low, high = np.array(sorted(rows)).T
            ax.errorbar(rate, mean, yerr=np.maximum(0, [mean - low, high - mean]), fmt="o-",
                        color=color, capsize=4, label=label)
            ax.fill_between(rate, low, high, color=color, alpha=0.15)
        ax.set_title(f"{noise_type} label noise")
        ax.set_xlabel("noise rate (% of training labels flipped)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("final test accuracy (%), mean and 95% CI")
    fig.suptitle("Final test accuracy across noise settings")
    return fig
