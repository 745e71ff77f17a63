"""The per-epoch metric math on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lgals.metrics import auroc, detection_scores, histogram_counts, margins


def test_histogram_counts_by_hand():
    edges = np.array([0.0, 0.5, 1.0])
    values = np.array([[0.1, 0.6, 0.5, 1.0, 0.0],    # member 0
                       [0.9, 0.9, 0.2, 0.4, 0.49]])  # member 1
    noisy = np.array([False, True, False, True, False])
    counts = histogram_counts(values, noisy, edges)
    assert counts.shape == (2, 2, 2)  # [members, clean/noisy, bins]
    # member 0: clean 0.1, 0.5, 0.0 -> bins 0, 1, 0; noisy 0.6, 1.0 -> bins 1, 1 (1.0 kept)
    np.testing.assert_array_equal(counts[0], [[2, 1], [0, 2]])
    # member 1: clean 0.9, 0.2, 0.49 -> 1, 0, 0; noisy 0.9, 0.4 -> 1, 0
    np.testing.assert_array_equal(counts[1], [[2, 1], [1, 1]])
    assert counts.sum() == values.size


def test_histogram_counts_clip_values_outside_the_edges_into_the_end_bins():
    counts = histogram_counts(np.array([[-0.5, 2.0]]), np.array([False, False]),
                              np.array([0.0, 0.5, 1.0]))
    np.testing.assert_array_equal(counts[0, 0], [1, 1])


def test_auroc_by_hand():
    positives = np.array([True, True, False, False])
    scores = np.array([[0.9, 0.8, 0.1, 0.2],   # perfect ranking
                       [0.1, 0.2, 0.9, 0.8],   # reversed
                       [0.5, 0.1, 0.5, 0.3]])  # pairs: (.5>.5 tie .5, .5>.3 1, .1<.5 0, .1<.3 0)
    np.testing.assert_allclose(auroc(scores, positives), [1.0, 0.0, 1.5 / 4])


def test_auroc_is_half_for_constant_scores():
    assert auroc(np.zeros((1, 6)), np.array([True, False] * 3)) == pytest.approx([0.5])


@pytest.mark.parametrize("seed, decimals", [(0, 1), (1, 2), (2, None)])
def test_auroc_equals_the_rank_sum_formula_with_ties(seed, decimals):
    """The Mann-Whitney rank sum with average ranks for ties (``scipy.stats.rankdata``)."""
    from scipy.stats import rankdata

    rng = np.random.default_rng(seed)
    values = rng.random((4, 500))
    if decimals is not None:
        values = np.round(values, decimals)
    positives = rng.random(500) < 0.2
    n_pos, n_neg = positives.sum(), (~positives).sum()
    ranks = rankdata(values, axis=1)
    expected = (ranks[:, positives].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    np.testing.assert_allclose(auroc(values, positives), expected, rtol=1e-12)


def test_margins_and_detection_scores_by_hand():
    """Logits (2, 1, 0) with label 1: margin 1 - 2 = -1; label 0: 2 - 1 = +1. p =
    softmax(2, 1, 0) = (e^2, e, 1) / (e^2 + e + 1)."""
    logits = torch.tensor([[[2.0, 1.0, 0.0], [2.0, 1.0, 0.0]]], dtype=torch.float64)
    labels = torch.tensor([1, 0])
    torch.testing.assert_close(margins(logits, labels),
                               torch.tensor([[-1.0, 1.0]], dtype=torch.float64))
    p = np.exp([2.0, 1.0, 0.0]) / np.exp([2.0, 1.0, 0.0]).sum()
    scores = detection_scores(logits, labels, torch.tensor([[0.3, 0.7]]),
                              torch.tensor([[-1.0, 1.0]]))
    np.testing.assert_allclose(scores["confidence"][0], [1 - p[1], 1 - p[0]])
    np.testing.assert_allclose(scores["el2n"][0], [np.linalg.norm(p - [0, 1, 0]),
                                                   np.linalg.norm(p - [1, 0, 0])])
    np.testing.assert_allclose(scores["aum"][0], [1.0, -1.0])  # low margin = suspicious
    np.testing.assert_allclose(scores["loss"][0], [0.3, 0.7])
