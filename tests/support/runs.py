"""Run files and processes for the tests of the published runs."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys


def state(run_id: str = "a1b2c3", **fields) -> dict:
    base = {"run_id": run_id, "kernel_id": "kernel-1", "pid": os.getpid(), "rank_pids": [],
            "devices": [0, 1], "accelerator": "gpu", "started": 1_700_000_000.0,
            "model": "Regressor", "epoch": 0, "step": 0, "metrics": {}, "status": "running"}
    base.update(fields)
    return base


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


@contextlib.contextmanager
def children(count: int):
    """Processes this test process started (so they descend from it), ended on exit."""
    procs = [subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"],
                              stdin=subprocess.PIPE) for _ in range(count)]
    try:
        yield [p.pid for p in procs]
    finally:
        for proc in procs:
            proc.stdin.close()
            proc.wait(30)
