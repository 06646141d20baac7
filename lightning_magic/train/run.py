"""One cell's run: ``prepare`` (the cell, its model and data, every check) and ``run`` (the
Trainer, the ranks, the ``TrainingRun``).

Everything that decides *how* ranks are started and watched lives in ``launcher``; this module
builds the Trainer for one cell, runs it, and turns what came back into a ``TrainingRun``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any, Optional

from ..flags import TrainFlags
from ..hardware import Resolved
from .discovery import Found
from .results import TrainingRun



@dataclass
class Plan:
    """Everything decided before the fork."""

    flags: TrainFlags
    resolved: Resolved
    found: Found
    ckpt_dir: str
    resume_path: Optional[str]
    batch_size: Optional[int]
    kernel_id: Optional[str] = None


def prepare(flags: TrainFlags, shell: Any, cell: str, cuda_watch: Any,
            kernel_id: Optional[str] = None) -> Plan:
    """Resolve the flags against this machine, run the cell, find its model and data, and make
    every check that can be made before the fork (a ``UsageError`` names what to fix)."""
    from .. import hardware
    from . import checkpoints, guards
    from .cell import run_cell_and_discover
    from .discovery import train_batch_size

    gpus, no_gpu_reason = hardware.detect_gpus()
    resolved = hardware.resolve(flags.devices, flags.accelerator, flags.strategy,
                                flags.precision, gpus, no_gpu_reason)
    cwd = os.getcwd()
    resume_path = checkpoints.check_resume(flags, cwd)
    found = run_cell_and_discover(shell, cell, flags)
    batch_size = train_batch_size(found)  # may run the user's train_dataloader()
    guards.check_cuda_not_initialized(cuda_watch, cell, shell.execution_count)
    guards.check_before_fork(found)
    return Plan(flags=flags, resolved=resolved, found=found,
                ckpt_dir=checkpoints.choose_ckpt_dir(flags, resume_path, found.model, cwd),
                resume_path=resume_path, batch_size=batch_size, kernel_id=kernel_id)


def notes_before_training(plan: Plan) -> list[str]:
    r = plan.resolved
    lines = [f"Training {type(plan.found.model).__name__} on {r.describe()} · checkpoints in "
             f"{plan.ckpt_dir}"]
    lines += list(r.notes)
    if plan.batch_size and r.num_processes > 1:
        effective = plan.batch_size * r.num_processes * plan.flags.accumulate_grad_batches
        accumulate = (f" x {plan.flags.accumulate_grad_batches} accumulated"
                      if plan.flags.accumulate_grad_batches > 1 else "")
        lines.append(f"Effective batch size: {effective} ({plan.batch_size} x {r.num_processes} "
                     f"processes{accumulate})")
    if plan.resume_path:
        lines.append(f"Resuming from {plan.resume_path}")
    return lines


# -- the run --------------------------------------------------------------------------------------

def run(plan: Plan) -> TrainingRun:
    """Train ``plan.found.model`` in forked ranks and return the ``TrainingRun``."""
    from .control import RunControl
    from ..view.live import LiveView
    from .events import EventPump

    flags, resolved = plan.flags, plan.resolved
    if not flags.check:
        os.makedirs(plan.ckpt_dir, exist_ok=True)
    stack_dir = tempfile.mkdtemp(prefix="lightning-magic-")
    control = RunControl(resolved.num_processes, stack_dir)
    run_id = uuid.uuid4().hex[:12]
    view = LiveView(f"{type(plan.found.model).__name__} · {resolved.describe()}",
                    mode="none" if flags.check else flags.progress,
                    world_size=resolved.num_processes)
    published = _publish(plan, run_id)
    settings = {"seed": flags.seed, "timeout": flags.timeout, "check": flags.check,
                "rank_env": {"LIGHTNING_MAGIC_RUN_ID": run_id,
                             "LIGHTNING_MAGIC_KERNEL_ID": plan.kernel_id or ""},
                "on_started": lambda pids: published and published.update(rank_pids=pids)}
    handlers = [view.update] + ([_registry_handler(published)] if published else [])
    pump = EventPump(control.progress_reader, handlers, writer=control.progress_writer,
                        gpu_indices=resolved.devices if resolved.accelerator == "gpu" else ())
    view.start()
    pump.start()
    started = time.perf_counter()
    try:
        trainer, outcome, kernel_warnings = _fit(plan, control, settings)
    except BaseException:
        view.close()
        raise
    finally:
        pump.stop()
        if published is not None:
            published.remove()
        shutil.rmtree(stack_dir, ignore_errors=True)
    elapsed = time.perf_counter() - started
    result = _training_run(plan, trainer, outcome, elapsed, kernel_warnings)
    if result.ok:
        view.close()  # the cell's value, the run's summary, takes its place
    else:
        view.finish(result)  # the view becomes the summary (charts included); the report follows
    return result


def _publish(plan: Plan, run_id: str) -> Any:
    """Make the run visible to the Jupyter server (``/gpu-status`` lists it under ``runs``)."""
    from ..readings.runs import PublishedRun

    resolved = plan.resolved
    state = {"run_id": run_id, "kernel_id": plan.kernel_id, "pid": os.getpid(), "rank_pids": [],
             "devices": resolved.trainer_devices(), "accelerator": resolved.accelerator,
             "num_processes": resolved.num_processes, "started": time.time(),
             "model": type(plan.found.model).__name__, "epoch": 0, "step": 0, "metrics": {},
             "status": "running", "ckpt_dir": plan.ckpt_dir}
    published = PublishedRun(state)
    try:
        published.publish()
    except OSError:  # no writable runtime dir: the run goes on, unlisted
        return None
    return published


def _registry_handler(published: Any) -> Any:
    def handle(event: dict) -> None:
        if event.get("kind") in ("step", "validation"):
            published.update(epoch=event.get("epoch"), step=event.get("step"),
                             metrics=event.get("metrics") or {})
    return handle


def _fit(plan: Plan, control: Any, settings: dict[str, Any]) -> tuple[Any, Any, list[str]]:
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from . import callbacks, launcher, rank

    flags, resolved, found = plan.flags, plan.resolved, plan.found
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")  # device counts without CUDA init
    previous_levels = rank.quiet_lightning_logs()
    try:
        # Lightning's kernel-side warnings come from building the Trainer: keep them for the
        # run (once each) instead of the cell; the run itself is not wrapped, so warnings of
        # other threads in the kernel are left alone while it trains.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            strategy = launcher.NotebookDDPStrategy(
                control, settings, find_unused_parameters=resolved.strategy.endswith("_true"))
            trainer_kwargs = flags.trainer_kwargs()
            run_callbacks = [callbacks.HistoryRecorder(), callbacks.ProgressReporter(control),
                             callbacks.RunSupervisor(control,
                                                     os.path.join(plan.ckpt_dir, "last.ckpt"),
                                                     check=flags.check)]
            if flags.check:
                trainer_kwargs.update(fast_dev_run=1, enable_checkpointing=False)
            else:
                run_callbacks.append(ModelCheckpoint(dirpath=plan.ckpt_dir, save_last=True))
            trainer = Trainer(
                accelerator=resolved.accelerator, devices=resolved.trainer_devices(),
                strategy=strategy, precision=resolved.precision, callbacks=run_callbacks,
                default_root_dir=plan.ckpt_dir,
                logger=False if flags.check else CSVLogger(plan.ckpt_dir, name="logs"),
                enable_progress_bar=flags.progress == "bar", enable_model_summary=False,
                **trainer_kwargs)
        kernel_warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
        try:
            trainer.fit(found.model, train_dataloaders=found.train,
                        val_dataloaders=found.val if found.datamodule is None else None,
                        datamodule=found.datamodule, ckpt_path=plan.resume_path)
            outcome = strategy.launcher.outcome
        except launcher.RanksFailed as failed:
            outcome = failed.outcome
        outcome.output_tails = {rank: control.output_tail(rank)
                                for rank in range(1, resolved.num_processes)}
        outcome.crash_stacks = {rank: control.crash_stack(rank)
                                for rank in range(resolved.num_processes)}
    finally:
        rank.restore_logs(previous_levels)
    return trainer, outcome, kernel_warnings


def _training_run(plan: Plan, trainer: Any, outcome: Any, elapsed: float,
                  kernel_warnings: list[str]) -> TrainingRun:
    from .callbacks import scalar_metrics

    resolved, extra = plan.resolved, outcome.extra or {}
    metrics = scalar_metrics(trainer.callback_metrics)
    output = outcome.worker_output
    status = "checked" if plan.flags.check and outcome.status == "finished" else outcome.status
    warnings_seen = list(dict.fromkeys(kernel_warnings + list(extra.get("warnings", []))))
    result = TrainingRun(
        status=status, metrics=metrics, history=list(extra.get("history", [])),
        best_model_path=str(output.best_model_path) if output and output.best_model_path else None,
        last_model_path=extra.get("last_model_path"),
        elapsed=elapsed, devices=resolved.trainer_devices(), accelerator=resolved.accelerator,
        strategy=resolved.strategy, precision=resolved.precision,
        num_processes=resolved.num_processes, ckpt_dir=plan.ckpt_dir,
        epochs=extra.get("current_epoch"), global_step=extra.get("global_step"),
        model=plan.found.model, summary=model_summary(plan.found.model),
        notes=notes_before_training(plan), warnings=warnings_seen,
        checks=dict(extra.get("check") or {}),
    )
    if status not in ("finished", "checked"):
        from .failures import report_for

        result.report = report_for(outcome, plan)
        result.traceback = outcome.error.traceback if outcome.error else result.report.traceback
    return result


def model_summary(model: Any) -> Optional[str]:
    try:
        from lightning.pytorch.utilities.model_summary import ModelSummary

        return str(ModelSummary(model, max_depth=1))
    except Exception:  # noqa: BLE001 - a summary is a convenience
        return None
