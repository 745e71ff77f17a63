"""Settings read from the environment (``LGALS_*``), each with its default, range and why.

One module, so that the storage, the tracking and the data cache read them the same way and
a bad value is one line (exit 2) wherever it is first needed.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from lgals.errors import BadSetting

DEFAULT_STALE_SECONDS = 30.0
DEFAULT_SERVER_WAIT_SECONDS = 120.0
MAX_SERVER_WAIT_SECONDS = 480.0  # past 8 minutes, a silent command looks hung, not waiting
# How long a call to a PostgreSQL storage waits for the server to answer again (a restart, a
# failover, a dropped connection) before the command gives up with one line.
DEFAULT_STORAGE_WAIT_SECONDS = 60.0


def seconds_setting(name: str, default: float, low: float, high: float = math.inf) -> float:
    """The environment variable ``name`` as seconds, ``default`` when unset; a value that is
    not a finite number from ``low`` to ``high`` is one line (exit 2)."""
    text = os.environ.get(name, "")
    try:
        seconds = float(text) if text else default
    except ValueError:
        seconds = math.nan
    if not (low <= seconds <= high and seconds < math.inf):
        span = f">= {low:g}" if high == math.inf else f"from {low:g} to {high:g}"
        raise BadSetting(f"{name}={text!r}: must be a number of seconds {span}")
    return seconds


def stale_seconds() -> float:
    """How long a run may go without a heartbeat before it counts as lost with its process
    (kill -9, power loss, a full disk), on this host or another: ``$LGALS_STALE_SECONDS``,
    default 30. Every run lgals has open beats (its :data:`lgals.schema.HEARTBEAT` tag, unix
    seconds) six times as often; the next command on the experiment ends a stale one."""
    return seconds_setting("LGALS_STALE_SECONDS", DEFAULT_STALE_SECONDS, 6)


def heartbeat_seconds() -> float:
    return stale_seconds() / 6


def server_wait_seconds() -> float:
    """How long lgals keeps trying a tracking server that stopped answering mid-command
    (killed, restarting, hung, its network gone), from when it first found it away, before it
    gives up with one line and exit 1: ``$LGALS_SERVER_WAIT_SECONDS``, default 120, at most
    480 (see :mod:`lgals.tracking.deadline`)."""
    return seconds_setting("LGALS_SERVER_WAIT_SECONDS", DEFAULT_SERVER_WAIT_SECONDS, 0,
                           MAX_SERVER_WAIT_SECONDS)


def storage_wait_seconds() -> float:
    """How long a storage call waits for its database server (down, restarting, hung), from
    its first attempt: ``$LGALS_STORAGE_WAIT_SECONDS``, default 60 (see
    :func:`lgals.storage._retrying`)."""
    return seconds_setting("LGALS_STORAGE_WAIT_SECONDS", DEFAULT_STORAGE_WAIT_SECONDS, 1)


def cache_dir() -> Path:
    """Where generated arrays live: ``$LGALS_CACHE_DIR`` or ``~/.cache/lgals``."""
    return Path(os.environ.get("LGALS_CACHE_DIR", Path.home() / ".cache" / "lgals"))
