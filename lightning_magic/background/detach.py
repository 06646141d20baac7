"""The kernel's side of a ``--detach`` run: its ranks are started by a supervisor that left the
kernel's session (``train``'s ``Detached``), which writes the run's events and its end into the
journal; the kernel's live view and history follow that journal (``Follower``), as a new
kernel's would after a restart. The run's file in the run registry (``readings.runs``: the
server's ``/gpu-status`` ``runs``, the panel's card) is the supervisor's from its start: it names
the supervisor's pid, so it stays while the run trains past a restart of its kernel and goes when
the run ends; the kernel no longer writes it."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .follow import Follower
from .journal import Journal
from .journal_reading import ENDED_WELL, MAX_NOTE


def start(run: Any, function: Any, args: Any, kwargs: Any) -> Any:
    """Start ``run``'s (a ``BackgroundRun``'s) ranks detached; the ``Detached`` to wait on."""
    from ..train.launch.detached import Detached

    launch, path = run._launch, run.journal.path
    launch.pump.stop()  # rank 0's events are the supervisor's to read, and to journal
    held: dict[str, Journal] = {}

    def on_start(pid: int) -> list:  # in the supervisor
        import psutil

        held["journal"] = journal = Journal(path)  # its own handle, its own lock
        started = psutil.Process(pid).create_time()
        journal.write("supervisor", pid=pid, pid_started=started)
        if launch.published is not None:
            launch.published.state.update(pid=pid, pid_started=started)
            try:
                launch.published.publish()  # the kernel's file, now naming the supervisor
            except OSError:
                launch.published = None
        return [journal.event] + ([launch._registry_update] if launch.published else [])

    def on_end(outcome: Any) -> None:  # in the supervisor
        if launch.published is not None:
            launch.published.remove()  # before the journal says the run ended
        last = launch.session.last_checkpoint()
        best = getattr(outcome.worker_output, "best_model_path", None)
        note = failure_note(outcome, launch)
        if note:  # the run's only report where its kernel is gone (a restart)
            held["journal"].write("note", text=note, failure=True)
        held["journal"].status(outcome.status,
                               last_model_path=last if last and os.path.exists(last) else None,
                               best_model_path=str(best) if best else None)
        held["journal"].close()

    detached = Detached(run._launcher, function, args, kwargs, run.trainer, launch, run._button,
                        on_start, on_end)
    if detached.pid:  # the supervisor has the registry file from here on
        launch.published = None
    Follower(path, view=launch.view, handlers=[run._on_event]).start()
    return detached


def failure_note(outcome: Any, launch: Any) -> str:
    """The failure report the kernel would have shown (``report_for``), with the end of its
    traceback, within a journal note's size; '' when the ranks finished or were stopped."""
    if outcome.status in ENDED_WELL:
        return ""
    from ..train.returns.failures import report_for

    report = report_for(outcome, launch)
    tail = "\n".join((report.traceback or "").rstrip().splitlines()[-12:])
    # read in a later kernel, where no result variable holds the traceback: its end is here
    steps = [step for step in report.what_to_do if ".traceback`" not in step]
    if tail:
        steps.append("The end of the rank's traceback is below.")
    happened = report.what_happened
    if "In [" in report.text():  # read after a restart, where In [N] is another cell
        happened += ("\nIn [N] is the cell's number in the kernel that started the run, as the "
                     "notebook shows it until that cell runs again.")
    report = dataclasses.replace(report, what_happened=happened, what_to_do=steps)
    return (report.text() + (f"\n\n{tail}" if tail else ""))[:MAX_NOTE]
