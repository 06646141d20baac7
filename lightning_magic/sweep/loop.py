"""The sweep itself: trials started on free slots as long as trials are wanted, and each one's end
told to the study as it comes; one thread does it all, the kernel's main thread.

The trials' background runs wake that thread through one queue: their done callbacks (the run's
ranks are gone: bring its results back, tell the study, free its slot) and rank 0's progress
events (report the metric at an epoch end, prune, update the table). The stop button stops every
trial; the trials that ended are kept and bound as after a whole sweep.
"""

from __future__ import annotations

import queue
import time
from typing import Any, Optional

from . import trials as one
from .results import Sweep
from .slots import Slot, slots
from .study import make_study
from .table import LiveTable

_MISSING = object()


def run_sweep(context: one.Context) -> Sweep:
    flags, shell = context.flags, context.shell
    free: list[Slot] = slots(flags.devices_per_trial, flags.accelerator)
    study = make_study(flags)
    sweep = Sweep(study, flags.metric, [], slots=len(free))
    table = LiveTable(sweep)
    wake: queue.SimpleQueue = queue.SimpleQueue()
    running: dict[int, one.TrialRecord] = {}
    deadline = None if flags.timeout is None else time.monotonic() + flags.timeout
    before = shell.user_ns.get("trial", _MISSING)
    error: Optional[BaseException] = None
    more = True
    table.show()
    try:
        while True:
            while free and more and error is None and _wanted(flags.trials, sweep, deadline):
                record = one.start(context, study, free.pop(0), sweep.trials)
                if record.handle is None:  # ended in the kernel, before any rank
                    free.append(record.slot)
                    more = one.tell(study, record)
                    error = record.error
                else:
                    running[record.number] = record
                    _listen(record, wake)
                table.update()
            if not running:
                break
            kind, record = wake.get()
            if record.number not in running:
                continue
            if kind == "end":
                one.finish(record, flags.metric)
                more = one.tell(study, record) and more
                error = error or record.error
                del running[record.number]
                free.append(record.slot)
            elif kind == "validation" and flags.pruner != "none":
                _maybe_prune(record, flags.metric)
            table.update()
    except BaseException:  # the stop button (or a broken sweep): no trial of it goes on
        _stop_all(running, study, flags.metric)
        raise
    finally:
        table.update()
        _bind(shell, sweep, before)
    if error is not None:
        if getattr(error, "report", None) is not None:  # a pre-fork refusal's full report
            from IPython.display import display

            display(error.report)
        raise error
    return sweep


def _wanted(trials: Optional[int], sweep: Sweep, deadline: Optional[float]) -> bool:
    if trials is not None and len(sweep.trials) >= trials:
        return False
    return deadline is None or time.monotonic() < deadline


def _listen(record: one.TrialRecord, wake: queue.SimpleQueue) -> None:
    def on_event(event: dict) -> None:
        if event.get("kind") in ("step", "validation"):
            wake.put((event["kind"], record))

    record.handle.add_event_handler(on_event)
    record.handle.add_done_callback(lambda run: wake.put(("end", record)))


def _maybe_prune(record: one.TrialRecord, metric: str) -> None:
    if not record.stopping and one.report_epochs(record, metric, prune=True):
        record.stopping = True
        record.note = f"pruned at epoch {max(record.reported)}"  # as Lightning names it
        record.handle.stop(wait=False)  # at the next batch; its end comes as any other


def _stop_all(running: dict[int, one.TrialRecord], study: Any, metric: str) -> None:
    for record in running.values():
        record.handle.stop(wait=False)
    for record in running.values():
        if record.run is None:
            one.finish(record, metric)
        if not record.told:
            one.tell(study, record)
    running.clear()


def _bind(shell: Any, sweep: Sweep, before: Any) -> None:
    """``lightning_sweep``; the names the best trial's cell bound (its model, trained); ``trial``
    as it was before the sweep."""
    namespace = shell.user_ns
    if before is _MISSING:
        namespace.pop("trial", None)
    else:
        namespace["trial"] = before
    best = sweep.best_record()
    if best is not None:
        namespace.update(best.bound)
    namespace["lightning_sweep"] = sweep
