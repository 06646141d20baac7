"""What a Lightning cell as written costs under %%lightning_train: predict on two ranks against one
process, and the magic's cost per optimizer step on a long run of tiny steps.

Measured in one run, on the same module and data, in the same process (an IPython shell, as a
kernel would be):

  P2 / P1  predict throughput (samples per second, cell start -> cell end) of a cell
           `trainer.predict(model, loader)` under `%%lightning_train --accelerator cpu
           --devices 2` against `--devices 1`
  S2 / B2  seconds per optimizer step, in rank 0's training loop, of the same fit cell under
           `%%lightning_train --accelerator cpu --devices 2` against the hand-written
           Trainer(strategy="ddp_notebook", accelerator="cpu", devices=2)
  S1 / B1  the same for one process: `--devices 1` against a plain Trainer(devices=1) in the
           kernel (no fork)
  S2q, S1q the magic's runs again with `--progress none`: what the live view adds
  S1w / B1w one process again, on an MLP 8-512-512-1 (batch 256) whose steps use torch's
           OpenMP pool, after a cell in the kernel has computed with that pool (as a notebook
           that looked at its data has): a rank forked from such a kernel must not inherit the
           kernel's pool (see lightning_magic/train/launch/openmp.py)

A step's time is read inside rank 0 (the module's own hooks, from the start of the first batch
to the start of the last), so it holds every hook of every callback both Trainers run, and no
start-up; the cell's whole time is printed beside it. Each side's torch thread count is read in
its rank 0 (torch.get_num_threads()); for the magic, the run's notes say the same.

The fits other than S1w / B1w run before anything in the kernel uses torch's OpenMP pool: a
plain ddp_notebook rank forked after that can wait forever for the pool's threads (the magic is
built not to), so no two-rank plain run comes after it.

  paired   S1 / B1 again from N more pairs of fits side by side (--pairs N): the median of
           the pairs' ratios, of wall time and of the training thread's CPU time per step

    python bench/cell_trainer.py [--repeats 3] [--steps 2000] [--samples 200000] [--pairs 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from IPython.utils.capture import capture_output

# this checkout's lightning_magic, also where an older copy is installed
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

MODEL = '''
import json, os, time
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


def _mark(name, **values):
    with open(os.path.join(os.environ["BENCH_MARKS"], name), "w") as handle:
        json.dump(values, handle)


class Tiny(pl.LightningModule):
    """One small linear layer: a step is almost all framework."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_rank != 0:
            return
        if batch_idx == 0:
            self._first, self._cpu = time.perf_counter(), time.thread_time()
        elif batch_idx == self.trainer.num_training_batches - 1:
            _mark("fit", step=(time.perf_counter() - self._first) / batch_idx,
                  cpu=(time.thread_time() - self._cpu) / batch_idx,
                  threads=torch.get_num_threads())

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


class Mlp(Tiny):
    """Tiny's hooks on a layer wide enough that a step computes with OpenMP threads."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Sequential(torch.nn.Linear(8, 512), torch.nn.ReLU(),
                                         torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                         torch.nn.Linear(512, 1))


class Wide(pl.LightningModule):
    """An MLP whose forward pass is the work: predict throughput is compute."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(64, 512), torch.nn.ReLU(),
                                       torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                       torch.nn.Linear(512, 16))

    def on_predict_start(self):
        if self.global_rank == 0:
            self._first = time.perf_counter()

    def on_predict_end(self):
        if self.global_rank == 0:
            _mark("predict", loop=time.perf_counter() - self._first,
                  threads=torch.get_num_threads())

    def predict_step(self, batch, batch_idx):
        return self.net(batch[0])


generator = torch.Generator().manual_seed(0)
tiny_two = TensorDataset(torch.randn(STEPS * 2 * 4, 8, generator=generator),
                         torch.randn(STEPS * 2 * 4, 1, generator=generator))
tiny_one = TensorDataset(tiny_two.tensors[0][:STEPS * 4], tiny_two.tensors[1][:STEPS * 4])
wide = TensorDataset(torch.randn(SAMPLES, 64, generator=generator))
mlp_data = TensorDataset(torch.randn(STEPS * 64, 8, generator=generator),
                         torch.randn(STEPS * 64, 1, generator=generator))
predictor = Wide()
'''

FIT = """
model = {model}()
trainer = pl.Trainer({hardware}max_epochs=1, enable_progress_bar=False, enable_model_summary=False)
trainer.fit(model, DataLoader({data}, batch_size={batch}))
"""

# the kernel computes with its OpenMP pool, as a cell that looks at the data would
KERNEL_COMPUTES = "torch.nn.functional.log_softmax(torch.randn(4096, 1000), 1).sum()"

PREDICT = """
trainer = pl.Trainer({hardware}enable_progress_bar=False, enable_model_summary=False)
predicted = trainer.predict(predictor, DataLoader(wide, batch_size=500))
"""


class Bench:
    """Runs cells in the shell and keeps, per cell, what each run measured."""

    def __init__(self, shell, marks: Path) -> None:
        self.shell, self.marks = shell, marks
        self.seconds: dict[str, list[float]] = {}   # cell start -> cell end
        self.kernel_cpu: dict[str, list[float]] = {}  # CPU the kernel's own threads used
        self.inside: dict[str, list[float]] = {}    # what rank 0 measured in its loop
        self.cpu: dict[str, list[float]] = {}       # its training thread's CPU, per step
        self.threads: dict[str, set[int]] = {}
        self.notes: dict[str, list[str]] = {}

    def time_cell(self, key: str, cell: str, mark: str, inside: str) -> None:
        for leftover in self.marks.iterdir():
            leftover.unlink()
        with capture_output() as captured:
            started, cpu = time.perf_counter(), time.process_time()
            result = self.shell.run_cell(cell)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        if not result.success:
            raise SystemExit(f"this cell failed ({key}):\n{cell}\n{result.error_in_exec!r}\n"
                             f"{captured.stdout[-3000:]}\n{captured.stderr[-3000:]}")
        values = json.loads((self.marks / mark).read_text())
        self.seconds.setdefault(key, []).append(elapsed)
        self.kernel_cpu.setdefault(key, []).append(cpu)
        self.inside.setdefault(key, []).append(values[inside])
        self.cpu.setdefault(key, []).append(values.get("cpu"))
        self.threads.setdefault(key, set()).add(values["threads"])
        if cell.startswith("%%lightning_train") and mark == "fit":
            self.notes[key] = [note for note in self.shell.user_ns["lightning_run"].notes
                               if "thread" in note]

    def median(self, key: str, kind: str = "seconds") -> float:
        return statistics.median(getattr(self, kind)[key])

    def spread(self, key: str, kind: str, scale: float = 1.0) -> str:
        values = getattr(self, kind)[key]
        return f"{min(values) * scale:.3f}–{max(values) * scale:.3f}"

    def shown_threads(self, key: str) -> str:
        return "/".join(str(n) for n in sorted(self.threads[key]))


def paired(bench: Bench, magic: str, plain: str, pairs: int) -> str:
    """S1 / B1 as the median of ``pairs`` ratios of two fits run one after the other (which goes
    first alternates), so that a machine's drift between runs cancels in each ratio: per step
    of wall time, and of the training thread's CPU time (what other processes' load shifts
    least). The quartiles beside each median say how far the pairs spread."""
    if pairs <= 0:
        return ""
    for turn in range(pairs):
        for key, cell in (("S1", magic), ("B1", plain))[::1 if turn % 2 == 0 else -1]:
            bench.time_cell(key, cell, "fit", "step")
    lines = [f"S1 / B1 in {pairs} pairs of fits: median (quartiles)"]
    for kind, what in (("inside", "wall time per step"), ("cpu", "thread CPU per step")):
        ratios = sorted(s / b for s, b in zip(getattr(bench, kind)["S1"],
                                              getattr(bench, kind)["B1"]))
        quartiles = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        lines.append(f"| {what} | {statistics.median(ratios):.3f} | "
                     f"({quartiles[0]:.3f}–{quartiles[2]:.3f}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps per fit")
    parser.add_argument("--samples", type=int, default=200000, help="samples to predict")
    parser.add_argument("--pairs", type=int, default=0,
                        help="then this many more S1 and B1 fits side by side (see paired)")
    args = parser.parse_args()

    from IPython.testing.globalipapp import start_ipython

    work = Path(tempfile.mkdtemp(prefix="lightning-magic-bench-"))
    os.chdir(work)
    marks = work / "marks"
    marks.mkdir()
    os.environ["BENCH_MARKS"] = str(marks)
    shell = start_ipython()
    shell.run_line_magic("load_ext", "lightning_magic")
    source = MODEL.replace("STEPS", str(args.steps)).replace("SAMPLES", str(args.samples))
    assert shell.run_cell(source).success
    kernel_threads = shell.user_ns["torch"].get_num_threads()

    magic2 = "%%lightning_train --accelerator cpu --devices 2"
    magic1 = "%%lightning_train --accelerator cpu --devices 1"
    quiet = " --progress none\n"
    ddp = 'accelerator="cpu", devices=2, strategy="ddp_notebook", '
    fits = {
        "S2": (magic2 + "\n" + FIT.format(hardware="", data="tiny_two", model="Tiny", batch=4),
               "magic --devices 2"),
        "S2q": (magic2 + quiet + FIT.format(hardware="", data="tiny_two", model="Tiny", batch=4),
                "magic --devices 2 --progress none"),
        "B2": (FIT.format(hardware=ddp, data="tiny_two", model="Tiny", batch=4),
               "plain ddp_notebook, devices=2"),
        "S1": (magic1 + "\n" + FIT.format(hardware="", data="tiny_one", model="Tiny", batch=4),
               "magic --devices 1"),
        "S1q": (magic1 + quiet + FIT.format(hardware="", data="tiny_one", model="Tiny", batch=4),
                "magic --devices 1 --progress none"),
        "B1": (FIT.format(hardware='accelerator="cpu", devices=1, ', data="tiny_one",
                           model="Tiny", batch=4),
               "plain devices=1, in the kernel"),
    }
    after_kernel = {
        "S1w": (magic1 + "\n" + FIT.format(hardware="", data="mlp_data", model="Mlp", batch=256),
                "magic --devices 1, MLP, after the kernel computed"),
        "B1w": (FIT.format(hardware='accelerator="cpu", devices=1, ', data="mlp_data",
                           model="Mlp", batch=256),
                "plain devices=1, MLP, in the kernel, after it computed"),
    }
    predicts = {
        "P2": (magic2 + "\n" + PREDICT.format(hardware=""), "magic --devices 2"),
        "P1": (magic1 + "\n" + PREDICT.format(hardware=""), "magic --devices 1"),
    }
    load_before = os.getloadavg()[0]
    bench = Bench(shell, marks)

    def measure(cells: dict, mark: str, inside: str) -> None:
        for key, (cell, _) in cells.items():  # warm-up: first imports, first fork of each kind
            Bench(shell, marks).time_cell(key, cell, mark, inside)
        for _ in range(args.repeats):
            for key, (cell, _) in cells.items():
                bench.time_cell(key, cell, mark, inside)

    measure(fits, "fit", "step")
    pairs = paired(Bench(shell, marks), fits["S1"][0], fits["B1"][0], args.pairs)
    measure(predicts, "predict", "loop")
    assert shell.run_cell(KERNEL_COMPUTES).success
    measure(after_kernel, "fit", "step")
    predicted = shell.user_ns["predicted"]
    assert sum(len(p) for p in predicted) == args.samples, "predict returned a partial result"

    print(f"cell trainer, median of {args.repeats} after one warm-up (min–max beside it); "
          f"kernel torch threads: {kernel_threads}; 1-minute load average "
          f"{load_before:.2f} before, {os.getloadavg()[0]:.2f} after")
    print()
    print(f"fit: {args.steps} optimizer steps per rank, Linear(8, 1), batch 4, one epoch")
    print("| run | ms / step (rank 0 loop) | min–max | cell s | kernel CPU s | torch threads |")
    print("|---|---:|---:|---:|---:|---:|")
    for key, (_, name) in {**fits, **after_kernel}.items():
        print(f"| {key} {name} | {bench.median(key, 'inside') * 1e3:.3f} | "
              f"{bench.spread(key, 'inside', 1e3)} | {bench.median(key):.2f} | "
              f"{bench.median(key, 'kernel_cpu'):.2f} | {bench.shown_threads(key)} |")
    for magic, plain in (("S2", "B2"), ("S2q", "B2"), ("S1", "B1"), ("S1q", "B1"),
                        ("S1w", "B1w")):
        step = bench.median(magic, "inside") / bench.median(plain, "inside")
        cell = bench.median(magic) / bench.median(plain)
        print(f"| {magic} / {plain} | {step:.3f} | | {cell:.3f} | | |")
    print()
    if pairs:
        print(pairs)
        print()
    print(f"predict: {args.samples} samples, MLP 64-512-512-16, batch 500")
    print("| run | samples / s (cell) | cell s | min–max | rank 0 loop s | torch threads |")
    print("|---|---:|---:|---:|---:|---:|")
    rate = {key: args.samples / bench.median(key) for key in predicts}
    for key, (_, name) in predicts.items():
        print(f"| {key} {name} | {rate[key]:.0f} | {bench.median(key):.2f} | "
              f"{bench.spread(key, 'seconds')} | {bench.median(key, 'inside'):.2f} | "
              f"{bench.shown_threads(key)} |")
    print(f"| P2 / P1 | {rate['P2'] / rate['P1']:.3f} | | | | |")
    print()
    for key, notes in bench.notes.items():
        print(f"{key} run notes: {' '.join(notes) or '(no thread note)'}")


if __name__ == "__main__":
    main()
