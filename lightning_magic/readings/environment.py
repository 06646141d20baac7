"""Where this machine keeps things: the checkpoint root that runs write to and the server reports.

One definition for the kernel (where a run's folder goes) and the server (whose disk the panel
shows): a Lightning studio's persistent storage when there is one, else ``lightning_runs/`` in the
working directory.
"""

from __future__ import annotations

import os
from pathlib import Path

STUDIO_ROOT = "/teamspace/studios/this_studio"  # a Lightning cloud studio's persistent storage
CHECKPOINT_DIRNAME = "lightning_runs"


def checkpoint_root(cwd: str | os.PathLike | None = None) -> Path:
    """The folder under which each run gets its own checkpoint folder."""
    if os.path.isdir(STUDIO_ROOT) and os.access(STUDIO_ROOT, os.W_OK):
        return Path(STUDIO_ROOT) / CHECKPOINT_DIRNAME
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError:  # the working directory was deleted
            cwd = Path.home()
    return Path(cwd) / CHECKPOINT_DIRNAME
