"""What a sweep (``%%lightning_sweep``) costs and gains, against the same cell's plain fit and
against Optuna's own threads, on CPU processes.

Measured in one run, on the same module, data and cell, in the same process (an IPython shell,
as a kernel would be). Every time below is ``time.time()`` read in the bench (a cell's start)
or inside a trial's rank (the module's own hooks write it to a file), so it is what the user
sees, start-up and hand-back included:

  first batch   seconds from a cell's start to its first training batch: F the sweep's first
                trial (``%%lightning_sweep``), T the same cell's fit under plain
                ``%%lightning_train --accelerator cpu --devices 1`` (``trial`` there an
                ``optuna.trial.FixedTrial``), B the same cell as a plain Trainer in the kernel
                (no fork: the model's own set-up alone); F - T is what the sweep adds
                (goal <= 1 s) to what the model costs (T)
  gap           seconds from one trial's ``on_train_end`` to the next trial's ``on_train_start``
                (and to its first batch) when trials run one at a time (goal <= 0.3 s)
  crash         seconds from a crashed trial's failing batch (its rank raises in its first
                ``training_step``) to the next trial's first batch, trials one at a time: the
                crashed trial's devices going to the next one (goal <= 5 s)
  trials/min    trials per minute (a sweep's cell start -> cell end) of ``--trials N``
                one-process trials: one at a time, and 2 at once on the machine's 2 cores; the
                ratio (goal >= 1.7x); beside them each trial's own training time
                (``on_train_start`` -> ``on_train_end`` in its rank) and the CPU the kernel's
                threads used a sweep, which say whether the cores or the kernel bound the rate
  optuna        the same study (same cell body, as an objective) under Optuna's own
                ``study.optimize(objective, n_trials=N, n_jobs=J)``: J threads of plain
                Lightning Trainers in the kernel, J = 1 and 2, in trials per minute

How many trials a sweep runs at once is its slot count: the cores this process may run on
(``os.sched_getaffinity``) // ``--devices-per-trial`` (lightning_magic/sweep/slots.py). The
one-at-a-time sweep is the same sweep started with the kernel's affinity narrowed to one core,
so it has one slot; the cell's first line widens it again, in the kernel, before the trial's
rank is forked, so every trial's rank runs with both cores either way. On a bigger machine the
bench keeps to 2 of its cores. The 2-at-once gain needs 2 idle cores: on a shared machine the
load average and CPU pressure printed with the table say how far from idle they were.

    python bench/sweep.py [--repeats 3] [--trials 6] [--steps 600] [--epochs 2]
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
import json, logging, os, time
import optuna
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


def _mark(tag, event):
    path = os.path.join(os.environ["BENCH_MARKS"], f"{tag}.{event}.{os.getpid()}")
    with open(path, "w") as handle:
        json.dump(time.time(), handle)


class Tiny(pl.LightningModule):
    """One small linear layer: a trial is almost all framework. Rank 0 marks its training's
    start, first batch and end, under the tag its cell gave it."""

    def __init__(self, lr, tag):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        self.lr, self.tag = lr, tag

    def on_train_start(self):
        if self.global_rank == 0:
            _mark(self.tag, "start")

    def on_train_batch_start(self, batch, batch_idx):
        if self.global_rank == 0 and batch_idx == 0 and self.current_epoch == 0:
            _mark(self.tag, "first")

    def on_train_end(self):
        if self.global_rank == 0:
            _mark(self.tag, "end")

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Crashing(Tiny):
    """Rank 0 marks the moment it raises, in its first training step."""

    def training_step(self, batch, batch_idx):
        if self.global_rank == 0:
            _mark(self.tag, "crash")
        raise RuntimeError("this trial crashes")


generator = torch.Generator().manual_seed(0)
X = torch.randn(STEPS * 8, 8, generator=generator)
train_data = TensorDataset(X, X.sum(1, keepdim=True))
val_data = TensorDataset(X[:512], X[:512].sum(1, keepdim=True))
CORES = os.sched_getaffinity(0)
logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # the Trainers' banners
'''

# The cell every figure runs: under the sweep, under %%lightning_train, in the kernel, and (its
# body) as Optuna's objective. Its first line is a no-op but in the one-at-a-time sweep (above).
BODY = '''os.sched_setaffinity(0, CORES)
model = Tiny(lr=trial.suggest_float("lr", 1e-3, 1e-1, log=True), tag=f"{TAG}{{trial.number}}")
trainer = pl.Trainer(enable_model_summary=False{TRAINER})
trainer.fit(model, DataLoader(train_data, batch_size=8), DataLoader(val_data, batch_size=64))
'''

OBJECTIVE = '''
def objective(trial):
    root = os.path.join(os.environ["BENCH_MARKS"], "..", f"optuna-{{trial.number}}")
''' + "".join(f"    {line}\n" for line in BODY.splitlines()[1:]) + '''    return trainer.callback_metrics["val_loss"].item()


def optimize(jobs, trials):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler())
    started = time.time()
    study.optimize(objective, n_trials=trials, n_jobs=jobs)
    seconds = time.time() - started
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE"] * trials, states
    return seconds
'''


class Bench:
    def __init__(self, shell, marks: Path) -> None:
        self.shell, self.marks = shell, marks

    def run(self, cell: str, affinity: set[int] | None = None) -> tuple[float, float, dict]:
        """Run ``cell`` (the kernel's affinity narrowed to ``affinity`` as it starts): its start
        (time.time()), its seconds, and the marks its ranks wrote: {tag: {event: time}}."""
        for leftover in self.marks.iterdir():
            leftover.unlink()
        cores = os.sched_getaffinity(0)
        with capture_output() as captured:
            if affinity is not None:
                os.sched_setaffinity(0, affinity)
            try:
                started = time.time()
                result = self.shell.run_cell(cell)
                seconds = time.time() - started
            finally:
                os.sched_setaffinity(0, cores)
        if not result.success:
            raise SystemExit(f"this cell failed:\n{cell}\n{result.error_in_exec!r}\n"
                             f"{captured.stdout[-3000:]}\n{captured.stderr[-3000:]}")
        marks: dict[str, dict[str, float]] = {}
        for path in self.marks.iterdir():
            tag, event, _ = path.name.split(".")
            marks.setdefault(tag, {})[event] = json.loads(path.read_text())
        return started, seconds, marks


def ordered(marks: dict, prefix: str) -> list[dict]:
    """The trials' marks, in trial order."""
    return [marks[tag] for tag in sorted((t for t in marks if t.startswith(prefix)),
                                         key=lambda t: int(t[len(prefix):]))]


def cpu_pressure() -> str:
    """Linux's CPU pressure, avg60 of /proc/pressure/cpu: how loaded the shared machine is."""
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except (OSError, IndexError):
        return "n/a"
    return next((f"{float(word[6:]):.0f}%" for word in some.split() if word.startswith("avg60=")),
                "n/a")


def spread(values: list[float]) -> str:
    return f"{min(values):.3f}–{max(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trials", type=int, default=6, help="trials per sweep")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per epoch")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial")
    args = parser.parse_args()

    from IPython.testing.globalipapp import start_ipython

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("bench/sweep.py needs 2 cores this process may run on")
    cores = cores[:2]
    os.sched_setaffinity(0, set(cores))  # the goal is for 2 cores: a bigger machine uses 2
    work = Path(tempfile.mkdtemp(prefix="lightning-magic-bench-sweep-"))
    os.chdir(work)
    marks = work / "marks"
    marks.mkdir()
    os.environ["BENCH_MARKS"] = str(marks)
    shell = start_ipython()
    shell.run_line_magic("load_ext", "lightning_magic")
    assert shell.run_cell(MODEL.replace("STEPS", str(args.steps))).success
    assert shell.run_cell(OBJECTIVE.format(
        TAG="o", TRAINER=', accelerator="cpu", devices=1, enable_progress_bar=False, '
                         f'max_epochs={args.epochs}, default_root_dir=root')).success
    bench = Bench(shell, marks)

    sweep_head = (f"%%lightning_sweep --trials {args.trials} --metric val_loss --sampler random "
                  f"--accelerator cpu --devices-per-trial 1 --max-epochs {args.epochs}\n")
    train_head = (f"%%lightning_train --accelerator cpu --devices 1 --max-epochs {args.epochs} "
                  "--progress none\n")
    sweep_cell = sweep_head + BODY.format(TAG="s", TRAINER="")
    train_cell = ("trial = optuna.trial.FixedTrial({'lr': 0.01}, number=0)\n",
                  train_head + BODY.format(TAG="t", TRAINER=""))
    kernel_cell = BODY.format(TAG="b", TRAINER=f', accelerator="cpu", devices=1, '
                              f'enable_progress_bar=False, max_epochs={args.epochs}')
    one_core = {cores[0]}
    crash_cell = sweep_head.replace(f"--trials {args.trials}", "--trials 2") + BODY.format(
        TAG="c", TRAINER="").replace("model = Tiny(", "model = (Crashing if trial.number == 0 "
                                     "else Tiny)(")

    def train_first() -> float:
        assert shell.run_cell(train_cell[0]).success
        started, _, got = bench.run(train_cell[1])
        return got["t0"]["first"] - started

    load_before, pressure_before = os.getloadavg()[0], cpu_pressure()
    first = {"F": [], "T": [], "B": []}
    gaps, gaps_first, crash_gaps = [], [], []
    seconds = {"one at a time": [], "2 at once": []}
    kernel_cpu = {name: [] for name in seconds}  # CPU the kernel's own threads used, a sweep
    slots = {}
    training = {name: [] for name in seconds}  # a trial's on_train_start -> on_train_end
    peak = {name: [] for name in seconds}      # the most trials training at one time
    # warm-up: first imports, first fork, first sweep
    train_first()
    bench.run(sweep_head.replace(f"--trials {args.trials}", "--trials 1") +
              BODY.format(TAG="s", TRAINER=""))
    modes = [("one at a time", one_core), ("2 at once", None)]
    for repeat in range(args.repeats):
        first["T"].append(train_first())
        for name, affinity in modes if repeat % 2 == 0 else modes[::-1]:  # drift: both first
            cpu = time.process_time()
            started, took, got = bench.run(sweep_cell, affinity)
            kernel_cpu[name].append(time.process_time() - cpu)
            runs = ordered(got, "s")
            assert len(runs) == args.trials, got
            sweep = shell.user_ns["lightning_sweep"]
            assert [t.status for t in sweep.trials] == ["complete"] * args.trials, sweep.trials
            slots[name] = sweep.slots
            seconds[name].append(took)
            first["F"].append(min(run["first"] for run in runs) - started)
            training[name] += [run["end"] - run["start"] for run in runs]
            peak[name].append(max(sum(1 for other in runs
                                      if other["start"] <= run["start"] < other["end"])
                                  for run in runs))
            if name == "one at a time":
                for before, after in zip(runs, runs[1:]):
                    gaps.append(after["start"] - before["end"])
                    gaps_first.append(after["first"] - before["end"])
        _, _, got = bench.run(crash_cell, one_core)
        statuses = [t.status for t in shell.user_ns["lightning_sweep"].trials]
        assert statuses == ["failed", "complete"], statuses
        crash_gaps.append(got["c1"]["first"] - got["c0"]["crash"])
    # the plain in-kernel fits last: a cell in the kernel now computes with torch's pool
    assert shell.run_cell(train_cell[0]).success
    for repeat in range(args.repeats + 1):  # the first is a warm-up
        started, _, got = bench.run(kernel_cell)
        if repeat:
            first["B"].append(got["b0"]["first"] - started)
    optuna_seconds = {1: [], 2: []}
    for _ in range(args.repeats):
        for jobs in (1, 2):
            assert shell.run_cell(f"_took = optimize({jobs}, {args.trials})").success
            optuna_seconds[jobs].append(shell.user_ns["_took"])
    load_after, pressure_after = os.getloadavg()[0], cpu_pressure()

    def median(values: list[float]) -> float:
        return statistics.median(values)

    def rate(values: list[float]) -> float:
        return args.trials * 60 / median(values)

    print(f"sweeps, {len(cores)} cores (of {os.cpu_count()} CPUs); {args.trials} one-process "
          f"trials a sweep, {args.epochs} epoch{'s' * (args.epochs > 1)} of {args.steps} steps (Linear(8, 1), batch 8) "
          f"each; median of {args.repeats} after one warm-up (min–max beside it); 1-minute load "
          f"average {load_before:.2f} before, {load_after:.2f} after; CPU pressure (share of "
          f"the last 60 s some runnable task waited for a core) {pressure_before} before, "
          f"{pressure_after} after")
    print()
    print("| measure | median | min–max | goal |")
    print("|---|---:|---:|---:|")
    names = {"F": "F `%%lightning_sweep`: cell start -> first trial's first batch, s",
             "T": "T `%%lightning_train --devices 1`: cell start -> first batch, s",
             "B": "B plain Trainer in the kernel: cell start -> first batch, s"}
    for key, name in names.items():
        goal = "<= T + 1" if key == "F" else ""
        print(f"| {name} | {median(first[key]):.3f} | {spread(first[key])} | {goal} |")
    print(f"| F - T, s | {median(first['F']) - median(first['T']):.3f} | | <= 1 |")
    print(f"| gap, one at a time: on_train_end -> next on_train_start, s | {median(gaps):.3f} | "
          f"{spread(gaps)} | <= 0.3 |")
    print(f"| gap, one at a time: on_train_end -> next first batch, s | "
          f"{median(gaps_first):.3f} | {spread(gaps_first)} | |")
    print(f"| crash, one at a time: crashed trial's failing batch -> next first batch, s | "
          f"{median(crash_gaps):.3f} | {spread(crash_gaps)} | <= 5 |")
    for name, values in seconds.items():
        print(f"| sweep {name} ({slots[name]} slot{'s' * (slots[name] > 1)}): trials/min | "
              f"{rate(values):.1f} | {spread(values)} s a sweep | |")
        print(f"| kernel CPU a sweep, {name}, s | {median(kernel_cpu[name]):.2f} | "
              f"{spread(kernel_cpu[name])} | |")
    ratio = rate(seconds["2 at once"]) / rate(seconds["one at a time"])
    pairs = [one / two for one, two in zip(seconds["one at a time"], seconds["2 at once"])]
    print(f"| sweep 2 at once / one at a time | {ratio:.2f}x | {spread(pairs)} a repeat | "
          ">= 1.7x |")
    for name, values in training.items():
        print(f"| a trial's training (on_train_start -> on_train_end), {name}, s | "
              f"{median(values):.3f} | {spread(values)} | |")
    for jobs, values in optuna_seconds.items():
        print(f"| Optuna `study.optimize(n_jobs={jobs})`, in-kernel Trainers: trials/min | "
              f"{rate(values):.1f} | {spread(values)} s a study | |")
    print(f"| Optuna n_jobs=2 / n_jobs=1 | {rate(optuna_seconds[2]) / rate(optuna_seconds[1]):.2f}x "
          f"| | |")
    print(f"| sweep 2 at once / Optuna n_jobs=2 | "
          f"{rate(seconds['2 at once']) / rate(optuna_seconds[2]):.2f}x | | |")
    print()
    print("the most trials training at one time, a sweep: "
          + "; ".join(f"{name} {peak[name]}" for name in peak))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
