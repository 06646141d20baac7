"""Writing the checkpoints the magic relies on (``last.ckpt``, the stop checkpoint) so that a
kill or a full disk mid-save never leaves a truncated one behind."""

from __future__ import annotations

import os
import shutil
from typing import Any


def save_atomically(trainer: Any, path: str) -> None:
    """Every rank takes part (the strategy may gather state, or write its own shard); rank 0
    writes to a temporary name, syncs it to disk and renames it over ``path``: a kill or a full
    disk mid-save never leaves a truncated checkpoint behind, and the partial one is removed.
    A distributed checkpoint (a sharded strategy's) is a folder: each of its files is synced, and
    the folder takes the place of the old checkpoint, file or folder."""
    partial = f"{path}.partial"
    try:
        trainer.save_checkpoint(partial)
        if trainer.global_rank == 0 and os.path.isdir(partial):
            _replace_folder(partial, path)
        elif trainer.global_rank == 0 and os.path.exists(partial):
            _fsync(partial)
            if os.path.isdir(path):
                shutil.rmtree(path)
            os.replace(partial, path)
    finally:
        if trainer.global_rank == 0 and os.path.isdir(partial):
            shutil.rmtree(partial, ignore_errors=True)
        elif trainer.global_rank == 0 and os.path.exists(partial):
            os.remove(partial)


def _fsync(path: str) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _replace_folder(partial: str, path: str) -> None:
    """The written folder (every rank's shard is in it once the strategy's save returns) over
    ``path``: the old checkpoint is moved aside first and removed after the rename."""
    for root, _, files in os.walk(partial):
        for name in files:
            _fsync(os.path.join(root, name))
    old = f"{path}.old"
    if os.path.lexists(old):
        shutil.rmtree(old) if os.path.isdir(old) else os.remove(old)
    if os.path.lexists(path):
        os.replace(path, old)
    os.replace(partial, path)
    if os.path.isdir(old):
        shutil.rmtree(old, ignore_errors=True)
    elif os.path.lexists(old):
        os.remove(old)


def short_error(error: BaseException) -> str:
    """The error in one line: torch's write errors carry a long C++ trace."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    cause = error.__cause__ or error.__context__
    text = f"{type(error).__name__}: {lines[0] if lines else ''}"[:200]
    if isinstance(cause, OSError):
        text += f" ({cause.strerror or cause})"
    return text
