"""What a command that fails must say: one line on stderr, no traceback.

Imported by both halves of ``test_cli.py`` and ``test_faults.py`` (in ``tests/unit/`` and
``tests/system/``), by ``tests/unit/test_protocols.py`` and ``tests/system/test_team_faults.py``.
"""

from __future__ import annotations

from support.mlflow_fixtures import MLFLOW_LOG


def assert_one_line_error(code, out, err, option) -> None:
    lines = err.strip().splitlines()
    assert code == 2, (code, err)
    assert len(lines) == 1, err
    assert option in lines[0]
    assert "Traceback" not in err and "Traceback" not in out
    assert out == ""


def stderr_lines(err: str) -> list[str]:
    """What lgals said on stderr: MLflow's own info lines (a new store) left out."""
    return [line for line in err.splitlines() if line.strip() and not MLFLOW_LOG.match(line)]


def assert_one_line(err: str, start: str) -> None:
    assert "Traceback" not in err, err[-3000:]
    lines = stderr_lines(err)
    assert len(lines) == 1 and lines[0].startswith(start), err[-3000:]
