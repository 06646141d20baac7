"""Axis ticks people can read: round numbers (1, 2 or 5 times a power of ten), written as
short as they can be (``0.0005`` as ``5e-4``, ``12000`` as ``12k``), the same way on one axis."""

from __future__ import annotations

import math

_STEPS = (1.0, 2.0, 5.0, 10.0)
_SI = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def nice_step(span: float, count: int, least: float = 0.0) -> float:
    """The round step that cuts ``span`` into at most ``count`` intervals (``least`` at least:
    1 for steps, which are whole numbers)."""
    if span <= 0 or not math.isfinite(span):
        return max(1.0, least)
    raw = max(span / max(1, count), least)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(s * power for s in _STEPS if s * power >= raw * (1 - 1e-9))


def nice_ticks(lo: float, hi: float, count: int = 4, least: float = 0.0) -> list[float]:
    """Round values from ``lo`` to ``hi`` (both inside), at most ``count + 1`` of them."""
    if hi < lo:
        lo, hi = hi, lo
    return _ticks(lo, hi, nice_step(hi - lo, count, least))


def axis(lo: float, hi: float, count: int = 4) -> tuple[float, float, list[float]]:
    """``(lo, hi, ticks)``: the data range widened to the round ticks around it, so every point
    sits inside and both ends carry a label."""
    if hi < lo:
        lo, hi = hi, lo
    if hi == lo:
        spread = abs(hi) * 0.1 or 1.0
        lo, hi = lo - spread, hi + spread
    step = nice_step(hi - lo, count)
    lo, hi = math.floor(lo / step + 1e-9) * step, math.ceil(hi / step - 1e-9) * step
    return lo, hi, _ticks(lo, hi, step)


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    first = math.ceil(lo / step - 1e-9)
    ticks: list[float] = []
    value = first * step
    while value <= hi + step * 1e-9:
        ticks.append(0.0 if abs(value) < step * 1e-9 else value)
        value = (first + len(ticks)) * step
    return ticks or [lo]


def tick_labels(ticks: list[float]) -> list[str]:
    """Labels for one axis, all in the same form: plain, SI-suffixed or scientific."""
    if not ticks:
        return []
    step = min((abs(b - a) for a, b in zip(ticks, ticks[1:])), default=abs(ticks[0]) or 1.0)
    biggest = max(abs(t) for t in ticks)
    if biggest >= 1e4:
        scale, suffix = next(((v, s) for v, s in _SI if biggest >= v), (1.0, ""))
        return [_plain(t / scale, step / scale) + suffix if t else "0" for t in ticks]
    if biggest and biggest < 1e-2:
        return [_scientific(t, step) for t in ticks]
    return [_plain(t, step) for t in ticks]


def _decimals(step: float) -> int:
    return 0 if step <= 0 else max(0, -math.floor(math.log10(step) + 1e-9))


def _plain(value: float, step: float) -> str:
    text = f"{value:.{_decimals(step)}f}"
    return "0" if float(text) == 0 else text


def _scientific(value: float, step: float) -> str:
    if value == 0:
        return "0"
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    step = step if step > 0 else abs(value)
    digits = max(0, exponent - math.floor(math.log10(abs(step)) + 1e-9))
    mantissa = f"{value / 10.0 ** exponent:.{digits}f}".rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


def short_number(value: float) -> str:
    """One value as a label: four significant digits, SI above 10 000."""
    if abs(value) >= 1e4:
        scale, suffix = next((v, s) for v, s in _SI if abs(value) >= v)
        return f"{value / scale:.3g}{suffix}"
    return f"{value:.4g}"
