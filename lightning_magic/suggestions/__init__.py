"""Turn a failed training run into a short explanation: what happened, and what to do next.

``explain(Failure(...))`` returns a ``Report`` with ``text()`` for a terminal and ``html()`` for a
notebook. Rules are tried in order and the first that recognizes the failure wins; anything
unrecognized gets a report that still names the rank, the exception and the user's line.
"""

from __future__ import annotations

import logging

from . import checkpoints, cuda, data, distributed, hooks, names, processes, tensors
from .clues import DEVICES_FLAG, Clues, on_ranks
from .frames import user_frame_from_traceback
from .report import KINDS, Failure, Report

__all__ = ["KINDS", "Failure", "Report", "explain", "user_frame_from_traceback"]

_log = logging.getLogger(__name__)

# Failures decided by what the launcher saw rather than by an exception's text.
_BY_KIND = (cuda.cuda_initialized, processes.interrupted, processes.timed_out)
# Ranks that died without raising: the signal or exit code (and any stderr) is all there is.
_WITHOUT_EXCEPTION = (processes.openmp_fork, data.shm_exhausted, processes.killed_by_signal, processes.exited)
# Exceptions, most specific first: a DataLoader error can mention CUDA, an NCCL error can mention OOM.
_EXCEPTIONS = (
    cuda.bad_fork,
    cuda.cuda_oom,
    processes.host_oom,
    *data.RULES,
    distributed.address_in_use,
    distributed.unused_parameters,
    cuda.device_mismatch,
    cuda.device_assert,
    cuda.bad_device,
    processes.openmp_fork,
    *hooks.RULES,
    names.name_error,
    *tensors.RULES,
    *checkpoints.RULES,
    distributed.process_group,
    processes.exited,  # sys.exit() in the user's code
)


def explain(failure: Failure) -> Report:
    """The report for ``failure``; never raises, so it is safe on the error path."""
    try:
        clues = Clues(failure)
    except Exception:
        _log.debug("could not read failure %r", failure, exc_info=True)
        return _bare(failure)
    if failure.kind in ("signal", "exit"):
        rules = _BY_KIND + _WITHOUT_EXCEPTION
    else:
        rules = _BY_KIND + _EXCEPTIONS
    for rule in rules:
        try:
            report = rule(clues)
        except Exception:  # a rule tripping over odd input must not hide the failure itself
            _log.debug("rule %s failed on %r", rule.__name__, failure, exc_info=True)
            continue
        if report is not None:
            return report
    try:
        return generic(clues)
    except Exception:
        _log.debug("generic report failed on %r", failure, exc_info=True)
        return _bare(failure)


def generic(c: Clues) -> Report:
    """Anything not recognized: the rank, the exception's last line, and the user's line."""
    steps = []
    if c.place:
        steps.append(f"Start at {c.place}: it is the last line of your own code before the error.")
    steps.append(f"The full traceback of the rank is in `{c.result_name}.traceback`.")
    if c.world_size > 1:
        steps.append(f"To see whether it only happens with several ranks, run with `{DEVICES_FLAG} 1`.")
    name = c.exc_name or "Training failed"
    title = f"{name}{c.on_rank}" if c.exc_name else f"Training failed{c.on_rank}"
    return Report("generic", title, c.raised(), steps, c.failure.traceback)


def _bare(failure: Failure) -> Report:
    rank = on_ranks(failure)
    what = f"Training failed{rank}: {failure.exc_type or failure.kind}: {failure.message or ''}".rstrip(": ")
    out = (failure.context or {}).get("out") if isinstance(failure.context, dict) else None
    return Report("generic", f"Training failed{rank}", what,
                  [f"The full traceback of the rank is in `{out or 'lightning_run'}.traceback`."],
                  failure.traceback if isinstance(failure.traceback, str) else None)
