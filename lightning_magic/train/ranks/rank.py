"""Code that runs inside a forked rank: process setup, output capture and warnings kept once.

``prepare_rank_process`` is the first thing a rank does after the fork. The kernel shares state
with its ranks through ``control.RunControl``; Lightning's logger levels (``quiet_lightning_logs``)
are also lowered around building a Trainer in the kernel.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import os
import signal
import warnings
from typing import Any

PR_SET_PDEATHSIG = 1


def prepare_rank_process(rank: int, control: Any, env: dict[str, str]) -> None:
    """First thing a rank does after fork: die with the kernel, own its process group, stay quiet."""
    _die_with_parent()
    control.beat(rank)
    os.setpgid(0, 0)  # the rank and its DataLoader workers form one group the kernel can kill
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the kernel turns an interrupt into a stop request
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.update(env)
    stack_file = open(control.stack_file(rank), "w")  # noqa: SIM115 - lives as long as the rank
    # the rank trains in a thread of its own (see launcher): dump every thread's stack; the
    # kernel drops the main thread's, which only waits for that one. The main thread is the
    # only one that takes SIGUSR1, so after faulthandler's dump the signal is passed on to
    # Python's handler there, which counts the dump as written.
    signal.signal(signal.SIGUSR1, lambda *_: _count_dump(control, rank))
    faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=True, chain=True)
    if rank != 0:
        _capture_output(control.output_file(rank))
    # a rank that crashes (SIGSEGV, SIGABRT) leaves its Python stack for the failure report
    crash_file = open(control.crash_file(rank), "w")  # noqa: SIM115 - lives as long as the rank
    # disabled first: where the kernel enabled faulthandler and something later reset the
    # signal handlers (plain Lightning's fit restores every one it saw), enable() alone would
    # think itself installed and leave the crash signals with no handler
    faulthandler.disable()
    faulthandler.enable(file=crash_file, all_threads=True)
    quiet_lightning_logs()


def _count_dump(control: Any, rank: int) -> None:
    control.dumps[rank] += 1


def _capture_output(path: str) -> None:
    """Ranks other than 0 write to a file (kept for the failure report), not to the cell: their
    prints, what their C code writes, and their log records, so that a line every rank logs
    (Lightning's LR finder's, the user's) reaches the cell once, from rank 0."""
    import sys

    handle = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the rank
    for fd in (1, 2):
        try:
            os.dup2(handle.fileno(), fd)
        except OSError:
            pass
    cell_streams = (sys.stdout, sys.stderr)
    sys.stdout = sys.stderr = handle
    _redirect_log_handlers(cell_streams, handle)


def _redirect_log_handlers(streams: tuple[Any, ...], handle: Any) -> None:
    """Point the log handlers that write to ``streams`` (the kernel's, which a forked rank
    still reaches) at ``handle``. Not ``setStream``: flushing the kernel's stream in a rank
    could send what the kernel itself had buffered."""
    loggers = [logging.getLogger()] + [logger for logger in
                                       list(logging.root.manager.loggerDict.values())
                                       if isinstance(logger, logging.Logger)]
    for logger in loggers:
        for handler in list(logger.handlers):
            if isinstance(handler, logging.StreamHandler) and \
                    any(handler.stream is stream for stream in streams):
                handler.stream = handle


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
    for name in dict.fromkeys(names + ["lightning.pytorch", "lightning.fabric"]):  # each once
        logger = logging.getLogger(name)
        previous[name] = logger.level
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    return previous


def restore_logs(previous: dict[str, int]) -> None:
    for name, level in previous.items():
        logging.getLogger(name).setLevel(level)


def from_library(filename: str) -> bool:
    """Whether a warning was raised from installed code (Lightning, torch, the standard library,
    this package), not from the cell or the user's own modules."""
    import sysconfig

    roots = {sysconfig.get_paths()[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # lightning_magic
    path = os.path.abspath(filename or "")
    return any(path.startswith(os.path.join(root, "")) for root in roots)


class WarningCollector:
    """Keeps each distinct warning once instead of printing it from every rank: the cell's own in
    ``messages``, those raised from installed code (``from_library``) in ``library``."""

    def __init__(self, ignored: tuple[str, ...] = ()) -> None:
        self.messages: list[str] = []
        self.library: list[str] = []
        self._seen: set[str] = set(ignored)  # the magic's own doing, not the user's

    def ignore(self, messages: list[str]) -> None:
        self._seen.update(messages)

    def install(self) -> None:
        warnings.showwarning = self._show  # type: ignore[assignment]

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = f"{category.__name__}: {message}"
        if text not in self._seen and str(message) not in self._seen:
            self._seen.add(text)
            (self.library if from_library(filename) else self.messages).append(text)


def strip_waiting_main_thread(dump: str) -> str:
    """A faulthandler dump of every thread, the thread that trains first, without the main
    thread that only waits in join() for it (the "Current thread" when a signal came from
    outside)."""
    header, blocks = [], []
    for line in dump.splitlines(keepends=True):
        if line.startswith(("Thread 0x", "Current thread 0x")):
            blocks.append([line])
        elif blocks:
            blocks[-1].append(line)
        else:
            header.append(line)
    trains = [b for b in blocks if any("in _rank_work" in line for line in b)]
    waits = [b for b in blocks if b[0].startswith("Current thread") and b not in trains]
    rest = [b for b in blocks if b not in trains and (b not in waits or not trains)]
    return "".join(header + [line for block in trains + rest for line in block])
