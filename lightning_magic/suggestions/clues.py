"""What a failure says, made easy to ask: matching text, the rank, the user's values and readings."""

from __future__ import annotations

import re
import signal as signals
from collections.abc import Mapping
from typing import Any

from .frames import describe_frame, user_frame_from_text
from .report import Failure

# The flags of %%lightning_train that suggestions point at.
PRECISION_FLAG = "--precision"
ACCUMULATE_FLAG = "--accumulate-grad-batches"
TIMEOUT_FLAG = "--timeout"
DEVICES_FLAG = "--devices"
ACCELERATOR_FLAG = "--accelerator"
RESUME_FLAG = "--resume"
GRADIENT_CLIP_FLAG = "--gradient-clip-val"

HALF_PRECISIONS = {"16", "16-mixed", "16-true", "bf16", "bf16-mixed", "bf16-true", "transformer-engine"}
_HEADLINE_LIMIT = 300


def size(n: Any) -> str:
    """Bytes as '12.3 GiB' / '512.0 MiB'."""
    try:
        value = float(n)
    except (TypeError, ValueError):
        return str(n)
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(value) >= scale:
            return f"{value / scale:.1f} {unit}"
    return f"{value:.0f} B"


def signal_name(number: int) -> str:
    try:
        return signals.Signals(number).name
    except ValueError:
        return f"signal {number}"


def shorten(text: str, limit: int = _HEADLINE_LIMIT) -> str:
    """Cut long messages at a sentence end where possible; the full text stays in the traceback."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text.rfind(". ", 0, limit)
    return text[: cut + 1] + " …" if cut > limit // 3 else text[:limit].rstrip() + " …"


def _exception_lines(tb: str | None) -> str:
    """The lines of a formatted traceback that carry exception messages rather than code."""
    if not tb:
        return ""
    skip = ("Traceback (most recent call last)", "During handling of", "The above exception")
    return "\n".join(line for line in tb.splitlines() if line and not line[0].isspace() and not line.startswith(skip))


class Clues:
    """Questions a rule asks about one failure, answered without raising on odd input."""

    def __init__(self, failure: Failure):
        self.failure = failure
        self.ctx: Mapping[str, Any] = failure.context if isinstance(failure.context, Mapping) else {}
        stderr = self.ctx.get("stderr")
        self.text = "\n".join(
            part
            for part in (failure.exc_type, failure.message, _exception_lines(failure.traceback), stderr)
            if isinstance(part, str) and part
        )
        self.exc_name = (failure.exc_type or "").rsplit(".", 1)[-1]
        frame = failure.user_frame or user_frame_from_text(failure.traceback)
        self.frame = frame
        self.where = describe_frame(frame)
        self.place = describe_frame(frame, source=False)

    # -- matching ---------------------------------------------------------------------------------
    def has(self, *needles: str) -> bool:
        lowered = self.text.lower()
        return any(needle.lower() in lowered for needle in needles)

    def search(self, pattern: str | re.Pattern[str]) -> re.Match[str] | None:
        return re.search(pattern, self.text, re.IGNORECASE | re.MULTILINE)

    def finditer(self, pattern: str) -> list[re.Match[str]]:
        return list(re.finditer(pattern, self.text, re.IGNORECASE | re.MULTILINE))

    def is_exception(self, *names: str) -> bool:
        return self.exc_name in names

    # -- who and what -----------------------------------------------------------------------------
    @property
    def rank(self) -> int | None:
        rank = self.failure.rank
        return rank if isinstance(rank, int) else None

    @property
    def who(self) -> str:
        """'Rank 1 (of 2)' / 'Rank 1' / 'The launcher'."""
        if self.rank is None:
            return "The launcher"
        world = self.failure.world_size
        several = _ranks_phrase(self.failure)
        if several:
            return several.capitalize() + ("" if several == "every rank" else f" (of {world})")
        return f"Rank {self.rank} (of {world})" if isinstance(world, int) and world > 1 else f"Rank {self.rank}"

    @property
    def on_rank(self) -> str:
        """' on rank 1' for titles, or nothing."""
        return on_ranks(self.failure)

    @property
    def headline(self) -> str:
        """The original exception in one line: 'torch.OutOfMemoryError: CUDA out of memory. …'."""
        failure = self.failure
        message = (failure.message or "").strip()
        exc_type = (failure.exc_type or "").removeprefix("builtins.")
        if exc_type or message:
            first = next((line for line in message.splitlines() if line.strip()), "")
            return shorten(f"{exc_type}: {first}" if exc_type and first else exc_type or first)
        lines = [line for line in (failure.traceback or "").splitlines() if line.strip()]
        return shorten(lines[-1].strip()) if lines else "an error without a message"

    def raised(self, headline: str | None = None) -> str:
        """'Rank 1 (of 2) raised X: msg', then 'Raised at cell In [4], line 12: `...`.' on its own line."""
        sentence = f"{self.who} raised {headline or self.headline}"
        return sentence + (f"\nRaised at {self.where}." if self.where else "")

    # -- the user's values ------------------------------------------------------------------------
    def number(self, key: str) -> int | None:
        value = self.ctx.get(key)
        if isinstance(value, bool):
            return None
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return None

    def value(self, key: str) -> Any:
        return self.ctx.get(key)

    @property
    def precision(self) -> str | None:
        value = self.ctx.get("precision")
        return None if value is None else str(value)

    @property
    def world_size(self) -> int:
        world = self.failure.world_size
        return world if isinstance(world, int) and world > 0 else 1

    # -- readings at the time of failure ----------------------------------------------------------
    def gpu_facts(self) -> tuple[tuple[str, str], ...]:
        readings = self.ctx.get("gpu_memory")
        if not isinstance(readings, (list, tuple)):
            return ()
        facts = []
        for reading in readings:
            if not isinstance(reading, Mapping):
                continue
            label = f"GPU {reading.get('index', '?')}"
            if reading.get("name"):
                label += f" ({reading['name']})"
            used, total = reading.get("used"), reading.get("total")
            value = f"{size(used)} of {size(total)} used"
            if isinstance(used, (int, float)) and isinstance(total, (int, float)) and total > 0:
                value += f" ({100 * used / total:.0f}%)"
            facts.append((label, value))
        return tuple(facts)

    def host_memory(self) -> tuple[float | None, tuple[tuple[str, str], ...]]:
        """(percent used or None, facts)."""
        reading = self.ctx.get("host_memory")
        if not isinstance(reading, Mapping):
            return None, ()
        percent = reading.get("percent")
        percent = float(percent) if isinstance(percent, (int, float)) else None
        value = f"{size(reading.get('used'))} of {size(reading.get('total'))} used"
        if percent is not None:
            value += f" ({percent:.0f}%)"
        if reading.get("available") is not None:
            value += f", {size(reading.get('available'))} available"
        return percent, (("Host memory", value),)

    def shm(self) -> tuple[float | None, float | None, tuple[tuple[str, str], ...]]:
        """(total bytes, free bytes, facts) of /dev/shm."""
        reading = self.ctx.get("shm")
        if not isinstance(reading, Mapping):
            return None, None, ()
        total, free = reading.get("total"), reading.get("free")
        total = float(total) if isinstance(total, (int, float)) else None
        free = float(free) if isinstance(free, (int, float)) else None
        return total, free, (("/dev/shm", f"{size(free)} free of {size(total)}"),)

    def workers_step(self) -> str:
        """A suggestion about DataLoader workers that names the current value."""
        workers = self.number("num_workers")
        if workers is None:
            return "Use fewer DataLoader workers (`num_workers`), or `num_workers=0` to rule them out."
        if workers == 0:
            return "The train DataLoader already uses `num_workers=0`, so its workers are not the cause."
        fewer = workers // 2
        ranks = f" on each of the {self.world_size} ranks" if self.world_size > 1 else ""
        total = f", {workers * self.world_size} worker processes in all" if self.world_size > 1 else ""
        instead = f"try `num_workers={fewer}`, or `num_workers=0` to rule them out" if fewer else "try `num_workers=0`"
        return (
            f"Use fewer DataLoader workers: the train DataLoader uses `num_workers={workers}`{ranks}{total}; {instead}."
        )

    @property
    def result_name(self) -> str:
        """The variable the run's result is stored in (``--out``)."""
        name = self.ctx.get("out")
        return name if isinstance(name, str) and name.isidentifier() else "lightning_run"

    @property
    def on_cpu(self) -> bool:
        return str(self.ctx.get("accelerator") or "").lower() == "cpu"


def _listed(ranks: tuple[int, ...]) -> str:
    """'0 and 2', '0, 1 and 3'."""
    words = [str(rank) for rank in ranks]
    return " and ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else words[0]


def _ranks_phrase(failure: Failure) -> str | None:
    """'every rank' or 'ranks 0 and 2' when more than one rank raised the same exception."""
    ranks = failure.ranks
    if not ranks or len(ranks) < 2:
        return None
    return "every rank" if len(ranks) == failure.world_size else f"ranks {_listed(tuple(ranks))}"


def on_ranks(failure: Failure) -> str:
    """' on rank 1', ' on ranks 0 and 2', ' on every rank' for titles, or nothing."""
    several = _ranks_phrase(failure)
    if several:
        return f" on {several}"
    return f" on rank {failure.rank}" if isinstance(failure.rank, int) else ""
