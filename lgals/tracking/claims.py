"""Work that commands running at the same time on one experiment do once: the evaluation or
the diagnosis that two ``lgals reproduce`` (or two hosts) would otherwise both train.

A run of the work's stage and mode with the work's params is that work. FINISHED, it is
reused. RUNNING with a live heartbeat (:mod:`lgals.tracking.runs`), another process is doing
it: the command waits for it, then reuses it; a run that stops beating is dead, not waited
for any longer (and ended FAILED by :func:`~lgals.tracking.runs.end_dead_runs`). Neither:
the command claims the work and does it.

A claim is a tag, ``lgals.claim.<digest of the work>``, on the claiming command's top run,
which beats while the command lives: it covers the time before the work's own run is open
(an evaluation opens one mode's run after another; a diagnosis logs its run once trained),
and a claimed work counts as under way for as long as its holder is alive. Claims live in
MLflow itself, so they hold wherever the runs are kept: a SQLite file on one host, a
database, or a tracking server that hosts share, where a lock file beside a SQLite store
would serve only the first. The store offers no compare-and-set, so a command writes its
claims first and looks second: if it then finds the work finished, under way, or claimed by
another live run, it takes its claims back and tries again after a random pause. Each looks
only once its own claim is written, so of two commands claiming together the later to look
sees the other's: both may step back (and try again), never both go on.

MLflow is imported inside the functions that use it (see :mod:`lgals.tracking.store`).
"""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import suppress
from dataclasses import dataclass, field
from typing import TypeVar

from lgals.schema import CLAIM, HEARTBEAT, LATEST_FIRST, MODE, SEED, Stage, runs_filter
from lgals.settings import stale_seconds
from lgals.tracking.runs import end_dead_runs
from lgals.tracking.store import mlflow_client

Key = TypeVar("Key")
POLL_SECONDS = 1.0  # how often a command waiting for another's work looks again
BACKOFF_SECONDS = (0.5, 3.0)  # the random pause after stepping back from a claim


def _every_run(run) -> bool:
    """No more than its params make a run the work."""
    return True


@dataclass(frozen=True)
class Work:
    """One piece of work, found as the runs that do it: runs of ``stage`` and ``mode`` in the
    experiment (not a seed's run) whose params include ``params`` and that ``accepts`` takes
    (the rest of what makes them this work, read as leniently as older runs need: a param
    they lack, a tag). ``identity``: that rest as values, for the claim's digest."""

    experiment_id: str
    stage: Stage
    mode: str
    params: Mapping[str, str]
    accepts: Callable[[object], bool] = _every_run
    identity: Mapping[str, str] = field(default_factory=dict)

    @property
    def claim_tag(self) -> str:
        """The tag a command's top run carries while it claims this work."""
        text = json.dumps([str(self.stage), self.mode, dict(self.params), dict(self.identity)],
                          sort_keys=True)
        return f"{CLAIM}.{hashlib.sha256(text.encode()).hexdigest()[:24]}"

    def runs(self, status: str) -> list:
        """Its runs of ``status``, the latest first."""
        runs = mlflow_client().search_runs(
            [self.experiment_id], runs_filter(self.stage, tags={MODE: self.mode}, status=status),
            order_by=list(LATEST_FIRST), max_results=500)
        return [run for run in runs if SEED not in run.data.tags
                and all(run.data.params.get(k) == v for k, v in self.params.items())
                and self.accepts(run)]

    def finished(self) -> str | None:
        """The latest finished run of it."""
        return next((run.info.run_id for run in self.runs("FINISHED")), None)

    def under_way(self, besides: Collection[str] = ()) -> list:
        """The live runs (heartbeat fresh) doing it or claiming it, but ``besides``; finding
        a dead one (stale), ends it FAILED."""
        running = [run for run in self.runs("RUNNING") + mlflow_client().search_runs(
            [self.experiment_id], runs_filter(has=(self.claim_tag,), status="RUNNING"),
            max_results=100) if run.info.run_id not in besides]
        beats = [float(run.data.tags.get(HEARTBEAT, 0)) for run in running]
        stale_before = time.time() - stale_seconds()
        if any(0 < beat < stale_before for beat in beats):
            end_dead_runs(self.experiment_id)
        return [run for run, beat in zip(running, beats) if beat >= stale_before]


def done_once(works: Mapping[Key, Work], holder: str,
              do: Callable[[list[Key]], Mapping[Key, str]],
              echo: Callable[[Key, str], None]) -> dict[Key, str]:
    """Each work's run: a finished one reused; one another process does, waited for and then
    reused; the rest claimed on ``holder`` (this command's top run) and done by ``do(keys)``,
    which returns the runs it made. Says which in one line per work."""
    done: dict[Key, str] = {}
    pending = dict(works)
    while pending:
        for key, work in list(pending.items()):
            if (run_id := work.finished()) is not None:
                echo(key, f"reusing finished {work.stage} run {run_id}")
                done[key] = run_id
                del pending[key]
        elsewhere = {key: runs for key, work in pending.items()
                     if (runs := work.under_way(besides=(holder,)))}
        free = [key for key in pending if key not in elsewhere]
        if free and not claim([pending[key] for key in free], holder):
            time.sleep(random.uniform(*BACKOFF_SECONDS))
            continue
        if free:
            try:
                made = do(free)
            finally:
                release([pending[key] for key in free], holder)
            done.update(made)
            for key in free:
                del pending[key]
        for key, runs in elsewhere.items():
            echo(key, f"another process is on it (run {runs[0].info.run_id}); waiting to "
                      f"reuse its {pending[key].stage} run")
            while not pending[key].finished() and pending[key].under_way(besides=(holder,)):
                time.sleep(POLL_SECONDS)
    return done


def claim(works: list[Work], holder: str) -> bool:
    """Claim every work of ``works`` on ``holder``, then look: whether none was finished,
    under way or claimed by another live run meanwhile. If one was, take them all back."""
    from mlflow.entities import RunTag

    client = mlflow_client()
    client.log_batch(holder, tags=[RunTag(work.claim_tag, f"{work.stage} {work.mode}")
                                   for work in works])
    if any(work.finished() or work.under_way(besides=(holder,)) for work in works):
        release(works, holder)
        return False
    return True


def release(works: list[Work], holder: str) -> None:
    """Take ``holder``'s claims back (best effort: once the holder ends, they hold nothing)."""
    client = mlflow_client()
    for work in works:
        with suppress(Exception):
            client.delete_tag(holder, work.claim_tag)
