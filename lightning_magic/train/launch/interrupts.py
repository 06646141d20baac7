"""Stop presses while a Trainer method runs: counted, never raised.

Between the start of a launch and its end, SIGINT (the notebook's stop button, Ctrl+C) no
longer raises ``KeyboardInterrupt`` wherever the kernel happens to be (loading weights, writing a
file, inside Lightning's own interrupt handler): it is counted, and the supervision loop, woken
through a pipe, turns the first press into a stop request and a second into ending the ranks.
Presses that come while the kernel tidies up are remembered, so the cell still ends with its
report, the run bound and every temporary file removed.
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any


class Presses:
    """A context manager; ``count`` is the number of presses so far."""

    def __init__(self) -> None:
        self.count = 0
        self._read_fd = self._write_fd = -1
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> "Presses":
        if threading.current_thread() is threading.main_thread():
            self._read_fd, self._write_fd = os.pipe()
            os.set_blocking(self._read_fd, False)
            os.set_blocking(self._write_fd, False)
            self._previous = signal.signal(signal.SIGINT, self._press)
            self._installed = True
        return self

    def _press(self, signum: int, frame: Any) -> None:
        self.count += 1
        try:
            os.write(self._write_fd, b"!")
        except OSError:  # the pipe is full: the count is what matters
            pass

    def fileno(self) -> int:
        """Readable when a press came (``multiprocessing.connection.wait`` takes this object)."""
        return self._read_fd

    @property
    def active(self) -> bool:
        return self._installed

    def drain(self) -> None:
        try:
            while os.read(self._read_fd, 64):
                pass
        except OSError:
            pass

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)
            os.close(self._read_fd)
            os.close(self._write_fd)
            self._installed = False
