"""Ctrl-C and SIGTERM as one KeyboardInterrupt that is never lost.

The CLI installs the handlers; the training loop (through its callback) re-raises an
interrupt that arrived while Python could not deliver it. ``tracking.ending`` then ends the
open runs KILLED.
"""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

INTERRUPTED = threading.Event()
_signals: list[int] = []  # those that arrived, in order
_shielded = 0  # depth of the shielded() blocks the main thread is in


def interrupt(signum=None, frame=None) -> None:
    """SIGINT/SIGTERM handler: raise KeyboardInterrupt, and remember it.

    Python drops an exception raised while it runs a weakref or GC callback ("Exception
    ignored in ..."), which SQLAlchemy has; the flag lets the next epoch raise it again.
    """
    if signum is not None:
        _signals.append(signum)
    INTERRUPTED.set()
    if not _shielded:
        raise KeyboardInterrupt


@contextmanager
def shielded(on_interrupt: Callable[[], object] = lambda: None) -> Iterator[None]:
    """A block a KeyboardInterrupt must not cut in two: a write to the tracking store, which,
    interrupted inside SQLAlchemy, can leave its SQLite database locked, so that ending the
    runs KILLED then fails. A signal that arrives inside is raised as the block ends, after
    ``on_interrupt()`` (still shielded) undoes what the caller will not learn of."""
    global _shielded
    arrived = len(_signals)
    _shielded += 1
    try:
        yield
        if len(_signals) > arrived:
            on_interrupt()
    finally:
        _shielded -= 1
    if not _shielded and len(_signals) > arrived:
        raise KeyboardInterrupt


def interrupt_once(signum=None, frame=None) -> None:
    """A tuning worker's handler: the first signal interrupts; later ones (a Ctrl-C reaches the
    whole group, and the parent passes it on) must not cut the worker's clean-up short."""
    if not INTERRUPTED.is_set():
        interrupt(signum, frame)


def exit_code() -> int:
    """What a shell expects of a process its signal ended: 128 + the signal's number (130
    for Ctrl-C, 143 for SIGTERM); 130 for an interrupt no signal delivered."""
    return 128 + (_signals[0] if _signals else signal.SIGINT)


def install_interrupt_handlers(handler=interrupt) -> None:
    """Ctrl-C and SIGTERM end open runs KILLED; a dropped interrupt is not printed, since
    :func:`raise_if_interrupted` delivers it at the next epoch."""

    def quiet(unraisable) -> None:
        if not isinstance(unraisable.exc_value, KeyboardInterrupt):
            sys.__unraisablehook__(unraisable)

    sys.unraisablehook = quiet
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)


def raise_if_interrupted(report: object = None) -> None:
    """Engine callback: re-raise an interrupt a signal handler could not deliver."""
    if INTERRUPTED.is_set():
        raise KeyboardInterrupt
