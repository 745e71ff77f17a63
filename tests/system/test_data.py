"""Noisy mnist1d: exact noise counts, flip structure, seeding, splits, cache, validation.

The fast in-process tests: ``tests/unit/test_data.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys

# --- the clean arrays ----------------------------------------------------------------------


def test_cached_load_does_not_import_mnist1d(tmp_path):
    """A cached run pays no mnist1d import (~0.8 s: it pulls in matplotlib and scipy)."""
    env = {**os.environ, "LGALS_CACHE_DIR": str(tmp_path)}
    code = ("import sys; from lgals.data import load_dataset; load_dataset(); "
            "print('mnist1d' in sys.modules)")
    runs = [subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                           text=True, check=True).stdout.strip() for _ in range(2)]
    assert runs == ["True", "False"]  # the first run generates; the second only reads
