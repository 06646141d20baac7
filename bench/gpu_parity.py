"""Throughput of %%lightning_train on one GPU vs a plain script with the same Trainer.

Runs where NVML sees an NVIDIA GPU; elsewhere it says so and exits 0. Measured in one run:

  M  samples/s of `%%lightning_train --devices 1 --precision bf16-mixed` (median of 3 runs)
  S  samples/s of `python script.py`, same module, data and Trainer arguments (median of 3)
  and, after the three magic runs, the GPU memory NVML lists for the kernel's own pid.

Target: M / S >= 0.98, and 0 bytes held by the kernel.

    python bench/gpu_parity.py [--batches 400]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

# this checkout's lightning_magic, also where an older copy is installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL = '''
import json, os, time
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Throughput(pl.Callback):
    """samples/s between batch 20 and the last batch (warm-up excluded), from rank 0."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 20:
            torch.cuda.synchronize()
            self.start, self.first = time.perf_counter(), batch_idx

    def on_train_end(self, trainer, module):
        torch.cuda.synchronize()
        batches = trainer.global_step - self.first
        rate = batches * BATCH / (time.perf_counter() - self.start)
        if trainer.global_rank == 0:
            with open(os.environ["BENCH_RESULT"], "w") as handle:
                json.dump({"samples_per_s": rate}, handle)


class Wide(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(2048, 2048), torch.nn.GELU()) for _ in range(6)], torch.nn.Linear(2048, 1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x).float(), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-4)

    def configure_callbacks(self):
        return [Throughput()]


BATCH = 512
X = torch.randn(BATCHES * BATCH, 2048)
data = TensorDataset(X, X[:, :1])
'''

SCRIPT = '''
{model}

if __name__ == "__main__":
    trainer = pl.Trainer(accelerator="gpu", devices=1, precision="bf16-mixed", max_epochs=1,
                         enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(Wide(), DataLoader(data, batch_size=BATCH))
'''


def kernel_gpu_bytes() -> int:
    import pynvml

    pynvml.nvmlInit()
    used = 0
    for index in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        for getter in (pynvml.nvmlDeviceGetComputeRunningProcesses,
                       pynvml.nvmlDeviceGetGraphicsRunningProcesses):
            for proc in getter(handle):
                if proc.pid == os.getpid():
                    used += proc.usedGpuMemory or 0
    return used


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=400)
    args = parser.parse_args()
    from lightning_magic.readings import list_gpus, nvml_status

    gpus = list_gpus()
    if not gpus:
        print(f"gpu_parity: skipped, no NVIDIA GPU here ({nvml_status().get('reason')})")
        return 0
    from IPython.testing.globalipapp import start_ipython

    work = Path(tempfile.mkdtemp(prefix="lightning-magic-gpu-bench-"))
    os.chdir(work)
    result_file = work / "result.json"
    os.environ["BENCH_RESULT"] = str(result_file)
    model = MODEL.replace("BATCHES", str(args.batches))
    shell = start_ipython()
    shell.run_line_magic("load_ext", "lightning_magic")
    assert shell.run_cell(model).success
    script = work / "script.py"
    script.write_text(SCRIPT.format(model=model))

    magic, plain = [], []
    for _ in range(3):
        result = shell.run_cell("%%lightning_train --devices 1 --precision bf16-mixed "
                                "--max-epochs 1 --progress none\n"
                                "module = Wide()\nloader = DataLoader(data, batch_size=BATCH)")
        assert result.success and result.result.status == "finished", result.error_in_exec
        magic.append(json.loads(result_file.read_text())["samples_per_s"])
        subprocess.run([sys.executable, str(script)], check=True, cwd=work,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        plain.append(json.loads(result_file.read_text())["samples_per_s"])
    held = kernel_gpu_bytes()
    m, s = statistics.median(magic), statistics.median(plain)
    print(f"gpu parity on {gpus[0]['name']}, bf16-mixed, median of 3")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| M magic samples/s | {m:,.0f} | |")
    print(f"| S script samples/s | {s:,.0f} | |")
    print(f"| M / S | {m / s:.3f} | >= 0.98 |")
    print(f"| GPU memory held by the kernel after 3 runs | {held} B | 0 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
