"""A pool of worker processes: one job each, an outcome each, Ctrl-C passed on.

:func:`run_pool` runs a module-level ``target`` on each of a list of jobs (frozen, picklable
objects), every job in a spawned process of its own with a pipe back to the parent. Each
worker shares the cores with the others (torch threads), re-enters the parent's tracking
scope, and sends what came of its job: ``"done"``, ``"interrupted"`` or the error that ended
it; a worker that died unheard (``kill -9``, out of memory) reads as ``"died"``.

A process per worker and a pipe each, not a ``multiprocessing.Pool``: a pool worker that a
Ctrl-C ends while it waits for work dies holding the pool's queue lock, and the others then
wait for it for ever.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from typing import TypeVar

# At the top, not in the worker's body: every caller (tuning, through lgals.train) has
# loaded torch already, so it costs a process nothing more to start.
import torch

from lgals.errors import LgalsError
from lgals.interrupts import install_interrupt_handlers, interrupt_once
from lgals.tracking.runs import scope, scope_tags

Job = TypeVar("Job")

# What a worker's pipe yields once it has ended; otherwise the error that ended its job.
DONE = "done"
INTERRUPTED = "interrupted"  # its job's clean-up done (see run_pool)
DIED = "died"  # ended without a word: killed outright, out of memory


def threads_per_worker(workers: int) -> int:
    """Torch threads for each of ``workers`` processes: they share the cores instead of
    fighting for them."""
    return max(1, (os.cpu_count() or 1) // workers)


def run_pool(target: Callable[[Job], object], jobs: Sequence[Job], *, workers: int = 0,
             name: str = "lgals-worker") -> list[object]:
    """``target(job)`` for every job, each in a spawned process of its own (named
    ``<name>-<i>``); wait for them all and return their outcomes, in the jobs' order.

    ``target`` must be a module-level function and the jobs picklable (the spawned process
    imports the one and unpickles the others). ``workers`` is the number of processes the
    cores are split between (:func:`threads_per_worker`), by default one per job; a caller
    may ask for more than it has jobs for (a worker without work is not started).

    The first outcome that is an error is raised once every worker has ended. ``"died"``
    and ``"interrupted"`` are returned, not raised: a worker killed outright leaves its work
    unfinished (tuning's trials go stale and are retried), and a Ctrl-C that reached the
    workers reached this process too. A KeyboardInterrupt while waiting (Ctrl-C, or a
    SIGTERM that reaches this process alone) is passed on to every worker as SIGINT, and
    re-raised once each has cleaned up and ended.
    """
    threads = threads_per_worker(workers or len(jobs))
    parent_scope = scope_tags()  # the parent's repetition and noise setting
    context = multiprocessing.get_context("spawn")
    started: list[tuple[multiprocessing.Process, Connection]] = []
    for i, job in enumerate(jobs):
        receiving, sending = context.Pipe(duplex=False)
        process = context.Process(target=_worker, name=f"{name}-{i}",
                                  args=(sending, target, job, threads, parent_scope))
        process.start()
        sending.close()  # the worker's end: a worker that dies unheard is an EOF here
        started.append((process, receiving))
    try:
        outcomes = [_outcome(process, receiving) for process, receiving in started]
    except KeyboardInterrupt:
        # Passed on (a SIGTERM reaches this process alone); every worker fails its round's
        # trials and ends its runs before this process goes on.
        for process, _ in started:
            if process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGINT)
        for process, _ in started:
            process.join()
        raise
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
    return outcomes


def _worker(outcome: Connection, target: Callable[[Job], object], job: Job, threads: int,
            parent_scope: tuple[dict[str, str], str]) -> None:
    """One worker process's job; then what came of it, sent to the parent: ``"done"``,
    ``"interrupted"`` (once its round's trials are failed and its runs ended: the parent
    re-raises the interrupt), or the error that ended it."""
    install_interrupt_handlers(interrupt_once)
    torch.set_num_threads(threads)  # N workers share the cores instead of fighting for them
    try:
        with scope(*parent_scope):  # the parent's repetition and noise setting
            target(job)
        result: object = DONE
    except KeyboardInterrupt:
        result = INTERRUPTED
    except Exception as error:
        result = error
    try:
        outcome.send(result)
    except Exception:  # an error that does not pickle: its line, then
        outcome.send(LgalsError(f"tuning worker: {type(result).__name__}: {result}"))


def _outcome(process: multiprocessing.Process, receiving: Connection) -> object:
    """What one worker sent once it ended (see :func:`_worker`); ``"died"`` if it ended
    without a word. A worker killed outright (``kill -9``, out of memory) leaves its trials
    RUNNING; they go stale and are retried (:func:`lgals.tuning.tune_modes`)."""
    try:
        result = receiving.recv()
    except EOFError:
        result = DIED
    process.join()
    return result
