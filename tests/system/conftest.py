"""Process-level tests: real ``mlflow server`` and ``mlflow run``, ``lgals`` processes and
their signals, PostgreSQL, Chromium; and in-process tests that take seconds each. Every test
collected below this folder is marked ``slow``, so ``-m 'not slow'`` (the inner loop) skips
them all and ``-m slow`` selects them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by mark
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # the hook sees the whole session's items, those of tests/unit/ too
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.slow)
