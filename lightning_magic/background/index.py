"""Where each background run's journal is, so that ``attach`` finds a run wherever its folder
is: under the checkpoint root, or where the cell's Trainer put it (its ``default_root_dir``, its
logger's folder).

One small file a run in Jupyter's data directory, ``lightning_magic/runs/<run id>.json``, naming
the run's journal: ``{"journal": "/abs/path/journal-<run id>.jsonl"}``, written whole (a
temporary file renamed over it). An index file is hostile input, as a journal is: it is read
only when it is a regular file of this user, of at most ``MAX_BYTES``, not through a symlink; the
journal it names must be an absolute path with no symlink in it (its own real path), be this
run's journal by name, and be a regular file of this user. At most ``MAX_ENTRIES`` files are
read. An entry whose journal is gone is removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import stat
import tempfile
from typing import Optional

from .journal import PREFIX, SUFFIX

MAX_BYTES = 8192
MAX_ENTRIES = 1024
_IDENT = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def index_dir() -> str:
    from jupyter_core.paths import jupyter_data_dir

    return os.path.join(jupyter_data_dir(), "lightning_magic", "runs")


def add(run_id: str, journal: str) -> None:
    """Name ``journal`` as run ``run_id``'s; an index that cannot be written leaves the run be."""
    folder, temporary = index_dir(), None
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=".run-", suffix=".tmp", dir=folder)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump({"journal": os.path.realpath(journal)}, handle)
        os.replace(temporary, os.path.join(folder, f"{run_id}.json"))
    except OSError:
        if temporary is not None:
            with contextlib.suppress(OSError):
                os.remove(temporary)


def remove(run_id: str) -> None:
    with contextlib.suppress(OSError):
        os.remove(os.path.join(index_dir(), f"{run_id}.json"))


def forget(journal: str, run_id: str, own_folder: bool) -> None:
    """Drop a run that has nothing to attach to or load: its journal, a detached run's output
    file beside it and its index entry, then, when the folder is the magic's own (``own_folder``),
    the folder if nothing else is in it."""
    from ..train.launch.placement import remove_if_unused

    folder = os.path.dirname(journal)
    for path in (journal, os.path.join(folder, f"output-{run_id}.txt")):
        with contextlib.suppress(OSError):
            os.remove(path)
    remove(run_id)
    if own_folder:
        remove_if_unused(folder)


def indexed() -> dict[str, str]:
    """``{run id: journal path}`` of every entry that passes the checks above."""
    folder, found = index_dir(), {}
    try:
        names = sorted(name for name in os.listdir(folder) if name.endswith(".json"))
    except OSError:
        return {}
    for name in names[:MAX_ENTRIES]:
        run_id = name[:-len(".json")]
        journal = _journal_of(os.path.join(folder, name), run_id) if _IDENT.match(run_id) \
            else None
        if journal is not None:
            found[run_id] = journal
    return found


def _journal_of(entry: str, run_id: str) -> Optional[str]:
    raw = _small_file(entry)
    try:
        named = json.loads(raw.decode("utf-8")).get("journal") if raw is not None else None
    except (ValueError, AttributeError, RecursionError):
        return None
    if not isinstance(named, str) or len(named) > 4096 or not os.path.isabs(named) \
            or os.path.basename(named) != f"{PREFIX}{run_id}{SUFFIX}" \
            or os.path.realpath(named) != named:
        return None
    try:
        info = os.lstat(named)
    except FileNotFoundError:
        remove(run_id)  # the run's folder is gone: so is its entry
        return None
    except OSError:
        return None
    return named if stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid() else None


def _small_file(path: str) -> Optional[bytes]:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        with open(os.open(path, flags), "rb") as handle:
            info = os.fstat(handle.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid():
                return None
            raw = handle.read(MAX_BYTES + 1)
    except OSError:
        return None
    return raw if len(raw) <= MAX_BYTES else None
