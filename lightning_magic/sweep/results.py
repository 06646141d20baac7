"""``Sweep``: what ``%%lightning_sweep`` gives back (also bound to ``lightning_sweep``): the
``optuna.Study``, each trial's record, the best trial's ``TrainingRun``, the trials as a
DataFrame."""

from __future__ import annotations

from typing import Any, Optional


class Sweep:
    def __init__(self, study: Any, metric: str, trials: list[Any], slots: int = 1) -> None:
        self.study = study
        self.metric = metric
        self.trials = trials      # TrialRecord of each trial this sweep ran, in order
        self.slots = slots        # how many trials could run at once
        self.events: list[tuple[str, int]] = []  # ("started" | "ended", trial number), in order

    def dataframe(self, **kwargs: Any) -> Any:
        """``study.trials_dataframe(**kwargs)`` (pandas)."""
        return self.study.trials_dataframe(**kwargs)

    def best_record(self) -> Optional[Any]:
        complete = [record for record in self.trials if record.status == "complete"]
        if not complete:
            return None
        maximize = self.study.direction.name == "MAXIMIZE"
        return (max if maximize else min)(complete, key=lambda record: record.value)

    @property
    def best(self) -> Any:
        """The best trial's ``TrainingRun`` (its checkpoints, metrics, weights)."""
        record = self.best_record()
        if record is None:
            raise ValueError(f"no trial of this sweep completed with a {self.metric!r} "
                             "(lightning_sweep.trials says why each ended)")
        return record.run

    @property
    def best_params(self) -> dict[str, Any]:
        record = self.best_record()
        return dict(record.params) if record is not None else {}

    def counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for record in self.trials:
            counts[record.status] = counts.get(record.status, 0) + 1
        return counts

    def __repr__(self) -> str:
        counts = ", ".join(f"{n} {status}" for status, n in self.counts().items()) or "none"
        text = f"Sweep of {len(self.trials)} trial{'s' * (len(self.trials) != 1)} ({counts})"
        best = self.best_record()
        if best is not None:
            text += (f"; best: trial {best.number}, {self.metric} {best.value:.6g}, "
                     f"{_params(best.params)}")
        return text

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
                     for name, value in params.items())
