"""What a run's progress events said so far (``Progress``): its limits, where it is, its latest
metrics, the series its live chart draws and its GPU readings. A pure record of the events, drawn
by ``render``; a point of a series is what the summary's chart (``charts``, over the history
rows) would draw there, so the live chart and the final one are the same chart.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Optional

from .charts import MAX_POINTS, Point, chart_order, finite, mean, render_series_svg
from .render import epoch_text


def _count(value: Any) -> Optional[int]:
    """A positive, finite count, else None (Lightning uses -1 and inf for "no limit")."""
    value = finite(value)
    return int(value) if value is not None and value > 0 else None


class _Series:
    """Points of one metric, kept at most ``2 * MAX_POINTS``: each stored point averages
    ``stride`` consecutive ones, and the stride doubles whenever the store fills up."""

    def __init__(self) -> None:
        self.points: list[Point] = []
        self.stride = 1
        self._pending: list[Point] = []

    def add(self, x: float, y: float) -> None:
        self._pending.append((x, y))
        if len(self._pending) >= self.stride:
            self.points.append(mean(self._pending))
            self._pending = []
        if len(self.points) >= 2 * MAX_POINTS:
            self.points = [mean(self.points[i:i + 2]) for i in range(0, len(self.points), 2)]
            self.stride *= 2

    def view(self) -> list[Point]:
        return self.points + ([mean(self._pending)] if self._pending else [])


class Progress:
    """What the events said so far: limits, position, latest metrics, series and GPU readings."""

    def __init__(self, world_size: int = 1) -> None:
        self.world_size = world_size
        self.started: Optional[float] = None
        self.now: Optional[float] = None
        self.max_epochs = self.max_steps = self.total_batches = self.batch_size = None
        self.epoch: Optional[int] = None
        self.step = self.batch = None  # Optional[int] each
        self.metrics: dict[str, float] = {}
        self.series: dict[str, _Series] = {}
        self.epochs: list[tuple[int, float]] = []
        self.gpus: list[dict] = []
        self.ended = False
        self.outcome: Optional[str] = None  # how the run ended, where the view is told it
        self._recent: deque = deque(maxlen=32)  # (time, samples, step)
        self._first: Optional[tuple[float, float]] = None  # (time, fraction) at the first step
        self._validation: set[str] = set()  # metrics whose last new value a validation gave
        self._epoch_end: set[str] = set()   # metrics logged on epoch only (not on step)

    def apply(self, event: dict) -> None:
        kind, when = event.get("kind"), finite(event.get("time"))
        if when is not None:
            self.now = when if self.now is None else max(self.now, when)
            self.started = when if self.started is None else self.started
        if kind == "start":
            self.started = when if when is not None else self.started
            self.max_epochs = _count(event.get("max_epochs"))
            self.max_steps = _count(event.get("max_steps"))
            self.total_batches = _count(event.get("total_batches"))
            self.batch_size = _count(event.get("batch_size"))
            self.world_size = _count(event.get("world_size")) or self.world_size
        elif kind in ("step", "validation"):
            before = self.epoch, self.step
            self.epoch = event.get("epoch", self.epoch)
            self.step = event.get("step", self.step)
            # a step event after an epoch's end: the values logged on epoch belong where it ended
            ended = before[1] if event.get("batch") is not None else self.step
            ended = ended if kind == "step" and _after_epoch_end(event, *before) else None
            shown = self.epoch_shown()
            if shown is not None and isinstance(self.step, (int, float)) \
                    and (not self.epochs or shown > self.epochs[-1][0]):
                self.epochs.append((shown, float(self.step)))
            for name, value in (event.get("metrics") or {}).items():
                name, value = str(name), finite(value)
                if value is None:
                    continue
                at = self._point(name, value, kind, ended, before[1])
                if isinstance(at, (int, float)):
                    self.series.setdefault(name, _Series()).add(float(at), value)
                self.metrics[name] = value
            if kind == "step":
                self.batch = event.get("batch", self.batch)
                self._recent.append((when, finite(event.get("samples")), finite(self.step)))
                fraction = self.fraction()
                if self._first is None and when is not None and fraction is not None:
                    self._first = (when, fraction)
        elif kind == "gpu":
            self.gpus = [r for r in event.get("ranks") or [] if isinstance(r, dict)]
        elif kind == "end":
            self.ended = True

    def _point(self, name: str, value: float, kind: str, ended: Any, previous: Any) -> Any:
        """The step at which this value is a point of its chart as the summary draws it, or None.
        A value logged on epoch only (absent from the steps before an epoch's end, then carried
        on unchanged) is a point once an epoch, at the step ``ended`` where that epoch ended; a
        value already drawn at this step (the end of training repeats the last step) is none."""
        if ended is not None and (name in self._epoch_end or name not in self.metrics):
            self._epoch_end.add(name)
            return ended
        if self.metrics.get(name) == value and (name in self._epoch_end or self.step == previous):
            return None
        if name in self._epoch_end:
            self._epoch_end.discard(name)  # a new value within an epoch: logged on step too
        return self.step if self._charts(name, value, kind) else None

    def _charts(self, name: str, value: float, kind: str) -> bool:
        """Whether this value is a point of its chart as the summary draws it: a validation's
        metrics once a validation (step events carry them on unchanged), a step's every step."""
        new = self.metrics.get(name) != value
        if kind == "validation" and new:
            self._validation.add(name)
        elif kind != "validation" and (new or name not in self._validation):
            self._validation.discard(name)
            return True
        return new and kind == "validation"

    def fraction(self) -> Optional[float]:
        """How far the run is, 0..1, by whichever limit (steps or epochs) ends it first."""
        done = []
        if self.max_steps and isinstance(self.step, (int, float)):
            done.append(self.step / self.max_steps)
        if self.max_epochs and self.total_batches and isinstance(self.epoch, int):
            batch = self.batch + 1 if isinstance(self.batch, int) else 0
            in_epoch = min(batch, self.total_batches) / self.total_batches
            done.append((self.epoch + in_epoch) / self.max_epochs)
        return min(1.0, max(done)) if done else None

    def elapsed(self) -> Optional[float]:
        return None if self.started is None or self.now is None else self.now - self.started

    def eta(self) -> Optional[float]:
        fraction = self.fraction()
        if self._first is None or fraction is None or self.now is None:
            return None
        t0, f0 = self._first
        if fraction <= f0 or self.now <= t0:
            return None
        return (self.now - t0) / (fraction - f0) * (1.0 - fraction)

    def rates(self) -> tuple[Optional[float], Optional[float]]:
        """(samples/s, steps/s) over the latest steps."""
        if len(self._recent) < 2:
            return None, None
        (t0, s0, k0), (t1, s1, k1) = self._recent[0], self._recent[-1]
        if t0 is None or t1 is None or t1 <= t0:
            return None, None
        samples = (s1 - s0) / (t1 - t0) if s0 is not None and s1 is not None else None
        steps = (k1 - k0) / (t1 - t0) if k0 is not None and k1 is not None else None
        return samples, steps

    def epoch_shown(self) -> Optional[int]:
        """The epoch in progress, Lightning's ``current_epoch``; after the last one Lightning's
        count moves past the end, and this stays on the last."""
        if not isinstance(self.epoch, int):
            return None
        return min(self.epoch, self.max_epochs - 1) if self.max_epochs else self.epoch

    def position(self) -> list[str]:
        """["epoch 1/3", "step 120 of 500"] (epoch index 1 of max_epochs=4): epochs as Lightning
        names them."""
        parts = []
        epoch = self.epoch_shown()
        if epoch is not None:
            parts.append(epoch_text(epoch, self.max_epochs))
        if self.step is not None:
            parts.append(f"step {self.step}" + (f" of {self.max_steps}" if self.max_steps else ""))
        return parts

    def rate_text(self) -> str:
        samples, steps = self.rates()
        if samples is not None:
            return f"{samples:,.0f} samples/s" + (f" ({steps:.3g} steps/s)" if steps else "")
        return f"{steps:.3g} steps/s" if steps is not None else ""

    def chart(self) -> str:
        series = {name: self.series[name].view() for name in chart_order(self.series)}
        return render_series_svg(series, self.epochs)


def _after_epoch_end(event: dict, epoch: Any, step: Any) -> bool:
    """Whether this step event is the first after a training epoch ended (the first of the next
    epoch, or the one at the end of training), the first to carry what the epoch logged on epoch
    (``on_step=False``): Lightning computes those values once the epoch's last step is done. Not
    the run's first event: nothing came before it to be absent from."""
    if step is None:
        return False
    now = event.get("epoch")
    return event.get("batch") is None or (isinstance(now, int) and isinstance(epoch, int)
                                          and now > epoch)

