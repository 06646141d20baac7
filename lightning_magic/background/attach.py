"""``lightning_magic.attach(ID)`` (``%lightning_runs --attach ID``): the live view of a run, redrawn
from its journal in the cell that asks, then following the run while it goes on.

A run of this kernel is found among its runs and its handle (``BackgroundRun``) is returned. A
run found only on disk (another kernel's, or one from before a restart) is looked for under the
checkpoint root, and a ``JournalRun`` is returned: what its journal says (``status``,
``metrics``, ``history``, ``notes``), ``done()``, ``wait()`` and ``load_into(model)``. A journal
whose writer is gone without saying how the run ended is a run whose status is ``"gone"``.
"""

from __future__ import annotations

import os
import re
import threading
from typing import Any, Optional

from IPython.core.error import UsageError

from .journal import PREFIX, SUFFIX
from .journal_reading import JournalFile, JournalState

POLL_S = 0.25  # between looks at a journal that is still being written
_IDENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def attach(ident: str, cwd: Optional[str] = None) -> Any:
    """Redraw run ``ident``'s live view here (the start of an id is enough) and follow it."""
    from .runs import RUNS

    ident = str(ident).strip()
    if not _IDENT.match(ident):
        raise UsageError(f"attach: {ident!r} is not a run id (%lightning_runs lists them).")
    mine = [run for run in RUNS.all if run.id.startswith(ident)]
    if len(mine) == 1 and mine[0].journal.path is not None:
        run = mine[0]
        Follower(run.journal.path, f"{run.model_name} (attached)").start()
        return run
    found = journals(cwd)
    named = sorted(run_id for run_id in found if run_id.startswith(ident))
    if len(named) != 1:
        what = "names several runs" if named else "is no run of this kernel nor on disk"
        known = ", ".join(sorted(set(found) | {run.id for run in RUNS.all})) or "none"
        raise UsageError(f"attach: {ident!r} {what}; runs with a journal under "
                         f"{_root(cwd)}: {known}.")
    follower = Follower(found[named[0]], None)
    follower.start()
    return JournalRun(follower)


def _root(cwd: Optional[str]) -> str:
    from ..train.launch.checkpoints import runs_root

    return runs_root(cwd or os.getcwd())


def journals(cwd: Optional[str] = None) -> dict[str, str]:
    """``{run id: journal path}`` of every journal in a run folder under the checkpoint root."""
    root, found = _root(cwd), {}
    try:
        folders = [os.path.join(root, name) for name in os.listdir(root)]
    except OSError:
        return {}
    for folder in folders:
        try:
            names = os.listdir(folder) if os.path.isdir(folder) else []
        except OSError:
            continue
        for name in names:
            run_id = name[len(PREFIX):-len(SUFFIX)]
            if name.startswith(PREFIX) and name.endswith(SUFFIX) and _IDENT.match(run_id):
                found[run_id] = os.path.join(folder, name)
    return found


def writer_alive(begin: dict) -> bool:
    """Whether the process that writes the journal (``pid``, started at ``pid_started``) lives."""
    import psutil

    pid, started = begin.get("pid"), begin.get("pid_started")
    if type(pid) is not int or pid <= 1:
        return False
    try:
        process = psutil.Process(pid)
        return process.status() != psutil.STATUS_ZOMBIE and (
            started is None or abs(process.create_time() - started) < 1.0)
    except psutil.Error:
        return False


class Follower:
    """A live view in the attaching cell, drawn from a journal and kept up with it."""

    def __init__(self, path: str, title: Optional[str]) -> None:
        from ..view.live import LiveView

        self.file, self.state = JournalFile(path), JournalState()
        for record in self.file.read_new():
            self.state.apply(record)
        begin = self.state.begin
        world = begin.get("world_size")
        self.view = LiveView(title or f"{begin.get('model', 'run')} (attached)", mode="live",
                             world_size=world if type(world) is int and world > 0 else 1)
        for event in self.state.events:
            self.view.progress.apply(event)
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        self.view.start()  # drawn once with all the journal said so far
        threading.Thread(target=self._follow, name="lightning-attach", daemon=True).start()

    def _follow(self) -> None:
        try:
            while not self._stop.is_set():
                self.take()
                if self.state.ended:
                    break
                if not writer_alive(self.state.begin):
                    self.take()  # what it wrote just before it went
                    if not self.state.ended:
                        self.state.status = "gone"
                    break
                self._stop.wait(POLL_S)
        finally:
            self.view.finish(None)
            self.ended.set()

    def take(self) -> None:
        """Apply what was written since the last look (the result of an ended run comes once
        it is back in its kernel: its readers take it then)."""
        with self._lock:
            for record in self.file.read_new():
                event = self.state.apply(record)
                if event is not None:
                    self.view.update(event)

    def stop(self) -> None:
        self._stop.set()


class JournalRun:
    """A run found only on disk, read from its journal (see the module's docstring)."""

    def __init__(self, follower: Follower) -> None:
        self._follower, self._state = follower, follower.state
        begin = self._state.begin
        self.id: str = begin.get("run_id", "")
        self.stage: str = begin.get("stage", "fit")
        self.model_name: str = begin.get("model", "")
        self.devices: str = begin.get("devices", "")
        self.ckpt_dir: Optional[str] = begin.get("ckpt_dir")
        self.cell = None

    def _latest(self) -> JournalState:
        if self._follower.ended.is_set():
            self._follower.take()
        return self._state

    @property
    def status(self) -> str:
        return self._latest().status

    @property
    def metrics(self) -> dict[str, float]:
        state = self._latest()
        return dict(state.result.get("metrics") or state.metrics)

    @property
    def history(self) -> list[dict]:
        state = self._latest()
        return list(state.result.get("history") or state.rows)

    @property
    def notes(self) -> list[str]:
        return list(self._latest().notes)

    @property
    def last_model_path(self) -> Optional[str]:
        path = self._latest().result.get("last_model_path")
        if path is None and self.ckpt_dir:
            path = os.path.join(self.ckpt_dir, "last.ckpt")
        return path if path and os.path.exists(path) else None

    @property
    def best_model_path(self) -> Optional[str]:
        path = self._latest().result.get("best_model_path")
        return path if path and os.path.exists(path) else None

    def done(self) -> bool:
        return self._follower.ended.is_set()

    def progress(self) -> str:
        progress = self._follower.view.progress
        fraction, text = progress.fraction(), " · ".join(progress.position())
        return f"{text} ({fraction:.0%})" if fraction is not None and text else text

    def wait(self, timeout: Optional[float] = None) -> JournalRun:
        """Return once the journal says how the run ended (or its writer is gone)."""
        if not self._follower.ended.wait(timeout):
            raise TimeoutError(f"run {self.id} ({self.stage} of {self.model_name}) is still "
                               f"running after {timeout} s; it goes on: wait() again")
        return self

    def load_into(self, model: Any, which: str = "last") -> str:
        """The weights of the run's ``"last"`` (or ``"best"``) checkpoint into ``model``; the
        checkpoint's path. Read with ``weights_only=True``: nothing in the file is executed."""
        from .weights import load_into

        return load_into(model, self.last_model_path if which == "last" else
                         self.best_model_path, which, self.id)

    def __repr__(self) -> str:
        where = self.progress()
        return (f"JournalRun {self.id}: {self.stage} of {self.model_name} on {self.devices}, "
                f"{self.status}" + (f", {where}" if where else ""))

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))
