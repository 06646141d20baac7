"""``%%lightning_sweep --background``: the cell starts the first trials and returns at once with
a ``SweepRun``, the sweep's handle (also ``lightning_sweep``), in the manner of
``concurrent.futures.Future`` as a single background run's is:

- ``wait(timeout=None)`` returns the finished ``Sweep``, the best trial's names (its model,
  trained) bound; still running after ``timeout`` seconds: ``concurrent.futures.TimeoutError``,
  and the sweep goes on. An error that stopped the sweep (as in the foreground) is raised.
- ``done()``: True once every trial's ranks are gone and no trial is to start; ``stop(wait=True)``
  is the stop button of every trial (no trial starts after it); ``status``; ``.trials``,
  ``.study``, ``.dataframe()`` read what the sweep holds so far.

The sweep's work (a trial's cell run in the kernel, a trial's end told to the study) is the
foreground's own (``SweepLoop.advance``), done on the kernel's main thread and never inside
another cell: at IPython's ``pre_run_cell`` and ``post_run_cell``, while the kernel is idle (a
callback on the kernel's event loop, which runs only between cells), and in ``wait()``. A trial's
cell runs against the notebook's namespace, which is then put back as it was: the best trial's
names reach it once the sweep is over, between cells or at ``wait()``. The table is updated in
the sweep's cell from the trials' progress threads, while other cells run.

Pruning is the exception: it touches only the study and the trial's run, so it is done on the
trial's progress thread as rank 0's epoch end arrives (the metric reported to the Optuna trial,
``should_prune()``, and if so ``stop(wait=False)``; its note says "pruned at epoch N" from then
on). A pruned trial thus stops at that epoch end even while another cell runs; its end is told
to the study, its slot freed and the next trial started when the kernel is next idle, at a
cell's start or end, or at ``wait()``.
"""

from __future__ import annotations

import concurrent.futures
import threading
import time
import uuid
from types import SimpleNamespace
from typing import Any, Literal, Optional

from ..background import RUNS
from ..background.runs import Runs, cell_origin
from ..source.editor import cell_number
from .loop import SweepLoop

Status = Literal["running", "finished", "stopped", "failed"]


class TrialRuns(Runs):
    """The runs of a background sweep's trials: brought back by the sweep itself, not by the
    kernel's cell boundaries; a trial's call still waits for what the kernel's other runs hold."""

    def __init__(self, sweep: Any) -> None:
        super().__init__()
        self._sweep = sweep

    def pending(self) -> list[Any]:
        return super().pending() + [run for run in RUNS.pending() if run is not self._sweep]


class SweepRun:
    stage = "sweep"

    def __init__(self, context: Any) -> None:
        self.id = f"sweep-{uuid.uuid4().hex[:8]}"
        self.cell = cell_number(context.shell)
        self.trainer = self.model = None  # its trials' are their own: it holds only their GPUs
        self._shell = context.shell
        self._origin = cell_origin(context.shell)
        self._loop = SweepLoop(context, runs=TrialRuns(self))
        self._loop.table.origin = self._origin
        self._loop.on_wake = self._woken
        self._events_loop = _running_event_loop()
        self._over = self._stopped = self._stepping = self._scheduled = False
        self._busy = True                  # a cell runs (this one, to begin with)
        self._delivered = threading.Event()
        self._lock = threading.Lock()
        self._hooks = (self._before_cell, self._after_cell)
        self._slots = list(self._loop.free)

    # -- the handle ----------------------------------------------------------------------------
    def done(self) -> bool:
        return self._over

    def delivered(self) -> bool:
        return self._delivered.is_set()

    @property
    def status(self) -> Status:
        if not self._over:
            return "running"
        return "failed" if self._loop.error is not None else \
            "stopped" if self._stopped else "finished"

    @property
    def sweep(self) -> Any:
        """The ``Sweep`` so far (``wait()`` returns it finished)."""
        return self._loop.sweep

    @property
    def trials(self) -> list[Any]:
        return self._loop.sweep.trials

    @property
    def study(self) -> Any:
        return self._loop.study

    def dataframe(self, **kwargs: Any) -> Any:
        return self._loop.sweep.dataframe(**kwargs)

    def join(self, timeout: Optional[float] = None, when: str = "at wait()") -> bool:
        """Advance the sweep until it is over (on the kernel's main thread; another thread waits
        for it to be over and back); False when ``timeout`` ran out first."""
        if threading.current_thread() is not threading.main_thread():
            return self._delivered.wait(timeout)
        until = None if timeout is None else time.monotonic() + timeout
        self._step(when, until)
        return self._over

    def wait(self, timeout: Optional[float] = None) -> Any:
        if not self.join(timeout):
            raise concurrent.futures.TimeoutError(
                f"sweep {self.id} is still running after {timeout} s ({self.progress()}); it "
                "goes on: wait() again, or stop()")
        if self._loop.error is not None:
            raise self._loop.error
        return self._loop.sweep

    def stop(self, wait: bool = True) -> Any:
        """The stop button of every running trial; no trial starts after it."""
        if not self._over:
            self._stopped = True
            self._loop.stop()
        if not wait:
            return None
        self.join(when="at stop()")  # the note says where the results came back
        return self.wait()

    # -- what %lightning_runs lists, and what a call waiting for the sweep's GPUs reads --------
    @property
    def model_name(self) -> str:
        names = [record.handle.model_name for record in self.trials if record.handle]
        return names[0] if names else "cell"

    @property
    def devices(self) -> str:
        """"GPU 0", "2 slots: GPU 0, GPU 1", "2 slots of 1 CPU process"."""
        kinds = list(dict.fromkeys(slot.describe() for slot in self._slots))
        if len(self._slots) == 1:
            return kinds[0]
        return f"{len(self._slots)} slots: {', '.join(kinds)}" if len(kinds) > 1 else \
            f"{len(self._slots)} slots of {kinds[0]}"

    @property
    def resolved(self) -> Any:
        """The GPUs its running trials hold (``background.leases`` reads them)."""
        held = [record.handle.resolved for record in list(self._loop.running.values())]
        gpus = sorted({i for r in held if r.accelerator == "gpu" for i in r.nvml_indices})
        return SimpleNamespace(accelerator="gpu" if gpus else "cpu", nvml_indices=gpus)

    def progress(self) -> str:
        wanted = self._loop.flags.trials
        ended = len(self.trials) - len(self._loop.running)
        text = f"{ended} of {wanted} trials ended" if wanted else f"{ended} trials ended"
        return text + (f", {len(self._loop.running)} running" if self._loop.running else "")

    # -- the steps, on the kernel's main thread ------------------------------------------------
    def begin(self) -> None:
        """In the sweep's cell: the first trials start, then the cell returns."""
        self._shell.user_ns["lightning_sweep"] = self
        self._step("in its own cell", until=0.0, raise_here=True)
        if self._over:  # ended at once (its first trial's cell raised in the kernel)
            self._loop.raise_error()
            return
        RUNS.add(self)
        self._shell.events.register("pre_run_cell", self._hooks[0])
        self._shell.events.register("post_run_cell", self._hooks[1])

    def _step(self, when: str, until: Optional[float] = 0.0, raise_here: bool = False) -> None:
        if self._stepping or self._delivered.is_set():
            return
        self._stepping = True
        try:
            with self._origin():
                if not self._over:
                    self._advance(until, raise_here)
        finally:
            self._stepping = False
            if self._over:
                self.deliver(when)

    def _advance(self, until: Optional[float], raise_here: bool) -> None:
        """``SweepLoop.advance``; what breaks it ends the sweep, every trial stopped: raised in
        the sweep's own cell or by the stop button, else kept for ``wait()`` (never raised
        into another cell)."""
        try:
            self._over = self._loop.advance(until)
        except BaseException as error:
            self._loop.stop_all()
            self._over = True
            if isinstance(error, Exception):
                self._loop.error = self._loop.error or error
            else:
                self._stopped = True
            if raise_here or not isinstance(error, Exception):
                raise

    def deliver(self, when: str) -> None:
        """Once it is over: the table's last state, the best trial's names into the notebook, a
        note in the sweep's cell. On the kernel's main thread, once."""
        if self._delivered.is_set() or not self._over:
            return
        events = self._shell.events
        for name, hook in zip(("pre_run_cell", "post_run_cell"), self._hooks):
            if hook in events.callbacks[name]:
                events.unregister(name, hook)
        with self._origin():
            self._loop.table.update()
            self._loop.bind(name_sweep=False)
            best = self._loop.sweep.best_record()
            names = ", ".join(sorted(best.bound)) if best is not None and best.bound else ""
            bound = f"trial {best.number}'s {names} bound" if names else "nothing bound"
            error = self._loop.error
            why = f"; stopped by {type(error).__name__}: {error}" if error is not None else ""
            print(f"Sweep {self.id} {self.status} ({self.progress()}){why}; {bound} ({when}).")
        self._delivered.set()

    def _before_cell(self, info: Any = None) -> None:
        self._step(f"back before In [{self._shell.execution_count}] ran")
        self._busy = True

    def _after_cell(self, result: Any = None) -> None:
        self._busy = False
        count = getattr(result, "execution_count", None)
        self._step(f"back after In [{count}]" if count else "back after a cell")

    def _woken(self, kind: str) -> None:
        """From a trial's thread: the table, and a step once the kernel is idle."""
        if kind == "step":
            self._loop.table.update()
            return
        if self._events_loop is None:
            return
        with self._lock:
            if self._scheduled:
                return
            self._scheduled = True
        try:
            self._events_loop.call_soon_threadsafe(self._idle)
        except RuntimeError:  # the kernel's loop is closed: it is shutting down
            pass

    def _idle(self) -> None:
        with self._lock:
            self._scheduled = False
        if not self._busy:
            self._step("back while the kernel was idle")

    # -- reading it ----------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        loop = self.__dict__.get("_loop")
        if loop is not None and not name.startswith("_"):
            return getattr(loop.sweep, name)
        raise AttributeError(name)

    def __repr__(self) -> str:
        sweep, head = self._loop.sweep, f"SweepRun {self.id}: {self.status}, {self.progress()}"
        if not self._loop.running:
            return f"{head}; {sweep!r}"
        best = sweep.best_record()
        return head if best is None else \
            f"{head}; best so far: trial {best.number}, {sweep.metric} {best.value:.6g}"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def start(context: Any) -> SweepRun:
    run = SweepRun(context)
    run._loop.table.show()
    run.begin()
    return run


def _running_event_loop() -> Any:
    """The kernel's event loop, on whose thread (the main one) cells run; None in a terminal
    IPython, where the sweep advances at cell boundaries and in ``wait()``."""
    import asyncio

    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None
