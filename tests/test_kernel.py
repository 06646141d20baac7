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


def rank_processes(km) -> list[psutil.Process]:
    kernel = psutil.Process(km.provisioner.process.pid)
    return [p for p in kernel.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


def test_interrupt_in_a_notebook_stops_ranks_and_resume_continues(tmp_path, monkeypatch):
    """nbclient runs a notebook; the kernel manager interrupts its training cell, as the stop
    button does (SIGINT to the kernel's process group)."""
    import nbformat
    from nbclient import NotebookClient

    package_root = str(Path(lightning_magic.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    fifo, ckpt = tmp_path / "training.fifo", tmp_path / "ckpt"
    os.mkfifo(fifo)
    cell = nbformat.v4.new_code_cell
    notebook = nbformat.v4.new_notebook(cells=[
        cell(SETUP),
        cell(f"%%lightning_train --accelerator cpu --devices 2 --max-epochs 1000 --ckpt-dir {ckpt}\n"
             f"model = Endless({str(fifo)!r})\ntrain_loader = loader",
             metadata={"tags": ["raises-exception"]}),
        cell("print(lightning_run.status, lightning_run.global_step, lightning_run.report.key)"),
        cell(f"%%lightning_train --accelerator cpu --devices 2 --ckpt-dir {ckpt} --resume last "
             "--max-steps {lightning_run.global_step + 4}\nmodel = Endless()\ntrain_loader = loader"),
        cell("print(lightning_run.status, lightning_run.global_step, "
             "min(r['step'] for r in lightning_run.history))"),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    failures = []

    def execute():
        try:
            client.execute()
        except Exception as error:  # noqa: BLE001 - reported by the assertions below
            failures.append(error)

    runner = threading.Thread(target=execute, daemon=True)
    runner.start()
    reader = {}
    waiting = threading.Thread(target=lambda: reader.update(text=fifo.read_text()), daemon=True)
    waiting.start()
    waiting.join(timeout=180)
    assert reader.get("text") == "training\n", "the training cell never started training"
    kernel = psutil.Process(client.km.provisioner.process.pid)
    ranks = [p for p in kernel.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    assert len(ranks) >= 2
    import asyncio

    asyncio.run(client.km.interrupt_kernel())  # nbclient's kernel manager is the async one
    gone, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive, "a rank outlived the interrupt"
    runner.join(timeout=300)
    assert not runner.is_alive() and not failures, failures

    training = notebook.cells[1]
    errors = [o for o in training.outputs if o["output_type"] == "error"]
    assert [e["ename"] for e in errors] == ["TrainingFailed"]
    assert "Traceback" not in "".join(errors[0]["traceback"])  # the report, not rank tracebacks
    status, step, key = "".join(o.get("text", "") for o in notebook.cells[2].outputs).split()
    assert (status, key) == ("interrupted", "interrupted") and int(step) >= 3
    assert (ckpt / "last.ckpt").is_file()
    final, final_step, first_step = "".join(
        o.get("text", "") for o in notebook.cells[4].outputs).split()
    assert final == "finished" and int(final_step) == int(step) + 4
    assert int(first_step) == int(step) + 1, "training went on from the interrupt's checkpoint"


def test_ranks_die_with_the_kernel(kernel, tmp_path):
    km, kc = kernel
    start_training_and_wait(kc, tmp_path,
                            "%%lightning_train --accelerator cpu --devices 2 --max-epochs 1000")
    ranks = rank_processes(km)
    assert len(ranks) >= 2
    km.provisioner.process.kill()  # the kernel dies without any chance to clean up
    gone, alive = psutil.wait_procs(ranks, timeout=15)
    assert not alive, f"ranks outlived their kernel: {[p.pid for p in alive]}"
