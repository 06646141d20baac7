"""Interrupts and kernel death in a real Jupyter kernel: ranks stop, nothing is left behind."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import psutil
import pytest
from jupyter_client.manager import start_new_kernel

import lightning_magic

pytestmark = pytest.mark.slow

SETUP = r'''
%load_ext lightning_magic
import os, torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Endless(pl.LightningModule):
    """Tells the test (through a FIFO) when rank 0 is training, then keeps training."""

    def __init__(self, fifo=None):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        self.fifo = fifo

    def training_step(self, batch, batch_idx):
        if self.fifo and self.global_rank == 0 and self.global_step == 3:
            with open(self.fifo, "w") as signal_test:
                signal_test.write("training\n")
            self.fifo = None
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


X = torch.randn(512, 8)
loader = DataLoader(TensorDataset(X, X.sum(1, keepdim=True)), batch_size=4)
'''


@pytest.fixture
def kernel(tmp_path, monkeypatch):
    package_root = str(Path(lightning_magic.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        reply = kc.execute_interactive(SETUP, timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]
        yield km, kc
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)


def run(kc, code, timeout=120):
    """Execute code; return (reply content, text printed)."""
    out: list[str] = []

    def collect(msg):
        content = msg["content"]
        if msg["msg_type"] == "stream":
            out.append(content["text"])
        elif msg["msg_type"] in ("execute_result", "display_data"):
            out.append(content["data"].get("text/plain", ""))
        elif msg["msg_type"] == "error":
            out.append("\n".join(content["traceback"]))

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=collect)
    return reply["content"], "".join(out)


def start_training_and_wait(kc, tmp_path, line):
    """Start a training cell, and return once rank 0 has trained three steps."""
    fifo = tmp_path / "training.fifo"
    os.mkfifo(fifo)
    msg_id = kc.execute(f"{line}\nmodel = Endless({str(fifo)!r})\ntrain_loader = loader")
    reader = {}
    thread = threading.Thread(target=lambda: reader.update(text=fifo.read_text()), daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert reader.get("text") == "training\n", "the training cell never started training"
    return msg_id


def reply_to(kc, msg_id, timeout=60):
    while True:
        reply = kc.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


def rank_processes(km) -> list[psutil.Process]:
    kernel = psutil.Process(km.provisioner.process.pid)
    return [p for p in kernel.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


def test_interrupt_stops_ranks_checkpoints_and_resume_continues(kernel, tmp_path):
    km, kc = kernel
    ckpt = tmp_path / "ckpt"
    msg_id = start_training_and_wait(
        kc, tmp_path, f"%%lightning_train --accelerator cpu --devices 2 --max-epochs 1000 "
                      f"--ckpt-dir {ckpt}")
    ranks = rank_processes(km)
    assert len(ranks) >= 2
    km.interrupt_kernel()  # SIGINT to the kernel's process group, as JupyterLab's stop button
    content = reply_to(kc, msg_id)
    assert content["status"] == "error" and content["ename"] == "TrainingFailed"
    gone, alive = psutil.wait_procs(ranks, timeout=5)
    assert not alive, "a rank was still running 5 s after the interrupt"

    content, text = run(kc, "print(lightning_run.status, lightning_run.global_step, "
                            "lightning_run.report.key)")
    assert content["status"] == "ok", text
    status, step, key = text.split()
    assert (status, key) == ("interrupted", "interrupted") and int(step) >= 3
    assert (ckpt / "last.ckpt").is_file()
    assert not rank_processes(km)

    content, text = run(kc, f"%%lightning_train --accelerator cpu --devices 2 --max-steps "
                            f"{int(step) + 4} --ckpt-dir {ckpt} --resume last\n"
                            "model = Endless()\ntrain_loader = loader\n")
    assert content["status"] == "ok", text
    content, text = run(kc, "print(lightning_run.status, lightning_run.global_step, "
                            "min(r['step'] for r in lightning_run.history))")
    assert content["status"] == "ok", text
    status, final_step, first_step = text.split()
    assert status == "finished" and int(final_step) == int(step) + 4
    assert int(first_step) > int(step), "training resumed from the interrupt's checkpoint"
    assert not rank_processes(km)


def test_ranks_die_with_the_kernel(kernel, tmp_path):
    km, kc = kernel
    start_training_and_wait(kc, tmp_path,
                            "%%lightning_train --accelerator cpu --devices 2 --max-epochs 1000")
    ranks = rank_processes(km)
    assert len(ranks) >= 2
    km.provisioner.process.kill()  # the kernel dies without any chance to clean up
    gone, alive = psutil.wait_procs(ranks, timeout=15)
    assert not alive, f"ranks outlived their kernel: {[p.pid for p in alive]}"
