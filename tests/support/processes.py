"""Processes a test started that are still running."""

from __future__ import annotations

import psutil


def live_children() -> list[psutil.Process]:
    """Processes started by this test process that are still running (zombies excluded)."""
    alive = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
        except psutil.NoSuchProcess:
            continue
    return alive
