"""The sweep itself: trials started on free slots as long as trials are wanted, and each one's end
told to the study as it comes, always on the kernel's main thread (``SweepLoop``).

The trials' background runs wake that thread through one queue: their done callbacks (the run's
ranks are gone: bring its results back, tell the study, free its slot) and rank 0's progress
events (report the metric at an epoch end, prune, update the table). With ``--background`` the
pruning decision is made at once on the run's progress thread, under the trial record's lock
(``_maybe_prune``), so a trial is stopped at its epoch end even while another cell runs. In the
foreground (``run_sweep``) the cell waits on that queue until the sweep is over; the stop button
stops every trial, and the trials that ended are kept and bound as after a whole sweep. With
``--background`` the cell returns and ``background`` takes what the queue holds between cells.
"""

from __future__ import annotations

import queue
import time
from typing import Any, Callable, Optional

from . import trials as one
from .results import Sweep
from .slots import Slot, slots
from .study import make_study
from .table import LiveTable

_MISSING = object()


class SweepLoop:
    """One sweep's slots, study, trials and table. ``advance`` does the work; only the kernel's
    main thread calls it."""

    def __init__(self, context: one.Context, runs: Any = None) -> None:
        flags, shell = context.flags, context.shell
        self.context, self.flags, self.shell = context, flags, shell
        self.runs = runs          # where the trials' runs are kept (None: the kernel's RUNS)
        self.free: list[Slot] = slots(flags.devices_per_trial, flags.accelerator)
        self.study = make_study(flags)
        self.sweep = Sweep(self.study, flags.metric, [], slots=len(self.free))
        self.table = LiveTable(self.sweep)
        self.wake: queue.SimpleQueue = queue.SimpleQueue()
        self.on_wake: Optional[Callable[[str], None]] = None  # told of each wake, any thread
        self.running: dict[int, one.TrialRecord] = {}
        self.deadline = None if flags.timeout is None else time.monotonic() + flags.timeout
        self.before = shell.user_ns.get("trial", _MISSING)
        self.error: Optional[BaseException] = None
        self.more = True          # False once the sampler is done, or the sweep was stopped

    def advance(self, until: Optional[float] = None) -> bool:
        """Start trials on the free slots and handle what woke the sweep, waiting for it until
        ``until`` (``time.monotonic()``; None: as long as it takes, 0: not at all). True once
        the sweep is over: no trial runs and none is to start."""
        while True:
            self._start_trials()
            if not self.running:
                return True
            timeout = None if until is None else until - time.monotonic()
            try:
                kind, record = self.wake.get(block=timeout is None or timeout > 0,
                                             timeout=None if timeout is None else
                                             max(timeout, 0.0))
            except queue.Empty:
                return False
            self._handle(kind, record)

    def stop(self) -> None:
        """The stop button of every running trial; no trial starts after it."""
        self.more = False
        for record in self.running.values():
            record.handle.stop(wait=False)

    def stop_all(self) -> None:
        """Stop every running trial and wait for its ranks to be gone; each is told."""
        self.stop()
        for record in self.running.values():
            if record.run is None:
                one.finish(record, self.flags.metric)
                self.sweep.events.append(("ended", record.number))
            if not record.told:
                one.tell(self.study, record)
        self.running.clear()

    def bind(self, name_sweep: bool = True) -> None:
        """The names the best trial's cell bound (its model, trained); ``trial`` as it was
        before the sweep; with ``name_sweep``, ``lightning_sweep`` (the ``Sweep``)."""
        namespace = self.shell.user_ns
        self._restore_trial()
        best = self.sweep.best_record()
        if best is not None:
            namespace.update(best.bound)
        if name_sweep:
            namespace["lightning_sweep"] = self.sweep

    def raise_error(self) -> None:
        error = self.error
        if error is None:
            return
        if getattr(error, "report", None) is not None:  # a pre-fork refusal's full report
            from IPython.display import display

            display(error.report)
        raise error

    # -- the steps, on the kernel's main thread ------------------------------------------------
    def _start_trials(self) -> None:
        flags = self.flags
        while self.free and self.more and self.error is None and \
                _wanted(flags.trials, self.sweep, self.deadline):
            kept = dict(self.shell.user_ns) if flags.background else None
            try:
                record = one.start(self.context, self.study, self.free.pop(0),
                                   self.sweep.trials, self.runs)
            finally:
                if kept is not None:  # a trial's names reach the notebook only as the best's
                    self._restore(kept)
            self.sweep.events.append(("started", record.number))
            if record.handle is None:  # ended in the kernel, before any rank
                self.sweep.events.append(("ended", record.number))
                self.free.append(record.slot)
                self.more = one.tell(self.study, record) and self.more
                self.error = record.error
            else:
                self.running[record.number] = record
                self._listen(record)
            self.table.update()

    def _handle(self, kind: str, record: one.TrialRecord) -> None:
        if record.number not in self.running:
            return
        if kind == "end":
            one.finish(record, self.flags.metric)
            self.sweep.events.append(("ended", record.number))
            self.more = one.tell(self.study, record) and self.more
            self.error = self.error or record.error
            del self.running[record.number]
            self.free.append(record.slot)
        elif kind == "validation" and self.flags.pruner != "none" and self.on_wake is None:
            _maybe_prune(record, self.flags.metric)  # in the background: done as it came
        self.table.update()

    def _listen(self, record: one.TrialRecord) -> None:
        def wake(kind: str) -> None:
            if kind != "step" or self.on_wake is None:  # in the background: the table only
                self.wake.put((kind, record))
            if self.on_wake is not None:
                self.on_wake(kind)

        def on_event(event: dict) -> None:
            kind = event.get("kind")
            if kind == "validation" and self.on_wake is not None and \
                    self.flags.pruner != "none" and _maybe_prune(record, self.flags.metric):
                self.table.update()  # its note says so while the run stops
            if kind in ("step", "validation"):
                wake(kind)

        record.handle.add_event_handler(on_event)
        record.handle.add_done_callback(lambda run: wake("end"))

    def _restore(self, kept: dict[str, Any]) -> None:
        namespace = self.shell.user_ns
        for name in [name for name in namespace if name not in kept]:
            del namespace[name]
        for name, value in kept.items():
            if namespace.get(name, _MISSING) is not value:
                namespace[name] = value

    def _restore_trial(self) -> None:
        if self.before is _MISSING:
            self.shell.user_ns.pop("trial", None)
        else:
            self.shell.user_ns["trial"] = self.before


def run_sweep(context: one.Context) -> Sweep:
    """The cell's sweep, in the foreground: the finished ``Sweep``."""
    loop = SweepLoop(context)
    loop.table.show()
    try:
        loop.advance()
    except BaseException:  # the stop button (or a broken sweep): no trial of it goes on
        loop.stop_all()
        raise
    finally:
        loop.table.update()
        loop.bind()
    loop.raise_error()
    return loop.sweep


def _wanted(trials: Optional[int], sweep: Sweep, deadline: Optional[float]) -> bool:
    if trials is not None and len(sweep.trials) >= trials:
        return False
    return deadline is None or time.monotonic() < deadline


def _maybe_prune(record: one.TrialRecord, metric: str) -> bool:
    """Report its new epoch ends to the trial and stop its run if the pruner says so (True).
    From any thread: under the record's lock, and never once its ranks are gone (its end is
    then ``finish``'s, which reports what is left)."""
    with record.lock:
        if record.stopping or record.run is not None or record.told or record.handle.done() \
                or not one.report_epochs(record, metric, prune=True):
            return False
        record.stopping = True
        record.note = f"pruned at epoch {max(record.reported)}"  # as Lightning names it
    record.handle.stop(wait=False)  # at the next batch; its end comes as any other
    return True
