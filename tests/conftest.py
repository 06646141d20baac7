"""Shared fixtures: a real IPython shell with the extension loaded, a scratch working
directory, and a check that no process outlives a run. The NVML stand-in (the only
stand-in of the suite) comes from nvml_standin.py."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
from nvml_standin import fake_nvml, make_fake_nvml, nvml_missing  # noqa: F401 - fixtures

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")


@pytest.fixture(scope="session")
def _shell():
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "lightning_magic")
    return shell


@pytest.fixture
def ip(_shell, tmp_path, monkeypatch):
    """The real InteractiveShell, in an empty working directory, with a clean namespace."""
    monkeypatch.chdir(tmp_path)
    before = set(_shell.user_ns)
    yield _shell
    for name in set(_shell.user_ns) - before:
        del _shell.user_ns[name]


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


@pytest.fixture
def no_orphans():
    """Fails the test if a process it started is still alive at its end."""
    yield
    left = live_children()
    assert not left, f"processes left running: {[(p.pid, p.cmdline()[:3]) for p in left]}"


@pytest.fixture
def gpu_available():
    """The GPUs NVML sees; skips the test (with the reason) where there are none."""
    from lightning_magic.readings import list_gpus, nvml_status

    gpus = list_gpus()
    if not gpus:
        pytest.skip(f"no NVIDIA GPU: {nvml_status().get('reason') or 'NVML sees none'}")
    return gpus


@pytest.fixture
def kernel_env(monkeypatch):
    """Kernels started by the test import the same lightning_magic as the test itself."""
    import lightning_magic

    package_root = str(Path(lightning_magic.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))


# Run in a kernel: a module that trains until stopped, and tells the test through a FIFO once
# rank 0 is training (an event to wait on, instead of a sleep).
ENDLESS_SETUP = r'''
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
