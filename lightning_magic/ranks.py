"""What runs inside a forked rank: process setup, quiet logging, and the run's callbacks.

The kernel and its ranks share a small ``RunControl`` made before the fork: a stop flag the kernel
sets on interrupt, a heartbeat per rank for the stall watchdog, and a folder where each rank can
dump its Python stack when asked (SIGUSR1). Nothing here runs in the kernel except construction.
"""

from __future__ import annotations

import ctypes
import faulthandler
import logging
import math
import multiprocessing as mp
import os
import signal
import time
import warnings
from typing import Any, Optional

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # pragma: no cover - lightning is a dependency
    Callback = object  # type: ignore[misc,assignment]

PR_SET_PDEATHSIG = 1


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


class StopRequested(Exception):
    """Raised in every rank at the same step when the kernel asked the run to stop."""


class RunControl:
    """Shared state between the kernel and its forked ranks (made before the fork)."""

    def __init__(self, world_size: int, stack_dir: str) -> None:
        ctx = mp.get_context("fork")
        self.world_size = world_size
        self.heartbeat = ctx.Array("d", [time.monotonic()] * world_size, lock=False)
        self.steps = ctx.Array("q", [0] * world_size, lock=False)
        # A stop is agreed through shared memory, not a collective: the kernel sets the batch
        # at which every rank stops to one past the furthest rank, under the same lock the ranks
        # take to record their progress, so no rank can already be past it.
        self._lock = ctx.Lock()
        self._batches = ctx.Array("q", [0] * world_size, lock=False)
        self._stop_at = ctx.Value("q", 0, lock=False)
        self.stack_dir = stack_dir
        # rank 0 -> kernel: progress events for the live view (see ProgressReporter)
        self.progress_reader, self.progress_writer = ctx.Pipe(duplex=False)

    def request_stop(self) -> None:
        with self._lock:
            if self._stop_at.value == 0:
                self._stop_at.value = max(self._batches) + 1

    def stop_requested(self) -> bool:
        return self._stop_at.value != 0

    def reset_stop(self) -> None:
        with self._lock:
            self._stop_at.value = 0
            for rank in range(self.world_size):
                self._batches[rank] = 0

    def batch_done(self, rank: int) -> bool:
        """Record one more finished training batch; True when this rank must stop now."""
        with self._lock:
            done = self._batches[rank] + 1
            self._batches[rank] = done
            stop_at = self._stop_at.value
        return stop_at != 0 and done >= stop_at

    def beat(self, rank: int, step: Optional[int] = None) -> None:
        self.heartbeat[rank] = time.monotonic()
        if step is not None:
            self.steps[rank] = step

    def stack_file(self, rank: int) -> str:
        return os.path.join(self.stack_dir, f"rank-{rank}.stack")

    def output_file(self, rank: int) -> str:
        return os.path.join(self.stack_dir, f"rank-{rank}.out")

    def crash_file(self, rank: int) -> str:
        return os.path.join(self.stack_dir, f"rank-{rank}.crash")

    def output_tail(self, rank: int, lines: int = 20) -> str:
        """The last lines a rank other than 0 wrote (its stdout and stderr go to a file)."""
        return _tail(self.output_file(rank), lines)

    def crash_stack(self, rank: int) -> str:
        """The Python stack faulthandler wrote when the rank crashed (SIGSEGV, SIGABRT, ...)."""
        return _tail(self.crash_file(rank), 200)


def _tail(path: str, lines: int) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "".join(handle.readlines()[-lines:])
    except OSError:
        return ""


def prepare_rank_process(rank: int, control: RunControl, env: dict[str, str]) -> None:
    """First thing a rank does after fork: die with the kernel, own its process group, stay quiet."""
    _die_with_parent()
    os.setpgid(0, 0)  # the rank and its DataLoader workers form one group the kernel can kill
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the kernel turns an interrupt into a stop request
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.update(env)
    stack_file = open(control.stack_file(rank), "w")  # noqa: SIM115 - lives as long as the rank
    faulthandler.register(signal.SIGUSR1, file=stack_file, all_threads=False)
    if rank != 0:
        _capture_output(control.output_file(rank))
    # a rank that crashes (SIGSEGV, SIGABRT) leaves its Python stack for the failure report
    crash_file = open(control.crash_file(rank), "w")  # noqa: SIM115 - lives as long as the rank
    faulthandler.enable(file=crash_file, all_threads=False)
    quiet_lightning_logs()


def _capture_output(path: str) -> None:
    """Ranks other than 0 write to a file (kept for the failure report), not to the cell."""
    import sys

    handle = open(path, "w", buffering=1)  # noqa: SIM115 - lives as long as the rank
    for fd in (1, 2):
        try:
            os.dup2(handle.fileno(), fd)
        except OSError:
            pass
    sys.stdout = sys.stderr = handle


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
    for name in names + ["lightning.pytorch", "lightning.fabric"]:
        logger = logging.getLogger(name)
        previous[name] = logger.level
        if logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)
    return previous


def restore_logs(previous: dict[str, int]) -> None:
    for name, level in previous.items():
        logging.getLogger(name).setLevel(level)


class WarningCollector:
    """Keeps each distinct warning once instead of printing it from every rank."""

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._seen: set[str] = set()

    def install(self) -> None:
        warnings.showwarning = self._show  # type: ignore[assignment]

    def _show(self, message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
        text = f"{category.__name__}: {message}"
        if text not in self._seen:
            self._seen.add(text)
            self.messages.append(text)


def _to_float(value: Any) -> Optional[float]:
    try:
        number = float(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError, RuntimeError):
        return None
    return number


class HistoryRecorder(Callback):
    """Records every logged scalar when it changes, with the step and epoch it belongs to."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []
        self._last: dict[str, float] = {}

    def _record(self, trainer: Any, stage: str) -> None:
        changed = {}
        for name, value in trainer.callback_metrics.items():
            number = _to_float(value)
            if number is None:
                continue
            previous = self._last.get(name)
            if previous is None or not (number == previous or (math.isnan(number) and math.isnan(previous))):
                changed[name] = number
                self._last[name] = number
        if changed:
            self.rows.append({"stage": stage, "epoch": trainer.current_epoch,
                              "step": trainer.global_step, **changed})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self._record(trainer, "train")

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not trainer.sanity_checking:
            self._record(trainer, "validation")

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._record(trainer, "epoch")


class RunSupervisor(Callback):
    """Heartbeat for the stall watchdog, and a stop that every rank takes at the same batch.

    On a stop request every rank stops after the same training batch (see ``RunControl``),
    writes a checkpoint together with the others to ``stop_checkpoint``, and raises
    ``StopRequested``. No collective is added to the training step.
    """

    def __init__(self, control: RunControl, stop_checkpoint: str, check: bool = False) -> None:
        self.control = control
        self.stop_checkpoint = stop_checkpoint
        self.check = check
        self.check_results: dict[str, Any] = {}
        self.stopped = False
        self._batches = 0

    def setup(self, trainer, pl_module, stage) -> None:  # noqa: ANN001
        self.control.beat(trainer.global_rank)

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        if self.check:
            self.check_results = _check_collectives(trainer)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        self.control.beat(trainer.global_rank, trainer.global_step)
        self._batches += 1
        # Reading the loss on a GPU waits for it; look every 50 batches there, every batch on CPU.
        every = 1 if trainer.strategy.root_device.type == "cpu" else 50
        if self._batches % every == 0 or self.check:
            loss = _loss_of(outputs)
            if loss is not None and not math.isfinite(loss):
                raise NonFiniteLoss(f"the training loss is {loss} at step {trainer.global_step} "
                                    f"(epoch {trainer.current_epoch}, batch {batch_idx})")
            if self.check and loss is not None:
                self.check_results["loss"] = loss
        if self.control.batch_done(trainer.global_rank):
            trainer.save_checkpoint(self.stop_checkpoint)
            self.stopped = True
            raise StopRequested(f"stopped at step {trainer.global_step}")

    def on_validation_batch_end(self, trainer, *args: Any, **kwargs: Any) -> None:  # noqa: ANN001
        self.control.beat(trainer.global_rank)

    def on_train_batch_start(self, trainer, *args: Any, **kwargs: Any) -> None:  # noqa: ANN001
        self.control.beat(trainer.global_rank)


def _loss_of(outputs: Any) -> Optional[float]:
    loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
    if loss is None or not hasattr(loss, "detach"):
        return None
    return float(loss.detach().float().item())


def _check_collectives(trainer: Any) -> dict[str, Any]:
    """One all-reduce across the ranks, for ``--check``."""
    import torch

    strategy = trainer.strategy
    tensor = torch.ones(1, device=strategy.root_device)
    total = strategy.reduce(tensor, reduce_op="sum")
    return {"all_reduce": float(total.item()), "world_size": trainer.world_size,
            "backend": getattr(strategy, "_process_group_backend", None)}


class ProgressReporter(Callback):
    """Rank 0 sends progress events to the kernel (at most every ``min_interval`` seconds)."""

    def __init__(self, control: RunControl, min_interval: float = 0.1) -> None:
        self.control = control
        self.min_interval = min_interval
        self._last_sent = 0.0
        self._samples = 0

    def _send(self, trainer: Any, event: dict[str, Any]) -> None:
        if trainer.global_rank != 0:
            return
        event["time"] = time.time()
        try:
            self.control.progress_writer.send(event)
        except (OSError, ValueError):  # the kernel stopped listening; training goes on
            pass

    @staticmethod
    def _metrics(trainer: Any) -> dict[str, float]:
        metrics = {}
        for name, value in trainer.callback_metrics.items():
            number = _to_float(value)
            if number is not None:
                metrics[name] = number
        return metrics

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        total = trainer.num_training_batches
        self._send(trainer, {
            "kind": "start", "max_epochs": trainer.max_epochs,
            "max_steps": trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None,
            "total_batches": total if isinstance(total, int) else None,
            "world_size": trainer.world_size, "step": trainer.global_step,
            "epoch": trainer.current_epoch})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if trainer.global_rank != 0:
            return
        self._samples += _batch_length(batch) * trainer.world_size
        now = time.monotonic()
        if now - self._last_sent < self.min_interval:
            return
        self._last_sent = now
        self._send(trainer, {"kind": "step", "epoch": trainer.current_epoch,
                             "step": trainer.global_step, "batch": batch_idx,
                             "samples": self._samples, "metrics": self._metrics(trainer)})

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not trainer.sanity_checking:
            self._send(trainer, {"kind": "validation", "epoch": trainer.current_epoch,
                                 "step": trainer.global_step, "metrics": self._metrics(trainer)})

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._send(trainer, {"kind": "step", "epoch": trainer.current_epoch,
                             "step": trainer.global_step, "batch": None,
                             "samples": self._samples, "metrics": self._metrics(trainer)})
        self._send(trainer, {"kind": "end"})


def _batch_length(batch: Any) -> int:
    first = batch
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    if isinstance(first, dict) and first:
        first = next(iter(first.values()))
    shape = getattr(first, "shape", None)
    if shape:
        return int(shape[0])
    try:
        return len(first)
    except TypeError:
        return 1
