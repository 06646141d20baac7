"""A background run's journal: what it did, appended on disk in its run folder, so that a closed
tab, or a new kernel, can redraw and follow it (``attach``).

``journal-<run id>.jsonl`` beside the run's checkpoints and ``run.json``: one JSON object a line,
each written whole and flushed at once. In the order they come:

- ``begin``: the run (id, call, model, devices, processes, its writer's pid and start time, the
  kernel, the run folder and whether that folder is the magic's own) and its first status,
  ``running``;
- ``note``: a line the run printed (what the magic decided, and why);
- ``event``: one of rank 0's progress events, as the live view received it;
- ``supervisor``: a detached run's supervisor (its pid and start time), the journal's writer
  from then on;
- ``status``: how the ranks ended (``finished``, ``failed``, ``interrupted``, ``timeout``), with
  the checkpoints a detached run's supervisor knows of;
- ``result``: the run's ``TrainingRun`` once it is back in the kernel: its status, metrics,
  history, checkpoints and notes.

A journal that cannot be written (a read-only folder, a full disk) leaves the run as it is: it
goes on, unjournaled. The reading of a journal is in ``journal_reading``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Any, Optional

PREFIX, SUFFIX = "journal-", ".jsonl"
VERSION = 1


def journal_path(folder: str, run_id: str) -> str:
    return os.path.join(folder, f"{PREFIX}{run_id}{SUFFIX}")


def own_folder(session: Any) -> bool:
    """The run's folder is the magic's own, made for it (no ``--ckpt-dir``, no folder the
    Trainer or an earlier run named): a run that leaves nothing in it may remove it."""
    return bool(session.fresh_dir and session.flags.ckpt_dir is None)


def history_row(event: dict) -> Optional[dict[str, Any]]:
    """The history row of a progress event (as ``TrainingRun.history``), if it has one."""
    if event.get("kind") in ("step", "validation") and event.get("metrics"):
        return {"stage": "train" if event["kind"] == "step" else "validation",
                "epoch": event.get("epoch"), "step": event.get("step"), **event["metrics"]}
    return None


def _plain(value: Any) -> Any:
    """What ``json`` cannot write: a number (numpy, torch scalars) where it is one, else its str."""
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


class Journal:
    """The writing end; every method is safe from any thread and never raises."""

    def __init__(self, path: Optional[str]) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._handle: Any = None
        if path is not None:
            try:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                self._handle = open(path, "a", encoding="utf-8")
            except OSError:
                self._handle = None

    @classmethod
    def of_launch(cls, launch: Any) -> Journal:
        """The journal of ``launch`` (a ``train`` ``Launch``), begun with the run and its notes."""
        import psutil

        session, resolved = launch.session, launch.session.resolved
        journal = cls(journal_path(session.ckpt_dir, launch.run_id))
        pid = os.getpid()
        journal.write("begin", version=VERSION, run_id=launch.run_id, stage=launch.stage,
                      model=type(launch.model).__name__, world_size=launch.world_size,
                      devices=resolved.describe().split(" · ")[0], pid=pid,
                      pid_started=psutil.Process(pid).create_time(),
                      kernel_id=session.kernel_id, ckpt_dir=session.ckpt_dir,
                      own_folder=own_folder(session), started=time.time(), status="running")
        for note in launch.notes:
            journal.write("note", text=note)
        return journal

    @property
    def writing(self) -> bool:
        return self._handle is not None

    def write(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"kind": kind, **fields}, default=_plain) + "\n"
        with self._lock:
            if self._handle is None:
                return
            try:
                self._handle.write(line)
                self._handle.flush()
            except (OSError, ValueError):  # a full disk, a removed folder: the run goes on
                self._close()

    def event(self, event: dict) -> None:
        """A progress handler: every event rank 0 sends, but the GPU readings of the moment."""
        if isinstance(event, dict) and event.get("kind") != "gpu":
            self.write("event", event=event)

    def status(self, status: str, **checkpoints: Optional[str]) -> None:
        self.write("status", status=status, time=time.time(), **checkpoints)

    def result(self, record: Any) -> None:
        """The ``TrainingRun`` back in the kernel, and the journal closed."""
        self.write("result", status=record.status, metrics=record.metrics,
                   history=record.history, last_model_path=record.last_model_path,
                   best_model_path=record.best_model_path, global_step=record.global_step,
                   epochs=record.epochs, notes=record.notes[record.notes_printed:],
                   time=time.time())
        self.close()

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._handle is not None:
            try:
                self._handle.close()
            except OSError:
                pass
        self._handle = None
