"""A real Jupyter kernel driven through jupyter_client, every iopub message it sent kept in order,
and FIFOs a test waits on (events from inside a kernel or a rank, instead of sleeps)."""

from __future__ import annotations

import os
import queue
import threading

import psutil
from jupyter_client.manager import start_new_kernel


class Kernel:
    """A kernel and every iopub message it sent, in order, read by one thread."""

    def __init__(self, cwd: str, setup: str = "", env: dict | None = None) -> None:
        extra = {} if env is None else {"env": env}  # kept for a restart_kernel() too
        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=cwd, **extra)
        self.messages: list[dict] = []
        self._changed = threading.Condition()
        self._listen()
        if setup:
            self.ok(setup)

    def _listen(self) -> None:
        self._stop = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def restart(self, setup: str = "") -> None:
        """Jupyter's restart (a shutdown request, then the kill if need be), then new channels
        to the new kernel, as a frontend opens them; ``setup`` run in it."""
        self._stop.set()
        self._reader.join()
        self.kc.stop_channels()
        self.km.restart_kernel(now=False)
        self.kc = self.km.client()
        self.kc.start_channels()
        self.kc.wait_for_ready(timeout=120)
        with self._changed:  # message ids start over with the new kernel's session
            self.messages.clear()
        self._listen()
        if setup:
            self.ok(setup)

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                message = self.kc.get_iopub_msg(timeout=0.5)
            except queue.Empty:
                continue
            except Exception:  # noqa: BLE001 - the channels were closed
                return
            with self._changed:
                self.messages.append(message)
                self._changed.notify_all()

    def wait_until(self, found, what: str, since: int = 0) -> int:
        """The index of the first message from ``since`` on for which ``found(message)``."""
        with self._changed:
            while True:
                hit = next((i for i in range(since, len(self.messages))
                            if found(self.messages[i])), None)
                if hit is not None:
                    return hit
                assert self._changed.wait(timeout=300), f"no iopub message: {what}"

    def status(self, msg_id: str, state: str, since: int = 0) -> int:
        return self.wait_until(lambda m: m["msg_type"] == "status" and m["parent_header"].get(
            "msg_id") == msg_id and m["content"]["execution_state"] == state,
            f"{state} after {msg_id}", since)

    def execute(self, code: str) -> str:
        return self.kc.execute(code)

    def display_id(self, msg_id: str, what: str) -> str:
        """The id of the first display the cell ``msg_id`` showed that it can update."""
        shown = [m for m in self.of(msg_id, "display_data")
                 if m["content"].get("transient", {}).get("display_id")]
        assert shown, f"the cell showed no {what}"
        return shown[0]["content"]["transient"]["display_id"]

    def updated_while_another_cell_runs(self, display_id: str, release, what: str) -> str:
        """An update of ``display_id`` comes while another cell runs: one that reads the FIFO
        ``release`` (made here), which is written once the update came. That cell's msg_id."""
        os.mkfifo(release)
        other = self.execute(f"open({str(release)!r}).read()")  # runs until the test writes
        busy = self.status(other, "busy")
        update = self.wait_until(
            lambda m: m["msg_type"] == "update_display_data"
            and m["content"]["transient"]["display_id"] == display_id, f"an update of {what}", busy)
        release.write_text("go")
        assert self.reply(other)["status"] == "ok"
        assert self.status(other, "idle") > update, "the update came while the other cell ran"
        return other

    def reply(self, msg_id: str) -> dict:
        """The execute reply of ``msg_id``, once all its output is in (the kernel is idle)."""
        while True:
            reply = self.kc.get_shell_msg(timeout=300)
            if reply["parent_header"].get("msg_id") == msg_id:
                self.status(msg_id, "idle")
                return reply["content"]

    def ok(self, code: str) -> str:
        """Run ``code``; its stdout. Fails on an error."""
        msg_id = self.execute(code)
        content = self.reply(msg_id)
        assert content["status"] == "ok", (content.get("ename"), content.get("evalue"))
        return self.stdout(msg_id)

    def of(self, msg_id: str, *types: str) -> list[dict]:
        with self._changed:
            return [m for m in self.messages if m["parent_header"].get("msg_id") == msg_id
                    and m["msg_type"] in types]

    def stdout(self, msg_id: str) -> str:
        return "".join(m["content"]["text"] for m in self.of(msg_id, "stream")
                       if m["content"]["name"] == "stdout")

    def value(self, msg_id: str) -> str:
        return "".join(m["content"]["data"]["text/plain"]
                       for m in self.of(msg_id, "execute_result"))

    def children(self) -> list[psutil.Process]:
        """The kernel's child processes (its ranks, and what they started), zombies excluded."""
        kernel = psutil.Process(self.km.provisioner.process.pid)
        return [p for p in kernel.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]

    def close(self) -> None:
        self._stop.set()
        self.kc.stop_channels()
        if self.km.is_alive():
            self.km.shutdown_kernel(now=True)


def fifo_reader(path) -> threading.Thread:
    """Make a FIFO at ``path``; the returned thread ends once something wrote to it."""
    os.mkfifo(path)
    thread = threading.Thread(target=path.read_text, daemon=True)
    thread.start()
    return thread


def wait_for(thread: threading.Thread, what: str) -> None:
    thread.join(timeout=300)
    assert not thread.is_alive(), what


def package_kernel(cwd: str, setup: str) -> Kernel:
    """A kernel that imports the same lightning_magic as the test itself, after a restart too."""
    import lightning_magic

    root = os.path.dirname(os.path.dirname(os.path.abspath(lightning_magic.__file__)))
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
    return Kernel(cwd, setup, env=dict(os.environ, PYTHONPATH=path))
