"""A background run's stop button: presses counted and signalled through a pipe, as the notebook's
stop button is for a run in the foreground (``train.interrupts.Presses``), so that train's own
supervision turns the first into a stop request and a second into ending the ranks."""

from __future__ import annotations

import os


class StopButton:
    active = True  # the supervision loop waits on it

    def __init__(self) -> None:
        self.count = 0
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._read_fd, False)
        os.set_blocking(self._write_fd, False)

    def press(self) -> None:
        self.count += 1
        if self._write_fd < 0:
            return
        try:
            os.write(self._write_fd, b"!")
        except OSError:  # full, or closed once the run ended: the count is what matters
            pass

    def fileno(self) -> int:
        return self._read_fd

    def drain(self) -> None:
        try:
            while os.read(self._read_fd, 64):
                pass
        except OSError:
            pass

    def close(self) -> None:
        for fd in (self._read_fd, self._write_fd):
            try:
                os.close(fd)
            except OSError:
                pass
        self._read_fd = self._write_fd = -1
        self.active = False
