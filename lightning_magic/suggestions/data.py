"""Failures while loading data: DataLoader workers, shared memory (/dev/shm), file descriptors."""

from __future__ import annotations

import signal as signals

from .clues import Clues
from .frames import describe_frame, user_frame_from_text
from .processes import signal_number
from .report import Report

_SHM_PATTERNS = (
    "insufficient shared memory", "unexpected bus error", "killed by signal: Bus error",
    "unable to open shared memory object", "unable to allocate shared memory", "unable to mmap",
)
_NO_SPACE = ("No space left on device", "ENOSPC")
_WORKERS_ZERO = (
    "Set `num_workers=0` on the DataLoader: the data is then loaded in the rank, and errors show up there directly."
)


def shm_exhausted(c: Clues) -> Report | None:
    bus = signal_number(c) == signals.SIGBUS
    no_space = c.has(*_NO_SPACE) and c.has("/dev/shm", "shared memory", "</torch_", "unable to write to file")
    if not (bus or no_space or c.has(*_SHM_PATTERNS)):
        return None
    total, free, facts = c.shm()
    if bus:
        what = f"{c.who} was killed by SIGBUS (bus error)."
    else:
        what = c.raised()
    what += ("\nDataLoader workers hand batches to the rank through shared memory (/dev/shm), and it ran out"
             + (f": {free / 2**20:.0f} MiB free of {total / 2**20:.0f} MiB." if total and free is not None else "."))
    steps = []
    if total is not None and total < 2**30:
        steps.append(f"/dev/shm is only {total / 2**20:.0f} MiB (Docker's default is 64 MiB): start the container "
                     "with `--shm-size=16g` (or `--ipc=host`); on Kubernetes mount an `emptyDir` with "
                     "`medium: Memory` at /dev/shm.")
    else:
        steps.append("Give /dev/shm more room: in Docker start the container with `--shm-size=16g` (or "
                     "`--ipc=host`); check it with `df -h /dev/shm`.")
    steps.append(c.workers_step() + " Each worker keeps `prefetch_factor` (default 2) batches in shared memory; "
                 "with `num_workers=0` no shared memory is used, at the cost of slower loading.")
    steps.append("Files left by crashed runs can fill it: look at `ls -la /dev/shm` and remove stale `torch_*` files.")
    title = f"Out of shared memory (/dev/shm){c.on_rank}"
    return Report("shm_exhausted", title, what, steps, c.failure.traceback or c.value("stderr"),
                  facts=facts + c.host_memory()[1])


def open_files(c: Clues) -> Report | None:
    if not c.has("Too many open files", "received 0 items of ancdata"):
        return None
    what = (c.raised() + "\nThe rank ran out of file descriptors; DataLoader workers share each batch's tensors "
            "through file descriptors by default.")
    steps = [
        "Share tensors through files instead: run `torch.multiprocessing.set_sharing_strategy(\"file_system\")` "
        "in a cell before training.",
        "Raise the limit before starting Jupyter: `ulimit -n 65536`.",
        c.workers_step(),
    ]
    return Report("open_files", f"Too many open files{c.on_rank}", what, steps, c.failure.traceback)


def dataset_error(c: Clues) -> Report | None:
    caught = c.search(r"Caught (\w+) in DataLoader worker process (\d+)")
    if not caught:
        return None
    message = c.failure.message or c.text
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    original = lines[-1] if lines else caught.group(1)
    frame = user_frame_from_text(message)
    where = describe_frame(frame) or c.where
    what = f"DataLoader worker {caught.group(2)} of {_owner(c)} raised {original}"
    what += f"\nRaised at {where}." if where else "\nIt was raised in your Dataset or `collate_fn`."
    place = describe_frame(frame, source=False) or c.place
    fix = f"Fix the error at {place}." if place else "Fix the error in your Dataset's `__getitem__` or `collate_fn`."
    steps = [fix]
    if "stack expects each tensor to be equal size" in message:
        steps.append("Samples in a batch have different shapes: resize them in the Dataset, or pad them in a "
                     "`collate_fn` (for example with `torch.nn.utils.rnn.pad_sequence`).")
    steps.append(_WORKERS_ZERO)
    title = f"Error in your dataset (DataLoader worker {caught.group(2)}){c.on_rank}"
    return Report("dataloader_worker", title, what, steps, c.failure.traceback)


def dataloader_worker(c: Clues) -> Report | None:
    killed = c.search(r"DataLoader worker \(pid (\d+)\) is killed by signal: ([^.\n]+)")
    gone = c.search(r"DataLoader worker \(pid\(?s?\)? ?([\d, ]+)\) exited unexpectedly(?: with exit code (-?\d+))?")
    timeout = c.search(r"DataLoader timed out after (\d+) seconds")
    if not (killed or gone or timeout or c.has("Pin memory thread exited unexpectedly")):
        return None
    percent, facts = c.host_memory()
    facts += c.shm()[2]
    steps = []
    if killed:
        what = f"A DataLoader worker (pid {killed.group(1)}) of {_owner(c)} was killed by signal: {killed.group(2)}."
        if killed.group(2).strip().lower() == "killed":
            what += " This is usually the Linux out-of-memory killer: the machine ran out of RAM"
            what += f" (host memory {percent:.0f}% used)." if percent is not None else "."
            steps += [c.workers_step(),
                      "Load samples lazily in `__getitem__` and keep big arrays in NumPy or memory-mapped files, "
                      "so workers share them instead of copying them."]
        else:
            what += " Native code in your Dataset (an image or file library) crashed in the worker."
            steps.append("Libraries that are not fork-safe (OpenCV, some HDF5/h5py builds) crash in forked "
                         "workers: open files inside `__getitem__`, not in `__init__`.")
    elif timeout:
        what = (f"{c.who}'s DataLoader got no batch from its workers within {timeout.group(1)} s "
                "(the DataLoader's `timeout=`).")
        steps += ["Make `__getitem__` faster, or raise the DataLoader's `timeout`.", c.workers_step()]
    else:
        what = (f"A DataLoader worker of {_owner(c)} exited unexpectedly"
                + (f" with exit code {gone.group(2)}" if gone and gone.group(2) else "") + "; its error was lost.")
        steps.append(c.workers_step())
    steps.append(_WORKERS_ZERO)
    return Report("dataloader_worker", f"DataLoader worker failed{c.on_rank}", what, steps,
                  c.failure.traceback, facts=facts)


def _owner(c: Clues) -> str:
    return f"rank {c.rank}" if c.rank is not None else "the run"


RULES = (shm_exhausted, open_files, dataset_error, dataloader_worker)
