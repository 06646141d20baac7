"""Reading a run's journal (see ``journal``): what it says so far, and what it adds later.

A journal on disk is hostile input, as any file of a shared folder: it may be truncated (its
writer killed mid-line), hold garbage, be huge, or be a FIFO or a symlink put in its place.
Reading never hangs, never fails and never executes anything: a regular file only, opened
without following links and without blocking; JSON only (``json.loads``, NaN read as null); a
line past ``MAX_LINE`` bytes, or that is not a JSON object, is skipped; a record is taken field
by field, each of the type it must be, and what does not fit is left out; what is kept of a
journal is bounded (events, rows, notes), however long it is.
"""

from __future__ import annotations

import json
import os
import stat
from typing import Any, Optional

from .journal import history_row

MAX_LINE = 1 << 20          # bytes of one record
MAX_READ = 8 << 20          # bytes read per look
MAX_FIRST_LOOK = 256 << 20  # bytes read at once when a journal is first opened
MAX_EVENTS = 100_000        # progress events kept for a redraw
MAX_METRICS = 512
MAX_NOTE = 4096             # characters of one note
MAX_NOTES = 1000
EVENT_KINDS = ("start", "step", "validation", "end")
COUNTS = ("epoch", "step", "batch", "samples", "max_epochs", "max_steps", "total_batches",
          "batch_size", "world_size", "replicas", "time")
FINAL = ("finished", "failed", "interrupted", "timeout", "checked")
ENDED_WELL = ("finished", "checked", "interrupted")  # trained, checked, or stopped as asked


def _number(value: Any) -> bool:
    return type(value) in (int, float)


def _text(value: Any, limit: int = 4096) -> Optional[str]:
    return value if isinstance(value, str) and len(value) <= limit else None


def _metrics(value: Any) -> dict[str, float]:
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in list(value.items())[:MAX_METRICS]
            if isinstance(k, str) and len(k) <= 200 and _number(v)}


def clean_event(value: Any) -> Optional[dict]:
    """A progress event with only the fields the live view reads, each of its type."""
    if not isinstance(value, dict) or value.get("kind") not in EVENT_KINDS:
        return None
    event: dict[str, Any] = {"kind": value["kind"]}
    for name in COUNTS:
        if _number(value.get(name)):
            event[name] = value[name]
    if "metrics" in value:
        event["metrics"] = _metrics(value["metrics"])
    return event


class JournalFile:
    """The records of one journal file, read on from where the last look ended."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.offset = 0
        self._partial = b""     # a line whose end is not written yet
        self._skipping = False  # inside a line past MAX_LINE
        self.at_end = False     # the last look read all there was

    def read_all(self) -> list[dict]:
        """The records written so far (up to ``MAX_FIRST_LOOK`` bytes; the rest comes with the
        following looks)."""
        records: list[dict] = []
        start = self.offset
        while True:
            records += self.read_new()
            if self.at_end or self.offset - start >= MAX_FIRST_LOOK:
                return records

    def read_new(self) -> list[dict]:
        """The whole records written since the last look (none when the file cannot be read)."""
        data = self._read()
        records = []
        while data:
            end = data.find(b"\n")
            if end < 0:
                self._keep(data)
                break
            line, data = self._partial + data[:end], data[end + 1:]
            self._partial, skipped, self._skipping = b"", self._skipping, False
            if not skipped and len(line) <= MAX_LINE:
                record = _record(line)
                if record is not None:
                    records.append(record)
        return records

    def _keep(self, data: bytes) -> None:
        if self._skipping or len(self._partial) + len(data) > MAX_LINE:
            self._partial, self._skipping = b"", True
        else:
            self._partial += data

    def _read(self) -> bytes:
        self.at_end = True
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        try:
            if not stat.S_ISREG(os.lstat(self.path).st_mode):
                return b""
            with open(os.open(self.path, flags), "rb") as handle:
                if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                    return b""
                handle.seek(self.offset)
                data = handle.read(MAX_READ)
        except OSError:
            return b""
        self.offset += len(data)
        self.at_end = len(data) < MAX_READ
        return data


def _record(line: bytes) -> Optional[dict]:
    try:
        value = json.loads(line.decode("utf-8"), parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) and isinstance(value.get("kind"), str) else None


class JournalState:
    """What a journal said so far, record by record (``apply``)."""

    def __init__(self) -> None:
        self.begin: dict[str, Any] = {}
        self.status = "unknown"       # "running" once begun, then the ranks' end
        self.notes: list[str] = []
        self.failure = ""             # a detached run's failure report, written by its supervisor
        self.events: list[dict] = []
        self.rows: list[dict] = []
        self.metrics: dict[str, float] = {}
        self.result: dict[str, Any] = {}
        self.checkpoints: dict[str, Optional[str]] = {}  # said by a detached run's supervisor
        self.detached = False

    @property
    def ended(self) -> bool:
        return self.status in FINAL

    def apply(self, record: dict) -> Optional[dict]:
        """Take one record in; the progress event it holds, if any (for a live view)."""
        kind = record.get("kind")
        if kind == "begin" and not self.begin:
            self.begin = {name: record[name] for name in ("run_id", "stage", "model", "devices",
                                                           "kernel_id", "ckpt_dir")
                          if _text(record.get(name)) is not None}
            self.begin.update({name: record[name] for name in ("world_size", "pid",
                                                               "pid_started", "started")
                               if _number(record.get(name))})
            if record.get("own_folder") is True:  # the run's folder is the magic's own
                self.begin["own_folder"] = True
            self.status = "running"
        elif kind == "note" and _text(record.get("text"), MAX_NOTE) is not None:
            if len(self.notes) < MAX_NOTES:
                self.notes.append(record["text"])
            if record.get("failure") is True:
                self.failure = record["text"]
        elif kind == "event":
            event = clean_event(record.get("event"))
            if event is not None:
                if len(self.events) < MAX_EVENTS:
                    self.events.append(event)
                row = history_row(event)
                if row is not None:
                    if len(self.rows) < MAX_EVENTS:
                        self.rows.append(row)
                    self.metrics.update(event["metrics"])
                return event
        elif kind == "supervisor" and _number(record.get("pid")):
            self.detached = True  # from now on its writer is the detached supervisor
            self.begin.update({name: record[name] for name in ("pid", "pid_started")
                               if _number(record.get(name))})
        elif kind == "status" and _text(record.get("status"), 64) in FINAL:
            self.status = record["status"]
            self.checkpoints = {name: _text(record.get(name))
                                for name in ("last_model_path", "best_model_path")}
        elif kind == "result":
            self._take_result(record)
        return None

    def _take_result(self, record: dict) -> None:
        result: dict[str, Any] = {"metrics": _metrics(record.get("metrics"))}
        for name in ("last_model_path", "best_model_path"):
            result[name] = _text(record.get(name))
        for name in ("global_step", "epochs"):
            result[name] = record[name] if type(record.get(name)) is int else None
        history = record.get("history")
        result["history"] = [{k: v for k, v in row.items() if isinstance(k, str)
                              and (_number(v) or _text(v, 200) is not None or v is None)}
                             for row in history[:MAX_EVENTS] if isinstance(row, dict)] \
            if isinstance(history, list) else []
        notes = record.get("notes") if isinstance(record.get("notes"), list) else []
        self.notes += [n for n in notes[:MAX_NOTES] if _text(n, MAX_NOTE) is not None]
        self.result = result
        if _text(record.get("status"), 64) in FINAL:
            self.status = record["status"]
