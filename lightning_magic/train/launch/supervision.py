"""How the kernel tells what happened to its ranks, and ends them.

A failed rank is usually followed by errors in the others (a peer that went away); the root
cause is the rank's own exception, else a rank that died without a word, else the first
communication error. A stalled rank is told from those waiting for it by its innermost frame.
Ending ranks means their whole process group (DataLoader workers included): SIGTERM, then SIGKILL.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Any, Literal, Optional

Status = Literal["finished", "failed", "interrupted", "timeout"]

STOP_GRACE_S = 5.0   # an interrupted run must be gone within this
TERM_GRACE_S = 3.0   # between SIGTERM and SIGKILL when ending ranks
SETTLE_S = 1.0       # after a first failure, how long other ranks may still report theirs
ADDRESS_IN_USE = ("address already in use", "eaddrinuse", "errno 98")


@dataclass
class RankError:
    """A failure reported by a rank itself (the exception it raised)."""

    rank: int
    exc_type: str
    message: str
    traceback: str
    user_frame: Optional[tuple[str, int, str]] = None


@dataclass
class Outcome:
    """How the ranks ended, as the kernel saw it."""

    status: Status = "finished"
    error: Optional[RankError] = None
    error_ranks: list[int] = field(default_factory=list)  # every rank that raised that error
    exit_rank: Optional[int] = None        # a rank that died without reporting an exception
    exitcode: Optional[int] = None
    stalled_rank: Optional[int] = None
    stacks: dict[int, str] = field(default_factory=dict)
    worker_output: Any = None
    extra: dict[str, Any] = field(default_factory=dict)
    output_tails: dict[int, str] = field(default_factory=dict)  # last output of ranks > 0
    crash_stacks: dict[int, str] = field(default_factory=dict)  # faulthandler dumps
    rank_outputs: dict[int, Any] = field(default_factory=dict)  # predict: ranks > 0's share


def address_in_use(outcome: Outcome) -> bool:
    text = f"{outcome.error.message} {outcome.error.traceback}".lower() if outcome.error else ""
    return outcome.status == "failed" and any(marker in text for marker in ADDRESS_IN_USE)


PEER_ERRORS = ("DistBackendError", "DistNetworkError", "DistStoreError", "DistError")
PEER_MESSAGES = ("connection closed by peer", "connection reset by peer", "broken pipe",
                 "socket timeout", "read error", "connection refused")


def _is_peer_echo(error: RankError) -> bool:
    """An error a rank gets because another rank went away, rather than a cause of its own."""
    text = error.message.lower()
    if error.exc_type.rsplit(".", 1)[-1] in PEER_ERRORS:
        return True
    return "gloo" in text and any(marker in text for marker in PEER_MESSAGES)


def root_cause(outcome: Outcome, reported: list[RankError], deaths: dict[int, int]) -> None:
    """Pick the failure that caused the others: an exception of a rank's own, else a rank that
    died without a word (a signal, os._exit), else the first communication error."""
    own = [e for e in reported if not _is_peer_echo(e)]
    silent = {rank: code for rank, code in deaths.items()
              if rank not in {e.rank for e in reported}}
    if own:
        # the same exception from several ranks (a bug every rank runs into) is one failure of
        # all of them, told from the lowest rank, whichever reported first
        same = [e for e in own if (e.exc_type, e.message) == (own[0].exc_type, own[0].message)]
        outcome.error = min(same, key=lambda e: e.rank)
        outcome.error_ranks = sorted({e.rank for e in same})
    elif silent:
        # a signal (negative code) says more than an exit status
        outcome.exit_rank, outcome.exitcode = min(silent.items(),
                                                  key=lambda item: (item[1] >= 0, item[0]))
    elif reported:
        outcome.error = reported[0]


def pick_stalled(stacks: dict[int, str], fallback: int) -> int:
    """The rank whose innermost frame is outside torch and Lightning is the one that stalled;
    the others wait for it inside a collective (faulthandler lists the innermost frame first)."""
    for rank, text in sorted(stacks.items()):
        frames = [line for line in text.splitlines() if line.strip().startswith("File ")]
        if frames and "/torch/" not in frames[0] and "/lightning/" not in frames[0]:
            return rank
    return fallback


class Exits:
    """A handle per process that is ready when that process itself has exited (a pidfd). A
    process's multiprocessing sentinel is a pipe its children inherit, so a thread or child a
    rank left behind would hold it open long after the rank is gone."""

    def __init__(self, procs: list) -> None:
        self.handles: dict[Any, Any] = {}
        for proc in procs:
            try:
                self.handles[proc] = os.pidfd_open(proc.pid)
            except (AttributeError, OSError):  # no pidfds here: the sentinel it is
                self.handles[proc] = proc.sentinel

    def of(self, proc: Any) -> Any:
        return self.handles[proc]

    def close(self) -> None:
        for proc, handle in self.handles.items():
            if handle is not proc.sentinel:
                try:
                    os.close(handle)
                except OSError:
                    pass
        self.handles.clear()


def end_ranks(procs: list) -> None:
    """SIGTERM every rank's process group, SIGKILL what is left: nothing survives a run, even
    when the user interrupts again while this waits."""
    exits = Exits(procs)
    try:
        for proc in procs:
            if proc.is_alive():
                signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        alive = [p for p in procs if p.is_alive()]
        while alive and time.monotonic() < deadline:
            wait([exits.of(p) for p in alive], timeout=deadline - time.monotonic())
            alive = [p for p in procs if p.is_alive()]
    finally:
        exits.close()
        for proc in procs:
            signal_group(proc.pid, signal.SIGKILL)  # also DataLoader workers left in the group
        for proc in procs:
            proc.join(timeout=TERM_GRACE_S)


def signal_group(pid: Optional[int], signum: int) -> None:
    if pid is None:
        return
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(pid, signum)
        except (ProcessLookupError, PermissionError):
            pass
