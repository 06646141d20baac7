"""What a run leaves behind, and its removal.

- ``left_running``: threads and processes a rank's code started and left running once the
  rank's work is done; the rank exits regardless, and the kernel ends its process group.
- ``work_dir`` / ``remove_stale``: each launch's folder in the temporary directory carries the
  kernel's pid, so a folder whose kernel was killed is removed by the next launch; a detached
  run's supervisor keeps its folder while it lives (``keep_while_alive``).
- ``Reaper``: a small process that outlives a killed kernel long enough to end its ranks'
  process groups (the ranks die with the kernel by themselves; what they started may not).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
import threading
from typing import Optional

PREFIX = "lightning-magic-"
KEEPER = "supervisor.pid"  # in a launch folder: the process that keeps it past its kernel


def left_running() -> list[str]:
    """Non-daemon threads (other than the caller and the main thread) and child processes."""
    import multiprocessing

    import psutil

    me, main = threading.current_thread(), threading.main_thread()
    workers = {p.pid for p in multiprocessing.active_children() if p.daemon}  # DataLoader's
    found = [f"thread {t.name!r}" for t in threading.enumerate()
             if t.is_alive() and not t.daemon and t not in (me, main)]
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            command = " ".join(child.cmdline()[:3]) or child.name()
        except psutil.Error:
            continue
        if child.pid not in workers:
            found.append(f"process {child.pid} ({command[:80]})")
    return found


def work_dir() -> str:
    remove_stale()
    return tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")


def remove_stale(directory: Optional[str] = None) -> list[str]:
    """Remove this user's launch folders whose kernel is gone; return what was removed."""
    directory = directory or tempfile.gettempdir()
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    for name in names:
        pid = _pid_of(name)
        path = os.path.join(directory, name)
        if pid is None or _alive(pid):
            continue
        try:
            info = os.lstat(path)
        except OSError:
            continue
        if info.st_uid == os.getuid() and os.path.isdir(path) and not os.path.islink(path) \
                and not _kept(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def keep_while_alive(folder: str, pid: int) -> None:
    """Keep the launch folder ``folder`` while process ``pid`` lives, its kernel gone or not."""
    with open(os.path.join(folder, KEEPER), "w") as handle:
        handle.write(str(pid))


def _kept(folder: str) -> bool:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        with open(os.open(os.path.join(folder, KEEPER), flags), "rb") as handle:
            text = handle.read(16).decode("ascii", "replace").strip()
    except OSError:
        return False
    return text.isdigit() and _alive(int(text))


def _pid_of(name: str) -> Optional[int]:
    if not name.startswith(PREFIX):
        return None
    head = name[len(PREFIX):].split("-", 1)[0]
    return int(head) if head.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Reaper:
    """Forked once per launch: told each rank's pid (its process group), it waits on a pipe; if
    the pipe closes without "end" (the kernel was killed), it ends those groups."""

    def __init__(self) -> None:
        read, self._write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # pragma: no cover - the reaper's own process
            os.close(self._write)
            _reap(read)
        os.close(read)

    @property
    def fd(self) -> int:
        """The kernel's end of the pipe (a rank closes its inherited copy first thing)."""
        return self._write

    def watch(self, pids: list[int]) -> None:
        self._send("".join(f"{pid}\n" for pid in pids))

    def close(self) -> None:
        self._send("end\n")
        try:
            os.close(self._write)
        except OSError:
            pass
        try:
            os.waitpid(self.pid, 0)
        except ChildProcessError:
            pass

    def _send(self, text: str) -> None:
        try:
            os.write(self._write, text.encode())
        except OSError:
            pass


def _reap(read: int) -> None:  # pragma: no cover - runs in the reaper
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the notebook's stop is the kernel's
        os.setpgid(0, 0)  # not in the kernel's group: a group signal to the kernel spares it
        data = b""
        while True:
            chunk = os.read(read, 4096)
            if not chunk:
                break
            data += chunk
        lines = data.decode(errors="replace").split()
        if "end" not in lines:
            for pid in [int(p) for p in lines if p.isdigit()]:
                for signum in (signal.SIGTERM, signal.SIGKILL):
                    try:
                        os.killpg(pid, signum)
                    except OSError:
                        pass
    finally:
        os._exit(0)
