"""Work done once by commands running together (``lgals.tracking.claims``), against a real
sqlite store: a finished run is reused, a live one waited for, a dead one not, and of two
claims written at the same moment neither goes on past the other's.

The other "process" is a run this test opens (``open_run``, beating) or leaves silent (its
heartbeat aged, dropped from this process's heartbeats): what another process leaves in the
store. Two real ``lgals reproduce`` at once: ``tests/system/test_concurrency.py``.
"""

from __future__ import annotations

import threading
import time

import pytest

from lgals.schema import HEARTBEAT, STATUS_REASON, Stage
from lgals.tracking.claims import Work, claim, done_once, release
from lgals.tracking.runs import HEARTBEATS, end_runs, open_run

STALE = 6.0


@pytest.fixture
def work(store, monkeypatch) -> Work:
    monkeypatch.setenv("LGALS_STALE_SECONDS", str(STALE))
    return Work(store.experiment_id, Stage.EVALUATE, "baseline", {"lr": "0.01"},
                identity={"repeat": "0"})


def run_of(work: Work, name: str, **params: str) -> str:
    """A run of ``work`` (its stage, mode and params), open and beating."""
    return open_run(work.experiment_id, name, {"lgals.stage": work.stage, "lgals.mode": work.mode},
                    {**work.params, **params})


def top_run(work: Work, name: str) -> str:
    return open_run(work.experiment_id, name, {"lgals.stage": "reproduce"}, {})


def never_called(keys: list[str]) -> dict[str, str]:
    raise AssertionError(f"did {keys} again")


def test_the_claim_tag_is_the_work_and_only_it(work):
    same = Work(work.experiment_id, Stage.EVALUATE, "baseline", {"lr": "0.01"},
                identity={"repeat": "0"})
    assert same.claim_tag == work.claim_tag and work.claim_tag.startswith("lgals.claim.")
    other = Work(work.experiment_id, Stage.EVALUATE, "baseline", {"lr": "0.01"},
                 identity={"repeat": "1"})
    assert other.claim_tag != work.claim_tag


def test_the_latest_finished_run_of_the_work_is_reused(work, store):
    older, newer = run_of(work, "older"), run_of(work, "newer", seeds="0,1")
    end_runs([older], "FINISHED")
    end_runs([newer], "FINISHED")
    other_lr = open_run(work.experiment_id, "other lr", {"lgals.stage": work.stage,
                                                         "lgals.mode": work.mode}, {"lr": "0.02"})
    end_runs([other_lr], "FINISHED")
    failed = run_of(work, "failed")
    end_runs([failed], "FAILED")
    lines: list[str] = []
    holder = top_run(work, "me")
    found = done_once({"baseline": work}, holder, never_called,
                      lambda key, line: lines.append(f"{key}: {line}"))
    assert found == {"baseline": newer}
    assert lines == [f"baseline: reusing finished evaluate run {newer}"]
    end_runs([holder], "FINISHED")


def test_work_a_live_process_claimed_is_waited_for_then_reused(work, store):
    """The other process claimed the work on its top run and opens the work's run only
    later, as an evaluation of several modes does: both count as under way."""
    other_top = top_run(work, "other")
    store.client.set_tag(other_top, work.claim_tag, "evaluate baseline")
    finished: list[str] = []

    def other_process() -> None:
        time.sleep(1)
        run = run_of(work, "theirs")
        release([work], other_top)
        time.sleep(1)
        end_runs([run], "FINISHED")
        finished.append(run)

    thread = threading.Thread(target=other_process)
    holder = top_run(work, "me")
    lines: list[str] = []
    started = time.monotonic()
    thread.start()
    found = done_once({"baseline": work}, holder, never_called,
                      lambda key, line: lines.append(line))
    thread.join()
    assert time.monotonic() - started >= 2
    assert found == {"baseline": finished[0]}
    assert lines == [f"another process is on it (run {other_top}); waiting to reuse its "
                     "evaluate run", f"reusing finished evaluate run {finished[0]}"]
    end_runs([holder, other_top], "FINISHED")


def test_a_dead_process_is_not_waited_for_past_its_heartbeat(work, store):
    """The claim's holder stops beating (killed): once stale it is ended FAILED, and the
    work is done here."""
    dead = top_run(work, "dead")
    HEARTBEATS.discard(dead)  # its process is gone: nothing beats any more
    store.client.set_tag(dead, HEARTBEAT, str(int(time.time() - STALE + 2)))
    store.client.set_tag(dead, work.claim_tag, "evaluate baseline")
    holder = top_run(work, "me")
    lines: list[str] = []
    claimed: list[list[str]] = []

    def evaluate(keys: list[str]) -> dict[str, str]:
        assert store.client.get_run(holder).data.tags[work.claim_tag] == "evaluate baseline"
        claimed.append(keys)
        run = run_of(work, "mine")
        end_runs([run], "FINISHED")
        return {"baseline": run}

    found = done_once({"baseline": work}, holder, evaluate, lambda key, line: lines.append(line))
    assert claimed == [["baseline"]]
    assert lines == [f"another process is on it (run {dead}); waiting to reuse its evaluate run"]
    dead_run = store.client.get_run(dead)
    assert dead_run.info.status == "FAILED"
    assert dead_run.data.tags[STATUS_REASON].startswith("its process stopped: no heartbeat")
    assert work.claim_tag not in store.client.get_run(holder).data.tags  # released
    assert found == {"baseline": work.finished()}
    end_runs([holder], "FINISHED")


def test_of_two_claims_written_together_neither_goes_on_past_the_other(work, store):
    """Each command writes its claim, then looks: the later to look sees the other's and
    steps back, taking its own claim back; with the other's gone, it goes on."""
    first, second = top_run(work, "first"), top_run(work, "second")
    store.client.set_tag(second, work.claim_tag, "evaluate baseline")  # written meanwhile
    assert not claim([work], first)
    assert work.claim_tag not in store.client.get_run(first).data.tags
    release([work], second)
    assert claim([work], first)
    assert not claim([work], second)  # first's claim stands: second steps back
    assert work.claim_tag not in store.client.get_run(second).data.tags
    assert store.client.get_run(first).data.tags[work.claim_tag] == "evaluate baseline"
    end_runs([first], "FINISHED")  # a claim ends with its holder
    assert claim([work], second)
    end_runs([second], "FINISHED")
