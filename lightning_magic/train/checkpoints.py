"""Where a run's checkpoints go, and which checkpoint ``--resume`` continues from."""

from __future__ import annotations

import os
from datetime import datetime
from typing import Any, Optional

from IPython.core.error import UsageError

from ..flags import TrainFlags


def runs_root(cwd: str) -> str:
    """The folder that holds one folder per run (the server reports this same folder's disk)."""
    from ..readings.environment import checkpoint_root

    return str(checkpoint_root(cwd))


def check_resume(flags: TrainFlags, cwd: str) -> Optional[str]:
    """The checkpoint --resume points at, or a UsageError saying why there is none."""
    if flags.resume is None:
        return None
    if flags.resume != "last":
        path = os.path.abspath(os.path.expanduser(flags.resume))
        if not os.path.isfile(path):
            raise UsageError(f"--resume {flags.resume}: no such checkpoint file. Give 'last' or "
                             "the path of a .ckpt file.")
        return path
    if flags.ckpt_dir is not None:
        path = os.path.join(os.path.abspath(os.path.expanduser(flags.ckpt_dir)), "last.ckpt")
        if not os.path.isfile(path):
            raise UsageError(f"--resume last: {flags.ckpt_dir} has no last.ckpt yet. Train once "
                             f"with --ckpt-dir {flags.ckpt_dir} first, or drop --resume.")
        return path
    root = runs_root(cwd)
    candidates = []
    if os.path.isdir(root):
        for name in os.listdir(root):
            path = os.path.join(root, name, "last.ckpt")
            if os.path.isfile(path):
                candidates.append((os.path.getmtime(path), path))
    if not candidates:
        raise UsageError(f"--resume last: no run under {root} has a last.ckpt. Train once first, "
                         "or give --resume PATH.")
    return max(candidates)[1]


def choose_ckpt_dir(flags: TrainFlags, resume_path: Optional[str], model: Any, cwd: str) -> str:
    if flags.ckpt_dir is not None:
        return os.path.abspath(os.path.expanduser(flags.ckpt_dir))
    if flags.resume == "last" and resume_path is not None:
        return os.path.dirname(resume_path)  # keep writing where the run we continue wrote
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(runs_root(cwd), f"{stamp}-{type(model).__name__}")
    path, n = base, 1
    while os.path.exists(path):
        n += 1
        path = f"{base}-{n}"
    return path
