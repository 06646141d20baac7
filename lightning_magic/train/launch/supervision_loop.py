"""The kernel's wait for its ranks: whichever comes first of a result, a rank's failure, a stop
press or a stall decides how the launch ends.

- A first failure (a rank's own exception, or a rank that died) starts a short settle period in
  which the others may still report, so the root cause is told apart from its echoes; it ends
  early once every rank still running has reported.
- A first stop press asks every rank to stop at the same batch (``RunControl.request_stop``);
  a second press, or the grace period running out, ends the ranks at once.
- With ``timeout``, a rank whose heartbeat is older than that is stalled: every rank's stack is
  dumped (SIGUSR1) and the stalled one named.
"""

from __future__ import annotations

import os
import signal
import time
from multiprocessing.connection import wait
from typing import Any, Optional

from .supervision import (
    SETTLE_S,
    STOP_GRACE_S,
    Exits,
    Outcome,
    RankError,
    pick_stalled,
    root_cause,
)

POLL_S = 0.5  # at most this long between looks at the heartbeats


def supervise(procs: list, results: Any, errors: Any, control: Any, presses: Any,
              timeout: Optional[float]) -> Outcome:
    """Wait for the ranks in ``procs``; ``results``/``errors`` are the queues they write to."""
    outcome = Outcome()
    watch = _Watch(procs, control, presses)
    try:
        _loop(watch, outcome, results, errors, timeout)
    finally:
        _drain_errors(watch, errors)
        watch.exits.close()
    if outcome.status != "interrupted":  # what ranks wrote just before exiting
        while results._reader not in watch.closed and results._reader.poll():
            _take_result(watch, outcome, results)
    outcome.output_tails = {rank: control.output_tail(rank) for rank in range(1, len(procs))}
    outcome.crash_stacks = {rank: control.crash_stack(rank) for rank in range(len(procs))}
    if outcome.status in ("timeout", "interrupted"):
        return outcome
    if watch.reported or watch.deaths:
        outcome.status = "failed"
        root_cause(outcome, watch.reported, watch.deaths)
    elif outcome.extra.get("status") == "interrupted":
        outcome.status = "interrupted"
    return outcome


class _Watch:
    def __init__(self, procs: list, control: Any, presses: Any) -> None:
        self.procs, self.control, self.presses = procs, control, presses
        self.exits = Exits(procs)
        self.running = {self.exits.of(p): (rank, p) for rank, p in enumerate(procs)}
        self.reported: list[RankError] = []
        self.deaths: dict[int, int] = {}     # rank -> non-zero exit code
        self.closed: set = set()             # readers whose writers are all gone
        self.settle_deadline: Optional[float] = None
        self.stop_deadline: Optional[float] = None
        self.presses_seen = 0

    def all_told(self) -> bool:
        """Every rank still running has reported its failure (a rank reports once), so nothing
        more can come: the settle period need not run out."""
        told = {error.rank for error in self.reported}
        return all(rank in told for rank, _ in self.running.values())

    def press(self, outcome: Outcome) -> bool:
        """A stop press: True when the ranks must be ended now (a second press)."""
        outcome.status = "interrupted"
        if self.stop_deadline is not None:
            return True
        self.control.request_stop()
        self.stop_deadline = time.monotonic() + STOP_GRACE_S
        return False


def _loop(watch: _Watch, outcome: Outcome, results: Any, errors: Any,
          timeout: Optional[float]) -> None:
    presses = watch.presses if watch.presses.active else None
    while watch.running:
        try:
            readers = [r for r in (results._reader, errors._reader) if r not in watch.closed]
            ready = wait(list(watch.running) + readers + ([presses] if presses else []),
                         timeout=POLL_S)
            if presses is not None and presses in ready:
                presses.drain()
            while presses is not None and watch.presses_seen < presses.count:
                watch.presses_seen += 1
                if watch.press(outcome):
                    return
            if errors._reader in ready:
                record = _read(errors)
                if record is None:
                    watch.closed.add(errors._reader)
                else:
                    watch.reported.append(RankError(**record))
            if results._reader in ready:
                _take_result(watch, outcome, results)
            for handle in [s for s in ready if s in watch.running]:
                rank, proc = watch.running.pop(handle)
                proc.join()
                if proc.exitcode != 0 or not watch.control.completed[rank]:
                    watch.deaths[rank] = proc.exitcode
            now = time.monotonic()
            if (watch.reported or watch.deaths) and watch.settle_deadline is None \
                    and watch.stop_deadline is None:
                watch.settle_deadline = now + SETTLE_S
            if watch.settle_deadline is not None and (now >= watch.settle_deadline
                                                      or watch.all_told()):
                return
            if watch.stop_deadline is not None and now >= watch.stop_deadline:
                return
            if timeout and watch.running and watch.stop_deadline is None \
                    and watch.settle_deadline is None:
                stalled = _stalled_rank(watch, timeout, now)
                if stalled is not None:
                    outcome.status = "timeout"
                    outcome.stacks = dump_stacks(watch.procs, watch.control)
                    outcome.stalled_rank = pick_stalled(outcome.stacks, stalled)
                    return
        except KeyboardInterrupt:  # presses arrive this way only off the main thread
            if watch.press(outcome):
                return


def _take_result(watch: _Watch, outcome: Outcome, results: Any) -> None:
    from ..returns.wire import unpack

    output = _read(results)
    if output is None:
        watch.closed.add(results._reader)
        return
    output = unpack(output)
    if isinstance(output, tuple) and output and output[0] == "predictions":
        outcome.rank_outputs[output[1]] = output[2]
    else:
        outcome.worker_output, outcome.extra = output, output.extra


def _drain_errors(watch: _Watch, errors: Any) -> None:
    while errors._reader not in watch.closed and errors._reader.poll():
        record = _read(errors)
        if record is None:
            break
        watch.reported.append(RankError(**record))


def _stalled_rank(watch: _Watch, timeout: float, now: float) -> Optional[int]:
    alive = [rank for rank, _ in watch.running.values()]
    ages = {rank: now - watch.control.last_sign(rank, now) for rank in alive}
    stale = {rank: age for rank, age in ages.items() if age > timeout}
    return max(stale, key=stale.get) if stale else None


def dump_stacks(procs: list, control: Any, wait_s: float = 2.0) -> dict[int, str]:
    """Every live rank's Python stacks (faulthandler, on SIGUSR1), each read once the rank has
    counted it written; a rank that cannot count it by ``wait_s`` (its main thread kept from
    Python) is read as its file then stands."""
    asked = {rank: control.dumps[rank] for rank, p in enumerate(procs) if p.is_alive()}
    for rank in list(asked):
        try:
            os.kill(procs[rank].pid, signal.SIGUSR1)
        except ProcessLookupError:
            asked.pop(rank)
    stacks: dict[int, str] = {}
    deadline = time.monotonic() + wait_s
    pending = set(asked)
    while pending:
        late = time.monotonic() >= deadline
        for rank in list(pending):
            if late or control.dumps[rank] > asked[rank] or not procs[rank].is_alive():
                text = control.stack_dump(rank)
                if text:
                    stacks[rank] = text
                pending.discard(rank)
        if pending:
            wait([procs[r].sentinel for r in pending], timeout=0.05)  # a short look, either way
    return stacks


def _read(queue: Any) -> Any:
    """One message from a rank, or None when the ranks are gone (or one died mid-message)."""
    try:
        return queue.get()
    except Exception:  # noqa: BLE001 - EOFError, or the many errors of a truncated pickle
        return None
