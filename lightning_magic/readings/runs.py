"""Active training runs, published as small JSON files in Jupyter's runtime directory.

While a run trains, its kernel keeps ``lightning-magic-run-<run_id>.json`` there: written whole to
a temporary file and renamed over the old one, so a reader sees the previous state or the new one,
never half of either; removed when the run ends. The server lists the files; one whose kernel is
gone is ignored and removed. Any file there is checked input (FIFO, symlink, 100 MiB, lying pids):
reading never hangs or fails and lists only what fits. No torch, no Jupyter server.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import reprlib
import stat
import tempfile
import threading
import time
from typing import Any, Callable, Optional

import psutil

PREFIX = "lightning-magic-run-"
SUFFIX = ".json"
UPDATE_INTERVAL_S = 1.0
MAX_FILE_BYTES = 256 * 1024
MAX_FILES, MAX_METRICS = 256, 512  # run files read per listing, metrics kept per run
_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_log = logging.getLogger(__name__)


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
        self._updated, self._pending = False, False  # the first update is written at once
        self._timer: Optional[threading.Timer] = None
        self._published, self._removed = False, False

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
            else:
                self._pending = True
                if self._timer is None:
                    self._timer = threading.Timer(wait, self.flush)
                    self._timer.daemon = True
                    self._timer.start()

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
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

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
            with contextlib.suppress(OSError):
                os.remove(temporary)
            raise
        self._last_write, self._pending = self.clock(), False


def list_runs(directory: Optional[str] = None, *, show_other_users: bool = True) -> list[dict]:
    """The published runs whose kernel is alive, oldest first, each checked field by field.

    Regular files of at most ``MAX_FILE_BYTES`` only, not through symlinks; what does not fit the
    schema (``runs`` items) is dropped with a debug log. A run counts while its kernel pid is alive,
    started when the file says and is the file owner's; its ``rank_pids`` only when none is a live
    non-descendant of that kernel. Other users' runs need ``show_other_users`` (no ``ckpt_dir``).
    """
    return [run for run, _ in _live_runs(directory, show_other_users)]


def rank_labels(directory: Optional[str] = None, *,
                show_other_users: bool = True) -> dict[int, dict]:
    """``{pid: {"kernel_id", "rank", "run_id"}}`` for the ranks of every live run: only the
    processes that descend from the kernel that published the run."""
    return {pid: {"kernel_id": run["kernel_id"], "rank": rank, "run_id": run["run_id"]}
            for run, ranks in _live_runs(directory, show_other_users)
            for rank, pid in ranks.items()}


def _live_runs(directory: Optional[str], show_other_users: bool) -> list[tuple[dict, dict]]:
    """Each live run, oldest first, with ``{rank: pid}`` of its ranks forked from its kernel."""
    directory = directory or runtime_dir()
    try:
        names = sorted(n for n in os.listdir(directory)
                       if n.startswith(PREFIX) and n.endswith(SUFFIX))
    except OSError:
        return []
    me, runs = os.geteuid(), []
    for name in names[:MAX_FILES]:
        path = os.path.join(directory, name)
        read = _read_regular_file(path)
        if read is None or (read[1] != me and not show_other_users):
            continue
        data, owner = read
        run = _validated(data, path)
        kernel = None if run is None else _kernel(run["pid"], data.get("pid_started"), owner, path)
        if run is None or kernel is None:
            continue
        ranks, trusted = _ranks_of(kernel, run["rank_pids"], path)
        run["rank_pids"] = run["rank_pids"] if trusted else []
        if owner != me:
            run.pop("ckpt_dir", None)
        runs.append((run, ranks))
    return sorted(runs, key=lambda pair: (pair[0]["started"], pair[0]["run_id"]))


def _read_regular_file(path: str) -> Optional[tuple[dict, int]]:
    """The JSON object in ``path`` and the file's owner, if it is a small regular file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return _skip(path, "is not a regular file")
        with open(os.open(path, flags), "rb") as handle:  # a FIFO swapped in opens, not hangs
            info = os.fstat(handle.fileno())
            raw = handle.read(MAX_FILE_BYTES + 1) if stat.S_ISREG(info.st_mode) else b""
    except OSError as error:
        return _skip(path, f"cannot be read ({error})")
    if not stat.S_ISREG(info.st_mode) or len(raw) > MAX_FILE_BYTES:
        return _skip(path, f"is not a regular file of at most {MAX_FILE_BYTES} bytes")
    try:  # NaN and infinities are read as null: they never reach the endpoint's JSON
        data = json.loads(raw.decode("utf-8"), parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        return _skip(path, "is not JSON")
    return (data, info.st_uid) if isinstance(data, dict) else _skip(path, "holds no JSON object")


def _skip(path: str, why: str) -> None:
    _log.debug("Run file %s %s; skipped", path, why)


_BAD = object()  # what a check returns for a value that does not fit
Check = Callable[[Any], Any]


def _whole(value: Any) -> Any:
    return value if type(value) is int and 0 <= value < 2**31 else _BAD


def _text(limit: int) -> Check:
    return lambda value: value if isinstance(value, str) and len(value) <= limit else _BAD


def _or_null(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _whole_list(value: Any) -> Any:
    fits = isinstance(value, list) and len(value) <= 4096
    return value if fits and all(_whole(v) is not _BAD for v in value) else _BAD


def _metrics(value: Any) -> Any:  # entries that are not numbers (or null) are left out
    return {k: v for k, v in list(value.items())[:MAX_METRICS] if len(k) <= 200
            and (v is None or type(v) in (int, float))} if isinstance(value, dict) else _BAD


# Each field: its check, and what a value that fails it costs: the run, null, or the field.
_RUN_FIELDS: dict[str, tuple[Check, str]] = {
    "run_id": (lambda v: v if isinstance(v, str) and _RUN_ID.match(v) else _BAD, "run"),
    "kernel_id": (_or_null(_text(256)), "null"),
    "pid": (lambda v: v if _whole(v) is not _BAD and v > 1 else _BAD, "run"),
    "rank_pids": (_whole_list, "run"),
    "devices": (lambda v: v if _whole(v) is not _BAD else _whole_list(v), "null"),
    "accelerator": (lambda v: v if v in ("cpu", "gpu") else _BAD, "run"),
    "num_processes": (_whole, "field"),
    "started": (lambda v: v if type(v) in (int, float) else _BAD, "run"),
    "model": (_text(256), "run"),
    "epoch": (_or_null(_whole), "null"), "max_epochs": (_or_null(_whole), "null"),
    "step": (_or_null(_whole), "null"),
    "metrics": (_metrics, "run"),
    "status": (_text(64), "run"),
    "ckpt_dir": (_or_null(_text(4096)), "field"),
}


def _validated(data: dict, path: str) -> Optional[dict]:
    """The schema's fields of ``data`` that fit it; None when a required one does not."""
    run = {}
    for name, (check, cost) in _RUN_FIELDS.items():
        value = check(data[name]) if name in data else _BAD
        if name in data and (value is _BAD or value != data[name]):
            _log.debug("Run file %s: %s %s does not fit the schema; %s dropped", path, name,
                       reprlib.repr(data[name]), "it is" if value is _BAD else "what does not is")
        if value is _BAD and cost == "run":
            return _skip(path, f"lacks a valid {name}")
        if value is not _BAD or cost == "null":
            run[name] = None if value is _BAD else value
    return run


def _kernel(pid: int, started: Any, owner: int, path: str) -> Any:
    """The kernel that published the run, when it is alive, is the same process (its start time
    matches ``pid_started``) and belongs to ``owner``; else None (and a stale file is removed)."""
    timed = type(started) in (int, float)
    try:
        process = psutil.Process(pid)
        gone = process.status() == psutil.STATUS_ZOMBIE \
            or (timed and abs(process.create_time() - started) >= 1.0)
        if not gone and timed and owner in process.uids()[:2]:
            return process
    except psutil.NoSuchProcess:
        gone = True
    except psutil.Error:
        return _skip(path, f"names kernel pid {pid}, which cannot be inspected")
    if not gone:
        return _skip(path, f"names kernel pid {pid}: not its publisher, or not its owner's")
    if owner == os.geteuid():
        with contextlib.suppress(OSError):
            os.remove(path)
    return _skip(path, f"names kernel pid {pid}, which has ended")


def _ranks_of(kernel: Any, pids: list[int], path: str) -> tuple[dict[int, int], bool]:
    """``{rank: pid}`` of the live descendants of the kernel, and whether no pid is another's."""
    ranks, trusted = {}, True
    for rank, pid in enumerate(pids):
        try:
            if kernel.pid in [p.pid for p in psutil.Process(pid).parents()]:
                ranks[rank] = pid
                continue
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            pass
        trusted = False
        _skip(path, f"lists rank pid {pid}, which its kernel {kernel.pid} did not start")
    return ranks, trusted


def _create_time(pid: Any) -> Optional[float]:
    with contextlib.suppress(psutil.Error, TypeError, ValueError):
        return psutil.Process(int(pid)).create_time()
    return None


def _plain(value: Any) -> Any:
    """JSON that browsers parse: NaN and infinities become null, unknown objects their str()."""
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
