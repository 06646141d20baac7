"""The IPython magics: ``%%lightning_train``, ``%%lightning_sweep`` and ``%gpu_status``. Thin:
parse, prepare, run, show."""

from __future__ import annotations

import os
from typing import Any, Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from .options import flags as flag_parser
from .sweep import flags as sweep_flags


@magics_class
class LightningMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        from .train.kernel.cuda_watch import CudaWatch

        self.cuda_watch = CudaWatch(shell)

    def install_hooks(self) -> None:
        from . import background

        from .train.returns.results import show_stops

        self.cuda_watch.register()
        background.install(self.shell)
        self._restore_exceptions = show_stops(self.shell)

    def remove_hooks(self) -> None:
        from . import background

        self.cuda_watch.unregister()
        background.uninstall(self.shell)
        restore = getattr(self, "_restore_exceptions", None)
        if restore is not None:
            restore()
            self._restore_exceptions = None

    @cell_magic
    @flag_parser.declare
    def lightning_train(self, line: str, cell: str) -> Any:
        """Run a Lightning training cell as written, its training in forked processes.

        The cell runs in the notebook's namespace. A Trainer it makes keeps every argument it
        was given; its hardware comes from these flags (else the Trainer's own arguments, else
        auto), and its fit, validate, test and predict run in forked ranks and return what
        Lightning returns. A cell that calls no Trainer method trains the LightningModule and
        data it made. The trained weights are back in the cell's model; after a fit the cell's
        value is a TrainingRun, also bound to ``lightning_run`` (``--out``).

        Examples
        --------
        A tutorial-style cell, on two GPUs (or ``--accelerator cpu --devices 2``)::

            %%lightning_train --devices 2 --precision bf16-mixed
            model = LitClassifier()
            dm = MNISTDataModule(batch_size=64)
            trainer = pl.Trainer(max_epochs=3, callbacks=[EarlyStopping("val_loss")])
            trainer.fit(model, datamodule=dm)
            trainer.test(model, datamodule=dm, ckpt_path="best")

        A cell that only makes a model and its data::

            %%lightning_train --devices 2 --max-epochs 3 --monitor val_loss
            model = LitClassifier()
            train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
            val_loader = DataLoader(val_set, batch_size=128)
        """
        __tracebackhide__ = True  # an error in the cell's code starts at the cell
        from . import train
        from .train.kernel.guards import Refused

        opts = flag_parser.parse(line, self.lightning_train)
        if opts.export is not None:
            return self._export(opts, cell)
        try:
            plan = train.prepare(opts, self.shell, cell, self.cuda_watch, kernel_id=_kernel_id())
        except Refused as refused:
            display(refused.report)
            raise
        if opts.background:
            from .background.runner import run_cell

            return run_cell(plan, self.shell)
        from .background import RUNS
        from .background.leases import foreground_claim

        plan.claim = foreground_claim(RUNS)
        result = train.run(plan)
        run = result.run
        if run is not None:
            self.shell.user_ns[opts.out] = run
            if not run.ok:
                from .train.returns.results import ending

                if run.report is not None:
                    display(run.report)
                raise ending(run, opts.out)
        return result.value

    @cell_magic
    @sweep_flags.declare
    def lightning_sweep(self, line: str, cell: str) -> Any:
        """Optuna trials of a Lightning cell, each on its own devices, as many at once as they
        allow; every rank of a trial has the same parameters.

        The cell reads its hyperparameters from ``trial`` (an ``optuna.Trial``); each trial
        runs it as ``%%lightning_train`` would, and is scored by ``--metric`` at the end of its
        fit. Other ``%%lightning_train`` flags (``--max-epochs 3``) apply to every trial. The
        cell's value is a ``Sweep``, also bound to ``lightning_sweep``: ``.study``,
        ``.trials``, ``.best`` (the best trial's TrainingRun), ``.dataframe()``; the names the
        best trial's cell bound (its model, trained) are bound again. With ``--background``
        the cell returns at once with a ``SweepRun`` (``wait()``, ``done()``, ``stop()``,
        ``status``), and those names are bound between cells or at ``wait()``.

        Example::

            %%lightning_sweep --trials 20 --metric val_loss --max-epochs 3
            model = LitClassifier(lr=trial.suggest_float("lr", 1e-4, 1e-1, log=True))
            trainer = pl.Trainer()
            trainer.fit(model, train_loader, val_loader)
        """
        from .sweep import Context, run_sweep

        flags = sweep_flags.parse(line, self.lightning_sweep, self.lightning_train)
        return run_sweep(Context(flags=flags, shell=self.shell, cell=cell,
                                 cuda_watch=self.cuda_watch, train_func=self.lightning_train,
                                 kernel_id=_kernel_id()))

    @line_magic
    @magic_arguments()
    @argument("--attach", metavar="ID", help="Redraw that run's live view here from its journal "
              "and follow it (the start of an id is enough): a run of this kernel, or one found "
              "on disk, e.g. from before a restart; its handle is the value.")
    def lightning_runs(self, line: str = "") -> Any:
        """This kernel's background runs (id, model, call, status, progress, devices, cell), and
        those still running on disk (another kernel's, or a detached run from before a restart), and
        a detached run that failed after its kernel went, until a kernel has read its end."""
        from .background import RUNS
        from .background.attach import running_elsewhere
        from .background.listing import RunList

        args = parse_argstring(self.lightning_runs, line)
        if args.attach is not None:
            return attach_run(args.attach)
        return RunList(RUNS.all + running_elsewhere())

    @line_magic
    def lightning_stop(self, line: str = "") -> Any:
        """``%lightning_stop ID`` (or the start of it) or ``%lightning_stop all``: the stop
        button of those background runs (of this kernel; by ID, a detached one found on disk
        too); returns once every rank of them is gone."""
        from .background import RUNS
        from .background.listing import RunList

        ident = line.strip()
        if not ident:
            raise UsageError("%lightning_stop needs a run id (%lightning_runs lists them) or "
                             "'all'.")
        try:
            runs = RUNS.running() if ident == "all" else [RUNS.find(ident)]
        except UsageError:  # a detached run from before a restart, say
            from .background.attach import on_disk

            runs = [on_disk(ident, show=False)]
        for run in runs:
            run.stop(wait=False)
        for run in runs:
            run.join(when="at %lightning_stop")  # the note says where the results came back
        return RunList(runs)

    @line_magic
    def gpu_status(self, line: str = "") -> Any:
        """Live GPU, CPU and memory readings (NVML and psutil), the same as the sidebar panel."""
        from .readings import snapshot
        from .view.gpu_status import GpuStatusReport

        if line.strip():
            raise UsageError(f"%gpu_status takes no arguments, got {line.strip()!r}.")
        return GpuStatusReport(snapshot())

    def _export(self, opts: Any, cell: str) -> Any:
        """For other machines: their GPUs, not this one's."""
        from .options import hardware
        from .export import export_cell

        gpus, _ = hardware.detect_gpus()
        given = opts.hardware_given()
        accelerator, count = hardware.resolve_for_export(given.get("devices"),
                                                         given.get("accelerator"),
                                                         given.get("precision"), gpus)
        return export_cell(self.shell, cell, opts, accelerator, count)


def attach_run(run_id: str) -> Any:
    """``lightning_magic.attach``: see ``background.attach``."""
    from .background.attach import attach

    return attach(run_id)


def _kernel_id() -> Optional[str]:
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # noqa: BLE001 - not running in a Jupyter kernel
        return None
    return name[len("kernel-"):-len(".json")] if name.startswith("kernel-") else None
