"""The IPython magics: ``%%lightning_train`` and ``%gpu_status``. Thin: parse, call, show."""

from __future__ import annotations

import os
from typing import Any, Optional

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from . import flags as flag_parser


class _Shown:
    """Shows a suggestions Report as HTML in notebooks and as text in a terminal."""

    def __init__(self, report: Any) -> None:
        self.report = report

    def _repr_html_(self) -> str:
        return self.report.html()

    def __repr__(self) -> str:
        return self.report.text()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.report.text())


@magics_class
class LightningMagics(Magics):
    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        from .cuda_watch import CudaWatch

        self.cuda_watch = CudaWatch(shell)

    def install_hooks(self) -> None:
        self.cuda_watch.register()

    def remove_hooks(self) -> None:
        self.cuda_watch.unregister()

    @cell_magic
    @flag_parser.declare
    def lightning_train(self, line: str, cell: str) -> Any:
        """Train the LightningModule this cell makes, in forked processes (ddp_notebook).

        The cell runs first, in the notebook's namespace; then its LightningModule is trained
        with the data it made, and the trained weights are back in that same model object.
        The result is a TrainingRun: the cell's value, also bound to ``lightning_run``.
        """
        from . import hardware, launch
        from .discovery import train_batch_size

        opts = flag_parser.parse(line, self.lightning_train)
        gpus, no_gpu_reason = hardware.detect_gpus()
        if opts.export is not None:  # for other machines: their GPUs, not this one's
            accelerator, count = hardware.resolve_for_export(opts.devices, opts.accelerator,
                                                             opts.precision, gpus)
            return self._export(opts, accelerator, count, cell)
        resolved = hardware.resolve(opts.devices, opts.accelerator, opts.strategy,
                                    opts.precision, gpus, no_gpu_reason)
        cwd = os.getcwd()
        resume_path = launch.check_resume(opts, cwd)

        found = self._run_cell_and_discover(cell, opts)
        batch_size = train_batch_size(found)  # may run the user's train_dataloader()
        self._refuse_if_cuda_initialized(cell)
        launch.check_before_fork(found)
        plan = launch.Plan(
            flags=opts, resolved=resolved, found=found,
            ckpt_dir=launch.choose_ckpt_dir(opts, resume_path, found.model, cwd),
            resume_path=resume_path, batch_size=batch_size, kernel_id=_kernel_id())
        for note in launch.notes_before_training(plan):
            print(note)
        run = launch.run(plan)
        self.shell.user_ns[opts.out] = run
        if not run.ok:
            from .results import TrainingFailed

            if run.report is not None:
                display(_Shown(run.report))
            raise TrainingFailed(run, opts.out)
        return run

    @line_magic
    def gpu_status(self, line: str = "") -> Any:
        """Live GPU, CPU and memory readings (NVML and psutil), the same as the sidebar panel."""
        from .status_view import GpuStatusReport

        if line.strip():
            raise UsageError(f"%gpu_status takes no arguments, got {line.strip()!r}.")
        return GpuStatusReport.collect()

    # -- steps ---------------------------------------------------------------------------------
    def _run_cell_and_discover(self, cell: str, opts: Any) -> Any:
        from .discovery import bound_by_cell, discover, namespace_snapshot

        namespace = self.shell.user_ns
        if opts.seed is not None:  # the model the cell builds starts from the same weights too
            from lightning.fabric.utilities.seed import seed_everything

            seed_everything(opts.seed, verbose=False)
        before = namespace_snapshot(namespace)
        filename = self.shell.compile.cache(cell, self.shell.execution_count)
        code = self.shell.compile(cell, filename, "exec")
        exec(code, self.shell.user_global_ns, namespace)  # noqa: S102 - the user's own cell
        found = discover(namespace, bound_by_cell(before, namespace, cell),
                         model=opts.model, data=opts.data, val_data=opts.val_data)
        return found

    def _refuse_if_cuda_initialized(self, cell: str) -> None:
        from .cuda_watch import cuda_initialized, guess

        if not cuda_initialized():
            return
        # an earlier cell, as the hooks recorded it, or else this very cell
        culprit = self.cuda_watch.culprit
        if culprit is None and self.cuda_watch.initialized_by_current_cell():
            culprit = guess(cell, set(), self.shell.execution_count)
        if culprit is None:
            where = ""
        elif culprit.cell is None:
            where = f" It happened in {culprit.reason}."
        else:
            where = f" It happened in cell [{culprit.cell}]: {culprit.reason}"
            where += f" ({culprit.source_line})." if culprit.source_line else "."
        from .suggestions import Failure, explain

        context = {"cuda_culprit": {"cell": culprit.cell, "reason": culprit.reason}} \
            if culprit is not None else {}
        display(_Shown(explain(Failure(kind="cuda_initialized", context=context))))
        raise UsageError("CUDA is already initialized in this kernel, so forked training "
                         f"processes cannot use it.{where} Restart the kernel, and keep CUDA "
                         "work (.cuda(), torch.cuda.*) out of the notebook's own cells.")

    def _export(self, opts: Any, accelerator: str, count: int, cell: str) -> Any:
        from .export import export_cell

        kwargs = dict(opts.trainer_kwargs(), accelerator=accelerator, devices=count,
                      precision=opts.precision)
        if opts.ckpt_dir:
            kwargs["default_root_dir"] = opts.ckpt_dir
        return export_cell(
            self.shell, cell, opts.export, num_nodes=opts.num_nodes,
            devices_per_node=count, accelerator=accelerator,
            trainer_kwargs=kwargs, seed=opts.seed, ckpt_dir=opts.ckpt_dir,
            model_name=opts.model, data_name=opts.data, val_data_name=opts.val_data,
            resume=opts.resume)


def _kernel_id() -> Optional[str]:
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # noqa: BLE001 - not running in a Jupyter kernel
        return None
    return name[len("kernel-"):-len(".json")] if name.startswith("kernel-") else None
