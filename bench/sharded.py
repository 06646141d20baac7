"""`%%lightning_train` with Lightning's ModelParallelStrategy (FSDP2 in configure_model) vs the same
Trainer launched as a script by torchrun: same module, data and Trainer arguments, in one run.

  A  magic: cell start -> fit end (wall)           B  torchrun script: start -> exit (wall)
  T  magic: first batch -> train end (training)    U  script: first batch -> train end
  D  magic: cell start -> first batch              C  script: start -> first batch
Medians of --repeats runs, after one warm-up of each.

Target: T / U <= 1.05 (the magic's training is the script's), and C / D well above 1 (the
ranks are forked from a kernel that has imported everything already).

    python bench/sharded.py [--accelerator cpu --devices 2] [--batches 200] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# this checkout's lightning_magic, also where an older copy is installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL = '''
import json, os, time
import torch
import lightning.pytorch as pl
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.utils.data import DataLoader, TensorDataset


class Timing(pl.Callback):
    """Rank 0 writes the wall-clock time of its first batch and of the end of training."""

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0 and trainer.global_rank == 0:
            self.first = time.time()

    def on_train_end(self, trainer, module):
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()
        if trainer.global_rank == 0:
            with open(os.environ["BENCH_TIMES"], "w") as handle:
                json.dump({"first": self.first, "end": time.time()}, handle)


class Sharded(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(*[torch.nn.Sequential(torch.nn.Linear(WIDTH, WIDTH),
                                                             torch.nn.GELU()) for _ in range(4)],
                                       torch.nn.Linear(WIDTH, 1))

    def configure_model(self):
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for block in self.net:
            fully_shard(block, mesh=mesh)
        fully_shard(self.net, mesh=mesh)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-4)


generator = torch.Generator().manual_seed(0)
data = TensorDataset(torch.randn(BATCHES * 32 * DEVICES, WIDTH, generator=generator),
                     torch.randn(BATCHES * 32 * DEVICES, 1, generator=generator))


def make_trainer(**extra):
    return pl.Trainer(accelerator="ACCELERATOR", devices=DEVICES, max_epochs=1,
                      strategy=ModelParallelStrategy(data_parallel_size=DEVICES,
                                                     tensor_parallel_size=1),
                      callbacks=[Timing()], enable_checkpointing=False, logger=False,
                      enable_progress_bar=False, enable_model_summary=False, **extra)
'''

SCRIPT = '''
{model}
trainer = make_trainer()
trainer.fit(Sharded(), DataLoader(data, batch_size=32))
'''


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def times(path: Path) -> dict[str, float]:
    return json.loads(path.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--devices", type=int, default=2)
    parser.add_argument("--batches", type=int, default=200, help="training batches per rank")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if args.accelerator == "gpu":
        from lightning_magic.readings import list_gpus, nvml_status

        if not list_gpus():
            print(f"sharded: skipped, no NVIDIA GPU here ({nvml_status().get('reason')})")
            return 0
    from IPython.testing.globalipapp import start_ipython
    from IPython.utils.capture import capture_output

    work = Path(tempfile.mkdtemp(prefix="lightning-magic-bench-sharded-"))
    os.chdir(work)
    mark = work / "times.json"
    os.environ["BENCH_TIMES"] = str(mark)
    model = (MODEL.replace("BATCHES", str(args.batches)).replace("WIDTH", str(args.width))
             .replace("DEVICES", str(args.devices)).replace("ACCELERATOR", args.accelerator))
    shell = start_ipython()
    shell.run_line_magic("load_ext", "lightning_magic")
    assert shell.run_cell(model).success
    cell = ("%%lightning_train --progress none\ntrainer = make_trainer()\n"
            "trainer.fit(Sharded(), DataLoader(data, batch_size=32))")
    script = work / "script.py"
    script.write_text(SCRIPT.format(model=model))
    torchrun = [str(Path(sys.executable).parent / "torchrun"), "--nproc-per-node",
                str(args.devices), "--master-addr", "127.0.0.1"]

    def magic_run() -> tuple[float, dict[str, float]]:
        started = time.time()
        with capture_output():  # the run's notes and summary; the table is what this prints
            result = shell.run_cell(cell)
        wall = time.time() - started
        run = shell.user_ns.get("lightning_run")
        assert result.success and run is not None and run.status == "finished", \
            result.error_in_exec
        return started, {"wall": wall, **times(mark)}

    def script_run() -> tuple[float, dict[str, float]]:
        started = time.time()
        subprocess.run(torchrun + ["--master-port", str(free_port()), str(script)], check=True,
                       cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return started, {"wall": time.time() - started, **times(mark)}

    magic_run(), script_run()  # warm-up: first imports, first fork, first process group
    rows: dict[str, list[float]] = {k: [] for k in "ABTUDC"}
    for _ in range(args.repeats):
        started, m = magic_run()
        rows["A"].append(m["wall"])
        rows["T"].append(m["end"] - m["first"])
        rows["D"].append(m["first"] - started)
        started, s = script_run()
        rows["B"].append(s["wall"])
        rows["U"].append(s["end"] - s["first"])
        rows["C"].append(s["first"] - started)
    a, b, t, u, d, c = (statistics.median(rows[k]) for k in "ABTUDC")
    import lightning
    import torch

    where = "CPU processes (gloo)" if args.accelerator == "cpu" else "GPUs"
    print(f"sharded (ModelParallelStrategy, FSDP2 over {args.devices} {where}), "
          f"{args.batches} batches of 32 x {args.width} per rank, median of {args.repeats}; "
          f"torch {torch.__version__}, lightning {lightning.__version__}, "
          f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| A magic: cell start -> fit end | {a:.2f} s | |")
    print(f"| B torchrun script.py: start -> exit | {b:.2f} s | |")
    print(f"| A / B | {a / b:.3f} | |")
    print(f"| T magic: first batch -> train end | {t:.2f} s | |")
    print(f"| U script: first batch -> train end | {u:.2f} s | |")
    print(f"| T / U | {t / u:.3f} | <= 1.05 |")
    print(f"| D magic: cell start -> first batch | {d:.2f} s | |")
    print(f"| C script: start -> first batch | {c:.2f} s | |")
    print(f"| C / D | {c / d:.1f}x | > 1 |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
