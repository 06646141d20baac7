"""How much %%lightning_train adds to a ddp_notebook run, and how much sooner it starts than a script.

Measured in one run, on the same module and data, in the same process (an IPython shell, as a
kernel would be):

  A  cell start -> fit end of `%%lightning_train --accelerator cpu --devices 2`
  B  the same, for a hand-written Trainer(strategy="ddp_notebook").fit(...) in the same shell
     (Lightning's defaults: checkpoint and CSV logs, as the magic writes them too)
  C  process start -> first training batch of `python script.py` with strategy="ddp"
  D  cell start -> first training batch of the magic

Targets: A/B <= 1.05 with A-B <= 0.3 s; C/D >= 10.

    python bench/launch_overhead.py [--repeats 5] [--batches 300]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

# this checkout's lightning_magic, also where an older copy is installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL = '''
import os, time
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Bench(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Linear(256, 1))

    def on_train_batch_start(self, batch, batch_idx):
        mark = os.environ.get("BENCH_FIRST_BATCH")
        if mark and batch_idx == 0 and self.global_rank == 0 and self.current_epoch == 0:
            with open(mark, "w") as handle:
                handle.write(repr(time.time()))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


generator = torch.Generator().manual_seed(0)
X = torch.randn(BATCHES * 2 * 32, 64, generator=generator)
data = TensorDataset(X, X[:, :1])
'''

SCRIPT = '''
import lightning.pytorch as pl
{model}

if __name__ == "__main__":
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False)
    trainer.fit(Bench(), DataLoader(data, batch_size=32))
'''


def first_batch_time(path: Path) -> float:
    return float(path.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batches", type=int, default=300, help="training batches per rank")
    args = parser.parse_args()

    from IPython.testing.globalipapp import start_ipython

    work = Path(tempfile.mkdtemp(prefix="lightning-magic-bench-"))
    os.chdir(work)
    mark = work / "first-batch"
    os.environ["BENCH_FIRST_BATCH"] = str(mark)
    shell = start_ipython()
    shell.run_line_magic("load_ext", "lightning_magic")
    assert shell.run_cell(MODEL.replace("BATCHES", str(args.batches))).success

    magic_cell = ("%%lightning_train --accelerator cpu --devices 2 --max-epochs 1 --progress none\n"
                  "model = Bench()\nloader = DataLoader(data, batch_size=32)")
    plain_cell = textwrap.dedent("""
        model = Bench()
        loader = DataLoader(data, batch_size=32)
        trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_notebook", max_epochs=1,
                             enable_progress_bar=False, enable_model_summary=False)
        trainer.fit(model, loader)
    """)
    script = work / "script.py"
    script.write_text(SCRIPT.format(model=MODEL.replace("BATCHES", str(args.batches))))

    magic, plain, magic_start, script_start = [], [], [], []
    shell.run_cell(magic_cell)  # warm-up: first imports and first fork of each kind
    shell.run_cell(plain_cell)
    for _ in range(args.repeats):
        started = time.time()
        result = shell.run_cell(magic_cell)
        magic.append(time.time() - started)
        assert result.success and result.result.status == "finished", result.error_in_exec
        magic_start.append(first_batch_time(mark) - started)

        started = time.time()
        assert shell.run_cell(plain_cell).success
        plain.append(time.time() - started)

        started = time.time()
        subprocess.run([sys.executable, str(script)], check=True, cwd=work,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        script_start.append(first_batch_time(mark) - started)

    a, b = statistics.median(magic), statistics.median(plain)
    c, d = statistics.median(script_start), statistics.median(magic_start)
    print(f"launch overhead, median of {args.repeats} (2 CPU ranks, {args.batches} batches each)")
    print("| measure | value | target |")
    print("|---|---|---|")
    print(f"| A magic: cell start -> fit end | {a:.2f} s | |")
    print(f"| B plain Trainer(strategy='ddp_notebook').fit | {b:.2f} s | |")
    print(f"| A / B | {a / b:.3f} | <= 1.05 |")
    print(f"| A - B | {a - b:+.2f} s | <= 0.3 s |")
    print(f"| D magic: cell start -> first batch | {d:.2f} s | |")
    print(f"| C python script.py (ddp): start -> first batch | {c:.2f} s | |")
    print(f"| C / D | {c / d:.1f}x | >= 10x |")


if __name__ == "__main__":
    main()
