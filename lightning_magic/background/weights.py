"""A run's checkpoint weights into a model of the kernel (``run.load_into(model)``)."""

from __future__ import annotations

from typing import Any, Optional

from IPython.core.error import UsageError


def load_into(model: Any, path: Optional[str], which: str, run_id: str,
              near: Optional[str] = None) -> str:
    """Load the ``state_dict`` of the checkpoint at ``path`` into ``model`` (strictly, as
    Lightning's ``load_from_checkpoint``); the path. ``torch.load(weights_only=True)``: a
    checkpoint only gives tensors and plain values, it runs no code of its own. Without a
    path, the error names the checkpoints in the folder ``near`` (where its last.ckpt is)."""
    if which not in ("last", "best"):
        raise UsageError(f"load_into: which={which!r}; give 'last' or 'best'.")
    if path is None:
        others = _checkpoints_in(near)
        beside = (f"; checkpoints in {near}: {', '.join(others)} (to load one: model."
                  "load_state_dict(torch.load(path, weights_only=True)['state_dict']))"
                  if others else "")
        raise UsageError(f"load_into: run {run_id} names no {which} checkpoint (it saved none "
                         "yet, its folder was removed, or it ended before saying which was "
                         f"best){beside}.")
    import torch

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged file, or one that holds more than data
        raise UsageError(f"load_into: {path} cannot be read as weights only ({exc}). If you "
                         "trust it: model.load_state_dict(torch.load(path, weights_only=False)"
                         "['state_dict'])") from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise UsageError(f"load_into: {path} holds no 'state_dict' (not a Lightning checkpoint).")
    model.load_state_dict(state)
    return path


def _checkpoints_in(folder: Optional[str]) -> list[str]:
    """The ``.ckpt`` files in ``folder`` but ``last.ckpt``, newest first (at most 5)."""
    import os

    if not folder:
        return []
    try:
        names = [entry for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False)
                 and entry.name.endswith(".ckpt") and entry.name != "last.ckpt"]
    except OSError:
        return []
    names.sort(key=lambda entry: entry.stat(follow_symlinks=False).st_mtime, reverse=True)
    return [entry.name for entry in names[:5]]
