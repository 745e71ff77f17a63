"""Interrupts: a real signal to this process, through lgals' own handler."""

from __future__ import annotations

import os
import signal

import pytest

from lgals import interrupts
from lgals.interrupts import install_interrupt_handlers, shielded
from lgals.tracking.runs import open_run


@pytest.fixture
def handlers(monkeypatch):
    """lgals' handlers for the test, the previous ones and the interrupt state restored."""
    saved = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    monkeypatch.setattr(interrupts, "_signals", [])
    install_interrupt_handlers()
    yield
    interrupts.INTERRUPTED.clear()
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def test_a_signal_inside_a_shielded_block_is_raised_as_it_ends(handlers):
    steps, undone = [], []
    with pytest.raises(KeyboardInterrupt):
        with shielded(on_interrupt=lambda: undone.append(list(steps))):
            steps.append("before")
            os.kill(os.getpid(), signal.SIGTERM)  # delivered at once, to this thread
            steps.append("after the signal")
            with shielded():  # an inner block does not raise it: the outer one ends first
                steps.append("inner")
            steps.append("last")
    assert steps == ["before", "after the signal", "inner", "last"]
    assert undone == [steps]  # told, with the whole block done
    assert interrupts.exit_code() == 128 + signal.SIGTERM


def test_a_shielded_block_without_a_signal_raises_nothing(handlers):
    undone = []
    with shielded(on_interrupt=lambda: undone.append(True)):
        pass
    assert undone == []
    with pytest.raises(KeyboardInterrupt):  # unshielded, a signal raises where it lands
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # Python runs the handler between bytecodes
            pass


def test_a_run_opened_as_the_signal_comes_ends_killed(handlers, store, monkeypatch):
    """The signal lands inside ``open_run``: the caller never gets the run's id, so
    ``open_run`` itself ends the run KILLED before the interrupt goes on."""
    from lgals.tracking import runs

    client, experiment_id = store.client, store.experiment_id
    real_add = runs.HEARTBEATS.add

    def signalled_add(run_id):  # the last step inside the shielded block
        real_add(run_id)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(runs.HEARTBEATS, "add", signalled_add)
    with pytest.raises(KeyboardInterrupt):
        open_run(experiment_id, "cut", {}, {"a": 1})
    (run,) = client.search_runs([experiment_id])
    assert run.info.status == "KILLED"
    assert run.data.params == {"a": "1"}
