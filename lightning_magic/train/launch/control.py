"""State shared by the kernel and its forked ranks, made before the fork.

A stop flag the kernel sets on interrupt (agreed through shared memory, not a collective), a
heartbeat per rank for the stall watchdog (a finished training batch counts as one), the rank 0
-> kernel event pipe, and a folder where each rank leaves its output, its stack when asked
(SIGUSR1) and its crash dump.
"""

from __future__ import annotations

import functools
import io
import multiprocessing as mp
import os
import time
from typing import Callable


class RunControl:
    """Shared state between the kernel and its forked ranks (made before the fork)."""

    def __init__(self, world_size: int, stack_dir: str) -> None:
        ctx = mp.get_context("fork")
        self.world_size = world_size
        self.heartbeat = ctx.Array("d", [time.monotonic()] * world_size, lock=False)
        # set by a rank whose work is done, just before it exits: an exit without it (the
        # user's os._exit(0), say) is a rank that ended early, whatever its exit code
        self.completed = ctx.Array("b", [0] * world_size, lock=False)
        # counted by a rank once a stack dump (SIGUSR1) is wholly in its file: faulthandler
        # writes a dump in many pieces, and a file read part-way holds only its first threads
        self.dumps = ctx.Array("q", [0] * world_size, lock=False)
        # A stop is agreed through shared memory, not a collective: the kernel sets the batch
        # at which every rank stops to one past the furthest rank, under the same lock the ranks
        # take to record their progress, so no rank can already be past it.
        self._lock = ctx.Lock()
        self._batches = ctx.Array("q", [0] * world_size, lock=False)
        self._stop_at = ctx.Value("q", 0, lock=False)
        self.stack_dir = stack_dir
        # rank 0 -> kernel: progress events for the live view (see ProgressReporter)
        self.progress_reader, self.progress_writer = ctx.Pipe(duplex=False)
        # the watcher's side: each rank's batch count at its last look, and when it changed
        self._looked: dict[int, tuple[int, float]] = {}

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
        self._looked.clear()
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

    def batch_counter(self, rank: int) -> Callable[[], bool]:
        """``batch_done`` for ``rank``, as one call with nothing to look up: a tiny CPU step
        pays for each lookup. A lone rank has no other rank to agree its stop batch with, so it
        counts without the lock; it stops at the first batch end that finds a stop asked for
        at or before it."""
        if self.world_size > 1:
            return functools.partial(self.batch_done, rank)
        batches, stop_at = self._batches, self._stop_at

        def done() -> bool:
            count = batches[0] = batches[0] + 1
            return stop_at.value != 0 and count >= stop_at.value
        return done

    def beat(self, rank: int) -> None:
        self.heartbeat[rank] = time.monotonic()

    def last_sign(self, rank: int, now: float) -> float:
        """When the rank last showed life, on the watcher's clock: its heartbeat, or the first
        look (``now``) that found it further in its training batches. A training batch records
        its count (``batch_done``) and no time, which keeps a clock read out of every step; so
        a rank that trains is seen alive to within the watcher's interval between looks."""
        count = self._batches[rank]
        looked = self._looked.get(rank)
        if looked is None or looked[0] != count:
            looked = self._looked[rank] = (count, now if count else float("-inf"))
        return max(self.heartbeat[rank], looked[1])

    def stack_file(self, rank: int) -> str:
        return os.path.join(self.stack_dir, f"rank-{rank}.stack")

    def output_file(self, rank: int) -> str:
        return os.path.join(self.stack_dir, f"rank-{rank}.out")

    def crash_file(self, rank: int) -> str:
        return os.path.join(self.stack_dir, f"rank-{rank}.crash")

    def output_tail(self, rank: int, lines: int = 20) -> str:
        """The last lines a rank other than 0 wrote (its stdout and stderr go to a file)."""
        return _tail(self.output_file(rank), lines)

    def stack_dump(self, rank: int) -> str:
        """The stacks the rank dumped when asked (SIGUSR1), the training thread first."""
        from ..ranks.rank import strip_waiting_main_thread

        return strip_waiting_main_thread(_text(self.stack_file(rank)))

    def crash_stack(self, rank: int) -> str:
        """The Python stack faulthandler wrote when the rank crashed (SIGSEGV, SIGABRT, ...)."""
        from ..ranks.rank import strip_waiting_main_thread

        return strip_waiting_main_thread(_tail(self.crash_file(rank), 1000))


def _tail(path: str, lines: int) -> str:
    return "".join(io.StringIO(_text(path)).readlines()[-lines:])


def _text(path: str) -> str:
    try:
        with open(path, errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""
