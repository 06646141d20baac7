"""``TrainingRun``: what a ``%%lightning_train`` cell gives back, and how it shows itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

STATUSES = ("finished", "failed", "interrupted", "timeout", "checked")


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
    epochs: Optional[int] = None
    global_step: Optional[int] = None
    model: Any = field(default=None, repr=False)
    summary: Optional[str] = field(default=None, repr=False)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list, repr=False)
    traceback: Optional[str] = field(default=None, repr=False)
    report: Any = field(default=None, repr=False)  # suggestions.Report when the run failed
    checks: dict[str, Any] = field(default_factory=dict, repr=False)  # what --check verified

    @property
    def ok(self) -> bool:
        return self.status in ("finished", "checked")

    def _rows(self) -> list[tuple[str, str]]:
        rows = [("status", self.status),
                ("elapsed", f"{self.elapsed:.1f} s"),
                ("devices", f"{self.accelerator} {self.devices} ({self.num_processes} "
                            f"process{'es' if self.num_processes != 1 else ''})"),
                ("strategy", str(self.strategy)),
                ("precision", str(self.precision))]
        if self.status == "checked":
            rows.append(("check", self.check_summary()))
        elif self.epochs is not None:
            rows.append(("epochs / steps", f"{self.epochs} / {self.global_step}"))
        for name, value in sorted(self.metrics.items()):
            rows.append((name, f"{value:.4g}"))
        if self.best_model_path:
            rows.append(("best checkpoint", self.best_model_path))
        if self.last_model_path:
            rows.append(("last checkpoint", self.last_model_path))
        if self.report is not None:
            rows.append(("what happened", self.report.title))
        if self.warnings:
            rows.append(("warnings", f"{len(self.warnings)} (see .warnings)"))
        return rows

    def check_summary(self) -> str:
        world = self.checks.get("world_size", self.num_processes)
        parts = [f"{world} rank{'s' if world != 1 else ''} started"]
        if "all_reduce" in self.checks:
            ok = self.checks["all_reduce"] == float(world)
            parts.append(f"all-reduce {'OK' if ok else 'WRONG: got ' + str(self.checks['all_reduce'])}")
        if "loss" in self.checks:
            parts.append(f"one forward/backward OK (loss {self.checks['loss']:.4g})")
        return "; ".join(parts) + ". The configuration works."

    def __repr__(self) -> str:
        width = max(len(k) for k, _ in self._rows())
        lines = [f"TrainingRun {self.status}"]
        lines += [f"  {k:<{width}}  {v}" for k, v in self._rows()[1:]]
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))

    def _repr_html_(self) -> str:
        from ..view.render import render_summary_html

        return render_summary_html(self)


class TrainingFailed(Exception):
    """Ends a cell whose run did not finish, so that "Run all" stops, without rank tracebacks."""

    def __init__(self, run: TrainingRun, out: str) -> None:
        self.run = run
        self.out = out
        title = run.report.title if run.report is not None else run.status
        super().__init__(f"{title} (status {run.status!r}; details on {out}, full traceback "
                         f"in {out}.traceback)")

    def _render_traceback_(self) -> list[str]:
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self}"]
