"""Which cell an output belongs to: the one that was running when the view was made.

A Jupyter kernel (ipykernel 7) sends each output with a parent header; a thread that never set
its own takes whichever cell runs at the time, so a run's live view, updated from a thread or
ended from a later cell, would land in that cell. ``Origin`` remembers the header of the cell
that made it, and ``with origin():`` sends what is displayed or printed inside, from any
thread, as that cell's output. Where there are no parent headers (a terminal IPython), it does
nothing.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator, Optional


class Origin:
    def __init__(self, shell: Any = None) -> None:
        if shell is None:
            from IPython import get_ipython

            shell = get_ipython()
        routed = shell is not None and hasattr(shell, "set_thread_parent")
        self._shell = shell if routed else None
        self.parent: Optional[dict] = dict(shell.get_parent() or {}) if routed else None

    @property
    def msg_id(self) -> Optional[str]:
        """The ``msg_id`` of the originating cell's execute request, where there is one."""
        header = (self.parent or {}).get("header", self.parent) or {}
        return header.get("msg_id")

    @contextmanager
    def __call__(self) -> Iterator[None]:
        if self._shell is None or not self.parent:
            yield
            return
        tokens = self._shell.set_thread_parent(self.parent)
        try:
            yield
        finally:
            self._shell.reset_thread_parent(tokens)
