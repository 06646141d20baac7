"""A background run's stop button: presses counted and signalled through a pipe, as the notebook's
stop button is for a run in the foreground (``train.launch.interrupts.Presses``), so that train's
own supervision turns the first into a stop request and a second into ending the ranks."""

from __future__ import annotations

from ..train.launch.interrupts import PressPipe


class StopButton(PressPipe):
    active = True  # the supervision loop waits on it

    def __init__(self) -> None:
        super().__init__()
        self._open()

    def press(self) -> None:
        self._count_press()

    def close(self) -> None:
        self._close()
        self.active = False
