"""Fault injection with real processes, signals, mounts and files: what a user meets when
things go wrong, and what the next command makes of it.

Every test asserts the same contract: the exit code, one line on stderr and no traceback,
then, after the follow-up command, 0 runs RUNNING, 0 logged models PENDING, exact trial
counts and no half-written file under the artifact root (:func:`assert_settled`).

Here, in this process: unusable stores (a read-only mount, no directory, damaged or foreign
files, bad URIs) and a bad stale period, refused in one line before anything trains. In
``tests/system/test_faults.py``: ``kill -9`` in each stage (train, reproduce's tuning,
evaluate, a ``tune --workers`` pool) followed by the rerun; a full disk (a 3 MB tmpfs); 4
commands started at once on an empty directory; a model that does not fit its disk.
Elsewhere, next to the code they exercise: Ctrl-C and SIGTERM to one process
(``test_tracking.py``) and to a worker pool (``test_batched_tuning.py``), damaged data caches
(``test_data.py``), bad ``--params-from`` files (``test_reproduce.py``) and bad options
(``test_cli.py``, ``test_batched_tuning.py``).
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess

import pytest
from support.errors import assert_one_line
from support.mlflow_fixtures import run_main, sqlite_uri

pytestmark = [pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]


# --- stores that cannot be used ---------------------------------------------------------------

def _store(tmp_path, kind: str) -> str:
    """A --tracking-uri for each kind of unusable store (a bad URI, a broken place)."""
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    if kind == "not an sqlite file":
        db.write_text("garbage, not a database")
    elif kind == "truncated":
        with contextlib.closing(sqlite3.connect(db)) as connection:
            connection.execute("create table t (x)")
            connection.executemany("insert into t values (?)", [("x" * 1000,)] * 200)
            connection.commit()
        db.write_bytes(db.read_bytes()[: db.stat().st_size // 3])
    elif kind == "no directory":
        return sqlite_uri(tmp_path / "missing" / "mlflow.db")
    elif kind == "read-only mount":
        mount = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs",
                                str(db.parent)], capture_output=True, text=True)
        if mount.returncode != 0:
            pytest.skip(f"mounting a read-only tmpfs was refused here: {mount.stderr.strip()}")
    return {"ftp": "ftp://nowhere", "bare words": "not a uri",
            "proc": "sqlite:////proc/x/y.db"}.get(kind, sqlite_uri(db))


@pytest.mark.parametrize("kind, code, message", [
    ("ftp", 2, "--tracking-uri 'ftp://nowhere': not a tracking store URI"),
    ("bare words", 2, "--tracking-uri 'not a uri': not a tracking store URI"),
    ("proc", 1, "cannot create the MLflow store /proc/x/y.db: there is no directory"),
    ("no directory", 1, "cannot create the MLflow store"),
    ("read-only mount", 1, "cannot write the MLflow store"),
    ("not an sqlite file", 1, "is not an SQLite database (damaged?): move it aside"),
    ("truncated", 1, "cannot use the MLflow store"),
])
def test_an_unusable_store_is_one_line_before_anything_trains(tmp_path, kind, code, message):
    uri = _store(tmp_path, kind)
    try:
        result = run_main(["train", "--seeds", "1", "--epochs", "1", "--tracking-uri", uri],
                          tmp_path)
    finally:
        if kind == "read-only mount":
            subprocess.run(["umount", str(tmp_path / "store")], check=True)
    assert result.code == code, result
    assert_one_line(result.err, "lgals: error: ")
    assert message in result.err
    assert "seed 0" not in result.out  # nothing trained
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # nothing created here


@pytest.mark.parametrize("value", ["2", "soon", "inf"])
def test_a_bad_stale_period_is_one_line_before_anything_is_created(tmp_path, value,
                                                                   monkeypatch):
    monkeypatch.setenv("LGALS_STALE_SECONDS", value)
    result = run_main(["train", "--seeds", "1", "--epochs", "1"], tmp_path)
    assert result.code == 2, result
    assert_one_line(result.err, f"lgals: error: LGALS_STALE_SECONDS={value!r}: must be a "
                                "number of seconds >= 6")
    assert list(tmp_path.iterdir()) == []
