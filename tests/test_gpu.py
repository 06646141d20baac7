"""On a machine with an NVIDIA GPU: training in forked ranks, and a kernel that holds no GPU memory.

Skipped with a reason where NVML sees no GPU (every test here carries the gpu marker).
"""

from __future__ import annotations

import os

import pytest
from IPython.utils.capture import capture_output

pytestmark = [pytest.mark.gpu, pytest.mark.slow]

CELL = '''
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.ReLU(), torch.nn.Linear(1024, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


X = torch.randn(8192, 256)
model = Net()
train_loader = DataLoader(TensorDataset(X, X[:, :1]), batch_size=256)
'''


def kernel_gpu_memory() -> int:
    import pynvml

    pynvml.nvmlInit()
    used = 0
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
            if proc.pid == os.getpid():
                used += proc.usedGpuMemory or 0
    return used


def test_gpu_runs_leave_the_kernel_without_cuda(ip, gpu_available):
    import torch

    for _ in range(3):
        with capture_output():
            result = ip.run_cell(f"%%lightning_train --devices 1 --precision bf16-mixed "
                                 f"--max-epochs 1\n{CELL}")
        assert result.success, result.error_in_exec
        run = result.result
        assert run.status == "finished" and run.accelerator == "gpu"
        assert run.metrics["loss"] == run.metrics["loss"]  # a number came back
    assert not torch.cuda.is_initialized()
    assert kernel_gpu_memory() == 0


def test_all_gpus_with_ddp(ip, gpu_available):
    with capture_output() as captured:
        result = ip.run_cell(f"%%lightning_train --devices auto --max-epochs 1\n{CELL}")
    assert result.success, captured.stdout
    assert result.result.num_processes == len(gpu_available)
