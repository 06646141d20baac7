"""Other people's Lightning notebooks (notebooks/tutorials/, notebooks/demos.ipynb), executed in a
real kernel two ways: under ``%%lightning_train`` as written, and as plain Lightning with the magic
line removed. Each run ends with a cell that prints what the notebook left behind (every Trainer's
metrics and counters, every LightningModule's weights, every cell value and every list of
predictions), so that the two runs can be compared value by value."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parent.parent.parent / "notebooks"
SEED = 1234
MAGIC_LINE = re.compile(r"^%%lightning_train\b.*\n", re.M)
DEVICES = re.compile(r"--devices\s+(\d+)")
STRATEGY = re.compile(r"--strategy\s+(\S+)")

Mode = Literal["magic", "plain"]

# Before anything else in both runs: one seed; no GPU for plain Lightning to pick (the tutorials
# say accelerator="auto", the magic's flags say cpu); one torch thread in every process, because
# on a CPU dropout's random masks depend on the thread count (plain Lightning itself trains the
# demos' transformer to visibly different weights with one thread and with two).
START = """\
import os
os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ["OMP_NUM_THREADS"] = "1"
import lightning
lightning.seed_everything({seed}, verbose=False)
"""

# Plain Lightning, given the hardware that the magic's flags give the cell's Trainer: the cell
# keeps every other argument, as under the magic.
PLAIN_HARDWARE = """\
import functools
import lightning.pytorch
import pytorch_lightning


def _with_hardware(init):
    @functools.wraps(init)
    def init_with_hardware(self, *args, **kwargs):
        kwargs.update({hardware!r})
        init(self, *args, **kwargs)
    return init_with_hardware


for _trainer_class in (lightning.pytorch.Trainer, pytorch_lightning.Trainer):
    _trainer_class.__init__ = _with_hardware(_trainer_class.__init__)
"""

# The last cell of every run: what the notebook left behind, as JSON on one marked line.
REPORT = r"""
import json as _json
import os
import lightning.pytorch as _lp
import pytorch_lightning as _pl
import torch as _torch


def _plain(value):
    if isinstance(value, _torch.Tensor):
        return value.detach().double().flatten().tolist()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return repr(type(value).__name__)


# Each run has its own folders (the magic puts the default ones under its run folder): of a
# path, the file's name and whether it is there.
def _path(path):
    return path and {"name": os.path.basename(path), "exists": os.path.exists(path)}


def _trainer(trainer):
    checkpoint = trainer.checkpoint_callback
    return {
        "callback_metrics": _plain(dict(trainer.callback_metrics)),
        "current_epoch": trainer.current_epoch, "global_step": trainer.global_step,
        "log_dir": trainer.log_dir and {"exists": os.path.isdir(trainer.log_dir)},
        "best_model_path": _path(getattr(checkpoint, "best_model_path", None)),
        "best_model_score": _plain(getattr(checkpoint, "best_model_score", None)),
        "best_k_models": sorted(os.path.basename(p) for p in getattr(checkpoint, "best_k_models", {})),
    }


_left = {"trainers": {}, "models": {}, "predictions": {}, "results": {}, "values": {}}
for _name, _value in list(globals().items()):
    if _name.startswith("_"):
        continue
    if isinstance(_value, (_lp.Trainer, _pl.Trainer)):
        _left["trainers"][_name] = _trainer(_value)
    elif isinstance(_value, (_lp.LightningModule, _pl.LightningModule)):
        _left["models"][_name] = {k: [float(v.double().sum()), float(v.double().abs().sum())]
                                  for k, v in _value.state_dict().items()
                                  if v.is_floating_point()}
    elif isinstance(_value, list) and _value and all(isinstance(v, _torch.Tensor) for v in _value):
        _left["predictions"][_name] = _plain(_value)
    elif isinstance(_value, list) and _value and all(isinstance(v, dict) for v in _value):
        _left["results"][_name] = _plain(_value)
for _number, _value in Out.items():
    if isinstance(_value, list) and all(isinstance(v, dict) for v in _value):
        _left["values"][str(_number)] = _plain(_value)
print("LEFT BEHIND " + _json.dumps(_left))
"""


@dataclass
class Run:
    """One execution of a notebook: what it left behind, and every cell that ended in an error."""

    name: str
    mode: Mode
    notebook: nbformat.NotebookNode
    left: dict = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


def magic_flags(notebook: nbformat.NotebookNode) -> tuple[int, str | None]:
    """The --devices and --strategy of the notebook's ``%%lightning_train`` lines (all of them
    say the same)."""
    lines = {line for c in notebook.cells if c.cell_type == "code"
             for line in MAGIC_LINE.findall(c.source)}
    assert len(lines) == 1, f"the notebook's magic lines differ: {sorted(lines)}"
    line = lines.pop()
    strategy = STRATEGY.search(line)
    return int(DEVICES.search(line).group(1)), strategy.group(1) if strategy else None


def prepared(name: str, mode: Mode, devices: int | None = None) -> nbformat.NotebookNode:
    """The notebook ``name`` (relative to notebooks/), seeded, with the report cell at the end.
    ``magic``: as written, ``--devices`` replaced by ``devices`` when given. ``plain``: every
    ``%%lightning_train`` line and ``%load_ext lightning_magic`` removed, and every Trainer given
    ``devices`` CPU processes (ddp_notebook when more than one), as the flags would."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    written, strategy = magic_flags(notebook)
    devices = written if devices is None else devices
    start = START.format(seed=SEED)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if mode == "magic" and devices != written:
            # one process is one device, as in plain Lightning: no DDP strategy for it
            drop = f" --strategy {strategy}" if strategy and devices == 1 else "\0"
            cell.source = MAGIC_LINE.sub(
                lambda m: m.group(0).replace(f"--devices {written}", f"--devices {devices}")
                .replace(drop, ""), cell.source)
        if mode == "plain":
            cell.source = MAGIC_LINE.sub("", cell.source)
            cell.source = cell.source.replace(  # still a cell: the same execution counts
                "%load_ext lightning_magic", "# %load_ext lightning_magic, not in plain Lightning")
    if mode == "plain":
        hardware = {"accelerator": "cpu", "devices": devices}
        if devices > 1:
            hardware["strategy"] = strategy or "ddp_notebook"
        start += PLAIN_HARDWARE.format(hardware=hardware)
    notebook.cells.insert(0, nbformat.v4.new_code_cell(start))
    notebook.cells.append(nbformat.v4.new_code_cell(REPORT))
    for index, cell in enumerate(notebook.cells):
        cell.id = f"cell-{index:02d}"
    return notebook


def execute(name: str, mode: Mode, workdir: Path, devices: int | None = None,
            timeout: int = 300) -> Run:
    """Runs the notebook in a fresh kernel in ``workdir``, every cell even after an error."""
    notebook = prepared(name, mode, devices)
    workdir.mkdir(parents=True, exist_ok=True)
    NotebookClient(notebook, timeout=timeout, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(workdir)}}).execute()
    run = Run(name, mode, notebook)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if output["output_type"] == "error":
                run.errors.append(f"cell {cell.source.strip().splitlines()[0]!r}: "
                                  f"{output['ename']}: {output['evalue']}")
            elif output["output_type"] == "stream" and output["name"] == "stderr" and \
                    output["text"].startswith("UsageError:"):  # IPython prints these, no error
                run.errors.append(f"cell {cell.source.strip().splitlines()[0]!r}: "
                                  f"{output['text'].strip()}")
            elif output["output_type"] == "stream" and "LEFT BEHIND " in output["text"]:
                line = next(l for l in output["text"].splitlines() if l.startswith("LEFT BEHIND "))
                run.left = json.loads(line[len("LEFT BEHIND "):])
    return run


def differences(ours, theirs, rel: float, abs_: float, path: str = "") -> list[str]:
    """Every place where two reports differ: a missing key, a different length or type, or two
    numbers further apart than ``abs_ + rel * |theirs|`` (numbers written as text, as in a
    metrics.csv, are compared as numbers)."""
    if isinstance(theirs, dict) and isinstance(ours, dict):
        found = [f"{path}/{k}: missing under the magic" for k in theirs if k not in ours]
        found += [f"{path}/{k}: only under the magic" for k in ours if k not in theirs]
        for key in theirs.keys() & ours.keys():
            found += differences(ours[key], theirs[key], rel, abs_, f"{path}/{key}")
        return found
    if isinstance(theirs, list) and isinstance(ours, list):
        if len(theirs) != len(ours):
            return [f"{path}: {len(ours)} items under the magic, {len(theirs)} in plain Lightning"]
        return [d for i, (a, b) in enumerate(zip(ours, theirs))
                for d in differences(a, b, rel, abs_, f"{path}[{i}]")]
    if isinstance(theirs, str) and isinstance(ours, str):
        ours, theirs = _number(ours), _number(theirs)
    if isinstance(theirs, bool) or isinstance(ours, bool) or isinstance(theirs, str):
        same = ours == theirs
        return [] if same else [f"{path}: {ours!r} under the magic, {theirs!r} in plain Lightning"]
    if isinstance(theirs, (int, float)) and isinstance(ours, (int, float)):
        if abs(ours - theirs) <= abs_ + rel * abs(theirs):
            return []
        return [f"{path}: {ours!r} under the magic, {theirs!r} in plain Lightning"]
    return [] if ours == theirs else [f"{path}: {ours!r} under the magic, {theirs!r} in plain"]


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text
