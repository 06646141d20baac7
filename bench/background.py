"""What a ``--background`` run costs the notebook, in a real Jupyter kernel (jupyter_client):

  return    seconds from sending a ``--background`` cell (two CPU ranks) to its execute reply
  latency   round trip of a trivial cell (``1 + 1``): p50 and p99 of ``--cells`` cells in an idle
            kernel, then of as many while a two-rank background run trains; the ratio of p50s
  steps     rank 0's seconds per optimizer step (read inside the rank, as bench/cell_trainer.py
            does) of the same fit in the background against in the foreground, and the ratio
  attach    seconds for a second kernel, started in the same folder while the run trains, to
            attach to it (``lightning_magic.attach(ID)``: the cell's send to its reply, the view
            redrawn from the journal), and the status it then reads
  kernel    the kernel process's CPU while the run trains and no cell runs (its supervision and
            live-view threads), in % of one core over ``--idle-seconds``
  stop      seconds from ``run.stop()`` to its return (every rank gone), and the kernel's
            children left after it (must be 0)

Every figure is measured in this one run, the foreground baseline beside the background run.

    python bench/background.py [--cells 200] [--steps 1500] [--repeats 3] [--idle-seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil
from jupyter_client.manager import start_new_kernel

ROOT = Path(__file__).resolve().parent.parent

SETUP = r'''
import sys
sys.path.insert(0, {root!r})
%load_ext lightning_magic
import json, os, time
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Timed(pl.LightningModule):
    """Rank 0 writes its seconds per step, from the first batch to the last, to ``MARK``."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_rank != 0:
            return
        if batch_idx == 0:
            self._first = time.perf_counter()
        elif batch_idx == self.trainer.num_training_batches - 1:
            with open(os.environ["MARK"], "w") as handle:
                json.dump({{"step": (time.perf_counter() - self._first) / batch_idx}}, handle)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


X = torch.randn({steps} * 2 * 4, 8)
loader = DataLoader(TensorDataset(X, X.sum(1, keepdim=True)), batch_size=4)
'''

FIT = ("%%lightning_train --accelerator cpu --devices 2 --max-epochs {epochs} --progress none"
       "{background}\nmodel = Timed()\ntrainer = pl.Trainer(enable_model_summary=False)\n"
       "trainer.fit(model, loader)")


class Kernel:
    def __init__(self, cwd: str) -> None:
        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=cwd)

    def run(self, code: str) -> tuple[float, dict]:
        """Seconds from sending ``code`` to its execute reply, and the reply's content."""
        start = time.perf_counter()
        msg_id = self.kc.execute(code)
        while True:
            reply = self.kc.get_shell_msg(timeout=600)
            if reply["parent_header"].get("msg_id") == msg_id:
                seconds = time.perf_counter() - start
                break
        content = reply["content"]
        if content["status"] != "ok":
            raise RuntimeError(f"{content.get('ename')}: {content.get('evalue')}\n{code}")
        self._drain()
        return seconds, content

    def value(self, expression: str) -> str:
        msg_id = self.kc.execute(f"print(json.dumps({expression}))")
        out = ""
        while True:
            message = self.kc.get_iopub_msg(timeout=600)
            if message["parent_header"].get("msg_id") != msg_id:
                continue
            if message["msg_type"] == "stream" and message["content"]["name"] == "stdout":
                out += message["content"]["text"]
            if message["msg_type"] == "error":
                raise RuntimeError(message["content"]["evalue"])
            if message["msg_type"] == "status" and message["content"]["execution_state"] == "idle":
                break
        self.kc.get_shell_msg(timeout=600)
        return json.loads(out)

    def _drain(self) -> None:
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0.01)
            except queue.Empty:
                return

    def children(self) -> list[psutil.Process]:
        kernel = psutil.Process(self.km.provisioner.process.pid)
        return [p for p in kernel.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]

    def close(self) -> None:
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()

    work = tempfile.mkdtemp(prefix="bench-background-")
    mark = os.path.join(work, "mark.json")
    os.environ["MARK"] = mark
    kernel = Kernel(work)
    try:
        kernel.run(SETUP.format(root=str(ROOT), steps=args.steps))
        kernel.run(FIT.format(epochs=1, background=""))  # warm-up: imports, first fork

        steps: dict[str, list[float]] = {"foreground": [], "background": []}
        returns = []
        for _ in range(args.repeats):
            kernel.run(FIT.format(epochs=1, background=""))
            steps["foreground"].append(json.load(open(mark))["step"])
            seconds, _ = kernel.run(FIT.format(epochs=1, background=" --background"))
            returns.append(seconds)
            kernel.run("lightning_run.wait()")
            steps["background"].append(json.load(open(mark))["step"])

        idle = [kernel.run("1 + 1")[0] for _ in range(args.cells)]
        kernel.run(FIT.format(epochs=1000, background=" --background"))
        busy = [kernel.run("1 + 1")[0] for _ in range(args.cells)]
        process = psutil.Process(kernel.km.provisioner.process.pid)
        before, start = process.cpu_times(), time.perf_counter()
        time.sleep(args.idle_seconds)  # the figure is CPU over wall time: a span of time, no cell
        after, span = process.cpu_times(), time.perf_counter() - start
        kernel_cpu = (after.user + after.system - before.user - before.system) / span
        assert kernel.value("lightning_run.status") == "running", "the run ended before the cells"
        ident = kernel.value("lightning_run.id")
        other = Kernel(work)
        try:
            other.run(f"import sys, json\nsys.path.insert(0, {str(ROOT)!r})\nimport lightning_magic")
            attach_s, _ = other.run(f"attached = lightning_magic.attach({ident!r})")
            attached_status = other.value("attached.status")
        finally:
            other.close()
        stop = kernel.value("(lambda t: (lightning_run.stop(), time.perf_counter() - t)[1])"
                            "(time.perf_counter())")
        left = len(kernel.children())
    finally:
        kernel.close()

    load = os.getloadavg()[0]
    fg, bg = statistics.median(steps["foreground"]), statistics.median(steps["background"])
    print(f"background runs, {os.cpu_count()} CPUs, 1-minute load average {load:.2f} after; "
          f"fits of {args.steps} steps per rank on 2 CPU ranks, median of {args.repeats}")
    print()
    print("| measure | value | goal |")
    print("|---|---:|---:|")
    print(f"| `--background` cell: send to reply, s | {statistics.median(returns):.3f} "
          f"(max {max(returns):.3f}) | <= 0.3 + the body |")
    p50_idle, p50_busy = statistics.median(idle), statistics.median(busy)
    print(f"| `1 + 1` idle kernel: p50 / p99, ms | {p50_idle * 1e3:.1f} / "
          f"{percentile(idle, 0.99) * 1e3:.1f} | |")
    print(f"| `1 + 1` while 2 ranks train: p50 / p99, ms | {p50_busy * 1e3:.1f} / "
          f"{percentile(busy, 0.99) * 1e3:.1f} | |")
    print(f"| p50 busy / idle | {p50_busy / p50_idle:.2f}x | <= 1.2x |")
    print(f"| rank 0 ms / step: foreground / background | {fg * 1e3:.3f} / {bg * 1e3:.3f} | |")
    print(f"| steps/s background / foreground | {fg / bg:.3f} | >= 0.98 |")
    print(f"| a second kernel attaches: send to reply, s (status it reads) | {attach_s:.3f} "
          f"({attached_status}) | <= 2 |")
    print(f"| kernel CPU while the run trains, no cell running | {kernel_cpu * 100:.1f}% | |")
    print(f"| `run.stop()` to every rank gone, s | {stop:.2f} | <= 5 |")
    print(f"| kernel's children after the stop | {left} | 0 |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
