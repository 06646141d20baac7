"""The kernel's end of the progress pipe: a thread that hands rank 0's events to the live view
and to the published run state, and adds per-rank GPU readings on GPU runs."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Optional, Sequence

Handler = Callable[[dict], None]

_log = logging.getLogger(__name__)


STOP = {"kind": "_stop"}


class EventPump:
    """``writer`` is the kernel's own copy of the pipe's sending end, used to wake the thread."""

    def __init__(self, reader: Any, handlers: Sequence[Handler], writer: Any = None,
                 gpu_indices: Sequence[int] = (), gpu_interval: float = 1.0) -> None:
        self.reader = reader
        self.writer = writer
        self.handlers = list(handlers)
        self.gpu_indices = list(gpu_indices)
        self.gpu_interval = gpu_interval
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="lightning-magic-progress",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop after handing over what is already in the pipe."""
        self._stop.set()
        if self.writer is not None:
            try:
                self.writer.send(STOP)  # wakes the thread at once, behind the ranks' events
            except (OSError, ValueError):
                _log.debug("the progress pipe is closed; the thread ends at its next poll",
                           exc_info=True)
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                return  # never read the pipe from two threads
        self._drain()

    def _run(self) -> None:
        next_gpu = time.monotonic()
        while not self._stop.is_set():
            try:
                if self.reader.poll(self.gpu_interval if self.gpu_indices else None):
                    event = self.reader.recv()
                    if event == STOP:
                        return
                    self._handle(event)
            except Exception:  # noqa: BLE001 - a rank killed mid-message ends the view, not the run
                _log.debug("the progress pipe broke; the live view stops here", exc_info=True)
                return
            if self.gpu_indices and time.monotonic() >= next_gpu:
                next_gpu = time.monotonic() + self.gpu_interval
                event = gpu_event(self.gpu_indices)
                if event is not None:
                    self._handle(event)

    def _drain(self) -> None:
        try:
            while self.reader.poll(0):
                event = self.reader.recv()
                if event != STOP:
                    self._handle(event)
        except Exception:  # noqa: BLE001 - as above
            _log.debug("the progress pipe broke while draining it", exc_info=True)

    def _handle(self, event: dict) -> None:
        for handler in self.handlers:
            try:
                handler(event)
            except Exception:  # noqa: BLE001 - a display problem must not stop training
                _log.debug("progress handler %r failed on a %r event", handler,
                           event.get("kind") if isinstance(event, dict) else event,
                           exc_info=True)


def gpu_event(indices: Sequence[int]) -> Optional[dict]:
    """Per-rank utilization and memory of the GPUs the ranks use, from the readings sampler."""
    try:
        from ... import readings

        sample = readings.get_sampler().latest()
    except Exception:  # noqa: BLE001 - readings are a nicety of the view
        _log.debug("GPU readings unavailable for the live view", exc_info=True)
        return None
    by_index = {g.get("index"): g for g in sample.get("gpus", [])}
    ranks = []
    for rank, index in enumerate(indices):
        gpu = by_index.get(index) or {}
        memory = gpu.get("memory") or {}
        utilization = gpu.get("utilization") or {}
        ranks.append({"rank": rank, "index": index, "utilization": utilization.get("gpu"),
                      "memory_used": memory.get("used"), "memory_total": memory.get("total")})
    return {"kind": "gpu", "time": time.time(), "ranks": ranks}
