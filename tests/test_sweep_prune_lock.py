"""The trial record's lock on its own: in a ``--background`` sweep the pruning decision is made
on the run's progress thread (``loop._maybe_prune``) while its end is read on the main thread
(``trials.finish``). Each test makes one of them hold the lock and proves the other waits for it,
then checks that every epoch is told to the Optuna trial once and the outcome is the one the
first holder decided. A real study and trial; the run's handle is a stand-in, since no rank
is needed to take a lock."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest

optuna = pytest.importorskip("optuna")

from lightning_magic.sweep import trials as one  # noqa: E402
from lightning_magic.sweep.loop import _maybe_prune  # noqa: E402
from lightning_magic.sweep.slots import Slot  # noqa: E402

DEADLINE = 30.0  # seconds: only reached when the order under test is broken
HISTORY = [{"stage": "validation", "epoch": 0, "val_loss": 0.5}]


class SpyLock:
    """A lock that says when someone had to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.contended = threading.Event()

    def __enter__(self):
        if not self._lock.acquire(blocking=False):
            self.contended.set()
            self._lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()


class GatedPruner(optuna.pruners.BasePruner):
    """Prunes every trial, but only once ``gate`` opens: its decision is taken under the lock."""

    def __init__(self, gate: threading.Event | None = None) -> None:
        self.gate, self.entered, self.calls = gate, threading.Event(), 0

    def prune(self, study, trial) -> bool:
        self.calls += 1
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(DEADLINE), "the other side never came to the lock"
        return True


class StandInHandle:
    """What the sweep reads of a trial's BackgroundRun: its live history, whether it is done,
    stop(), join() and, once ended, its record (the TrainingRun)."""

    def __init__(self, record_gate: threading.Event | None = None) -> None:
        self.history = list(HISTORY)
        self.stops: list[bool] = []
        self.record_gate, self.reading_record = record_gate, threading.Event()
        self._record = SimpleNamespace(history=list(HISTORY), metrics={"val_loss": 0.5},
                                       ok=True, headline="finished")

    def done(self) -> bool:
        return False

    def stop(self, wait: bool = True) -> None:
        self.stops.append(wait)

    def join(self, when: str = "") -> None:
        pass

    @property
    def record(self):
        self.reading_record.set()
        if self.record_gate is not None:
            assert self.record_gate.wait(DEADLINE), "the progress thread never came to the lock"
        return self._record


def record_for(pruner: GatedPruner, handle: StandInHandle) -> one.TrialRecord:
    study = optuna.create_study(direction="minimize", pruner=pruner)
    record = one.TrialRecord(number=0, trial=study.ask(), slot=Slot("cpu", "1"), handle=handle)
    record.lock = SpyLock()
    return record


def told(record: one.TrialRecord) -> dict:
    """The epochs the study was told of this trial, and their values."""
    return record.trial.study.trials[record.number].intermediate_values


def run_in_thread(target, *args) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


def test_the_end_waits_for_a_pruning_decision_in_progress_and_reads_it():
    gate = threading.Event()
    pruner, handle = GatedPruner(gate), StandInHandle()
    record = record_for(pruner, handle)
    pruned: list[bool] = []
    progress = run_in_thread(lambda: pruned.append(_maybe_prune(record, "val_loss")))
    assert pruner.entered.wait(DEADLINE)        # the progress thread is deciding, lock held
    end = run_in_thread(one.finish, record, "val_loss")
    assert record.lock.contended.wait(DEADLINE), "finish did not wait for the decision"
    gate.set()
    progress.join(DEADLINE), end.join(DEADLINE)
    assert not progress.is_alive() and not end.is_alive()
    assert pruned == [True] and handle.stops == [False]
    assert record.status == "pruned" and record.note == "pruned at epoch 0"
    assert told(record) == {0: 0.5}
    assert pruner.calls == 1                    # finish told no epoch again


def test_a_pruning_decision_waits_for_the_end_in_progress_and_makes_none():
    gate = threading.Event()
    pruner, handle = GatedPruner(), StandInHandle(record_gate=gate)
    record = record_for(pruner, handle)
    end = run_in_thread(one.finish, record, "val_loss")
    assert handle.reading_record.wait(DEADLINE)  # finish holds the lock, reading the run's end
    pruned: list[bool] = []
    progress = run_in_thread(lambda: pruned.append(_maybe_prune(record, "val_loss")))
    assert record.lock.contended.wait(DEADLINE), "the pruning decision did not wait for the end"
    gate.set()
    progress.join(DEADLINE), end.join(DEADLINE)
    assert not progress.is_alive() and not end.is_alive()
    assert pruned == [False] and handle.stops == []
    assert pruner.calls == 0
    assert record.status == "complete" and record.value == 0.5
    assert told(record) == {0: 0.5}
