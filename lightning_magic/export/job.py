"""``%%lightning_train --export PATH``: a cell, and the cells it depends on, as a cluster job.

Writes a standalone script (the notebook code, then a ``Trainer`` with strategy ``ddp`` and
``num_nodes``, fitted under ``if __name__ == "__main__":``) and a SLURM batch file next to it,
and returns an :class:`ExportedJob` that shows both paths and the commands that run them. The
cell is not executed: which object is the model and which the data is read from its code, with
the classes the kernel already holds. Nothing here imports torch or Lightning.
"""

from __future__ import annotations

import html
import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from IPython.core.error import UsageError

from ..source.editor import cell_number
from .roles import LIGHTNING_PACKAGES, Roles
from .sources import Unresolved, cell_code, dependencies, earlier_cells
from .templates import (
    FitCall,
    JobLayout,
    sbatch_text,
    script_text,
    torchrun_command,
    torchrun_where,
)


@dataclass(frozen=True)
class ExportedJob:
    """Where an exported job was written and how to start it."""

    script_path: Path
    sbatch_path: Path
    torchrun_command: str
    torchrun_where: str  # on which machines, with which variables set
    sbatch_command: str
    srun_command: str  # what the batch file runs
    cells: tuple[str, ...]  # the notebook cells in the script, in order ("In[3]", ...)

    def _rows(self) -> list[tuple[str, str]]:
        return [
            ("script", str(self.script_path)),
            ("SLURM batch file", str(self.sbatch_path)),
            ("torchrun", f"{self.torchrun_command}   ({self.torchrun_where})"),
            ("SLURM", f"{self.sbatch_command}   (runs: {self.srun_command})"),
            ("code from", ", ".join(self.cells)),
        ]

    def __repr__(self) -> str:
        rows = self._rows()
        width = max(len(label) for label, _ in rows)
        lines = ["Exported the cell as a job (nothing was trained):"]
        lines += [f"  {label.ljust(width)}  {value}" for label, value in rows]
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        cells = "".join(
            f"<tr><th style='text-align:left'>{html.escape(label)}</th>"
            f"<td style='text-align:left'><code>{html.escape(value)}</code></td></tr>"
            for label, value in self._rows()
        )
        return (
            "<div class='lightning-magic-export'>"
            "<p>Exported the cell as a job (nothing was trained).</p>"
            f"<table>{cells}</table></div>"
        )


def export_cell(shell, cell: str, flags, accelerator: str, devices_per_node: int) -> ExportedJob:
    """Write the script for ``cell`` at ``flags.export`` and the SLURM batch file next to it.

    ``flags`` are the cell's ``TrainFlags``; ``accelerator`` and ``devices_per_node`` are resolved
    for the cluster's machines (``hardware.resolve_for_export``), not this one.
    """
    path, num_nodes = flags.export, flags.num_nodes
    model_name, data_name, val_data_name = flags.model, flags.data, flags.val_data
    trainer_kwargs = dict(flags.trainer_kwargs(), accelerator=accelerator,
                          devices=devices_per_node)
    if flags.precision is not None:  # else Lightning's default, as in the notebook
        trainer_kwargs["precision"] = flags.precision
    if flags.ckpt_dir:
        trainer_kwargs["default_root_dir"] = flags.ckpt_dir
    script_path, sbatch_path = _check_paths(path)
    if num_nodes < 1:
        raise UsageError(
            f"--num-nodes {num_nodes!r}: a job needs at least one node, e.g. --num-nodes 2"
        )
    number = cell_number(shell, cell)
    target = cell_code(shell, number, cell)
    named = [n for n in (model_name, data_name, val_data_name) if n and n not in target.binds]
    history = [cell_code(shell, number, source) for number, source in earlier_cells(shell, number)]
    cells, unresolved = dependencies(target, history, tuple(named))
    if unresolved:
        raise UsageError(_unresolved_message(unresolved))
    roles = Roles(target.code, [c.code for c in cells], shell.user_ns)
    model_class, model, instantiate = roles.model(model_name)
    datamodule, train_data, val_data = roles.data(model, model_class, data_name, val_data_name)
    lightning = (model_class.package if model_class else None) or LIGHTNING_PACKAGES[0]

    written = os.path.expanduser(path)
    layout = JobLayout(
        script=written,
        workdir=os.getcwd(),
        num_nodes=num_nodes,
        devices_per_node=devices_per_node,
        accelerator=accelerator,
        strategy=script_strategy(flags.strategy),
    )
    fit = FitCall(
        lightning=lightning,
        model=model,
        instantiate=instantiate,
        datamodule=datamodule,
        train_data=train_data,
        val_data=val_data,
        resume=flags.resume,
        ckpt_dir=flags.ckpt_dir,
        seed=flags.seed,
        trainer_kwargs=trainer_kwargs,
    )
    sections = [(c.label, c.code) for c in cells]
    sections.append((f"The %%lightning_train cell (In[{target.number}])", target.code))
    labels = [c.label for c in cells] + [f"the %%lightning_train cell In[{target.number}]"]
    futures = list(dict.fromkeys(f for c in [*cells, target] for f in c.future_imports))
    sbatch_name = os.path.join(os.path.dirname(written), sbatch_path.name)
    text = script_text(layout, fit, sections, labels, futures, sbatch_name)
    _check_compiles(text, path)

    script_path.parent.mkdir(parents=True, exist_ok=True)
    script_path.write_text(text)
    sbatch_path.write_text(sbatch_text(layout, job_name=script_path.stem))
    return ExportedJob(
        script_path=script_path,
        sbatch_path=sbatch_path,
        torchrun_command=torchrun_command(layout),
        torchrun_where=torchrun_where(layout),
        sbatch_command=f"sbatch {shlex.quote(sbatch_name)}",
        srun_command=f"srun python {shlex.quote(written)}",
        cells=tuple(c.label for c in cells) + (f"In[{target.number}]",),
    )


def script_strategy(strategy: str | None) -> str:
    """The strategy a script launch takes for ``--strategy``: the notebook's fork variants are
    plain DDP there, and what only a script can launch (deepspeed, ddp_spawn) is kept."""
    name = (strategy or "auto").strip().lower()
    if name.endswith("_find_unused_parameters_true") and \
            name.startswith(("ddp_notebook", "ddp_fork")):
        return "ddp_find_unused_parameters_true"
    if name in ("auto", "ddp_notebook", "ddp_fork", "single_device"):
        return "ddp"
    return name


def _check_paths(path: str) -> tuple[Path, Path]:
    script = Path(os.path.expanduser(path)).absolute()
    if not path.strip() or script.is_dir():
        raise UsageError(
            f"--export {path!r} is a directory; give the script's file name, e.g. --export train.py"
        )
    if script.suffix == ".sbatch":
        raise UsageError(
            f"--export {path!r} names the batch file; give the script's name, e.g. "
            f"--export {script.with_suffix('.py').name} (the .sbatch file is written next to it)"
        )
    return script, script.with_suffix(".sbatch")


def _unresolved_message(unresolved: list[Unresolved]) -> str:
    plain = [u for u in unresolved if u.escape_cell is None]
    escaped = [u for u in unresolved if u.escape_cell is not None]
    parts = []
    if plain:
        names = ", ".join(f"{u.name} (used in {u.used_in})" for u in plain)
        parts.append(f"no earlier cell in this kernel defines {names}")
    if escaped:
        names = ", ".join(f"{u.name} (in {u.escape_cell})" for u in escaped)
        parts.append(f"only a magic or shell escape binds {names}, which a script cannot run")
    return (
        f"Cannot export: {'; '.join(parts)}. Define them with plain Python in a cell, run it, "
        "and export again."
    )


def _check_compiles(text: str, path: str) -> None:
    try:
        compile(text, path, "exec")
    except SyntaxError as error:
        raise UsageError(
            f"The script for --export {path!r} would not compile (line {error.lineno}: "
            f"{error.msg}); a cell it includes uses syntax only IPython accepts, such as a "
            "top-level await. Move that code into a function and export again."
        ) from None
