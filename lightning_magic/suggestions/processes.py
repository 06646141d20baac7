"""Ranks that stopped without a usable exception: signals, exits, host memory, hangs, interrupts."""

from __future__ import annotations

import os
import signal as signals

from .clues import RESUME_FLAG, TIMEOUT_FLAG, Clues, signal_name
from .frames import describe_frame, innermost_user_frame, name_cells, rank_stack
from .report import STOPPED, Report

_OOM_KILLER = (
    "Confirm that the kernel's out-of-memory killer ended it: `dmesg -T | grep -i -E 'killed process|out of memory'` "
    "(may need root)."
)
_SHARE_DATA = (
    "Hold large datasets as NumPy arrays or memory-mapped files (`np.load(path, mmap_mode=\"r\")`) rather than "
    "Python lists of objects, and load samples lazily in `__getitem__`: forked ranks and workers then share "
    "the memory instead of each copying it."
)
_FAULTHANDLER = (
    "See where it crashed: run `import faulthandler; faulthandler.enable()` in a cell, then run the training "
    "cell again; the rank then prints its Python stack when it dies."
)
_NCCL_DEBUG = "Run `%env NCCL_DEBUG=INFO` in a cell, then run the training cell again: the ranks inherit it."


def signal_number(c: Clues) -> int | None:
    """The signal that ended the rank: from a "signal" failure, or a negative exit code."""
    failure = c.failure
    if failure.kind == "signal" and isinstance(failure.signal, int):
        return failure.signal
    if failure.kind == "exit" and isinstance(failure.exitcode, int) and failure.exitcode < 0:
        return -failure.exitcode
    return None


def _last_output(c: Clues) -> str | None:
    """The last line the rank wrote to stderr, when the launcher captured it."""
    stderr = c.value("stderr")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()] if isinstance(stderr, str) else []
    return lines[-1] if lines else None


def _stderr_tail(c: Clues) -> str:
    last = _last_output(c)
    return f"\nIts last output was: {last}" if last else ""


def killed_by_signal(c: Clues) -> Report | None:
    number = signal_number(c)
    if number is None and c.failure.kind != "signal":
        return None
    name = signal_name(number) if number is not None else "a signal"
    percent, host = c.host_memory()
    _, _, facts = c.shm()
    what = f"{c.who} was killed by {name}" + (f" (signal {number})" if number is not None else "")
    what += " and stopped without a Python traceback; the other ranks were stopped."
    if number == signals.SIGKILL:
        what += " SIGKILL usually comes from the Linux out-of-memory killer when the machine runs out of RAM."
        if percent is not None and percent < 80:
            what += (f" Host memory when the failure was noticed: {host[0][1]}. That is not full, but the kill "
                     "itself frees memory; if the kernel log shows no OOM kill, something else (`kill -9`, a job "
                     "scheduler) sent it.")
            cause = "SIGKILL"
        else:
            what += f" Host memory at the time: {host[0][1]}." if host else ""
            cause = "SIGKILL, likely out of host memory"
        title = f"Rank {c.rank} was killed ({cause})" if c.rank is not None else f"A process was killed ({cause})"
        steps = [_OOM_KILLER, c.workers_step(), _SHARE_DATA,
                 "Close other memory-hungry programs and notebooks on this machine."]
    elif number == signals.SIGSEGV:
        what += " A segmentation fault is a crash in native code (a C/C++/CUDA extension), not in your Python code."
        title = f"Rank {c.rank} crashed (segmentation fault)" if c.rank is not None else "Segmentation fault"
        steps = [
            _FAULTHANDLER,
            "Rule out DataLoader workers with `num_workers=0`: libraries that are not fork-safe (OpenCV, some "
            "HDF5/h5py builds, threads started in the kernel) often crash in forked processes.",
            "Check that compiled extensions match your torch version "
            "(`pip list | grep -i -E 'torch|flash|bitsandbytes'`).",
        ]
    elif number == signals.SIGABRT:
        what += (
            " SIGABRT means a native library aborted: an uncaught C++ exception (`std::bad_alloc` when host memory "
            "runs out), a failed assertion, or the NCCL watchdog ending a rank whose collective operation timed out."
        )
        title = f"Rank {c.rank} aborted (SIGABRT)" if c.rank is not None else "Aborted (SIGABRT)"
        steps = [
            "Look in the output (or the terminal running Jupyter) for a line starting with `terminate called`, "
            "`NCCL` or `Assertion`: that is the cause.",
            f"{_NCCL_DEBUG} If a collective timed out, make every rank run the same steps, or raise `{TIMEOUT_FLAG}`.",
            _FAULTHANDLER,
        ]
    elif number in (signals.SIGTERM, signals.SIGHUP, signals.SIGINT):
        what += " Something outside the training asked it to stop: `kill`, a job scheduler, or a system shutdown."
        title = f"Rank {c.rank} was terminated ({name})" if c.rank is not None else f"Terminated ({name})"
        steps = ["Check for schedulers or scripts that stop processes on this machine, then run the cell again."]
    else:
        title = f"Rank {c.rank} was killed by {name}" if c.rank is not None else f"Killed by {name}"
        steps = [_FAULTHANDLER, c.workers_step()]
    if host and number != signals.SIGKILL:
        what += f" Host memory at the time: {host[0][1]}."
    what += _stderr_tail(c)
    return Report("signal_killed", title, what, steps, c.failure.traceback or c.value("stderr"), facts=facts)


def exited(c: Clues) -> Report | None:
    failure = c.failure
    if failure.kind == "exit":
        code = failure.exitcode
        what = f"{c.who} exited" + (f" with exit code {code}" if code is not None else "")
        what += " without raising an exception, so the other ranks were stopped." + _stderr_tail(c)
    elif c.is_exception("SystemExit"):
        code = (failure.message or "").strip() or 0
        what = f"{c.who} called `sys.exit({code})`" + (f" at {c.where}" if c.where else "")
        what += ", which ends the rank, so the other ranks were stopped."
    else:
        return None
    steps = [
        "Look for `sys.exit()`, `exit()`, `quit()` or `os._exit()` in your code or in code it calls; raise an "
        "exception instead, so its message and line are shown here.",
    ]
    if code not in (None, 0):
        steps.append("A library may have printed an error before exiting: look in the output above, or in the "
                     "terminal running Jupyter.")
    title = f"Rank {c.rank} exited early" if c.rank is not None else "A process exited early"
    return Report("rank_exited", title + (f" (exit code {code})" if code is not None else ""), what, steps,
                  failure.traceback or c.value("stderr"))


def host_oom(c: Clues) -> Report | None:
    if not (c.is_exception("MemoryError") or c.has("DefaultCPUAllocator: can't allocate memory",
                                                    "DefaultCPUAllocator: not enough memory")):
        return None
    tried = c.search(r"you tried to allocate (\d+) bytes")
    percent, facts = c.host_memory()
    what = f"{c.who} ran out of host (CPU) memory"
    if tried:
        gib = int(tried.group(1)) / 2**30
        what += f" allocating {gib:,.1f} GiB"
    what += ".\n" + c.raised()
    steps = []
    if tried and int(tried.group(1)) > 2**40:
        steps.append("That allocation is larger than any machine's memory: a shape is wrong. "
                     + (f"Check the tensor sizes at {c.place}." if c.place else "Check the tensor sizes."))
    steps += [c.workers_step(), _SHARE_DATA]
    return Report("host_oom", f"Out of host memory{c.on_rank}", what, steps, c.failure.traceback, facts=facts)


def timed_out(c: Clues) -> Report | None:
    failure = c.failure
    if failure.kind != "timeout":
        return None
    limit = failure.timeout
    limit_text = f"{limit:g} s" if isinstance(limit, (int, float)) else "the time limit"
    flag = f"`{TIMEOUT_FLAG} {limit:g}`" if isinstance(limit, (int, float)) else f"`{TIMEOUT_FLAG}`"
    frame = innermost_user_frame(rank_stack(failure.traceback, c.rank))
    if c.rank is not None:
        if frame is not None:
            filename, lineno, source, function = frame
            place = describe_frame((filename, lineno, source))
            inside = f" (in `{function}`)" if function and function != "<module>" else ""
            what = f"Rank {c.rank} is stuck at {place}{inside}."
        else:
            what = f"Rank {c.rank} stopped making progress."
        what += (f" After {limit_text} ({flag}) without progress the run was ended and every "
                 "rank stopped; the other ranks were waiting for it.")
        title = f"Timed out: rank {c.rank} stalled"
    else:
        what = f"The run did not finish within {limit_text} ({flag}); every rank was stopped."
        title = "Timed out"
    steps = [
        "A stalled rank is usually waiting in a collective (all-reduce, barrier) that another rank never reached: "
        "make every rank run the same steps. No `self.log(..., sync_dist=True)`, `self.all_gather` or "
        "`barrier()` inside `if self.global_rank == 0:`, and the same number of batches on every rank.",
        "DataLoader workers can deadlock after a fork: try `num_workers=0`"
        + (f" (now {c.number('num_workers')})." if c.number("num_workers") else "."),
    ]
    if not c.on_cpu:
        steps.append("On GPUs without peer-to-peer support (many consumer cards) NCCL can hang: run "
                     "`%env NCCL_P2P_DISABLE=1`. " + _NCCL_DEBUG)
    if isinstance(limit, (int, float)):
        steps.append(f"If the work is just slow (first-step compilation, a long validation, a large checkpoint), "
                     f"allow more time: `{TIMEOUT_FLAG} {max(limit * 2, 60):g}`.")
    stacks = name_cells(failure.traceback) if failure.traceback else None
    return Report("timeout", title, what, steps, stacks, facts=c.gpu_facts(),
                  traceback_label="Stacks of every rank")


def interrupted(c: Clues) -> Report | None:
    if c.failure.kind != "interrupt":
        return None
    stage = c.value("stage") or "fit"
    if stage != "fit":  # validate, test, predict: nothing to continue from
        doing = STOPPED.get(stage, "The run")
        return Report("interrupted", f"{doing} stopped",
                      f"{doing} was stopped, as asked; every rank was stopped with it.",
                      ["Run the cell again to start it over.",
                       "Your variables and the model's weights are intact: no restart is needed."],
                      None, tone="notice")
    what = "Training was stopped, as asked; every rank was stopped with it."
    checkpoint, earlier = c.value("ckpt_path"), c.value("ckpt_earlier")
    error = c.value("ckpt_error")
    if error:
        what += f" The state at that moment could not be saved ({error}); nothing was written."
    if checkpoint:
        what += f" The state at that moment was saved to {checkpoint}."
        steps = [f"Continue from there: run the cell again with `{RESUME_FLAG} last`."]
    elif earlier:
        what += f" The last checkpoint, {earlier}, is from before the stop."
        steps = [f"Continue from it: run the cell again with `{RESUME_FLAG} last`."]
    elif error or c.value("ckpt_dir"):
        steps = ["Run the cell again to start over: no checkpoint of this run exists to continue "
                 "from." + (" Free some space first." if "space" in str(error).lower() else "")]
    else:
        steps = [f"Run the cell again with `{RESUME_FLAG} last` to continue from the last checkpoint, or without "
                 "it to start over."]
    steps.append("Your variables and the model's weights up to that step are intact: no restart is needed.")
    return Report("interrupted", "Training stopped", what, steps, None, tone="notice")


def openmp_fork(c: Clues) -> Report | None:
    if not c.has("Invalid thread pool", "OMP: Error #", "libgomp: Thread creation"):
        return None
    number = signal_number(c)
    if number is not None or c.failure.kind == "exit":
        ended = f"was killed by {signal_name(number)}" if number is not None else "exited"
        happened = f"{c.who} {ended}." + _stderr_tail(c)
    else:
        happened = c.raised()
    traceback = c.failure.traceback or c.value("stderr")
    if c.has("OMP: Error #15"):
        what = (happened + "\nTwo different OpenMP runtimes were loaded into the rank (for example Intel's "
                "libiomp5 and GNU libgomp).")
        steps = ["Install numpy, torch and the libraries around them from one source (all pip, or all conda) so "
                 "a single OpenMP runtime is loaded; importing torch before other numeric libraries can also help."]
        return Report("openmp_fork", f"Conflicting OpenMP runtimes{c.on_rank}", what, steps, traceback)
    threads = max(1, (os.cpu_count() or 1) // c.world_size)
    what = (
        happened + "\nThe rank could not use the CPU thread pool it inherited from the kernel: the kernel had "
        "already run multi-threaded CPU work (for example a test forward pass, or `torch.set_num_threads`) before "
        "the ranks were forked, and thread pools do not survive a fork."
    )
    steps = [
        f"Fix the thread count before training so the ranks keep it: run `%env OMP_NUM_THREADS={threads}` "
        "(CPU cores ÷ ranks), then run the cell again; no kernel restart is needed.",
        "Avoid running the model on the CPU in cells before training, or run such checks inside the training cell.",
    ]
    return Report("openmp_fork", f"Thread pool broken by fork{c.on_rank}", what, steps, traceback)
