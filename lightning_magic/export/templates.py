"""The text of an exported job: the Python script, the SLURM batch file, the torchrun command.

Pure functions from settings to text; nothing here reads the kernel or writes a file.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from dataclasses import dataclass

MASTER_PORT = 29500


@dataclass(frozen=True)
class JobLayout:
    script: str  # the script's path as the commands name it, from the notebook's directory
    workdir: str  # absolute path of the notebook's working directory
    num_nodes: int
    devices_per_node: int
    accelerator: str  # "cpu" | "gpu"
    strategy: str = "ddp"  # a name Lightning's Trainer takes, or "model_parallel"


@dataclass(frozen=True)
class FitCall:
    """How the script builds and fits: everything after the notebook code."""

    lightning: str  # "lightning.pytorch" or "pytorch_lightning", whichever the model derives from
    model: str  # the variable holding the model, or the class to instantiate
    instantiate: bool  # True when ``model`` names a LightningModule class
    datamodule: str | None
    train_data: str | None
    val_data: str | None
    resume: str | None  # "last" or a checkpoint path
    ckpt_dir: str | None
    seed: int | None
    trainer_kwargs: dict


def torchrun_command(layout: JobLayout) -> str:
    """The command to run on every node (one node: a standalone run on this machine)."""
    script = shlex.quote(layout.script)
    if layout.num_nodes == 1:
        return f"torchrun --standalone --nproc-per-node {layout.devices_per_node} {script}"
    return (
        f"torchrun --nnodes {layout.num_nodes} --nproc-per-node {layout.devices_per_node}"
        f" --node-rank $NODE_RANK --master-addr $MASTER_ADDR --master-port {MASTER_PORT} {script}"
    )


def sbatch_text(layout: JobLayout, job_name: str) -> str:
    gpus = f"#SBATCH --gres=gpu:{layout.devices_per_node}\n" if layout.accelerator == "gpu" else ""
    return (
        "#!/bin/bash\n"
        f"#SBATCH --job-name={job_name}\n"
        f"#SBATCH --nodes={layout.num_nodes}\n"
        f"#SBATCH --ntasks-per-node={layout.devices_per_node}\n"
        f"{gpus}"
        f"#SBATCH --chdir={layout.workdir}\n"
        "\n"
        "# One task per training process: srun starts them on every node and Lightning reads\n"
        "# the layout from SLURM. --nodes and --ntasks-per-node must match the script's\n"
        f"# num_nodes={layout.num_nodes} and devices={layout.devices_per_node}.\n"
        "# Activate the job's Python environment first if srun does not inherit it, e.g.\n"
        "#   source .venv/bin/activate\n"
        f"srun python {shlex.quote(layout.script)}\n"
    )


def script_text(
    layout: JobLayout,
    fit: FitCall,
    sections: list[tuple[str, str]],
    cell_labels: list[str],
    future_imports: list[str],
    sbatch_name: str,
) -> str:
    """The standalone script: notebook code at module level, training under ``__main__``.

    ``sections`` are ``(heading, code)`` pairs in execution order.
    """
    lightning = fit.lightning
    run_here = f"python {shlex.quote(layout.script)}"
    origin = textwrap.wrap(
        f"Code from {_listing(cell_labels)}; IPython magics, shell escapes and display-only "
        "lines are left out.",
        width=96,
    )
    lines = [
        '"""Training job exported from a notebook cell by lightning_magic.',
        "",
        *origin,
        "",
        f"    {run_here}",
        f"        on this machine ({_processes(layout.devices_per_node)})",
        f"    {torchrun_command(layout)}",
        "        " + torchrun_where(layout),
        f"    sbatch {shlex.quote(sbatch_name)}",
        f"        on a SLURM cluster ({_nodes(layout.num_nodes)})",
        "",
        "Run from the notebook's directory, so that relative paths mean what they meant there.",
        '"""',
    ]
    lines += future_imports
    imports = ["Trainer"] + (["seed_everything"] if fit.seed is not None else [])
    lines += ["", f"from {lightning} import {', '.join(imports)}"]
    if fit.ckpt_dir is not None:
        lines.append(f"from {lightning}.callbacks import ModelCheckpoint")
    if layout.strategy == "model_parallel":
        lines.append(f"from {lightning}.strategies import ModelParallelStrategy")
    if layout.num_nodes > 1:
        lines.append(
            f"from {lightning}.plugins.environments import (\n"
            "    LSFEnvironment,\n    SLURMEnvironment,\n    TorchElasticEnvironment,\n)"
        )
    if fit.seed is not None:
        lines += ["", f"seed_everything({fit.seed!r})"]
    for heading, code in sections:
        lines += ["", "", f"# {heading}", code]
    lines += ["", "", 'if __name__ == "__main__":']
    lines += ["    " + line if line else "" for line in _main_body(layout, fit)]
    return "\n".join(lines) + "\n"


def _listing(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _literal(value) -> str:
    """Python source for a JSON-able value, strings in double quotes."""
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else repr(value)


def _nodes(count: int) -> str:
    return f"{count} node{'s' if count > 1 else ''}"


def _processes(count: int) -> str:
    return f"{count} process{'es' if count > 1 else ''}"


def torchrun_where(layout: JobLayout) -> str:
    """Where and how the torchrun command runs, in a few words."""
    if layout.num_nodes == 1:
        return f"on this machine, {_processes(layout.devices_per_node)} started by torchrun"
    return (
        f"on each of the {layout.num_nodes} nodes, with NODE_RANK 0 to {layout.num_nodes - 1}"
        " and MASTER_ADDR the address of node 0"
    )


def _main_body(layout: JobLayout, fit: FitCall) -> list[str]:
    body = []
    if layout.num_nodes > 1:
        body += [
            "# torchrun, srun and LSF's jsrun tell Lightning how many nodes take part; started as",
            f"# `python {layout.script}`, the job stays on this machine.",
            "launched_on_a_cluster = any(",
            "    environment.detect()",
            "    for environment in (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment)",
            ")",
        ]
    num_nodes = (
        f"{layout.num_nodes} if launched_on_a_cluster else 1" if layout.num_nodes > 1 else "1"
    )
    arguments = [
        ("accelerator", _literal(layout.accelerator)),
        ("devices", _literal(layout.devices_per_node)),
        ("num_nodes", num_nodes),
        ("strategy", "ModelParallelStrategy()" if layout.strategy == "model_parallel"
         else _literal(layout.strategy)),
    ]
    owned = {name for name, _ in arguments} | {"callbacks"}
    arguments += [(k, _literal(v)) for k, v in fit.trainer_kwargs.items() if k not in owned]
    if fit.ckpt_dir is not None:
        arguments.append(
            ("callbacks", f"[ModelCheckpoint(dirpath={_literal(fit.ckpt_dir)}, save_last=True)]")
        )
    body.append("trainer = Trainer(")
    body += [f"    {name}={value}," for name, value in arguments]
    body.append(")")
    model = fit.model
    if fit.instantiate:
        model = "model"
        body.append(f"model = {fit.model}()")
    fit_arguments = [model]
    if fit.datamodule is not None:
        fit_arguments.append(f"datamodule={fit.datamodule}")
    if fit.train_data is not None:
        fit_arguments.append(f"train_dataloaders={fit.train_data}")
    if fit.val_data is not None:
        fit_arguments.append(f"val_dataloaders={fit.val_data}")
    if fit.resume is not None:
        fit_arguments.append(f"ckpt_path={_literal(fit.resume)}")
    call = f"trainer.fit({', '.join(fit_arguments)})"
    if len(call) > 96:
        call = "trainer.fit(\n" + "".join(f"    {a},\n" for a in fit_arguments) + ")"
    body += call.splitlines()
    return body
