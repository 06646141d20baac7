"""Active training runs, published as small JSON files in Jupyter's runtime directory.

While a run trains, its kernel keeps ``lightning-magic-run-<run_id>.json`` there: written whole to
a temporary file and renamed over the old one, so a reader sees the previous state or the new one,
never half of either; removed when the run ends. The server lists the files; one whose kernel is
gone is ignored and removed. No torch and no Jupyter server here.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
import threading
import time
from typing import Any, Callable, Optional

PREFIX = "lightning-magic-run-"
SUFFIX = ".json"
UPDATE_INTERVAL_S = 1.0
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def runtime_dir() -> str:
    """Jupyter's runtime directory (``JUPYTER_RUNTIME_DIR`` or its default), the server's too."""
    from jupyter_core.paths import jupyter_runtime_dir

    return jupyter_runtime_dir()


class PublishedRun:
    """One run's file: ``publish()`` at the start, ``update(...)`` during, ``remove()`` at the end.

    ``state`` holds run_id, kernel_id, pid (the kernel's), rank_pids (indexed by global rank),
    devices, accelerator, started (unix time), model, epoch, step, metrics, status. Updates are
    written at most once per ``min_interval`` seconds (the first at once); an update held back is
    written when the interval is over, so the file never lags by more than that.
    """

    def __init__(self, state: dict, directory: Optional[str] = None, *,
                 min_interval: float = UPDATE_INTERVAL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        run_id = str(state.get("run_id", ""))
        if not _RUN_ID.match(run_id):
            raise ValueError(f"run_id {run_id!r} cannot name a file: use 1-64 letters, digits, "
                             "'-' or '_'.")
        self.state = dict(state)
        self.state.setdefault("pid", os.getpid())
        self.directory = directory or runtime_dir()
        self.path = os.path.join(self.directory, f"{PREFIX}{run_id}{SUFFIX}")
        self.min_interval, self.clock = min_interval, clock
        self._lock = threading.Lock()
        self._last_write: Optional[float] = None
        self._updated = False        # the first update is written at once
        self._pending = False
        self._timer: Optional[threading.Timer] = None
        self._published = False
        self._removed = False

    def publish(self) -> str:
        """Write the file (creating the runtime directory if needed) and return its path."""
        with self._lock:
            self.state.setdefault("pid_started", _create_time(self.state["pid"]))
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
            self._write()
            self._published, self._removed = True, False
            return self.path

    def update(self, **fields: Any) -> None:
        """Merge ``fields`` into the state and rewrite the file, at most once per interval."""
        with self._lock:
            self.state.update(fields)
            if not self._published or self._removed:
                return
            now = self.clock()
            wait = 0.0 if not self._updated or self._last_write is None \
                else self.min_interval - (now - self._last_write)
            self._updated = True
            if wait <= 0:
                self._write_quietly()
            elif self._timer is None:
                self._pending = True
                self._timer = threading.Timer(wait, self.flush)
                self._timer.daemon = True
                self._timer.start()
            else:
                self._pending = True

    def flush(self) -> None:
        """Write an update that the interval held back, now."""
        with self._lock:
            self._timer = None
            if self._pending and self._published and not self._removed:
                self._write_quietly()

    def remove(self) -> None:
        """Delete the file; safe to call more than once."""
        with self._lock:
            self._removed = True
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            try:
                os.remove(self.path)
            except FileNotFoundError:
                pass

    def __enter__(self) -> PublishedRun:
        self.publish()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()

    def _write_quietly(self) -> None:
        try:
            self._write()
        except OSError:  # a progress write that fails must not stop training; the next one retries
            self._pending = True

    def _write(self) -> None:
        data = json.dumps(_plain(dict(self.state, updated=time.time())))
        fd, temporary = tempfile.mkstemp(prefix=f".{PREFIX}", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(data)
            os.replace(temporary, self.path)
        except BaseException:
            try:
                os.remove(temporary)
            except OSError:
                pass
            raise
        self._last_write, self._pending = self.clock(), False


def list_runs(directory: Optional[str] = None) -> list[dict]:
    """The published runs whose kernel is alive, oldest first.

    Files that cannot be read or parsed are skipped; files whose kernel process is gone are
    skipped and deleted where permissions allow.
    """
    directory = directory or runtime_dir()
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    runs = []
    for name in names:
        if not (name.startswith(PREFIX) and name.endswith(SUFFIX)):
            continue
        path = os.path.join(directory, name)
        try:
            with open(path, encoding="utf-8") as handle:
                run = json.load(handle)
        except (OSError, ValueError):
            continue
        if not isinstance(run, dict):
            continue
        if not _alive(run.get("pid"), run.get("pid_started")):
            try:
                os.remove(path)
            except OSError:
                pass
            continue
        runs.append(run)
    return sorted(runs, key=lambda run: (_number(run.get("started")), str(run.get("run_id"))))


def rank_labels(directory: Optional[str] = None) -> dict[int, dict]:
    """``{pid: {"kernel_id", "rank", "run_id"}}`` for every rank process of every live run."""
    labels: dict[int, dict] = {}
    for run in list_runs(directory):
        pids = run.get("rank_pids") or []
        pairs = pids.items() if isinstance(pids, dict) else enumerate(pids)
        for rank, pid in pairs:
            try:
                rank, pid = int(rank), int(pid)
            except (TypeError, ValueError):
                continue
            labels[pid] = {"kernel_id": run.get("kernel_id"), "rank": rank,
                           "run_id": run.get("run_id")}
    return labels


def _alive(pid: Any, started: Any) -> bool:
    """Whether ``pid`` is a running process, and the same one that published (not a reused pid)."""
    if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    import psutil

    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return not isinstance(started, (int, float)) or abs(process.create_time() - started) < 1.0
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _create_time(pid: Any) -> Optional[float]:
    import psutil

    try:
        return psutil.Process(int(pid)).create_time()
    except (psutil.Error, TypeError, ValueError):
        return None


def _plain(value: Any) -> Any:
    """JSON that browsers parse: NaN and infinities become null, unknown objects their str()."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (str, int)):
        return value
    try:
        number = float(value)  # numpy and torch scalars
    except (TypeError, ValueError):
        return str(value)
    return number if math.isfinite(number) else None


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else 0.0
