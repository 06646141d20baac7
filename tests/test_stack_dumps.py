"""A stalled run's stacks are read whole: the kernel asks a real forked rank for its dump
(SIGUSR1) and reads the file only once the rank has counted the dump written. A dump of many
threads is written in many pieces, and one read part-way names the wrong rank as the stalled
one (its first, idle threads look like user code)."""

from __future__ import annotations

import multiprocessing as mp
import signal
import threading

from lightning_magic.train.launch.control import RunControl
from lightning_magic.train.launch.supervision_loop import dump_stacks
from lightning_magic.train.ranks.rank import prepare_rank_process

THREADS = 40


def _deep(depth: int, release: threading.Event) -> None:
    if depth:
        _deep(depth - 1, release)
    else:
        release.wait()


def _one_waiting_thread(release: threading.Event) -> None:
    _deep(60, release)


def _rank_work(started: threading.Event, release: threading.Event) -> None:
    """As the launcher's training thread: SIGUSR1 blocked, so its threads block it too."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    threads = [threading.Thread(target=_one_waiting_thread, args=(release,), daemon=True)
               for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    started.set()
    release.wait()


def _rank(control: RunControl, ready) -> None:  # noqa: ANN001
    prepare_rank_process(0, control, {})
    started, release = threading.Event(), threading.Event()
    worker = threading.Thread(target=_rank_work, args=(started, release), daemon=True)
    worker.start()
    started.wait()
    ready.set()
    worker.join()


def test_a_dump_of_many_threads_is_read_whole(tmp_path):
    control = RunControl(1, str(tmp_path))
    ctx = mp.get_context("fork")
    ready = ctx.Event()
    proc = ctx.Process(target=_rank, args=(control, ready), daemon=True)
    proc.start()
    try:
        assert ready.wait(60), "the rank did not start its threads"
        stacks = dump_stacks([proc], control, wait_s=60)
        assert control.dumps[0] == 1
        whole = (tmp_path / "rank-0.stack").read_text()
        assert whole.count("in _one_waiting_thread") == THREADS
        # every waiting thread, all of its frames: the read is the dump as it ended
        assert stacks[0].count("in _one_waiting_thread") == THREADS, stacks[0][-500:]
        assert stacks[0].count("in _deep") == whole.count("in _deep")
        assert "in _rank_work" in stacks[0].split("Thread 0x")[1]  # the training thread first
    finally:
        proc.kill()
        proc.join()
