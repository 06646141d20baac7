"""One trial: asked of the study, its cell run in the kernel with ``trial`` bound (so every
``suggest_*`` is answered there, once, before any rank exists: the ranks are forked from the
kernel and all see the values it drew), its fit a ``--background`` run on the trial's own slot,
and at its end told to the study.

What the cell prints and shows while it starts, and the summary of its run at the end, are kept
on the trial (``output``) rather than shown: the sweep shows one table.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .flags import SweepFlags
from .slots import Slot

Status = Literal["running", "complete", "pruned", "failed"]


@dataclass
class Context:
    """What every trial of one sweep runs with."""

    flags: SweepFlags
    shell: Any
    cell: str
    cuda_watch: Any
    train_func: Any            # the %%lightning_train magic, whose parser checks a trial's line
    kernel_id: Optional[str] = None


@dataclass
class TrialRecord:
    """A trial of the sweep: ``params``, ``status``, ``value`` (its metric), ``run`` (its
    ``TrainingRun``, once back), ``report`` (a failed run's failure report)."""

    number: int
    trial: Any = field(repr=False)
    slot: Slot
    params: dict[str, Any] = field(default_factory=dict)
    status: Status = "running"
    value: Optional[float] = None
    run: Any = field(default=None, repr=False)
    handle: Any = field(default=None, repr=False)       # its BackgroundRun, while it runs
    error: Optional[BaseException] = field(default=None, repr=False)  # the cell's, in the kernel
    note: str = ""
    bound: dict[str, Any] = field(default_factory=dict, repr=False)  # what the cell bound
    output: list[Any] = field(default_factory=list, repr=False)      # IPython CapturedIO
    reported: set[int] = field(default_factory=set, repr=False)      # epochs told to the trial
    stopping: bool = field(default=False, repr=False)                # pruned, being stopped
    told: bool = field(default=False, repr=False)                    # the study knows its end
    # held while its epochs are reported and its end is read: the pruning decision of a
    # --background sweep is made on the run's progress thread, the end on the main thread
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def report(self) -> Any:
        return getattr(self.run, "report", None)

    @property
    def model(self) -> Any:
        return getattr(self.handle, "model", None)

    def progress(self) -> str:
        """Where its run is (or ended): "epoch 2 of 3 · step 40", as its live view says."""
        if self.run is not None:
            return self.run.progress_text() or ""
        return self.handle.progress() if self.handle is not None else ""

    def live_value(self, metric: str) -> Optional[float]:
        if self.value is not None or self.handle is None or self.status != "running":
            return self.value
        value = self.handle.metrics.get(metric)
        return value if isinstance(value, (int, float)) else None


def start(context: Context, study: Any, slot: Slot, records: list[TrialRecord],
          runs: Any = None) -> TrialRecord:
    """Ask the study for a trial (added to ``records``) and run the cell for it; its fit goes on
    in the background, kept in ``runs`` (the kernel's ``RUNS`` unless given)."""
    from IPython.utils.capture import capture_output

    from .. import train
    from ..background import RUNS
    from ..background.runner import Runner
    from ..options import flags as train_flags
    from ..train.kernel.discovery import bound_by_cell
    from .study import optuna_module

    shell = context.shell
    opts = train_flags.parse(context.flags.train_line(slot.accelerator, slot.devices),
                             context.train_func)
    prepared = train.prepare(opts, shell, context.cell, context.cuda_watch,
                             kernel_id=context.kernel_id)  # raises before a trial is asked
    prepared.cpu_threads = slot.threads or None  # its share of the cores (see slots)
    trial = study.ask()
    record = TrialRecord(number=trial.number, trial=trial, slot=slot)
    records.append(record)
    shell.user_ns["trial"] = trial
    runner = Runner(shell, RUNS if runs is None else runs, no_wait=False)
    prepared.runner = runner
    result = None
    with capture_output() as captured:
        try:
            result = train.run(prepared)
        except optuna_module().TrialPruned as pruned:
            record.status, record.note = "pruned", str(pruned) or "pruned by the cell"
        except Exception as error:  # noqa: BLE001 - told FAIL; the sweep raises it again
            record.error = error
        except BaseException:  # the stop button, while the cell ran: no run of it goes on
            _stopped(record, runner.started)
            study.tell(trial, state=optuna_module().trial.TrialState.FAIL)
            raise
    record.output.append(captured)
    record.params = dict(trial.params)
    bound = bound_by_cell(prepared.before, shell.user_ns, context.cell)
    record.bound = {name: value for name, value in bound.items() if name != "trial"}
    fits = [run for run in runner.started if run.stage == "fit"]
    if record.error is not None and runner.started:  # raised after its runs started: it failed
        _stopped(record, runner.started)
        record.note = f"the cell raised {type(record.error).__name__}: {record.error}"
    elif fits:
        record.handle = fits[-1]
    elif record.status == "running":
        failed = result is not None and result.run is not None and not result.run.ok
        record.run = result.run if failed else None
        record.note = record.note or (
            f"the cell raised {type(record.error).__name__}: {record.error}" if record.error
            else "its launch failed" if failed else "the cell started no fit")
        record.status = "failed"
    return record


def _stopped(record: TrialRecord, started: list[Any]) -> None:
    for run in started:
        run.stop(wait=False)
    for run in started:
        run.join(when="once the sweep was stopped")
    fits = [run for run in started if run.stage == "fit"]
    record.run = fits[-1].record if fits else None
    record.status, record.note = "failed", "stopped as it started"


def report_epochs(record: TrialRecord, metric: str, prune: bool = False) -> bool:
    """Tell the trial the metric at each epoch end it has not been told yet (rank 0's
    validation events, as the run's ``history`` keeps them). With ``prune``, ask the pruner
    after each, as a pruning callback would at that epoch end: True once it says to prune."""
    rows = record.run.history if record.run is not None else \
        record.handle.history if record.handle is not None else []
    for row in rows:
        epoch, value = row.get("epoch"), row.get(metric)
        if row.get("stage") != "validation" or not isinstance(epoch, int) or \
                epoch in record.reported or not _finite(value):
            continue
        record.trial.report(float(value), step=epoch)
        record.reported.add(epoch)
        if prune and record.trial.should_prune():
            return True
    return False


def finish(record: TrialRecord, metric: str) -> None:
    """The ended run's results into the kernel (its model, its Trainer), and its outcome."""
    from IPython.utils.capture import capture_output

    with capture_output() as captured:
        record.handle.join(when="at the end of its trial")
    record.output.append(captured)
    with record.lock:  # no pruning decision of its progress thread comes between
        record.run = run = record.handle.record
        report_epochs(record, metric)
        stopping = record.stopping
    value = (run.metrics or {}).get(metric) if run is not None else None
    if stopping:
        record.status = "pruned"
    elif run is not None and run.ok and _finite(value):
        record.status, record.value = "complete", float(value)
    else:
        record.status = "failed"
        if run is None or not run.ok:
            record.note = f"its run {run.headline if run is not None else 'broke'}"
        else:
            logged = ", ".join(sorted(run.metrics)) or "nothing"
            record.note = (f"it logged no {metric!r} (it logged {logged})" if value is None
                           else f"its {metric} is {value}")
            if value is None:  # every trial of the cell would say the same: the sweep stops
                record.error = _no_such_metric(metric, record.number, run.metrics)


def _no_such_metric(metric: str, number: int, logged: dict) -> Exception:
    import difflib

    from IPython.core.error import UsageError

    close = difflib.get_close_matches(metric, list(logged), n=1)
    hint = f"did you mean --metric {close[0]}? " if close else ""
    names = ", ".join(sorted(logged)) or "nothing"
    return UsageError(f"--metric {metric!r}: trial {number} trained to its end and logged no "
                      f"{metric!r} (it logged {names}); {hint}The sweep started no more trials.")


def tell(study: Any, record: TrialRecord) -> bool:
    """Tell the study how the trial ended; False once the sampler has tried everything
    (``--sampler grid``)."""
    from .study import optuna_module

    states = optuna_module().trial.TrialState
    record.told = True
    try:
        if record.status == "complete":
            study.tell(record.trial, record.value)
        else:
            study.tell(record.trial, state=states.PRUNED if record.status == "pruned"
                       else states.FAIL)
    except RuntimeError as error:  # BruteForceSampler calls study.stop(), for optimize() only
        if "Study.stop" not in str(error):
            raise
        return False
    return True


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
