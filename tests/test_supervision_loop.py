"""The kernel's wait for its ranks (``train.supervision_loop.supervise``), on its own: real forked
processes running small functions (no Lightning), the real ``RunControl`` and ``Presses``, and
the queues as the launcher builds them. A stop press is a real SIGINT to this process."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import types

import pytest

from lightning_magic.train.launch import supervision_loop
from lightning_magic.train.launch.control import RunControl
from lightning_magic.train.launch.interrupts import Presses
from lightning_magic.train.ranks.rank import prepare_rank_process
from lightning_magic.train.launch.supervision import end_ranks
from lightning_magic.train.launch.supervision_loop import supervise
from lightning_magic.train.returns.wire import pack

CTX = mp.get_context("fork")


class Ranks:
    """``world_size`` forked processes, each running ``target(rank, ranks, *args)`` after the real
    rank setup, writing to ``results`` and ``errors`` as the launcher's ranks do."""

    def __init__(self, tmp_path, world_size: int) -> None:
        self.control = RunControl(world_size, str(tmp_path))
        self.results, self.errors = CTX.SimpleQueue(), CTX.SimpleQueue()
        self.procs: list = []
        self.world_size = world_size

    def start(self, targets: list) -> None:
        self.control.beat_all()
        for rank, (target, *args) in enumerate(targets):
            proc = CTX.Process(target=_rank_main, args=(rank, self, target, args))
            proc.start()
            self.procs.append(proc)
        self.results._writer.close()  # only the ranks write: a read ends once they are gone
        self.errors._writer.close()

    def supervise(self, presses: Presses, timeout: float | None = None):
        return supervise(self.procs, self.results, self.errors, self.control, presses, timeout)

    def end(self) -> None:
        end_ranks(self.procs)


def _rank_main(rank: int, ranks: Ranks, target, args) -> None:
    prepare_rank_process(rank, ranks.control, {})
    target(rank, ranks, *args)
    ranks.control.completed[rank] = 1  # as a rank marks its work done, just before it exits
    os._exit(0)


def _error(rank: int, exc_type: str, message: str) -> dict:
    return {"rank": rank, "exc_type": exc_type, "message": message,
            "traceback": f"Traceback (most recent call last):\n{exc_type}: {message}\n",
            "user_frame": None}


def _output(**extra) -> bytes:
    return pack(types.SimpleNamespace(trainer_results=None, extra=extra))


# -- tiny rank functions -----------------------------------------------------------------------

def finish(rank: int, ranks: Ranks) -> None:
    if rank == 0:
        ranks.results.put(_output(status="finished"))
    else:
        ranks.results.put(pack(("predictions", rank, [rank * 10])))


def train_until_stopped(rank: int, ranks: Ranks, started, pressed_again) -> None:
    """Batches until the stop request, then report as rank 0 does and exit; or, with
    ``pressed_again``, press stop a second time and never stop (a rank stuck in its batch)."""
    started.send(rank)
    done = 0
    while not ranks.control.batch_done(rank):
        done += 1
    if pressed_again:
        if rank == 0:
            os.kill(os.getppid(), signal.SIGINT)
        _block_forever()
    if rank == 0:
        ranks.results.put(_output(status="interrupted", stopped_after=done))


def report_echo_then_hang(rank: int, ranks: Ranks, peer_may_fail, _unused) -> None:
    """Rank 0: the echo of a peer's failure, reported first; then it hangs, never exiting."""
    ranks.errors.put(_error(rank, "torch.distributed.DistBackendError",
                            "[gloo] Connection closed by peer"))
    peer_may_fail.send(True)
    _block_forever()


def fail_after_peer(rank: int, ranks: Ranks, _unused, peer_reported) -> None:
    """Rank 1: the root cause, reported after the echo arrived."""
    peer_reported.recv()
    ranks.errors.put(_error(rank, "ValueError", "shapes (8, 3) and (4, 1) do not match"))
    os._exit(1)


def die_silently(rank: int, ranks: Ranks, how: str, keep) -> None:
    keep.close()
    if how == "signal":
        os.kill(os.getpid(), signal.SIGKILL)
    os._exit(0 if how == "early exit" else 3)  # status 0, its work not done, is a death too


def echo_after_peer_died(rank: int, ranks: Ranks, peer_alive, writer) -> None:
    writer.close()
    try:
        peer_alive.recv()  # returns only when the peer, the one other writer, is gone
    except EOFError:
        pass
    ranks.errors.put(_error(rank, "RuntimeError", "[gloo] Connection reset by peer"))
    os._exit(1)


def wait_in_collective(rank: int, ranks: Ranks, port: int, ready, go) -> None:
    """Rank 0: its last heartbeat, then a barrier the other rank never reaches."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    ranks.control.beat(rank)
    go.send(True)  # rank 1's last heartbeat comes after this one
    ready.send(rank)
    dist.barrier()


def stall_in_own_code(rank: int, ranks: Ranks, port: int, ready, go) -> None:
    """Rank 1: joins the group, beats after rank 0, then never reaches the barrier."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=2)
    go.recv()
    ranks.control.beat(rank)
    ready.send(rank)
    users_stuck_loop()


def users_stuck_loop() -> None:
    _block_forever()


def _block_forever() -> None:
    read, _ = os.pipe()
    os.read(read, 1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- the tests ---------------------------------------------------------------------------------

def test_ranks_that_finish_hand_over_their_results(tmp_path, no_orphans):
    ranks = Ranks(tmp_path, 2)
    with Presses() as presses:
        try:
            ranks.start([(finish,), (finish,)])
            outcome = ranks.supervise(presses)
        finally:
            ranks.end()
    assert outcome.status == "finished" and outcome.error is None
    assert outcome.extra == {"status": "finished"}
    assert outcome.rank_outputs == {1: [10]}
    assert [p.exitcode for p in ranks.procs] == [0, 0]


@pytest.mark.timeout(120)
def test_a_first_press_asks_every_rank_to_stop(tmp_path, no_orphans):
    ranks = Ranks(tmp_path, 2)
    started, told = CTX.Pipe(duplex=False)
    with Presses() as presses:
        try:
            ranks.start([(train_until_stopped, told, False)] * 2)
            assert sorted(started.recv() for _ in range(2)) == [0, 1]
            os.kill(os.getpid(), signal.SIGINT)  # the stop button
            assert presses.count == 1
            outcome = ranks.supervise(presses)
        finally:
            ranks.end()
    assert ranks.control.stop_requested()
    assert outcome.status == "interrupted"
    assert outcome.extra["status"] == "interrupted"  # rank 0 stopped and reported
    assert [p.exitcode for p in ranks.procs] == [0, 0]  # the ranks ended themselves


@pytest.mark.timeout(120)
def test_a_second_press_ends_the_wait_at_once(tmp_path, monkeypatch, no_orphans):
    # a grace period longer than the test's timeout: only the second press can end the wait
    monkeypatch.setattr(supervision_loop, "STOP_GRACE_S", 3600.0)
    ranks = Ranks(tmp_path, 2)
    started, told = CTX.Pipe(duplex=False)
    with Presses() as presses:
        try:
            ranks.start([(train_until_stopped, told, True)] * 2)
            assert sorted(started.recv() for _ in range(2)) == [0, 1]
            os.kill(os.getpid(), signal.SIGINT)  # the first press; rank 0 presses again
            outcome = ranks.supervise(presses)
            still_running = [p.is_alive() for p in ranks.procs]
        finally:
            ranks.end()
    assert presses.count == 2
    assert outcome.status == "interrupted" and outcome.error is None
    assert still_running == [True, True]  # not waited for: the kernel ends them next


@pytest.mark.timeout(120)
def test_reports_that_come_while_settling_decide_the_root_cause(tmp_path, monkeypatch,
                                                                no_orphans):
    # a settle period longer than the test's timeout: the wait ends because every rank still
    # running (rank 0, hanging after its echo) has reported, not because the period ran out
    monkeypatch.setattr(supervision_loop, "SETTLE_S", 3600.0)
    ranks = Ranks(tmp_path, 2)
    peer_reported, tell_peer = CTX.Pipe(duplex=False)
    with Presses() as presses:
        try:
            ranks.start([(report_echo_then_hang, tell_peer, None),
                         (fail_after_peer, None, peer_reported)])
            outcome = ranks.supervise(presses)
            hanging = ranks.procs[0].is_alive()
        finally:
            ranks.end()
    assert outcome.status == "failed"
    # the first report was the echo; the cause came after it, within the settle period
    assert (outcome.error.rank, outcome.error.exc_type) == (1, "ValueError")
    assert hanging  # the settle period ended the wait, not rank 0's exit


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("how", "exitcode"), [("exit", 3), ("signal", -signal.SIGKILL),
                                                ("early exit", 0)])
def test_a_rank_that_dies_without_a_word_is_the_root_cause(tmp_path, how, exitcode, no_orphans):
    ranks = Ranks(tmp_path, 2)
    peer_alive, writer = CTX.Pipe(duplex=False)
    with Presses() as presses:
        try:
            ranks.start([(echo_after_peer_died, peer_alive, writer),
                         (die_silently, how, peer_alive)])
            writer.close()
            outcome = ranks.supervise(presses)
        finally:
            ranks.end()
    assert outcome.status == "failed"
    assert (outcome.exit_rank, outcome.exitcode) == (1, exitcode)
    assert outcome.error is None  # rank 0's echo is not taken for the cause


@pytest.mark.timeout(120)
def test_a_stall_dumps_every_stack_and_names_the_stalled_rank(tmp_path, no_orphans):
    ranks = Ranks(tmp_path, 2)
    ready, tell_ready = CTX.Pipe(duplex=False)
    go, tell_go = CTX.Pipe(duplex=False)
    port = _free_port()
    with Presses() as presses:
        try:
            ranks.start([(wait_in_collective, port, tell_ready, tell_go),
                         (stall_in_own_code, port, tell_ready, go)])
            assert sorted(ready.recv() for _ in range(2)) == [0, 1]
            outcome = ranks.supervise(presses, timeout=1.0)
        finally:
            ranks.end()
    assert outcome.status == "timeout"
    assert sorted(outcome.stacks) == [0, 1]
    assert "barrier" in outcome.stacks[0] and "users_stuck_loop" in outcome.stacks[1]
    # rank 0's heartbeat is the older one; its stack says it waits inside torch for rank 1
    assert outcome.stalled_rank == 1


# -- the shared state on its own ---------------------------------------------------------------

def test_a_finished_training_batch_is_a_heartbeat(tmp_path):
    # a training batch counts itself and reads no clock: the watcher's look that finds the count
    # moved on is the rank's sign of life, and one that finds it where it was is not
    control = RunControl(2, str(tmp_path))
    beaten = control.heartbeat[0]
    assert control.last_sign(0, beaten + 50) == beaten  # no batch yet: the heartbeat alone
    control.batch_done(0)
    assert control.last_sign(0, beaten + 100) == beaten + 100
    assert control.last_sign(0, beaten + 200) == beaten + 100  # no batch since
    control.batch_done(0)
    assert control.last_sign(0, beaten + 300) == beaten + 300
    assert control.last_sign(1, beaten + 300) == control.heartbeat[1]  # the other rank's own
    control.reset_stop()  # a new launch counts from 0 again, its heartbeats new
    assert control.last_sign(0, beaten + 400) == control.heartbeat[0]


@pytest.mark.parametrize("world_size", [1, 2])
def test_a_rank_stops_after_the_batch_the_stop_was_agreed_at(tmp_path, world_size):
    control = RunControl(world_size, str(tmp_path))
    counted = control.batch_counter(0)
    assert [counted() for _ in range(3)] == [False] * 3
    control.request_stop()  # rank 0 is the furthest: every rank stops after batch 4
    assert counted() is True
    assert control._batches[0] == 4
