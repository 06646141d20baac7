"""One ``%%lightning_train`` cell: ``prepare`` (every check that needs only the flags, before the
cell body runs) and ``run`` (the cell as written, its Trainer's methods in forked ranks; a cell
that calls none trains the model and data it made).

What the cell gives back: the ``TrainingRun`` of its last ``fit`` (or of the training the magic
did for it; the cell's earlier fits are on its ``earlier``), else the value of its last line, as
a plain cell would; a launch that failed is given back as its ``TrainingRun`` with the report.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from ..options.flags import TrainFlags
from .returns.results import TrainingRun


@dataclass
class Prepared:
    """What the cell's Trainers are made from."""

    flags: TrainFlags
    shell: Any
    cell: str
    cuda_watch: Any
    cwd: str
    gpus: Any
    no_gpu_reason: str = ""
    kernel_id: Optional[str] = None
    before: dict[str, int] = field(default_factory=dict)  # the namespace before the cell
    runner: Any = None  # the cell's Trainers' calls run through it (``--background``)
    claim: Any = None   # before a foreground call: waits for what a background run holds
    cpu_threads: Optional[int] = None  # torch threads of each rank (a sweep trial's share)

    @property
    def cell_number(self) -> int:
        """The ``In [N]`` of this cell, as the notebook shows it."""
        from ..source.editor import cell_number

        return cell_number(self.shell, self.cell)

    def run_name(self) -> str:
        from .kernel.build import run_name

        return run_name(self.shell.user_ns, self.before) or "run"


@dataclass
class CellResult:
    value: Any                      # the cell's value
    run: Optional[TrainingRun]      # what --out is bound to (None: no fit and no failure)


def prepare(flags: TrainFlags, shell: Any, cell: str, cuda_watch: Any,
            kernel_id: Optional[str] = None) -> Prepared:
    """Resolve the flags against this machine and check what can be checked before the cell runs
    (a ``UsageError`` names what to fix); nothing of the cell has run yet."""
    from ..options import hardware
    from .launch import checkpoints
    from .kernel.discovery import namespace_snapshot

    gpus, no_gpu_reason = hardware.detect_gpus()
    given = flags.hardware_given()
    resolved = hardware.resolve(given.get("devices"), given.get("accelerator"),
                                given.get("strategy"), given.get("precision"), gpus, no_gpu_reason)
    if resolved.accelerator == "gpu" and ("accelerator" in given or "devices" in given):
        hardware.check_torch_can_use_gpus()
    cwd = os.getcwd()
    checkpoints.check_resume(flags, cwd, cell)
    _check_logger(flags)
    return Prepared(flags=flags, shell=shell, cell=cell, cuda_watch=cuda_watch, cwd=cwd,
                    gpus=gpus, no_gpu_reason=no_gpu_reason, kernel_id=kernel_id,
                    before=namespace_snapshot(shell.user_ns))


def run(prepared: Prepared) -> CellResult:
    __tracebackhide__ = True  # an error in the cell's code starts at the cell
    from .kernel.execute import execute
    from .kernel.trainer import Intercept, RanksFailed

    flags, shell = prepared.flags, prepared.shell
    if flags.seed is not None:  # the model the cell builds starts from the same weights too
        from lightning.fabric.utilities.seed import seed_everything

        seed_everything(flags.seed, verbose=False)
    with Intercept(prepared) as intercept:
        try:
            value = execute(shell, prepared.cell)
            started = getattr(prepared.runner, "started", None)  # calls still in the background
            if not intercept.launches() and not started:
                value = _train_what_the_cell_made(prepared, intercept)
        except RanksFailed as failed:
            return CellResult(value=None, run=_with_earlier(failed.record, intercept))
    fits = [record for stage, record in intercept.launches() if stage == "fit"]
    if fits:
        return CellResult(value=fits[-1], run=_with_earlier(fits[-1], intercept))
    return CellResult(value=value, run=None)


def _with_earlier(record: TrainingRun, intercept: Any) -> TrainingRun:
    """The record bound to ``--out``, holding the cell's fits before it (its summary says so)."""
    record.earlier = [run for stage, run in intercept.launches()
                      if stage == "fit" and run is not record]
    return record


def _train_what_the_cell_made(prepared: Prepared, intercept: Any) -> TrainingRun:
    """No Trainer method was called: fit the model and data the cell made, with the Trainer it
    made (for its arguments) or one the magic makes, given the callbacks the cell bound."""
    from .kernel import guards
    from . import namespaces
    from .kernel.discovery import bound_by_cell, bound_callbacks, discover

    namespace, flags = prepared.shell.user_ns, prepared.flags
    bound = bound_by_cell(prepared.before, namespace, prepared.cell)
    found = discover(namespace, bound, model=flags.model, data=flags.data,
                     val_data=flags.val_data)
    guards.check_cuda_not_initialized(prepared.cuda_watch, prepared.cell, prepared.cell_number)
    guards.check_before_fork(found)
    by_name = bound_callbacks(bound)
    if intercept.trainers:
        trainer = intercept.trainers[-1]
        given = {id(cb) for cb in trainer.callbacks}
        unused = {name: items for name, items in by_name.items()
                  if any(id(cb) not in given for cb in items)}
        if unused:
            trainer._lightning_magic.notes.append(
                f"The cell binds {_callbacks_text(unused)}, which its Trainer was not given: "
                "they are not used. Pass them as Trainer(callbacks=...) to use them.")
    else:
        space = namespaces.of(namespaces.unwrap_compiled(found.model))
        mine = {name: items for name, items in by_name.items()
                if all(isinstance(cb, space.Callback) for cb in items)}
        callbacks = list({id(cb): cb for items in mine.values() for cb in items}.values())
        trainer = space.Trainer(callbacks=callbacks) if callbacks else space.Trainer()
        if callbacks:
            trainer._lightning_magic.notes.append(
                f"The Trainer the magic made for this cell takes its {_callbacks_text(mine)} "
                "as Trainer(callbacks=...).")
    started = trainer.fit(found.model, train_dataloaders=found.train,
                          val_dataloaders=found.val if found.datamodule is None else None,
                          datamodule=found.datamodule)
    return started if started is not None else trainer._lightning_magic.records[-1][1]


def _callbacks_text(by_name: dict[str, list[Any]]) -> str:
    """'callbacks (EarlyStopping, LearningRateMonitor)'."""
    return ", ".join(f"{name} ({', '.join(dict.fromkeys(type(cb).__name__ for cb in items))})"
                     for name, items in by_name.items())


def _check_logger(flags: TrainFlags) -> None:
    from IPython.core.error import UsageError

    if flags.logger != "tensorboard":
        return
    from importlib.util import find_spec

    if find_spec("tensorboard") is None and find_spec("tensorboardX") is None:
        raise UsageError("--logger tensorboard: neither tensorboard nor tensorboardX is "
                         "installed. Install one (pip install tensorboard), or use --logger csv.")
