"""``HistoryRecorder``: every scalar a module logs, by step, epoch and validation run, as the
rows of ``TrainingRun.history``."""

from __future__ import annotations

from typing import Any, Mapping

import torch
from lightning.pytorch.callbacks import Callback


def scalar_metrics(metrics: Mapping[str, Any]) -> dict[str, float]:
    """The logged metrics that are single numbers (tensors or not), as Python floats."""
    scalars = {}
    for name, value in metrics.items():
        try:
            scalars[name] = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError, RuntimeError):
            continue
    return scalars


class HistoryRecorder(Callback):
    """Records every scalar the module logs, at the step it belongs to: one ``train`` row per
    training batch (the values logged on step), one ``validation`` row per validation run (its
    epoch values) and one ``epoch`` row per training epoch (the training values logged on
    epoch), each with the epoch and the global step.

    A training batch's values stay tensors, on their device, until ``rows`` is read or every
    ``flush_every`` batches, when they become floats together: one device sync for many steps,
    instead of one ``.item()`` per value per step (and no recomputation of
    ``trainer.callback_metrics`` per step)."""

    flush_every = 256

    def __init__(self) -> None:
        self._rows: list[dict[str, Any]] = []
        self._pending: list[tuple[int, int, dict[str, Any]]] = []  # (epoch, step, tensors)
        self._logged = StepValues()
        self._training: Any = None  # the training loop's logged values, and its epoch
        self._epoch = 0

    @property
    def rows(self) -> list[dict[str, Any]]:
        self._flush()
        return self._rows

    def _record(self, trainer: Any, stage: str) -> None:
        """A row of the values logged on epoch (a validation run's, a training epoch's)."""
        self._flush()
        metrics = scalar_metrics(trainer.callback_metrics)
        row = {}
        for name in _epoch_names(trainer):
            if name in metrics:
                row[name] = metrics[name]
        if row:
            self._rows.append({"stage": stage, "epoch": trainer.current_epoch,
                               "step": trainer.global_step, **row})

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        # what trainer._results gives in a training batch (the training loop's, while training),
        # looked up once, not at every step
        self._training = getattr(trainer, "_results", None)

    def on_train_epoch_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._epoch = trainer.current_epoch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        values = self._logged.of(self._training)
        if values:
            self._pending.append((self._epoch, trainer.global_step, values))
            if len(self._pending) >= self.flush_every:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        pending = [(epoch, step, {name: value for name, value in values.items() if _scalar(value)})
                   for epoch, step, values in pending]
        numbers = iter(_as_floats([value for _, _, values in pending for value in values.values()]))
        for epoch, step, values in pending:
            if values:
                self._rows.append({"stage": "train", "epoch": epoch, "step": step,
                                   **{name: next(numbers) for name in values}})

    def on_validation_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        if not trainer.sanity_checking:
            self._record(trainer, "validation")

    def on_train_epoch_end(self, trainer, pl_module) -> None:  # noqa: ANN001
        self._record(trainer, "epoch")


class StepValues:
    """The values logged on this training step, by the name ``callback_metrics`` gives them
    (``name_step`` for a value logged on step and on epoch), as Lightning keeps them: tensors
    never read back from their device here, detached where they were logged with their graph.

    Which of the run's logged values are logged on step, and their names, are worked out again
    only when the set of logged values changes, not at every step: a tiny CPU step pays for
    every lookup. Whether each is a one-element tensor is left to the reader (``_scalar``)."""

    def __init__(self) -> None:
        self._results: Any = None
        self._size = -1
        self._on_step: list[tuple[Any, str, bool]] = []  # (metric, name, logged with its graph)

    def of(self, results: Any) -> dict[str, Any]:
        """The values logged on this step in ``results``, a loop's ``_ResultCollection``."""
        if results is None:
            return {}
        if results is not self._results or len(results) != self._size:
            self._results, self._size = results, len(results)
            self._on_step = [(metric, results._forked_name(metric, True)[1],
                              metric.meta.enable_graph)
                             for metric in results.values() if metric.meta.on_step]
        index = results.dataloader_idx
        values = {}
        for metric, name, graph in self._on_step:
            if not metric.has_reset and metric.meta.dataloader_idx == index:
                cache = metric._forward_cache
                values[name] = cache.detach() if graph and cache is not None else cache
        return values


def _scalar(value: Any) -> bool:
    return isinstance(value, torch.Tensor) and value.numel() == 1


def _as_floats(tensors: list[Any]) -> list[float]:
    """The one-element tensors as floats, each accelerator's read back at once (the CPU's, and a
    tensor subclass such as a tensor-parallel run's DTensor, one by one, as ``.item()`` reads
    them)."""
    floats = [0.0] * len(tensors)
    by_device: dict[Any, list[int]] = {}
    for index, tensor in enumerate(tensors):
        if type(tensor) is torch.Tensor and not tensor.is_cpu:
            by_device.setdefault(tensor.device, []).append(index)
        else:  # on the CPU .item() waits for nothing, and costs less than a stack's ops
            floats[index] = float(tensor.item())
    for indices in by_device.values():
        stacked = torch.stack([tensors[i].reshape(()).double() for i in indices])
        for index, number in zip(indices, stacked.cpu().tolist()):
            floats[index] = number
    return floats


def _epoch_names(trainer: Any) -> list[str]:
    """The names in ``callback_metrics`` of the running loop's values logged on epoch (a value
    logged on step too is there under its own name as well as ``name_epoch``)."""
    names = []
    for result in getattr(trainer, "_results", {}).values():
        meta = getattr(result, "meta", None)
        if meta is not None and meta.on_epoch is not False:
            names.append(meta.name)
    return list(dict.fromkeys(names))
