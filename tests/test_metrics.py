"""The per-epoch metric math on hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from lgals.metrics import auroc, histogram_counts


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
