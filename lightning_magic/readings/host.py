"""CPU, memory and disk of this machine, from psutil."""

from __future__ import annotations

import time
from pathlib import Path

import psutil

_CPU_WINDOW = 0.1  # seconds over which a fresh CPU meter measures its first reading


class CpuMeter:
    """CPU busy percent between two reads of the kernel's counters (never a blocking call
    after the first read; the first waits out a short window so it is not meaningless)."""

    def __init__(self):
        self._since = time.monotonic()
        self._last = psutil.cpu_times(percpu=True)

    def read(self) -> dict:
        wait = _CPU_WINDOW - (time.monotonic() - self._since)
        if wait > 0:
            time.sleep(wait)
        now = psutil.cpu_times(percpu=True)
        per_core = [_busy_percent([a], [b]) for a, b in zip(self._last, now, strict=False)]
        total = _busy_percent(self._last, now)
        self._last, self._since = now, time.monotonic()
        return {"percent": total, "per_core": per_core, "count": len(now)}


def _busy_percent(before, after) -> float:
    def totals(times):
        # guest time is already counted in user time on Linux
        all_ = sum(t.user + t.nice + t.system + t.idle + getattr(t, "iowait", 0.0)
                   + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
                   + getattr(t, "steal", 0.0) for t in times)
        idle = sum(t.idle + getattr(t, "iowait", 0.0) for t in times)
        return all_, idle

    all_before, idle_before = totals(before)
    all_after, idle_after = totals(after)
    elapsed = all_after - all_before
    if elapsed <= 0:
        return 0.0
    busy = 100.0 * (1.0 - (idle_after - idle_before) / elapsed)
    return round(min(100.0, max(0.0, busy)), 1)


def memory() -> dict:
    memory = psutil.virtual_memory()
    used = memory.total - memory.available
    return {
        "total": memory.total,
        "used": used,
        "available": memory.available,
        "percent": round(100.0 * used / memory.total, 1) if memory.total else 0.0,
    }


def disk(path: Path) -> dict | None:
    """Usage of the file system that holds ``path`` (or would, once it is created)."""
    existing = path
    try:
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        usage = psutil.disk_usage(str(existing))
    except OSError:  # not allowed to look, or gone in the meantime
        return None
    return {"path": str(path), "total": usage.total, "used": usage.used, "free": usage.free,
            "percent": usage.percent}
