"""Who a process on a GPU is: its user and, for this user's processes, its command line and
whether it is a Jupyter kernel, a process forked from one, or a ``%%lightning_train`` rank.

A Jupyter kernel is recognised by its connection file on the command line
(``ipykernel_launcher -f .../kernel-<id>.json``). Processes forked from a kernel (the ranks of
``ddp_notebook``, their workers) inherit that command line, so a process whose ancestor carries
the same kernel file is "forked from the kernel". A rank started with the environment variables
``LIGHTNING_MAGIC_KERNEL_ID``, ``LIGHTNING_MAGIC_RANK`` and ``LIGHTNING_MAGIC_RUN_ID`` is
labelled with them; note that the environment a process shows to others is the one it was
executed with, so variables set after a fork are not visible here.

Processes of other users are listed with their user only: no name, no command line, no rank
(only this user's published runs label ranks, and only processes forked from their kernel).
"""

from __future__ import annotations

import os
import re
import threading

import psutil

KERNEL_ID_VAR = "LIGHTNING_MAGIC_KERNEL_ID"
RANK_VAR = "LIGHTNING_MAGIC_RANK"
RUN_ID_VAR = "LIGHTNING_MAGIC_RUN_ID"

_KERNEL_FILE = re.compile(r"kernel-([0-9A-Za-z][0-9A-Za-z_-]*)\.json$")
_MAX_COMMAND = 500
_MAX_CACHED = 1024
_ANCESTORS = 4


def kernel_id_from_cmdline(cmdline: list[str]) -> str | None:
    """The kernel id in a command line that names a ``kernel-<id>.json`` connection file."""
    for argument in cmdline:
        match = _KERNEL_FILE.search(argument)
        if match:
            return match.group(1)
    return None


def _unlabelled() -> dict:
    return {"user": None, "name": None, "command": None, "kernel_id": None,
            "notebook_path": None, "rank": None, "run_id": None, "role": None}


def _environ(process: psutil.Process) -> dict:
    try:
        return process.environ()
    except (psutil.Error, OSError):  # AccessDenied, gone, or no /proc/<pid>/environ
        return {}


def _rank(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _forked_from_kernel(process: psutil.Process, kernel_id: str) -> bool:
    try:
        ancestors = process.parents()[:_ANCESTORS]
    except psutil.Error:
        return False
    for ancestor in ancestors:
        try:
            if kernel_id_from_cmdline(ancestor.cmdline()) == kernel_id:
                return True
        except psutil.Error:
            continue
    return False


class ProcessLabeler:
    """Describes GPU processes; a description is cached for as long as its pid lives."""

    def __init__(self):
        self._uid = os.getuid()
        self._lock = threading.Lock()
        self._cache: dict[int, tuple[float, dict]] = {}

    def label(self, memory_by_pid: dict[int, int | None]) -> list[dict]:
        """``[{"pid", "memory_used", "user", ..., "role"}]`` sorted by pid. Ranks of an active
        ``%%lightning_train`` run get their kernel, run and rank from the run its kernel
        published (a forked rank's own environment cannot be read from outside)."""
        ranks = _published_ranks() if memory_by_pid else {}
        described = []
        for pid, memory in sorted(memory_by_pid.items()):
            description = {"pid": pid, "memory_used": memory, **self.describe(pid)}
            if pid in ranks:
                description.update({k: v for k, v in ranks[pid].items() if v is not None},
                                   role="rank")
            described.append(description)
        return described

    def describe(self, pid: int) -> dict:
        try:
            process = psutil.Process(pid)
            created = process.create_time()
        except (psutil.Error, OSError):  # gone, or in another pid namespace (containers)
            return _unlabelled()
        with self._lock:
            cached = self._cache.get(pid)
        if cached is not None and cached[0] == created:
            return dict(cached[1])
        description = self._inspect(process)
        with self._lock:
            if len(self._cache) >= _MAX_CACHED:
                self._cache.clear()
            self._cache[pid] = (created, description)
        return dict(description)

    def _inspect(self, process: psutil.Process) -> dict:
        description = _unlabelled()
        try:
            description["user"] = process.username()
            own = process.uids().real == self._uid
        except (psutil.Error, KeyError):
            return description
        if not own:
            return description
        try:
            name, cmdline = process.name(), process.cmdline()
        except psutil.Error:
            return description
        command = " ".join(cmdline)
        if len(command) > _MAX_COMMAND:
            command = command[: _MAX_COMMAND - 1] + "…"
        environ = _environ(process)
        kernel_id = environ.get(KERNEL_ID_VAR) or kernel_id_from_cmdline(cmdline)
        rank = _rank(environ.get(RANK_VAR))
        if rank is not None:
            role = "rank"
        elif kernel_id is not None:
            role = "kernel-child" if _forked_from_kernel(process, kernel_id) else "kernel"
        else:
            role = None
        description.update(name=name, command=command, kernel_id=kernel_id, rank=rank,
                           run_id=environ.get(RUN_ID_VAR), role=role)
        return description


def _published_ranks() -> dict[int, dict]:
    try:
        from .runs import rank_labels

        return rank_labels(show_other_users=False)  # others' processes: their user only
    except Exception:  # noqa: BLE001 - labels are a courtesy; readings must go on
        return {}
