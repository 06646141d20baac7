"""``lightning_magic.attach(ID)`` (``%lightning_runs --attach ID``): the live view of a run, redrawn
from its journal in the cell that asks, then following the run while it goes on.

A run of this kernel is found among its runs and its handle (``BackgroundRun``) is returned. A
run found only on disk (another kernel's, or one from before a restart) is looked for under the
checkpoint root and in the index of run journals (``index``: a run whose Trainer put its folder
elsewhere), and a ``JournalRun`` is returned: what its journal says (``status``,
``metrics``, ``history``, ``notes``), ``done()``, ``wait()`` and ``load_into(model)``. A journal
whose writer is gone without saying how the run ended is a run whose status is ``"gone"``.
"""

from __future__ import annotations

import os
import re
from typing import Any, Optional

from IPython.core.error import UsageError

from ..train.returns.results import TrainingFailed
from .journal import PREFIX, SUFFIX
from .follow import Follower
from .index import index_dir, indexed
from .journal_reading import ENDED_WELL, JournalState

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
    return on_disk(ident, cwd)


def on_disk(ident: str, cwd: Optional[str] = None, show: bool = True) -> JournalRun:
    """The run on disk whose id is ``ident`` or starts with it, followed (with a live view in
    this cell when ``show``)."""
    from .runs import RUNS

    found = journals(cwd)
    named = sorted(run_id for run_id in found if run_id.startswith(ident))
    if len(named) != 1:
        what = "names several runs" if named else "is no run of this kernel nor on disk"
        known = ", ".join(sorted(set(found) | {run.id for run in RUNS.all})) or "none"
        raise UsageError(f"{ident!r} {what}; runs with a journal on disk (under {_root(cwd)}, "
                         f"or indexed in {index_dir()}): {known}.")
    follower = Follower(found[named[0]], None)
    follower.start(show=show)
    return JournalRun(follower)


def running_elsewhere(cwd: Optional[str] = None) -> list[JournalRun]:
    """The runs on disk that are not this kernel's and whose journal's writer is still there
    (another kernel's, or a detached run that outlived its kernel), and the detached runs that
    failed after their kernel went, until a kernel has read how (``wait()``): for
    ``%lightning_runs``."""
    from .follow import writer_alive
    from .runs import RUNS

    mine = {run.id for run in RUNS.all}
    found = [JournalRun(Follower(path)) for run_id, path in journals(cwd).items()
             if run_id not in mine]
    return [run for run in found if (not run._state.ended and writer_alive(run._state.begin))
            or run.unread_failure()]


def _root(cwd: Optional[str]) -> str:
    from ..train.launch.checkpoints import runs_root

    return runs_root(cwd or os.getcwd())


def journals(cwd: Optional[str] = None) -> dict[str, str]:
    """``{run id: journal path}`` of every journal in a run folder under the checkpoint root,
    and of those the index names (a run folder elsewhere)."""
    root, found = _root(cwd), indexed()
    try:
        folders = [os.path.join(root, name) for name in os.listdir(root)]
    except OSError:
        return found
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
        self._collected = False

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
        state = self._latest()
        path = state.result.get("last_model_path") or state.checkpoints.get("last_model_path")
        if path is None and self.ckpt_dir:
            path = os.path.join(self.ckpt_dir, "last.ckpt")
        return path if path and os.path.exists(path) else None

    @property
    def best_model_path(self) -> Optional[str]:
        state = self._latest()
        path = state.result.get("best_model_path") or state.checkpoints.get("best_model_path")
        return path if path and os.path.exists(path) else None

    def done(self) -> bool:
        return self._follower.ended.is_set()

    def progress(self) -> str:
        progress = self._follower.view.progress
        fraction, text = progress.fraction(), " · ".join(progress.position())
        return f"{text} ({fraction:.0%})" if fraction is not None and text else text

    def join(self, timeout: Optional[float] = None, when: str = "") -> bool:
        """Wait for the journal to say how the run ended; False when ``timeout`` ran out.
        (``when`` as a ``BackgroundRun``'s: a run on disk brings nothing into this kernel.)"""
        if not self._follower.ended.wait(timeout):
            return False
        self._collect()
        return True

    @property
    def report(self) -> str:
        """A detached run's failure report, as its kernel would have shown it; '' if none."""
        return self._latest().failure

    def wait(self, timeout: Optional[float] = None) -> JournalRun:
        """This run, once its journal says how it ended (or its writer is gone); for a run that
        did not finish or stop, ``RunFailed`` (a ``TrainingFailed``), as a ``BackgroundRun``."""
        if not self._follower.ended.wait(timeout):
            raise TimeoutError(f"run {self.id} ({self.stage} of {self.model_name}) is still "
                               f"running after {timeout} s; it goes on: wait() again")
        self._collect()
        if self.status not in ENDED_WELL:
            raise RunFailed(self)
        return self

    def unseen_failure(self) -> bool:
        """It ended without a checkpoint and not well, and no kernel has read it since: what its
        journal says (status, notes, metrics) is the only report of it there is."""
        state = self._latest()
        return (state.ended or self.done()) and state.status not in ("finished", "checked") \
            and self.last_model_path is None and self.best_model_path is None

    def unread_failure(self) -> bool:
        """A detached run that did not finish, ended after its kernel went (no kernel brought
        its results back: its journal has no result), and no kernel has read it since."""
        state = self._latest()
        return state.detached and state.ended and not state.result and (
            self.unseen_failure() or state.status not in ENDED_WELL)

    def _collect(self) -> None:
        """Once this kernel has read how the run ended: a run that did not end well and left
        no checkpoint has nothing more to attach to or load, and its report is now here. It is
        forgotten (``index.forget``) as the kernel that started it would have done had it lived:
        the folder only where its journal says the folder is the magic's own. A failed run
        with a checkpoint keeps its journal, to load from, with a result record added: read."""
        unseen = self.unseen_failure()
        if self._collected or not (unseen or self.unread_failure()):
            return
        from .index import forget
        from .journal import Journal

        self._collected = True
        journal = self._follower.file.path
        if os.path.basename(journal) != f"{PREFIX}{self.id}{SUFFIX}" or not _IDENT.match(self.id):
            return  # the journal names another run than its file: it is left as it is
        if unseen:
            forget(journal, self.id, self._state.begin.get("own_folder") is True)
            return
        if os.path.islink(journal):
            return  # a journal is a file the magic wrote, never a link to one elsewhere
        read = Journal(journal)
        read.write("result", status=self.status, metrics=self.metrics, history=[], notes=[],
                   last_model_path=self.last_model_path, best_model_path=self.best_model_path)
        read.close()

    def stop(self, wait: bool = True) -> Optional[JournalRun]:
        """A detached run's stop button, from any kernel: its supervisor asks every rank to
        stop at the same batch and saves the checkpoint of that moment, as ``run.stop()``."""
        import signal

        from .follow import holds_open

        state = self._latest()
        if not state.detached:
            raise UsageError(f"run {self.id} is not detached: only the kernel that started it "
                             "can stop it.")
        pid = state.begin.get("pid")
        # the pid comes from a file: it is signalled only if that process writes this journal
        if not self.done() and holds_open(pid, self._follower.file.path):
            try:
                os.kill(pid, signal.SIGINT)
            except OSError:
                pass
        elif not self.done():
            self._follower.take()  # it may have ended (and closed its journal) just now
            if not state.ended:
                raise UsageError(f"run {self.id}: process {pid}, which its journal names as "
                                 "its supervisor, is not writing it; nothing was stopped.")
        return self.wait() if wait else None

    def load_into(self, model: Any, which: str = "last") -> str:
        """The weights of the run's ``"last"`` (or ``"best"``) checkpoint into ``model``; the
        checkpoint's path. Read with ``weights_only=True``: nothing in the file is executed."""
        from .weights import load_into

        last = self.last_model_path
        return load_into(model, last if which == "last" else self.best_model_path, which,
                         self.id, os.path.dirname(last) if last else self.ckpt_dir)

    def __repr__(self) -> str:
        where = self.progress()
        return (f"JournalRun {self.id}: {self.stage} of {self.model_name} on {self.devices}, "
                f"{self.status}" + (f", {where}" if where else ""))

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


class RunFailed(TrainingFailed):
    """``JournalRun.wait()`` of a run that failed, timed out or went without saying how it
    ended: what its journal says of it, as the kernel that started it would have said."""

    def __init__(self, run: JournalRun) -> None:
        self.run, self.out, self.lead = run, f"lightning_magic.attach({run.id!r})", "TrainingFailed"
        how = {"failed": "it failed", "timeout": "it ran past its --timeout (status 'timeout')",
               "gone": "its process went without saying how it ended: stopped with its kernel, "
                       "or killed (status 'gone')"}
        self.detail = f"run {run.id} ({run.stage} of {run.model_name}): " \
                      f"{how.get(run.status, f'it ended with status {run.status!r}')}."
        self.detail += (f"\n\n{run.report}" if run.report else
                        f" Its journal's notes are on {self.out}.notes.")
        Exception.__init__(self, self.detail)
