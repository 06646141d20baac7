"""``TrainingRun``: what a ``%%lightning_train`` cell gives back, and how it shows itself.

The run states its own rows (``rows`` and ``metric_rows``); the text form here and the HTML
summary in ``view.render`` both show those rows, so the two never disagree. Epochs are named as
Lightning names them (``trainer.current_epoch``, a checkpoint's ``epoch=``): the first is epoch
0, the last of ``--max-epochs 80`` is epoch 79, shown "epoch 79/79" (``view.render.epoch_text``).
"""

from __future__ import annotations

import os

from dataclasses import dataclass, field
from typing import Any, Optional

STATUSES = ("finished", "failed", "interrupted", "timeout", "checked")
# How each status reads at the head of the summary.
HEADLINES = {"finished": "finished", "failed": "failed", "interrupted": "stopped",
             "timeout": "timed out", "checked": "check passed"}


@dataclass
class TrainingRun:
    """The result of one ``%%lightning_train`` cell (also bound to ``lightning_run``)."""

    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    best_model_path: Optional[str] = None
    last_model_path: Optional[str] = None
    elapsed: float = 0.0
    devices: Any = None
    accelerator: Optional[str] = None
    strategy: Optional[str] = None
    precision: Optional[str] = None
    num_processes: int = 1
    ckpt_dir: Optional[str] = None
    epochs: Optional[int] = None  # trainer.current_epoch when the run ended (0-based)
    global_step: Optional[int] = None
    model: Any = field(default=None, repr=False)
    summary: Optional[str] = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list, repr=False)  # the cell's own code's
    library_warnings: list[str] = field(default_factory=list, repr=False)  # Lightning's, torch's
    traceback: Optional[str] = field(default=None, repr=False)
    report: Any = field(default=None, repr=False)  # suggestions.Report when the run failed
    checks: dict[str, Any] = field(default_factory=dict, repr=False)  # what --check verified
    max_epochs: Optional[int] = None  # the limits the run had, when known
    max_steps: Optional[int] = None
    name: str = field(default="lightning_run", repr=False)  # the variable it is bound to (--out)
    stage: str = field(default="fit", repr=False)  # the Trainer call: fit, validate, test, predict
    notes_printed: int = field(default=0, repr=False)  # notes[:n] were printed as the run began
    earlier: list["TrainingRun"] = field(default_factory=list, repr=False)  # the cell's other fits

    @property
    def ok(self) -> bool:
        return self.status in ("finished", "checked")

    @property
    def later_notes(self) -> list[str]:
        """The notes the cell did not print as the run began: rank 0's (the effective batch size,
        its CPU threads), and how the run ended. The summary shows them."""
        return self.notes[self.notes_printed:]

    @property
    def headline(self) -> str:
        """How the status reads: "finished", "stopped" (the user's choice), "check passed"..."""
        return HEADLINES.get(self.status, self.status)

    def epoch_reached(self) -> Optional[int]:
        """The last epoch the run trained in, as Lightning numbers it (from 0)."""
        epochs = [row["epoch"] for row in self.history
                  if isinstance(row.get("epoch"), int) and row.get("stage") != "epoch"]
        if epochs:
            reached = max(epochs)
        elif self.epochs is None:
            return None
        else:  # after a complete fit, current_epoch is one past the last epoch trained
            reached = max(0, self.epochs - 1) if self.status == "finished" else self.epochs
        return min(reached, self.max_epochs - 1) if self.max_epochs else reached

    def progress_text(self) -> Optional[str]:
        """'epoch 79/79 · step 960' (the limits only when known)."""
        epoch = self.epoch_reached()
        if epoch is None and self.global_step is None:
            return None
        parts = []
        if epoch is not None:
            from ...view.render import epoch_text

            parts.append(epoch_text(epoch, self.max_epochs))
        if self.global_step is not None:
            parts.append(f"step {self.global_step}"
                         + (f" of {self.max_steps}" if self.max_steps else ""))
        return " · ".join(parts)

    def rows(self) -> list[tuple[str, str]]:
        """The facts of the run, in the order both summaries show them (final metrics apart)."""
        processes = f"{self.num_processes} process{'es' if self.num_processes != 1 else ''}"
        rows = [("elapsed", f"{self.elapsed:.1f} s"),
                ("devices", f"{self.accelerator} {self.devices} ({processes})"),
                ("strategy", str(self.strategy)),
                ("precision", str(self.precision))]
        if self.status == "checked":
            rows.append(("check", self.check_summary()))
        else:
            reached = self.progress_text()
            if reached:
                rows.append(("reached" if self.status != "finished" else "trained", reached))
        if self.best_model_path:
            rows.append(("best checkpoint", _shown_path(self.best_model_path)))
        if self.last_model_path:
            rows.append(("last checkpoint", _shown_path(self.last_model_path)))
        if self.earlier:
            count = len(self.earlier)
            rows.append(("earlier fits", f"{count} in {self.name}.earlier; this summary is of the "
                                         "cell's last fit"))
        if self.warnings:
            count = len(self.warnings)
            rows.append(("warnings", f"{count} warning{'s' if count != 1 else ''} in "
                                     f"{self.name}.warnings"))
        return rows

    def metric_rows(self) -> list[tuple[str, str]]:
        """The final value of each logged metric, by name."""
        rows = []
        for name, value in sorted(self.metrics.items(), key=lambda item: str(item[0])):
            number = f"{value:.4g}" if isinstance(value, (int, float)) else str(value)
            rows.append((str(name), number))
        return rows

    def check_summary(self) -> str:
        world = self.checks.get("world_size", self.num_processes)
        parts = [f"{world} rank{'s' if world != 1 else ''} started"]
        if "all_reduce" in self.checks:
            ok = self.checks["all_reduce"] == float(world)
            parts.append(f"all-reduce {'OK' if ok else 'WRONG: got ' + str(self.checks['all_reduce'])}")
        if "loss" in self.checks:
            parts.append(f"one forward/backward OK (loss {self.checks['loss']:.4g})")
        return "; ".join(parts) + ". The configuration works; nothing was trained or saved."

    def __repr__(self) -> str:
        rows = self.rows() + self.metric_rows()
        if self.report is not None:
            rows.append(("report", f"{self.name}.report"))
        width = max(len(k) for k, _ in rows)
        lines = [f"TrainingRun {self.headline}"]
        lines += [f"  {k:<{width}}  {v}" for k, v in rows]
        lines += [f"  {note}" for note in self.later_notes]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        from ...view.render import render_summary_html

        return render_summary_html(self)


def _shown_path(path: str) -> str:
    """A checkpoint as the summary names it: from the notebook's folder when it is under it (as
    Lightning's own ``best_model_path`` often is), else whole, so both checkpoints read alike."""
    whole = os.path.abspath(path)
    here = os.getcwd()
    return os.path.relpath(whole, here) if whole.startswith(here + os.sep) else whole


class TrainingFailed(Exception):
    """Ends a cell whose run did not finish, so that "Run all" stops, without rank tracebacks.

    A run the user stopped is not a failure: it reads "Training stopped", in a calm colour."""

    def __init__(self, run: TrainingRun, out: str, in_magic_cell: bool = True) -> None:
        self.run = run
        self.out = out
        if run.status == "interrupted":
            where = run.progress_text()
            from ...suggestions.report import STOPPED

            self.lead = f"{STOPPED.get(run.stage, 'Training')} stopped"
            self.detail = f"{'at ' + where if where else 'as asked'}. The run is on {out}"
            if run.stage != "fit":
                pass  # nothing to continue from
            elif run.last_model_path and not in_magic_cell:
                self.detail += (f"; call fit again with ckpt_path={out}.last_model_path to "
                                "continue")
            elif in_magic_cell and (run.last_model_path or run.ckpt_dir):
                self.detail += "; run the cell again with --resume last to continue"
            self.detail += "."
        else:
            title = run.report.title if run.report is not None else run.status
            self.lead = type(self).__name__
            self.detail = (f"{title} (status {run.status!r}; details on {out}, full traceback "
                           f"in {out}.traceback)")
        super().__init__(self.detail if self.lead == type(self).__name__
                         else f"{self.lead} {self.detail}")

    def _render_traceback_(self) -> list[str]:
        colour = "34" if self.run.status == "interrupted" else "31"  # blue: the user's choice
        separator = " " if self.run.status == "interrupted" else ": "
        return [f"\x1b[0;{colour}m{self.lead}\x1b[0m{separator}{self.detail}"]


class TrainingStopped(TrainingFailed):
    """A run the user stopped. It still ends the cell (so that "Run all" stops, as the stop button
    asks), but the shell shows it as a line of the cell's output, not as an error: see
    ``show_stops``."""


def ending(run: TrainingRun, out: str, in_magic_cell: bool = True) -> TrainingFailed:
    """What ends a cell whose run did not finish: ``TrainingStopped`` for a stop, else
    ``TrainingFailed``."""
    kind = TrainingStopped if run.status == "interrupted" else TrainingFailed
    return kind(run, out, in_magic_cell=in_magic_cell)


def show_stops(shell: Any) -> Any:
    """Make ``shell`` print a ``TrainingStopped`` as a plain line of output: the cell still ends
    with it (its reply is an error, so the kernel drops the cells queued after it), but no error
    output is shown for what the user chose. The shell's own custom handler, if it had one, still
    handles its exceptions. Returns what puts the shell back as it was."""
    import sys

    kept = (shell.custom_exceptions, shell.CustomTB)
    types = tuple(kept[0])

    def handler(self: Any, etype: type, value: BaseException, tb: Any,
                tb_offset: Optional[int] = None) -> Any:
        if isinstance(value, TrainingStopped):
            print(str(value), file=sys.stdout, flush=True)
            return None
        return kept[1](etype, value, tb, tb_offset=tb_offset)

    shell.set_custom_exc(types + (TrainingStopped,), handler)

    def restore() -> None:
        shell.custom_exceptions, shell.CustomTB = kept

    return restore
