"""The Lightning callbacks the magic adds to a run, active in every rank: history (``history``),
events for the kernel, the heartbeat and stop protocol of ``RunControl``, the non-finite-loss
guard, and the run's own ``last.ckpt`` (written atomically, beside whatever checkpoints the user
asked for).

Each takes the run's ``link``: an object whose ``control`` is the ``RunControl`` of the launch in
progress (made by the kernel just before the fork, so every rank sees its own launch's)."""

from __future__ import annotations

import math
import time
from typing import Any, Optional

from lightning.pytorch.callbacks import Callback, Checkpoint

from .history import HistoryRecorder, scalar_metrics
from .hooks import RunCallbacks, skip_idle_batch_hooks
from .saving import save_atomically, short_error


class NonFiniteLoss(FloatingPointError):
    """The training loss became NaN or infinite."""


class StopRequested(Exception):
    """Raised in every rank at the same step when the kernel asked the run to stop."""


class RunSupervisor(Callback):
    """Heartbeat for the stall watchdog, and a stop that every rank takes at the same batch.

    On a stop request every rank stops after the same training batch (see ``RunControl``),
    writes a checkpoint together with the others to ``stop_checkpoint``, and raises
    ``StopRequested``. No collective is added to the training step.
    """

    def __init__(self, link: Any, check: bool = False) -> None:
        self.link = link
        self.check = check
        self.check_results: dict[str, Any] = {}
        self.stop_saved: Optional[str] = None   # the stop checkpoint, once written
        self.stop_error: Optional[str] = None   # why it could not be written
        self._batches = 0
        self._loss_every = 1
        self._batch_done: Any = None  # RunControl.batch_counter, once in the rank

    def setup(self, trainer, pl_module, stage) -> None:  # noqa: ANN001
        self.control.beat(trainer.global_rank)

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        # Reading the loss on a GPU waits for it; look every 50 batches there, every batch on CPU
        # (and with --check, which reports it).
        cpu = trainer.strategy.root_device.type == "cpu"
        self._loss_every = 1 if cpu or self.check else 50
        if self.check:
            self.check_results = _check_collectives(trainer)

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        # what every batch needs, looked up once: a tiny CPU step pays for each lookup
        self._batch_done = self.control.batch_counter(trainer.global_rank)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        # a finished batch is the watchdog's heartbeat too (RunControl.last_sign)
        self._batches += 1
        if self._batches % self._loss_every == 0:
            loss = _loss_of(outputs)
            if loss is not None and not math.isfinite(loss):
                raise NonFiniteLoss(f"the training loss is {loss} at step {trainer.global_step} "
                                    f"(epoch {trainer.current_epoch}, batch {batch_idx})")
            if self.check and loss is not None:
                self.check_results["loss"] = loss
        if self._batch_done():
            self._save_stop_checkpoint(trainer)
            raise StopRequested(f"stopped at step {trainer.global_step}")

    @property
    def control(self) -> Any:
        return self.link.control

    @property
    def batches(self) -> int:
        """The training batches this rank finished in the launch."""
        return self._batches

    @property
    def stop_checkpoint(self) -> Optional[str]:
        """The run's ``last.ckpt`` (its folder is settled just before the fork), if it keeps one."""
        return self.link.last_checkpoint()

    def _save_stop_checkpoint(self, trainer: Any) -> None:
        """The state at the stop, or why it could not be saved (the run says which)."""
        if self.stop_checkpoint is None or not trainer.training:
            return
        try:
            save_atomically(trainer, self.stop_checkpoint)
            self.stop_saved = self.stop_checkpoint
        except Exception as error:  # noqa: BLE001 - a full disk, a file too large (torch.save
            self.stop_error = short_error(error)  # says RuntimeError): said, never hidden

    def on_validation_batch_end(self, trainer, *args: Any, **kwargs: Any) -> None:  # noqa: ANN001
        _evaluation_batch_done(self.control, trainer)

    def on_test_batch_end(self, trainer, *args: Any, **kwargs: Any) -> None:  # noqa: ANN001
        _evaluation_batch_done(self.control, trainer)

    def on_predict_batch_end(self, trainer, *args: Any, **kwargs: Any) -> None:  # noqa: ANN001
        _evaluation_batch_done(self.control, trainer)


def _evaluation_batch_done(control: Any, trainer: Any) -> None:
    """A stop during validation (or the sanity check), test or predict is taken at the same batch
    by every rank; no checkpoint is written in the middle of such a loop."""
    control.beat(trainer.global_rank)
    if control.batch_done(trainer.global_rank):
        raise StopRequested(f"stopped during validation at step {trainer.global_step}")


def _loss_of(outputs: Any) -> Optional[float]:
    loss = outputs.get("loss") if type(outputs) is dict else outputs
    try:
        value = loss.item()  # a one-element tensor's number
    except (AttributeError, RuntimeError, ValueError):
        return None  # manual optimization may return anything
    return value if type(value) is float else None  # only a float can be non-finite


def _check_collectives(trainer: Any) -> dict[str, Any]:
    """One all-reduce across the ranks, for ``--check``."""
    import torch

    strategy = trainer.strategy
    tensor = torch.ones(1, device=strategy.root_device)
    total = strategy.reduce(tensor, reduce_op="sum")
    return {"all_reduce": float(total.item()), "world_size": trainer.world_size,
            "backend": getattr(strategy, "_process_group_backend", None)}


class EventReporter(Callback):
    """Rank 0 sends progress events to the kernel (at most every ``min_interval`` seconds)."""

    def __init__(self, link: Any, min_interval: float = 0.1) -> None:
        self.link = link
        self.min_interval = min_interval
        self._last_sent = 0.0
        self._samples = 0
        self._replicas = 1
        self._leader = False

    def _send(self, trainer: Any, event: dict[str, Any]) -> None:
        if trainer.global_rank != 0:
            return
        event["time"] = time.time()
        try:
            self.link.control.progress_writer.send(event)
        except (OSError, ValueError):  # the kernel stopped listening; training goes on
            pass

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        total = trainer.num_training_batches
        self._replicas, self._leader = data_replicas(trainer), trainer.global_rank == 0
        self._send(trainer, {
            "kind": "start", "max_epochs": trainer.max_epochs,
            "max_steps": trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None,
            "total_batches": total if isinstance(total, int) else None,
            "world_size": trainer.world_size, "replicas": self._replicas,
            "step": trainer.global_step,
            "epoch": trainer.current_epoch, "batch_size": _loader_batch_size(trainer),
            "num_workers": getattr(trainer.train_dataloader, "num_workers", None),
            "threads": torch_threads()})

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        if not self._leader:
            return
        self._samples += _batch_length(batch) * self._replicas
        now = time.monotonic()
        if now - self._last_sent < self.min_interval:
            return
        self._last_sent = now
        self._send(trainer, {"kind": "step", "epoch": trainer.current_epoch,
                             "step": trainer.global_step, "batch": batch_idx,
                             "samples": self._samples, "metrics": scalar_metrics(trainer.callback_metrics)})

    def on_validation_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not trainer.sanity_checking:
            self._send(trainer, {"kind": "validation", "epoch": trainer.current_epoch,
                                 "step": trainer.global_step, "metrics": scalar_metrics(trainer.callback_metrics)})

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._send(trainer, {"kind": "step", "epoch": trainer.current_epoch,
                             "step": trainer.global_step, "batch": None,
                             "samples": self._samples, "metrics": scalar_metrics(trainer.callback_metrics)})
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


class LastCheckpoint(Checkpoint):
    """The run's own ``last.ckpt`` in its folder, after every training epoch and at the end of
    training: what ``--resume last`` continues from. Not a ModelCheckpoint, so a module whose
    ``configure_callbacks`` returns one does not replace it.

    It is a Lightning ``Checkpoint``, so Lightning calls its ``on_train_epoch_end`` where it calls
    ModelCheckpoint's (after the LightningModule's own hook), and it moves itself behind every
    other callback: the epoch's ModelCheckpoints have saved and updated ``best_k_models`` before
    ``last.ckpt`` records their state, as Lightning's own ``save_last=True`` does."""

    def __init__(self, link: Any) -> None:
        self.link = link
        self._saved_step: Optional[int] = None
        skip_idle_batch_hooks(self)

    @property
    def path(self) -> str:
        return self.link.last_checkpoint()

    def setup(self, trainer, pl_module, stage) -> None:  # noqa: ANN001
        # the module's configure_callbacks may have put a ModelCheckpoint behind this one; a new
        # list, so the setup loop in progress goes on over the one it took
        if trainer.callbacks[-1] is not self:
            trainer.callbacks = [cb for cb in trainer.callbacks if cb is not self] + [self]

    def _save(self, trainer: Any) -> None:
        if trainer.sanity_checking or trainer.global_step == self._saved_step:
            return
        save_atomically(trainer, self.path)
        self._saved_step = trainer.global_step

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._save(trainer)

    def on_train_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._save(trainer)


_LAST: dict[str, type] = {}


def last_checkpoint(space: Any, link: Any) -> LastCheckpoint:
    """``LastCheckpoint`` as a ``Checkpoint`` of the Trainer's own package (``pytorch_lightning``
    tells its checkpoint callbacks apart by its own class)."""
    base = space.callbacks.Checkpoint
    if isinstance(LastCheckpoint, type) and issubclass(LastCheckpoint, base):
        return LastCheckpoint(link)
    if space.__name__ not in _LAST:
        _LAST[space.__name__] = type("LastCheckpoint", (LastCheckpoint, base),
                                     {"__module__": __name__, "__qualname__": "LastCheckpoint"})
    return _LAST[space.__name__](link)


def run_callbacks(link: Any, check: bool = False) -> RunCallbacks:
    """History, events, and the heartbeat and stop protocol, as one callback (see hooks)."""
    return RunCallbacks(HistoryRecorder(), EventReporter(link), RunSupervisor(link, check=check))


MAGIC_CALLBACKS = (RunCallbacks, LastCheckpoint)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def data_replicas(trainer: Any) -> int:
    """How many ranks take different batches: the world size, except where tensor-parallel
    ranks share theirs (a ModelParallelStrategy's data-parallel size)."""
    from .sharded import mesh_shape

    return mesh_shape(trainer.strategy, trainer.world_size)[0]


def _loader_batch_size(trainer: Any) -> Optional[int]:
    loader = trainer.train_dataloader
    for candidate in (loader, getattr(loader, "batch_sampler", None)):
        size = getattr(candidate, "batch_size", None)
        if isinstance(size, int):
            return size
    return None
