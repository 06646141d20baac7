"""The kernel's OpenMP thread pool, given back before the ranks are forked, and how many threads
each rank computes with (``rank_threads``).

GNU OpenMP (libgomp, which torch's Linux wheels ship) keeps one count of the threads it manages
for the whole process and spins a worker only while that count fits the CPUs; past it, a worker
goes to sleep after about a hundred spins, and every parallel region pays for waking it. A forked
rank inherits the count with the kernel's pool in it, though none of the pool's threads came
across the fork: the rank's own pool (started in a fresh thread, see ``launcher``) then counts as
too many, and each parallel op runs about twice as slow as the same op in the kernel. Released
before the fork (OpenMP 5.0's ``omp_pause_resource_all``, the pool's threads end), the count is
the kernel's main thread alone, the rank starts its pool as plain Lightning's first parallel op
does, and the kernel starts a new one at its next. The number of threads is not changed.

A forked process never releases: the pool it would pause is its parent's, whose threads did not
come across the fork, and pausing waits for them forever. So a detached run's supervisor (a
fork of the kernel, which forks the ranks in turn) finds the pool released by the kernel, which
releases it before forking the supervisor as before forking ranks.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from typing import Optional

_log = logging.getLogger(__name__)
_FORKED = [False]  # set in a forked child: what it knows of a pool is its parent's


def _forked() -> None:
    _FORKED[0] = True


os.register_at_fork(after_in_child=_forked)

OMP_PAUSE_SOFT = 1  # omp_pause_resource_t: threads end, the runtime stays initialized
# Intel's and LLVM's runtimes (libiomp5, libomp) start afresh in a forked child on their own


def loaded_gomp() -> Optional[str]:
    """The path of the GNU OpenMP runtime this process has loaded, if any (Linux)."""
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                path = fields[5] if len(fields) > 5 else ""
                name = path.rsplit("/", 1)[-1]
                if name.startswith("libgomp") and ".so" in name:
                    return path
    except OSError:
        pass
    return None


def release_pool() -> bool:
    """End the calling thread's OpenMP worker threads (called just before the fork, in the
    thread that forks); True when the runtime did. A runtime that cannot (not loaded, too old,
    inside a parallel region) keeps its pool, and the ranks work as before; so does a forked
    process (see the module's docstring)."""
    if "torch" not in sys.modules or _FORKED[0]:  # nothing has started a pool, or not ours
        return False
    path = loaded_gomp()
    if path is None:
        return False
    try:
        pause = ctypes.CDLL(path).omp_pause_resource_all
    except (OSError, AttributeError):  # a runtime before OpenMP 5.0
        _log.debug("%s has no omp_pause_resource_all; its pool stays", path)
        return False
    pause.argtypes, pause.restype = [ctypes.c_int], ctypes.c_int
    return pause(OMP_PAUSE_SOFT) == 0


def rank_threads(threads: Optional[int], processes: int) -> None:
    """A rank's torch threads: ``threads`` where its launch gives it a share of the cores (a
    sweep's trial beside others), else Lightning's choice for several processes (cores // N,
    unless ``OMP_NUM_THREADS`` says), else the kernel's, as plain Lightning in one process."""
    import torch
    from lightning.fabric.utilities.distributed import _set_num_threads_if_needed

    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
    elif processes > 1:
        _set_num_threads_if_needed(num_processes=processes)
