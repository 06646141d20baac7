"""Following a run's journal: a live view (the attaching cell's own, or the run's own view for a
detached run, whose events reach the kernel only through its journal) kept up with what the
journal adds, until it says how the run ended or its writer is gone."""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional, Sequence

from .journal_reading import JournalFile, JournalState

POLL_S = 0.25  # between looks at a journal that is still being written


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


def holds_open(pid: object, path: str) -> bool:
    """Whether process ``pid`` (this user's) has the file at ``path`` open."""
    import os

    import psutil

    if type(pid) is not int or pid <= 1:
        return False
    try:
        opened = psutil.Process(pid).open_files()
    except psutil.Error:
        return False
    real = os.path.realpath(path)
    return any(os.path.realpath(item.path) == real for item in opened)


class Follower:
    """A live view in the attaching cell, drawn from a journal and kept up with it."""

    def __init__(self, path: str, title: Optional[str] = None, view: Any = None,
                 handlers: Sequence[Callable[[dict], None]] = ()) -> None:
        """``view``: the view to keep up (its owner ends it), else a new one in this cell;
        ``handlers`` are given each new event too."""
        from ..view.live import LiveView

        self.file, self.state = JournalFile(path), JournalState()
        for record in self.file.read_all():
            self.state.apply(record)
        begin = self.state.begin
        world = begin.get("world_size")
        self.own_view = view is None
        self.view = view if view is not None else LiveView(
            title or f"{begin.get('model', 'run')} (attached)", mode="live",
            world_size=world if type(world) is int and world > 0 else 1)
        self.handlers = list(handlers)
        for event in self.state.events:  # what was written before this look
            if self.own_view:
                self.view.progress.apply(event)  # drawn at start()
            else:
                self._hand(event)
        self.ended = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self, show: bool = True) -> None:
        """Follow from a thread; with ``show`` (and a view of its own) the view is drawn here."""
        self.own_view = self.own_view and show
        if self.own_view:
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
            if self.own_view:  # the view ends saying how the run ended, as its journal says
                self.view.progress.outcome = self.state.status if self.state.ended or \
                    self.state.status == "gone" else None
                self.view.finish(None)
            self.ended.set()

    def take(self) -> None:
        """Apply what was written since the last look (the result of an ended run comes once
        it is back in its kernel: its readers take it then)."""
        with self._lock:
            for record in self.file.read_new():
                event = self.state.apply(record)
                if event is not None:
                    self._hand(event)

    def _hand(self, event: dict) -> None:
        for handler in [self.view.update, *self.handlers]:
            try:
                handler(event)
            except Exception:  # noqa: BLE001 - as the event pump: the view, not the run
                pass

    def stop(self) -> None:
        self._stop.set()


