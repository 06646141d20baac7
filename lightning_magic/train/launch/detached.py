"""A detached launch (``--detach``): the ranks are started and supervised by a process of their
own, which has left the kernel's session, so that Jupyter's restart (the kernel's process group
killed) and the kernel's own shutdown (its children ended) spare the run.

The kernel forks once; that child starts a new session (``setsid``), forks the supervisor and
exits, so the supervisor is no child of the kernel's either. The supervisor forks the ranks
(``NotebookLauncher.start_ranks``: they die with it, as they die with the kernel otherwise) and
waits for them as the kernel would (``run_ranks``: the stop button's pipe, a byte a press, or
SIGINT from any process; ``--timeout``'s watchdog of a stalled rank), with its own event pump;
then it sends the ``Outcome`` to the kernel, if the kernel is still there, and exits. The run
thus ends by itself when training ends, and ``--timeout`` bounds it: after that many seconds in
all it is stopped as by the stop button (``_Bound``). What the supervisor
does besides is the caller's (``on_start`` gives its event handlers, ``on_end`` is told the
outcome).

The supervisor first lets go of what it inherited of the kernel's messaging: every socket (the
kernel's ZMQ ports, which a restarted kernel binds again, and its clients' connections) is
closed, and its output, and rank 0's, go to ``output-<run id>.txt`` in the run's folder instead
of the kernel's streams, which are gone with the kernel.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import stat
import sys
import threading
from typing import Any, Callable

from ..ranks.errors import error_record
from ..returns.wire import pack, unpack
from .events import EventPump
from .leftovers import keep_while_alive
from .supervision import Outcome, RankError


class Detached:
    """The kernel's end of a detached supervisor: its ``pid`` and ``wait()`` for its outcome."""

    def __init__(self, launcher: Any, function: Callable, args: Any, kwargs: Any, trainer: Any,
                 launch: Any, presses: Any, on_start: Callable[[int], list],
                 on_end: Callable[[Outcome], None]) -> None:
        from .openmp import release_pool

        self._reader, writer = mp.get_context("fork").Pipe(duplex=False)
        release_pool()  # the supervisor cannot: the pool's threads stay here (see openmp)
        first = os.fork()
        if first == 0:  # pragma: no cover - the first child: leave the session, fork, exit
            try:
                os.setsid()
                if os.fork() == 0:
                    self._reader.close()
                    _supervisor(launcher, function, args, kwargs, trainer, launch, presses,
                                writer, on_start, on_end)
            finally:
                os._exit(0)
        writer.close()
        os.waitpid(first, 0)
        try:
            self.pid: int = self._reader.recv()  # the supervisor's first word
        except (EOFError, OSError):
            self.pid = 0

    def wait(self) -> Outcome:
        """The supervisor's outcome, once every rank is gone (any thread)."""
        try:
            return unpack(self._reader.recv_bytes())  # as bytes: see returns.wire
        except (EOFError, OSError) as exc:
            return Outcome(status="failed", error=RankError(
                rank=0, exc_type="DetachedSupervisorLost", traceback="",
                message="the detached run's supervisor ended without saying how its ranks "
                        f"ended ({exc!r})"))
        finally:
            self._reader.close()


def _supervisor(launcher: Any, function: Callable, args: Any, kwargs: Any, trainer: Any,
                launch: Any, presses: Any, writer: Any, on_start: Callable[[int], list],
                on_end: Callable[[Outcome], None]) -> None:  # pragma: no cover - its own process
    _leave_the_kernel(os.path.join(launch.session.ckpt_dir, f"output-{launch.run_id}.txt"))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # SIGINT: a stop press
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    control, presses = launch.control, _Presses(presses.fileno())
    try:
        keep_while_alive(launch.stack_dir, os.getpid())  # a later launch's cleanup spares it
    except OSError:
        pass
    pump = EventPump(control.progress_reader, on_start(os.getpid()),
                     writer=control.progress_writer)
    kernel_there = _send(writer, os.getpid())
    outcome = Outcome(status="interrupted")
    try:
        pump.start()
        ranks = launcher.start_ranks(function, args, kwargs, trainer, launch)
        bound = _Bound(launch.session.flags.timeout)
        try:
            outcome = launcher.run_ranks(function, args, kwargs, trainer, launch, presses,
                                         started=ranks)
        finally:
            bound.cancel()
        if bound.reached and outcome.status == "interrupted":
            outcome.status = "timeout"
    except BaseException as exc:  # noqa: BLE001 - the kernel hears of it as of a rank's failure
        outcome = Outcome(status="failed", error=RankError(**error_record(0, exc)))
    finally:
        pump.stop()
        try:
            on_end(outcome)
        finally:
            if not (kernel_there and _send(writer, _packed(outcome), raw=True)):
                shutil.rmtree(launch.stack_dir, ignore_errors=True)  # the kernel's, were it there


class _Bound:
    """``--timeout`` as a detached run's bound on its whole length: once that many seconds have
    gone by, a stop press (SIGINT to the supervisor, as ``stop()`` from any kernel), so every
    rank stops at the same batch and the checkpoint of that moment is saved; the run's status
    is then ``timeout``."""

    def __init__(self, seconds: Any) -> None:
        self.reached = False
        self._timer = threading.Timer(seconds, self._press) if seconds else None
        if self._timer is not None:
            self._timer.daemon = True
            self._timer.start()

    def _press(self) -> None:
        self.reached = True
        os.kill(os.getpid(), signal.SIGINT)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()


class _Presses:
    """The kernel's stop button as the supervisor sees it: each byte in its pipe is one press
    (the kernel's count of them is the kernel's own)."""

    active = True

    def __init__(self, fd: int) -> None:
        self.fd, self.count = fd, 0

    def fileno(self) -> int:
        return self.fd

    def drain(self) -> None:
        try:
            while True:
                pressed = os.read(self.fd, 64)
                if not pressed:
                    return
                self.count += len(pressed)
        except OSError:  # nothing more to read now
            return


def _leave_the_kernel(output: str) -> None:  # pragma: no cover - in the supervisor
    """Close every inherited socket; stdout and stderr (and fds 1, 2) to ``output``."""
    for name in os.listdir("/proc/self/fd") if os.path.isdir("/proc/self/fd") else []:
        try:
            fd = int(name)
            if fd > 2 and stat.S_ISSOCK(os.fstat(fd).st_mode):
                os.close(fd)
        except (ValueError, OSError):
            continue
    try:
        os.makedirs(os.path.dirname(output), exist_ok=True)
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    except OSError:
        fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = sys.stderr = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115


def _packed(outcome: Outcome) -> bytes:
    try:
        return pack(outcome)
    except Exception as exc:  # noqa: BLE001 - what the ranks gave cannot travel: say why
        return pack(Outcome(status="failed", error=RankError(**error_record(0, exc))))


def _send(writer: Any, value: Any, raw: bool = False) -> bool:
    try:
        if raw:
            writer.send_bytes(value)
        else:
            writer.send(value)
        return True
    except Exception as exc:  # noqa: BLE001 - the kernel is gone (or the value cannot go)
        print(f"lightning_magic: the detached supervisor could not tell the kernel: {exc!r}",
              file=sys.stderr)
        return False
