"""What runs inside a forked rank: process setup, output capture and quiet logging.

The kernel and its ranks share a small ``RunControl`` made before the fork: a stop flag the kernel
sets on interrupt, a heartbeat per rank for the stall watchdog, and a folder where each rank can
dump its Python stack when asked (SIGUSR1). The Lightning callbacks that use it are in
``callbacks``. Nothing here runs in the kernel except construction.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import multiprocessing as mp
import os
import signal
import time
import warnings

PR_SET_PDEATHSIG = 1


class RunControl:
    """Shared state between the kernel and its forked ranks (made before the fork)."""

    def __init__(self, world_size: int, stack_dir: str) -> None:
        ctx = mp.get_context("fork")
        self.world_size = world_size
        self.heartbeat = ctx.Array("d", [time.monotonic()] * world_size, lock=False)
        # A stop is agreed through shared memory, not a collective: the kernel sets the batch
        # at which every rank stops to one past the furthest rank, under the same lock the ranks
        # take to record their progress, so no rank can already be past it.
        self._lock = ctx.Lock()
        self._batches = ctx.Array("q", [0] * world_size, lock=False)
        self._stop_at = ctx.Value("q", 0, lock=False)
        self.stack_dir = stack_dir
        # rank 0 -> kernel: progress events for the live view (see ProgressReporter)
        self.progress_reader, self.progress_writer = ctx.Pipe(duplex=False)

    def request_stop(self) -> None:
        with self._lock:
            if self._stop_at.value == 0:
                self._stop_at.value = max(self._batches) + 1

    def stop_requested(self) -> bool:
        return self._stop_at.value != 0

    def reset_stop(self) -> None:
        with self._lock:
            self._stop_at.value = 0
            for rank in range(self.world_size):
                self._batches[rank] = 0
        self.beat_all()

    def beat_all(self) -> None:
        """Start every rank's stall clock now (before the ranks are started)."""
        now = time.monotonic()
        for rank in range(self.world_size):
            self.heartbeat[rank] = now

    def batch_done(self, rank: int) -> bool:
        """Record one more finished training batch; True when this rank must stop now."""
        with self._lock:
            done = self._batches[rank] + 1
            self._batches[rank] = done
            stop_at = self._stop_at.value
        return stop_at != 0 and done >= stop_at

    def beat(self, rank: int) -> None:
        self.heartbeat[rank] = time.monotonic()

    def stack_file(self, rank: int) -> str:
        return os.path.join(self.stack_dir, f"rank-{rank}.stack")

    def output_file(self, rank: int) -> str:
        return os.path.join(self.stack_dir, f"rank-{rank}.out")

    def crash_file(self, rank: int) -> str:
        return os.path.join(self.stack_dir, f"rank-{rank}.crash")

    def output_tail(self, rank: int, lines: int = 20) -> str:
        """The last lines a rank other than 0 wrote (its stdout and stderr go to a file)."""
        return _tail(self.output_file(rank), lines)

    def crash_stack(self, rank: int) -> str:
        """The Python stack faulthandler wrote when the rank crashed (SIGSEGV, SIGABRT, ...)."""
        return _tail(self.crash_file(rank), 200)


def _tail(path: str, lines: int) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def prepare_rank_process(rank: int, control: RunControl, env: dict[str, str]) -> None:
    """First thing a rank does after fork: die with the kernel, own its process group, stay quiet."""
    _die_with_parent()
    control.beat(rank)
    os.setpgid(0, 0)  # the rank and its DataLoader workers form one group the kernel can kill
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the kernel turns an interrupt into a stop request
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.update(env)
    stack_file = open(control.stack_file(rank), "w")  # noqa: SIM115 - lives as long as the rank
    faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=False)
    if rank != 0:
        _capture_output(control.output_file(rank))
    # a rank that crashes (SIGSEGV, SIGABRT) leaves its Python stack for the failure report
    crash_file = open(control.crash_file(rank), "w")  # noqa: SIM115 - lives as long as the rank
    faulthandler.enable(file=crash_file, all_threads=False)
    quiet_lightning_logs()


def _capture_output(path: str) -> None:
    """Ranks other than 0 write to a file (kept for the failure report), not to the cell."""
    import sys

    handle = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the rank
    for fd in (1, 2):
        try:
            os.dup2(handle.fileno(), fd)
        except OSError:
            pass
    sys.stdout = sys.stderr = handle


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except OSError:  # not Linux: the kernel's cleanup still ends the ranks
        pass


def quiet_lightning_logs() -> dict[str, int]:
    """Raise Lightning's loggers to WARNING (no tips, no 'GPU available' lines); return old levels."""
    previous = {}
    names = [n for n in list(logging.root.manager.loggerDict)
             if n.split(".")[0] in ("lightning", "pytorch_lightning", "lightning_fabric")]
    for name in names + ["lightning.pytorch", "lightning.fabric"]:
        logger = logging.getLogger(name)
        previous[name] = logger.level
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    return previous


def restore_logs(previous: dict[str, int]) -> None:
    for name, level in previous.items():
        logging.getLogger(name).setLevel(level)


class WarningCollector:
    """Keeps each distinct warning once instead of printing it from every rank."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._seen: set[str] = set()

    def install(self) -> None:
        warnings.showwarning = self._show  # type: ignore[assignment]

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = f"{category.__name__}: {message}"
        if text not in self._seen:
            self._seen.add(text)
            self.messages.append(text)
