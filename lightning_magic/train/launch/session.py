"""The kernel side of a Trainer made under ``%%lightning_train``: what it carries from its cell
(``Session``), and what one call of ``fit``/``validate``/``test``/``predict`` sets up around its
ranks (``Launch``: the shared control, the live view, the published run, the ``TrainingRun``).

The ranks are forked from this state: the callbacks reach ``session.control``, which is the
launch in progress when the fork happens.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from ...options.flags import TrainFlags
from ...options.hardware import Resolved
from ...suggestions.report import DOING
from .leftovers import work_dir
from ..returns.results import TrainingRun

Stage = Literal["fit", "validate", "test", "predict"]
VERBS = {**DOING, "check": "Checking"}


@dataclass
class Session:
    """Everything a Trainer made in a cell keeps from that cell; shared with its ranks."""

    flags: TrainFlags
    resolved: Resolved
    ckpt_dir: str
    kernel_id: Optional[str] = None
    fresh_dir: bool = True           # the folder is the magic's own, made for this Trainer
    notes: list[str] = field(default_factory=list)   # what the magic decided, and why
    control: Any = None              # the RunControl of the launch in progress
    cwd: str = "."
    prepared: Any = None             # the cell that made the Trainer (its CUDA watch, its text)
    kernel_warnings: list[str] = field(default_factory=list)  # from building the Trainer
    library_warnings: list[str] = field(default_factory=list)  # ... raised by Lightning's code
    made_for_run: list[str] = field(default_factory=list)  # folders made for run.json (a launch)
    records: list[tuple[str, TrainingRun]] = field(default_factory=list)  # (stage, run) a launch

    runner: Any = None  # runs each call instead of the launcher's own wait (background runs)
    claim: Any = None   # claim(launcher, trainer) before a foreground call's ranks start
    keep_last: bool = True           # the run's own last.ckpt (not with enable_checkpointing=False)
    placement: str = "run"           # "run": the magic's folder; "lightning": see placement.py
    show_summary: bool = False       # the cell left Lightning's model summary on (its default)

    def last_checkpoint(self) -> Optional[str]:
        if self.flags.check or not self.keep_last:
            return None
        return os.path.join(self.ckpt_dir, "last.ckpt")


class Launch:
    """One call of a Trainer method: set up before the fork, taken down after the ranks end."""

    def __init__(self, session: Session, trainer: Any, stage: Stage, model: Any,
                 world_size: int, resume: Optional[str] = None) -> None:
        from ...view.live import LiveView
        from .control import RunControl
        from .events import EventPump

        self.session, self.trainer, self.stage, self.model = session, trainer, stage, model
        self.world_size, self.resume = world_size, resume
        flags, resolved = session.flags, session.resolved
        self.run_id = uuid.uuid4().hex[:12]
        self.stack_dir = work_dir()
        self.control = session.control = RunControl(world_size, self.stack_dir)
        from .placement import before_launch

        before_launch(session, trainer, stage)
        self.run_info: Optional[list[str]] = None  # the folders made for run.json, if written
        if stage == "fit" and not flags.check and session.keep_last:
            from .checkpoints import write_run_info

            self.run_info = write_run_info(session.ckpt_dir, model)  # what --resume last needs
        session.made_for_run = list(self.run_info or [])
        self.notes = self._notes()
        for note in self.notes:
            print(note)
        if stage == "fit" and session.show_summary and not flags.check:  # where Lightning logs it
            from ...view.render import ModelTable

            table = model_summary(model)
            if table:
                from IPython.display import display

                display(ModelTable(table))
        self.view = LiveView(type(model).__name__,  # the configuration is in the notes above
                             mode="none" if flags.check or stage != "fit" else flags.progress,
                             world_size=world_size)
        self.published = self._publish()
        self.started_event: dict = {}  # rank 0's "start" event: batch size, workers, threads
        handlers = [self._remember_start, self.view.update] + (
            [self._registry_update] if self.published else [])
        self.pump = EventPump(self.control.progress_reader, handlers,
                              writer=self.control.progress_writer,
                              gpu_indices=resolved.nvml_indices if resolved.accelerator == "gpu"
                              else ())
        self.started = time.perf_counter()
        self.started_at = time.time()
        self.view.start()
        self.pump.start()

    def _notes(self) -> list[str]:
        session, resolved = self.session, self.session.resolved
        where = f" · checkpoints in {session.ckpt_dir}" if self.stage == "fit" \
            and not session.flags.check and session.keep_last else ""
        verb = VERBS["check" if session.flags.check else self.stage]
        lines = [f"{verb} {type(self.model).__name__} on {resolved.describe()}{where}"]
        if not session.records:  # said once per Trainer, not at every call
            lines += list(resolved.notes) + list(session.notes)
        if self.resume:
            lines.append(f"Resuming from {self.resume}")
        return lines

    def stop_checkpoint(self, outcome: Any) -> dict[str, Optional[str]]:
        """What an interrupted launch saved: ``saved`` (the state at the stop), ``error`` (why it
        could not be), ``earlier`` (an older last.ckpt, not the state at the stop)."""
        reported = dict((outcome.extra or {}).get("stop_checkpoint") or {})
        last = self.session.last_checkpoint()
        found = {"saved": None, "error": reported.get("error"), "earlier": None}
        if last and os.path.exists(last):
            fresh = os.path.getmtime(last) >= self.started_at
            found["saved" if fresh and not found["error"] else "earlier"] = last
        return found

    def rank_env(self) -> dict[str, str]:
        return {"LIGHTNING_MAGIC_RUN_ID": self.run_id,
                "LIGHTNING_MAGIC_KERNEL_ID": self.session.kernel_id or ""}

    def started_ranks(self, pids: list[int]) -> None:
        if self.published is not None:
            self.published.update(rank_pids=pids)

    def _publish(self) -> Any:
        """Make the run visible to the Jupyter server (``/gpu-status`` lists it under ``runs``)."""
        from ...readings.runs import PublishedRun

        resolved = self.session.resolved
        state = {"run_id": self.run_id, "kernel_id": self.session.kernel_id, "pid": os.getpid(),
                 "rank_pids": [], "devices": resolved.trainer_devices(),
                 "accelerator": resolved.accelerator, "num_processes": self.world_size,
                 "started": time.time(), "model": type(self.model).__name__, "epoch": 0,
                 "step": 0, "metrics": {}, "status": "running", "ckpt_dir": self.session.ckpt_dir,
                 "max_epochs": _limit(getattr(self.trainer, "max_epochs", None))}
        published = PublishedRun(state)
        try:
            published.publish()
        except OSError:  # no writable runtime dir: the run goes on, unlisted
            return None
        return published

    def _remember_start(self, event: dict) -> None:
        if event.get("kind") == "start":
            self.started_event = event

    def _registry_update(self, event: dict) -> None:
        if event.get("kind") in ("step", "validation"):
            self.published.update(epoch=event.get("epoch"), step=event.get("step"),
                                  metrics=event.get("metrics") or {})

    def end(self, outcome: Any, kernel_warnings: list[str]) -> TrainingRun:
        """Take everything down (whatever happened) and say how the call went."""
        try:
            self.pump.stop()
        finally:
            if self.published is not None:
                self.published.remove()
            shutil.rmtree(self.stack_dir, ignore_errors=True)
        record = self._record(outcome, time.perf_counter() - self.started, kernel_warnings)
        idle = self._nothing_to_do(outcome, record)
        from .placement import drop_run_info, remove_if_unused

        if self.run_info is not None:
            drop_run_info(self.session.ckpt_dir, self.run_info, self.trainer)
        if (idle or not record.ok) and self.session.fresh_dir \
                and self.session.flags.ckpt_dir is None:
            if remove_if_unused(self.session.ckpt_dir):  # it wrote nothing there
                record.last_model_path = None
        self.session.records.append((self.stage, record))
        if record.ok:
            self.view.close()  # the cell's value, the run's summary, takes its place
            if idle:
                print(idle)
        else:
            self.view.finish(record)  # the view becomes the summary; the report follows
        return record

    def _nothing_to_do(self, outcome: Any, record: TrainingRun) -> Optional[str]:
        """A fit that trained no batch because a limit was already reached (fit again after
        ``max_epochs``, or ``--resume`` of a run that had reached it): Lightning's words, what
        to do, and the last metrics of this Trainer's fits kept on the record."""
        extra = outcome.extra or {}
        if self.stage != "fit" or record.status != "finished" or extra.get("trained_batches") \
                or not extra.get("fit_stopped"):
            return None
        said = extra["fit_stopped"]
        limit = ("max_epochs", record.max_epochs) if "max_epochs" in said else \
            ("max_steps", record.max_steps) if "max_steps" in said else None
        # a later cell without the magic has no flags: the Trainer's argument is named first
        line = f"Nothing to train: {said}" + (
            f" Raise {limit[0]} above {limit[1]} to train on (the Trainer's "
            f"{limit[0]}, or --{limit[0].replace('_', '-')} on a %%lightning_train cell)."
            if limit and limit[1] else "")
        record.notes.append(line)
        if not record.metrics:
            earlier = [run for stage, run in self.session.records if stage == "fit" and run.metrics]
            if earlier:
                record.metrics = dict(earlier[-1].metrics)
        return line

    def _notes_from_rank_zero(self, extra: dict) -> list[str]:
        """What only a rank can know: its batch size, its CPU threads, what it left running."""
        event, notes = self.started_event, []
        left = extra.get("left_running") or []
        if left:
            notes.append(f"Rank 0 left {', '.join(left)} running after its work was done; "
                         "the rank ended anyway, and what it left was ended with it.")
        effective = _effective_batch(event.get("batch_size"), self.world_size,
                                     event.get("replicas") or self.world_size,
                                     getattr(self.trainer, "accumulate_grad_batches", 1),
                                     "GPUs" if self.session.resolved.accelerator == "gpu"
                                     else "processes")
        if effective:
            notes.append(effective)
        from ...options import hardware
        from ...readings.environment import cpus_available

        workers = event.get("num_workers")
        note = hardware.worker_note(workers, self.world_size, cpus_available()) \
            if isinstance(workers, int) else None
        if note:
            notes.append(note)
        if event.get("threads"):
            notes.append(f"Each rank computed with {event['threads']} CPU thread"
                         f"{'s' if event['threads'] != 1 else ''} (torch.get_num_threads()).")
        return notes

    def _record(self, outcome: Any, elapsed: float, kernel_warnings: list[str]) -> TrainingRun:
        from ..ranks.callbacks import scalar_metrics

        session, resolved, extra = self.session, self.session.resolved, outcome.extra or {}
        output = outcome.worker_output
        status = "checked" if session.flags.check and outcome.status == "finished" \
            else outcome.status
        warnings_seen = list(dict.fromkeys(kernel_warnings + list(extra.get("warnings", []))))
        library = list(dict.fromkeys(session.library_warnings + list(extra.get("library", []))))
        notes = list(self.notes) + self._notes_from_rank_zero(extra) + list(extra.get("notes", []))
        run = TrainingRun(
            status=status,  # a call whose ranks sent nothing has no metrics of its own
            metrics=scalar_metrics(self.trainer.callback_metrics) if output is not None else {},
            history=list(extra.get("history", [])),
            best_model_path=str(output.best_model_path) if output and output.best_model_path
            else None,
            last_model_path=extra.get("last_model_path"),
            elapsed=elapsed, devices=resolved.trainer_devices(), accelerator=resolved.accelerator,
            strategy=resolved.strategy, precision=resolved.precision,
            num_processes=self.world_size, ckpt_dir=session.ckpt_dir,
            epochs=extra.get("current_epoch"), global_step=extra.get("global_step"),
            model=self.model, summary=model_summary(self.model), notes=notes,
            warnings=warnings_seen, library_warnings=library, checks=dict(extra.get("check") or {}),
            max_epochs=_limit(getattr(self.trainer, "max_epochs", None)),
            max_steps=_limit(getattr(self.trainer, "max_steps", None)), name=session.flags.out,
            stage=self.stage, notes_printed=len(self.notes),
        )
        if status not in ("finished", "checked"):
            from ..returns.failures import report_for

            run.report = report_for(outcome, self)
            run.traceback = outcome.error.traceback if outcome.error else run.report.traceback
        return run


def _limit(value: Any) -> Optional[int]:
    """A training limit as a count, or None for Lightning's "no limit" (-1, None)."""
    return value if isinstance(value, int) and value > 0 else None


def _effective_batch(batch_size: Optional[int], world_size: int, replicas: int,
                     accumulate: int, units: str = "processes") -> Optional[str]:
    """'Effective batch size: 64 (32 x 2 GPUs)': what one optimizer step sees."""
    if not batch_size or world_size * accumulate == 1:
        return None
    accumulated = f" x {accumulate} accumulated" if accumulate > 1 else ""
    if replicas == world_size:
        taking = f"{world_size} {units}"
    else:
        taking = (f"{replicas} data-parallel group{'s' if replicas != 1 else ''}; the "
                  f"{world_size // replicas} tensor-parallel ranks of a group share each batch")
    return (f"Effective batch size: {batch_size * replicas * accumulate} ({batch_size} x "
            f"{taking}{accumulated})")


def model_summary(model: Any) -> Optional[str]:
    try:
        from lightning.pytorch.utilities.model_summary import ModelSummary

        return str(ModelSummary(model, max_depth=1))
    except Exception:  # noqa: BLE001 - a summary is a convenience
        return None
