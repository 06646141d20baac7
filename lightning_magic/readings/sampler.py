"""Live readings of the machine: NVML per GPU, psutil for CPU, memory and disk.

One reading is a plain dict, the body of ``GET /gpu-status`` without ``runs``::

    {"version": 1, "timestamp": ..., "nvml": {...}, "environment": {...}, "gpus": [...],
     "cpu": {...}, "memory": {...}, "disk": {...}}

Each GPU (and MIG instance) carries ``cuda_index``: the number CUDA gives it in this process
(``CUDA_VISIBLE_DEVICES`` and ``CUDA_DEVICE_ORDER`` honoured), or None when hidden from it.

``snapshot()`` takes one reading now. ``get_sampler()`` returns the process's one background
sampler, which reads at a fixed interval and lets any number of readers share the latest
reading, so NVML is called as often as the interval says and never more. It starts on first use
and stops after ``idle_timeout`` seconds without a reader.

The GPU part lives in ``nvml`` (NVML) and ``processes`` (who a GPU process is); CPU, memory and
disk in ``host``.
Nothing here imports torch (so nothing initializes CUDA) nor anything from Jupyter; pynvml is
imported inside the functions that use it.
"""

from __future__ import annotations

import copy
import logging
import os
import threading
import time
from pathlib import Path


from .environment import checkpoint_root, describe_environment, visible_devices
from .host import CpuMeter, disk, memory
from .nvml import NvmlSession

SCHEMA_VERSION = 1
DEFAULT_INTERVAL = 1.0
MIN_INTERVAL = 0.25
DEFAULT_IDLE_TIMEOUT = 60.0

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------
# Public API

_state_lock = threading.Lock()
_nvml: NvmlSession | None = None
_sampler: Sampler | None = None


def _session() -> NvmlSession:
    global _nvml
    with _state_lock:
        if _nvml is None:
            _nvml = NvmlSession()
        session = _nvml
    session.start()
    return session


def _with_cuda_indices(gpus: list[dict]) -> list[dict]:
    numbers = {(d.nvml_index, d.mig_slot): d.cuda_index for d in visible_devices(gpus).devices}
    for gpu in gpus:
        gpu["cuda_index"] = numbers.get((gpu["index"], None))
        for instance in gpu["mig"]["instances"]:
            instance["cuda_index"] = numbers.get((gpu["index"], instance["index"]))
    return gpus


def read_gpus() -> list[dict]:
    """The ``gpus`` part of a reading, taken now (no CPU window to wait out)."""
    return _with_cuda_indices(_session().read_gpus())


def no_gpu_reason() -> str:
    """Why NVML shows no GPU, for a training error: "" when NVML is available."""
    return _session().reason or ""


def _read(meter: CpuMeter, disk_path: Path) -> dict:
    session = _session()
    gpus = read_gpus()
    return {
        "version": SCHEMA_VERSION,
        "timestamp": time.time(),
        "nvml": session.status(),
        "environment": describe_environment(),
        "gpus": gpus,
        "cpu": meter.read(),
        "memory": memory(),
        "disk": disk(disk_path),
    }


def snapshot(disk_path: str | os.PathLike | None = None) -> dict:
    """One reading, taken now (about 0.1 s: CPU use is measured over a short window).

    ``disk_path`` is the checkpoint root whose disk usage is reported; by default
    ``lightning_runs/`` in the current directory. Never touches torch or CUDA.
    """
    path = Path(disk_path) if disk_path is not None else checkpoint_root()
    return _read(CpuMeter(), path)


def nvml_status() -> dict:
    """``{"available": bool, "driver_version": str | None, "cuda_driver_version": str | None,
    "reason": str | None}``."""
    return _session().status()


def list_gpus() -> list[dict]:
    """The GPUs NVML sees: index, uuid, name, memory_total (bytes), compute_capability
    (``[major, minor]`` or None), pci_bus_id. An empty list when NVML is unavailable."""
    return _session().inventory()


def _check_interval(interval) -> float:
    if isinstance(interval, bool) or not isinstance(interval, (int, float)) or (
            interval != interval or interval < MIN_INTERVAL):
        raise ValueError(
            f"The sample interval must be a number of seconds of at least {MIN_INTERVAL}; "
            f"got {interval!r}."
        )
    return float(interval)


class Sampler:
    """Reads the machine every ``interval`` seconds in a background thread.

    Readers call ``latest()`` (a copy) or ``cached()`` (the shared reading itself). The thread
    starts on the first read and stops once nobody has read for ``idle_timeout`` seconds; the
    next read starts it again.
    """

    def __init__(self, interval: float = DEFAULT_INTERVAL, *,
                 idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
                 disk_path: str | os.PathLike | None = None):
        self._interval = _check_interval(interval)
        self.idle_timeout = float(idle_timeout)
        self.disk_path = Path(disk_path) if disk_path is not None else checkpoint_root()
        self.samples_taken = 0
        self._lock = threading.Lock()
        self._taken = threading.Condition(self._lock)
        self._ready = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest: dict | None = None
        self._latest_began = float("-inf")
        self._last_read = time.monotonic()

    @property
    def interval(self) -> float:
        return self._interval

    @interval.setter
    def interval(self, value: float) -> None:
        self._interval = _check_interval(value)

    @property
    def running(self) -> bool:
        with self._lock:
            return self._thread is not None

    def cached(self) -> dict | None:
        """The latest reading, shared with every other reader (do not modify it), or None while
        the first reading after a start is being taken. Never blocks."""
        with self._lock:
            self._last_read = time.monotonic()
            if self._thread is None:
                self._start()
            return self._latest if self._ready.is_set() else None

    def latest(self, timeout: float = 30.0) -> dict:
        """A copy of the latest reading; waits for the first one after a start."""
        reading = self.cached()
        if reading is None:
            if not self._ready.wait(timeout):
                raise TimeoutError(
                    f"No reading of the machine within {timeout} s: NVML or psutil is not "
                    "answering. Check that `nvidia-smi` returns promptly."
                )
            reading = self._latest
        return copy.deepcopy(reading)

    def wait_next(self, timeout: float = 30.0) -> dict:
        """A copy of the first reading begun after this call (waits up to ``timeout`` s), so it
        reflects any change made to the machine before the call."""
        with self._taken:
            called = self._last_read = time.monotonic()
            if self._thread is None:
                self._start()
            if not self._taken.wait_for(lambda: self._latest_began >= called, timeout):
                raise TimeoutError(f"No new reading of the machine within {timeout} s.")
            return copy.deepcopy(self._latest)

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the thread has stopped (on ``stop()`` or after ``idle_timeout`` without
        a reader); True if it has."""
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def stop(self) -> None:
        """Stop the thread now (the next read starts it again)."""
        with self._lock:
            thread, wake, self._thread = self._thread, self._wake, None
        if thread is not None:
            wake.set()
            if thread is not threading.current_thread():
                thread.join()

    def _start(self) -> None:
        self._ready.clear()
        self._wake = threading.Event()
        self._thread = threading.Thread(
            target=self._run, args=(self._wake,), name="lightning-magic-readings", daemon=True
        )
        self._thread.start()

    def _run(self, wake: threading.Event) -> None:
        meter = CpuMeter()
        me = threading.current_thread()
        failure = None
        while True:
            began = time.monotonic()
            try:
                reading = _read(meter, self.disk_path)
            except Exception as error:  # keep sampling: the next reading may well succeed
                if repr(error) != failure:
                    failure = repr(error)
                    _log.warning("Reading the machine failed; readers keep the last good "
                                 "reading until one succeeds.", exc_info=True)
                reading = None
            with self._lock:
                if self._thread is not me:
                    return
                if reading is not None:
                    self._latest, self._latest_began = reading, began
                    self.samples_taken += 1
                    self._ready.set()
                    self._taken.notify_all()
            if wake.wait(self._interval):
                return
            with self._lock:
                if self._thread is not me:
                    return
                if time.monotonic() - self._last_read > self.idle_timeout:
                    self._thread = None
                    return


def get_sampler(interval: float | None = None, *, idle_timeout: float | None = None,
                disk_path: str | os.PathLike | None = None) -> Sampler:
    """The process's one sampler; arguments given change it for every reader."""
    global _sampler
    with _state_lock:
        if _sampler is None:
            _sampler = Sampler(DEFAULT_INTERVAL)
        sampler = _sampler
    if interval is not None:
        sampler.interval = interval
    if idle_timeout is not None:
        sampler.idle_timeout = float(idle_timeout)
    if disk_path is not None:
        sampler.disk_path = Path(disk_path)
    return sampler


def shutdown() -> None:
    """Stop the sampler and close NVML; the next reading starts both afresh."""
    global _sampler, _nvml
    with _state_lock:
        sampler, session = _sampler, _nvml
        _sampler = _nvml = None
    if sampler is not None:
        sampler.stop()
    if session is not None:
        session.close()


def _forget_after_fork() -> None:
    # A forked child has none of the parent's threads, and locks may be held by them.
    global _state_lock, _sampler, _nvml
    _state_lock = threading.Lock()
    _sampler = _nvml = None


os.register_at_fork(after_in_child=_forget_after_fork)
