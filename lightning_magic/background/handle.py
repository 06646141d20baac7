"""``BackgroundRun``: what a Trainer call of a ``--background`` cell gives back at once.

In the manner of ``concurrent.futures.Future`` (and ipyparallel's ``AsyncResult``):

- ``wait(timeout=None)`` returns what the call returns (a fit's ``TrainingRun``, predict's
  predictions, validate's and test's metrics) once every rank is gone; the results are then in
  the kernel's model and Trainer. A run that failed or timed out raises ``TrainingFailed``, as the
  call itself would have; a run that was stopped returns its ``TrainingRun`` (status
  ``"interrupted"``, its checkpoint of that moment in ``last_model_path``). Still running after
  ``timeout`` seconds: ``TimeoutError``, and the run goes on. The stop button while ``wait()``
  waits interrupts the wait, not the run (``stop()`` stops it).
- ``done()`` is a method, as ``Future.done()``: True once every rank is gone. Its results reach
  the kernel at the next cell boundary or at ``wait()``. ``add_done_callback(fn)`` as futures.
- ``stop(wait=True)`` is the stop button: every rank stops at the same batch, the checkpoint of
  that moment is saved, every rank is gone within the stop grace; with ``wait`` it then returns
  what ``wait()`` returns.
- Indexing, iterating or ``len()`` of a validate's, test's or predict's handle waits for the
  list the call returns (``trainer.test(...)[0]["test_acc"]`` works as in plain Lightning).
- ``status`` (``"running"``, then the run's own), ``metrics`` and ``history`` read live: while
  the run goes on they are those of rank 0's progress events (the live view's), afterwards the
  ``TrainingRun``'s. Once its results are back every attribute of the ``TrainingRun`` reads
  through (``run.best_model_path``, ``run.report``).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Optional

from . import index
from .journal import Journal, history_row, own_folder
from .stop_button import StopButton


class BackgroundRun:
    def __init__(self, launcher: Any, launch: Any, trainer: Any, given: list,
                 cell: Optional[int]) -> None:
        self.id: str = launch.run_id
        self.stage: str = launch.stage
        self.model_name = type(launch.model).__name__
        self.cell = cell                      # the In [N] of the cell that started it
        self.resolved = launch.session.resolved
        self.devices = self.resolved.describe().split(" · ")[0]  # "2 CPU processes", "GPU 0, 1"
        self.model, self.trainer = launch.model, trainer
        self.record: Any = None               # the TrainingRun, once delivered
        self._launcher, self._launch, self._given = launcher, launch, given
        self._button = StopButton()
        self._ended, self._delivered = threading.Event(), threading.Event()
        self._outcome: Any = None
        self._exception: Optional[BaseException] = None  # the supervision itself broke
        self._result: Any = None
        self._rows: list[dict[str, Any]] = []
        self._thread: Optional[threading.Thread] = None
        self._callbacks: list[Any] = []
        self._callbacks_lock = threading.Lock()
        self.detached: Any = None             # the supervisor of a --detach run (its pid)
        self.journal = Journal.of_launch(launch)  # in the run's folder, beside its checkpoints
        if self.journal.writing:  # named in the index: attach finds it wherever its folder is
            index.add(self.id, self.journal.path)
        launch.pump.handlers += [self._on_event, self.journal.event]  # before the ranks send

    # -- the run -------------------------------------------------------------------------------
    def start(self, function: Any, args: Any, kwargs: Any, ranks: Any) -> None:
        """Supervise the started ``ranks`` (or wait for the detached supervisor) from a thread
        of their own."""
        self._thread = threading.Thread(target=self._supervise, name=f"lightning-run-{self.id}",
                                        args=(function, args, kwargs, ranks), daemon=True)
        self._thread.start()

    def _supervise(self, function: Any, args: Any, kwargs: Any, ranks: Any) -> None:
        from ..train.launch.supervision import Outcome

        outcome = Outcome(status="interrupted")
        try:
            outcome = self.detached.wait() if self.detached is not None else \
                self._launcher.run_ranks(function, args, kwargs, self.trainer, self._launch,
                                         self._button, started=ranks)
        except BaseException as exc:  # noqa: BLE001 - raised again by wait(), in the kernel
            self._exception = exc
        finally:
            self._outcome = outcome
            self._button.close()
            if self._launch.published is not None:
                self._launch.published.update(status=outcome.status)
            if self.detached is None:  # a detached run's supervisor wrote its own
                self.journal.status("failed" if self._exception is not None else outcome.status)
            with self._callbacks_lock:
                self._ended.set()
                callbacks, self._callbacks = self._callbacks, []
            for callback in callbacks:
                self._call(callback)

    def _call(self, callback: Any) -> None:
        try:
            callback(self)
        except Exception:  # noqa: BLE001 - as concurrent.futures: logged, the run unharmed
            import logging

            logging.getLogger(__name__).exception("done callback %r of run %s", callback, self.id)

    def _on_event(self, event: dict) -> None:
        row = history_row(event)
        if row is not None:
            self._rows.append(row)

    # -- the handle ----------------------------------------------------------------------------
    def done(self) -> bool:
        return self._ended.is_set()

    def add_done_callback(self, fn: Any) -> None:
        """``fn(run)`` once every rank is gone, from the run's own thread (at once if they are
        already gone), as ``Future.add_done_callback``; the results are not back yet then."""
        with self._callbacks_lock:
            if not self._ended.is_set():
                self._callbacks.append(fn)
                return
        self._call(fn)

    def add_event_handler(self, fn: Any) -> None:
        """``fn(event)`` for each of rank 0's progress events from now on, on the progress
        thread (the earlier ones are in ``history``)."""
        self._launch.pump.handlers.append(fn)

    def delivered(self) -> bool:
        return self._delivered.is_set()

    @property
    def status(self) -> str:
        if self.record is not None:
            return self.record.status
        if self._ended.is_set():
            return "failed" if self._exception is not None else self._outcome.status
        return "running"

    @property
    def metrics(self) -> dict[str, float]:
        if self.record is not None:
            return self.record.metrics
        return dict(self._launch.view.progress.metrics)

    @property
    def history(self) -> list[dict[str, Any]]:
        if self.record is not None:
            return self.record.history
        return list(self._rows)

    def progress(self) -> str:
        """Where the run is: "epoch 1/4 · step 40 (45%)", as its live view says."""
        if self.record is not None:
            return self.record.progress_text() or ""
        progress = self._launch.view.progress
        fraction = progress.fraction()
        text = " · ".join(progress.position())
        return f"{text} ({fraction:.0%})" if fraction is not None and text else text

    def join(self, timeout: Optional[float] = None, when: str = "at wait()") -> bool:
        """Wait for the ranks to be gone and (on the main thread) bring the results back;
        False when ``timeout`` ran out first. Raises nothing of the run's own."""
        if not self._ended.wait(timeout):
            return False
        if threading.current_thread() is threading.main_thread():
            self.deliver(when)
            return True
        return self._delivered.wait(timeout)  # the kernel's main thread delivers, between cells

    def wait(self, timeout: Optional[float] = None) -> Any:
        if not self.join(timeout):
            raise TimeoutError(f"run {self.id} ({self.stage} of {self.model_name}) is still "
                               f"running after {timeout} s; it goes on: wait() again, or stop()")
        if self._exception is not None:
            raise self._exception
        if not self.record.ok and self.record.status != "interrupted":
            from ..train.returns.results import TrainingFailed

            raise TrainingFailed(self.record, self.record.name, in_magic_cell=False)
        return self.record if self.stage == "fit" else self._result

    def stop(self, wait: bool = True) -> Any:
        """Press this run's stop button (see the module's docstring)."""
        if not self._ended.is_set():
            self._button.press()
        if not wait:
            return None
        self.join(when="at stop()")  # the note says where the results came back
        return self.wait()

    def discard(self) -> None:
        """The ranks never started: nothing to wait for."""
        self._button.close()
        self.journal.status("failed")
        self.journal.close()

    def load_into(self, model: Any, which: str = "last") -> str:
        """The weights of the run's ``"last"`` (or ``"best"``) checkpoint into ``model``."""
        from .weights import load_into

        record = self.record
        last = None if record is None else record.last_model_path
        path = last if which == "last" else None if record is None else record.best_model_path
        return load_into(model, path, which, self.id, last and os.path.dirname(last))

    def deliver(self, when: str) -> None:
        """The ended run's results into the kernel's model and Trainer, and its summary into the
        cell that started it. On the kernel's main thread only, once."""
        if self._delivered.is_set() or not self._ended.is_set():
            return
        launch, launcher = self._launch, self._launcher
        with launch.view.origin():
            try:
                if self._exception is not None:
                    launcher.outcome = self._outcome
                    launcher.record = launch.end(self._outcome,
                                                 list(launch.session.kernel_warnings))
                else:
                    self._result = launcher.finish(launch, self._outcome, self.trainer,
                                                   self._given)
            finally:
                self.record = launcher.record
                self._delivered.set()
                if self.record is not None:
                    self.journal.result(self.record)
            self._drop_if_empty()
            self._tell(when)

    def _drop_if_empty(self) -> None:
        """A run that did not end well and left no checkpoint has nothing to attach to or load
        (its report is in the kernel): its journal goes, with a detached run's output file, then
        its folder if nothing else is in it, as a failed foreground run leaves no run folder."""
        record, session = self.record, self._launch.session
        if record is None or record.ok or self.journal.path is None or any(
                path and os.path.exists(path) for path in (
                    record.last_model_path, record.best_model_path, session.last_checkpoint())):
            return
        index.forget(self.journal.path, self.id, own_folder(session))

    def _tell(self, when: str) -> None:
        from IPython.display import display

        record = self.record
        if not record.ok:
            self.trainer.state.status = type(self.trainer.state.status)("interrupted")
        kept = "its weights are in the kernel's model, its state in the Trainer" \
            if self.stage == "fit" and record.status in ("finished", "interrupted") \
            else "its results are in the Trainer"
        print(f"Background run {self.id} ({self.stage} of {self.model_name}) {record.headline}; "
              f"{kept} ({when}).")
        if record.report is not None:
            display(record.report)
        elif record.ok:
            display(record)

    def __getattr__(self, name: str) -> Any:
        record = self.__dict__.get("record")
        if record is not None and not name.startswith("_"):
            return getattr(record, name)
        raise AttributeError(f"{name!r}: run {self.__dict__.get('id')} has no TrainingRun yet "
                             "(it is still running, or its results are not back yet): wait() "
                             "returns it")

    # What validate, test and predict return is a list: code written for plain Lightning indexes
    # it (``trainer.test(...)[0]["test_acc"]``); indexing, iterating or measuring the handle
    # waits for that list, as ``wait()[0]`` would.
    def __getitem__(self, key: Any) -> Any:
        return self._returned()[key]

    def __iter__(self) -> Any:
        return iter(self._returned())

    def __len__(self) -> int:
        return len(self._returned())

    def __bool__(self) -> bool:  # a handle is true, whether or not its run has ended
        return True

    def _returned(self) -> Any:
        if self.stage == "fit":
            raise TypeError(f"run {self.id} is a fit: it returns a TrainingRun, which is not a "
                            "list; read its fields (run.metrics) or wait() for it")
        return self.wait()

    def __repr__(self) -> str:
        where = self.progress()
        return (f"BackgroundRun {self.id}: {self.stage} of {self.model_name} on {self.devices}, "
                f"{self.status}" + (f", {where}" if where else ""))

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
