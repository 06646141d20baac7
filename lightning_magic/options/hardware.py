"""Resolve --devices, --accelerator, --precision and --strategy against the machine.

Pure functions over the GPUs this kernel may use (``devices.detect_gpus``, CUDA order), plus
``check_torch_can_use_gpus``, which reads ``torch.version.cuda`` and never initializes CUDA.
Nothing here forks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from IPython.core.error import UsageError

from .devices import Gpu, Inventory, _is_int, detect_gpus, name_of, select

__all__ = ["Gpu", "Inventory", "Resolved", "check_torch_can_use_gpus", "detect_gpus", "resolve",
           "resolve_for_export", "worker_note"]

DEFAULTS = {"devices": "auto", "accelerator": "auto", "strategy": "auto", "precision": "32-true"}

# Strategy names a forked notebook run accepts, and what each resolves to ("auto" depends on the
# number of processes).
NOTEBOOK_STRATEGIES = {
    "ddp_notebook": "ddp_notebook",
    "ddp_notebook_find_unused_parameters_true": "ddp_notebook_find_unused_parameters_true",
    "ddp": "ddp_notebook",
    "ddp_fork": "ddp_notebook",
    "ddp_find_unused_parameters_true": "ddp_notebook_find_unused_parameters_true",
    "ddp_fork_find_unused_parameters_true": "ddp_notebook_find_unused_parameters_true",
    "single_device": "single_device",
    "fsdp": "fsdp",
    "model_parallel": "model_parallel",
}
ALLOWED_STRATEGIES = "auto, ddp_notebook, ddp_notebook_find_unused_parameters_true, " \
    "single_device, fsdp, model_parallel"

# Strategies that cannot start from a notebook cell, and why.
SCRIPT_ONLY_STRATEGIES = {
    "ddp_spawn": "it starts fresh interpreters that must import (pickle) every object, and classes "
                 "defined in a notebook cell cannot be imported",
    "ddp_spawn_find_unused_parameters_true": "it pickles notebook-defined classes, which fails",
    "fsdp_cpu_offload": "its CPU offload is set up for a script launch; --strategy fsdp runs "
                        "from a notebook",
    "deepspeed": "it needs a script launch (the deepspeed or torchrun launcher)",
    "dp": "DataParallel was removed from Lightning 2",
    "xla": "it needs TPUs and its own launcher",
    "single_xla": "it needs TPUs",
}
for _variant in ("deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
                 "deepspeed_stage_3", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme"):
    SCRIPT_ONLY_STRATEGIES[_variant] = SCRIPT_ONLY_STRATEGIES["deepspeed"]

BF16_MIN_CAPABILITY = (8, 0)  # Ampere and newer
FP16_TENSOR_CORES = (7, 0)    # Volta, Turing


@dataclass(frozen=True)
class Resolved:
    """The hardware side of a run, as Lightning's Trainer will receive it."""

    accelerator: str                  # "cpu" | "gpu"
    devices: tuple[int, ...] | int    # CUDA device numbers, or a number of CPU processes
    num_processes: int
    strategy: str                     # single_device | ddp_notebook[...] | fsdp | model_parallel
    precision: str
    notes: tuple[str, ...] = field(default=())
    gpus: tuple[Gpu, ...] = field(default=())  # the selected GPUs, in ``devices`` order

    @property
    def nvml_indices(self) -> tuple[int, ...]:
        """NVML index of each selected GPU (the readings' ``index``), in ``devices`` order."""
        return tuple(g.index for g in self.gpus)

    def describe(self) -> str:
        if self.accelerator == "gpu":
            numbers = [str(n) if g.index == n and g.mig_slot is None else
                       f"{n} = NVML {g.index}" + (f" MIG {g.mig_slot}" if g.mig_slot is not None
                                                  else "")
                       for n, g in zip(self.devices, self.gpus)]
            where = f"{self.num_processes} GPU{'s' if self.num_processes > 1 else ''} " \
                    f"[{', '.join(numbers)}]"
        else:
            where = f"{self.num_processes} CPU process{'es' if self.num_processes > 1 else ''}"
        return f"{where} · strategy {self.strategy} · precision {self.precision}"

    def trainer_devices(self) -> Any:
        """What the Trainer's ``devices`` gets: CUDA device numbers, or a process count."""
        return list(self.devices) if isinstance(self.devices, tuple) else self.devices


def resolve(devices: Optional[str], accelerator: Optional[str], strategy: Optional[str],
            precision: Optional[str], gpus: Sequence[Gpu], no_gpu_reason: str = "") -> Resolved:
    """Turn the flags into a configuration, or raise a UsageError that says how to fix them.
    ``None`` for a flag means the user did not give it (see ``DEFAULTS``); ``gpus`` are the
    GPUs this kernel may use in CUDA order, as ``detect_gpus`` returns them."""
    devices = DEFAULTS["devices"] if devices is None else devices
    accelerator = DEFAULTS["accelerator"] if accelerator is None else accelerator
    precision_given = precision is not None
    precision = DEFAULTS["precision"] if precision is None else precision
    environment = getattr(gpus, "environment", None)
    notes = [_environment_note(environment)] if environment and \
        environment.get("kind") != "local" else []
    chosen: list[str] = []
    selected, cpu_processes = select(devices, accelerator, gpus, no_gpu_reason, chosen)
    if selected:
        resolved_accelerator, count = "gpu", len(selected)
        resolved_devices: tuple[int, ...] | int = tuple(
            next(n for n, g in enumerate(gpus) if g is gpu) for gpu in selected)
        notes += getattr(gpus, "notes", ())
    else:
        resolved_accelerator, count, resolved_devices = "cpu", cpu_processes, cpu_processes
    notes += chosen
    resolved_strategy = _strategy(DEFAULTS["strategy"] if strategy is None else strategy,
                                  count, resolved_accelerator, notes)
    if count > 1 and resolved_strategy.startswith("ddp") and strategy in (None, "auto"):
        notes.append(f"No strategy was given, so the {count} "
                     f"{'GPU ' if selected else ''}processes train with DDP (ddp_notebook).")
    _check_precision(precision, resolved_accelerator, selected)
    notes += _precision_notes(precision, precision_given, resolved_accelerator, selected)
    return Resolved(accelerator=resolved_accelerator, devices=resolved_devices,
                    num_processes=count, strategy=resolved_strategy, precision=precision,
                    notes=tuple(notes), gpus=tuple(selected))


def _environment_note(environment: dict) -> str:
    details = environment.get("details") or {}
    parts = [f"Environment: {environment.get('label')}"]
    per_task = [f"{details[key]} {what} per task" for key, what in
                (("gpus_per_task", "GPUs"), ("cpus_per_task", "CPUs")) if details.get(key)]
    if per_task:
        parts.append(" and ".join(per_task))
    if details.get("persistent_storage"):
        parts.append(f"checkpoints go to its persistent storage, {details['persistent_storage']}")
    return "; ".join(parts) + "."


def resolve_for_export(devices: str, accelerator: str, precision: str,
                       gpus: Sequence[Gpu]) -> tuple[str, int]:
    """(accelerator, processes per node) for a job that runs on other machines: GPUs named in
    --devices need not exist here (a login node often has none)."""
    devices = DEFAULTS["devices"] if devices is None else devices
    accelerator = DEFAULTS["accelerator"] if accelerator is None else accelerator
    precision = DEFAULTS["precision"] if precision is None else precision
    text = devices.strip().lower().replace(" ", "")
    if text == "free":  # idleness is the cluster scheduler's business there
        text = "auto"
    elif text.startswith("free:") and _is_int(text[5:]):
        text, accelerator = text[5:], "gpu" if accelerator == "auto" else accelerator
    entries = [e for e in text.split(",") if e]
    gpu_entries = [e for e in entries if e != "cpu"]
    if accelerator == "cpu" or text == "cpu":
        count = int(text) if _is_int(text) and int(text) > 0 else 1
        chosen = "cpu"
    elif len(entries) > 1 or any(e.startswith(("gpu:", "cuda:")) for e in entries):
        if accelerator == "cpu":
            raise UsageError(f"--devices {devices} names GPUs, but --accelerator is cpu.")
        chosen, count = "gpu", len(gpu_entries)
    elif _is_int(text) and int(text) > 0:
        chosen = "gpu" if accelerator == "gpu" or (accelerator == "auto" and gpus) else "cpu"
        count = int(text)
    elif text in ("auto", "-1") and (gpus and accelerator != "cpu"):
        chosen, count = "gpu", len(gpus)
    elif text in ("auto", "-1") and accelerator != "gpu":
        chosen, count = "cpu", 1
    else:
        raise UsageError(f"--devices {devices} with --export: this machine has no GPU to count, "
                         "so say how many each node of the cluster uses, for example "
                         "--accelerator gpu --devices 4.")
    if count < 1:
        raise UsageError(f"--devices {devices!r} selects nothing for the exported job.")
    _check_precision(precision, chosen, [])
    return chosen, count


def _strategy(strategy: str, count: int, accelerator: str, notes: list[str]) -> str:
    name = strategy.strip().lower()
    if name == "auto":
        return "single_device" if count == 1 else "ddp_notebook"
    if name in SCRIPT_ONLY_STRATEGIES:
        raise UsageError(f"--strategy {strategy!r} cannot run from a notebook: "
                         f"{SCRIPT_ONLY_STRATEGIES[name]}. Use --strategy ddp_notebook (the "
                         "default for several processes), or --export PATH to write a script "
                         "for it.")
    if name not in NOTEBOOK_STRATEGIES:
        raise UsageError(f"--strategy {strategy!r} is not a strategy a notebook can use. "
                         f"Allowed: {ALLOWED_STRATEGIES}.")
    resolved = NOTEBOOK_STRATEGIES[name]
    if resolved != name:
        how = "forks its ranks, which in a notebook is" if name.startswith("ddp_fork") else \
            "would re-run the program as a script, and a notebook is not one; its ranks are " \
            "forked instead, as in"
        notes.append(f"--strategy {name} {how} {resolved}.")
    if resolved == "single_device" and count > 1:
        raise UsageError(f"--strategy single_device trains in one process, but --devices selects "
                         f"{count}: use --devices 1, or --strategy ddp_notebook for {count}.")
    if resolved == "fsdp" and accelerator != "gpu":
        raise UsageError("--strategy fsdp on the CPU: Lightning's FSDP needs a GPU. Use "
                         "--strategy model_parallel to shard a model across CPU processes, or "
                         "select GPUs with --devices.")
    return resolved


def _check_precision(precision: str, accelerator: str, gpus: Sequence[Gpu]) -> None:
    if accelerator == "cpu" and precision in ("16-mixed", "16-true", "16"):
        suggestion = "bf16-true" if precision == "16-true" else "bf16-mixed"
        raise UsageError(f"--precision {precision} needs a GPU: float16 on the CPU is not "
                         f"supported. Use --precision {suggestion} (or 32) to train on the CPU.")
    if accelerator == "gpu" and precision.startswith("bf16"):
        lacking = [n for n, g in enumerate(gpus) if _capability(g) and
                   _capability(g) < BF16_MIN_CAPABILITY]
        if lacking:
            names = ", ".join(f"{name_of(gpus, n, details=False)} (compute capability "
                              f"{'.'.join(map(str, _capability(gpus[n])))})" for n in lacking)
            alternative = "16-true" if precision == "bf16-true" else "16-mixed"
            raise UsageError(f"--precision {precision} needs bfloat16, which {names} lacks "
                             f"(it needs compute capability 8.0 or newer). Use --precision "
                             f"{alternative} instead.")


def _capability(gpu: Gpu) -> Optional[tuple[int, int]]:
    return tuple(gpu.compute_capability) if gpu.compute_capability else None


def _precision_notes(precision: str, given: bool, accelerator: str,
                     gpus: Sequence[Gpu]) -> list[str]:
    """Recommendations for the GPUs' generation; what the user asked for is kept."""
    capabilities = [_capability(g) for g in gpus if _capability(g)]
    if accelerator != "gpu" or not capabilities:
        return []
    oldest = min(capabilities)
    kept = "" if given else " (it is the default when --precision is not given)"
    if precision in ("32", "32-true") and oldest >= BF16_MIN_CAPABILITY:
        return [f"Training in float32{kept}: these GPUs have bfloat16 tensor cores, and "
                "--precision bf16-mixed usually trains several times faster with the same "
                "results."]
    if precision in ("32", "32-true") and oldest >= FP16_TENSOR_CORES:
        return [f"Training in float32{kept}: these GPUs have float16 tensor cores but no "
                "bfloat16; --precision 16-mixed usually trains several times faster."]
    if precision in ("16-mixed", "16") and oldest >= BF16_MIN_CAPABILITY:
        return ["--precision bf16-mixed is recommended on these GPUs (Ampere or newer): the "
                "same speed as 16-mixed without loss scaling or overflow."]
    return []


def worker_note(num_workers: int, num_processes: int, cpus: int) -> Optional[str]:
    """A note when the DataLoader workers of every rank need more CPUs than there are."""
    if num_workers <= 0 or cpus <= 0:
        return None
    ranks = f"each of the {num_processes} ranks" if num_processes > 1 else "the rank"
    if num_processes >= cpus:
        share = "no CPU of its own" if num_processes > cpus else "one CPU, for its training loop"
        many = (f"with {num_processes} ranks on {cpus} CPUs each rank has {share}"
                if num_processes > 1 else "with 1 CPU the rank has it for its training loop")
        return (f"DataLoader num_workers={num_workers} for {ranks}: {many}, and every worker "
                "competes with the training for the CPUs. num_workers=0 loads in the rank "
                "itself.")
    per_rank = cpus // num_processes
    if num_workers < per_rank:
        return None
    return (f"DataLoader num_workers={num_workers} for {ranks} asks for more CPUs than the "
            f"{per_rank} each rank has ({cpus} CPUs here, one per rank runs the training "
            f"loop): the workers compete for them. num_workers={per_rank - 1} is enough.")


CUDA_WHEELS = ("11.8", "12.1", "12.4", "12.6", "12.8")  # download.pytorch.org/whl/cuXYZ


def check_torch_can_use_gpus() -> None:
    """Raise a UsageError when a GPU run is asked for but this torch cannot use the GPUs.

    Reads ``torch.version.cuda``, NVML's driver CUDA version and ``CUDA_VISIBLE_DEVICES``; never
    calls ``torch.cuda`` (which would initialize CUDA in the kernel, and forked ranks could not
    use it)."""
    import torch

    from ..readings import nvml_status

    problem = torch_gpu_problem(torch.__version__, torch.version.cuda,
                                nvml_status().get("cuda_driver_version"),
                                os.environ.get("CUDA_VISIBLE_DEVICES"))
    if problem:
        raise UsageError(problem)


def torch_gpu_problem(torch_version: str, torch_cuda: Optional[str], driver_cuda: Optional[str],
                      cuda_visible_devices: Optional[str]) -> Optional[str]:
    """Why torch cannot use the GPUs NVML sees, with what to install; None when it can."""
    if cuda_visible_devices is not None and not cuda_visible_devices.strip():
        return ("CUDA_VISIBLE_DEVICES is '' in this kernel, which hides every GPU from torch. "
                "Restart the kernel without it (or with the GPUs to use), or train on the CPU "
                "with --accelerator cpu.")
    wheel = _wheel_for(driver_cuda)
    install = (f"pip install torch --index-url https://download.pytorch.org/whl/cu"
               f"{wheel.replace('.', '')}" if wheel else "a torch build for this driver's CUDA")
    driver = f" (the driver runs CUDA {driver_cuda} and older)" if driver_cuda else ""
    if torch_cuda is None:
        return (f"torch {torch_version} is a CPU-only build, so it cannot use the NVIDIA GPUs "
                f"NVML sees. Install a CUDA build{driver}: {install}, then restart the kernel; "
                "or train on the CPU with --accelerator cpu.")
    if driver_cuda and _version(torch_cuda)[0] > _version(driver_cuda)[0]:
        return (f"torch {torch_version} is built for CUDA {torch_cuda}, newer than this driver "
                f"runs{driver}. Install a build for it: {install}, then restart the kernel; or "
                "update the NVIDIA driver.")
    return None


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit()) or (0,)


def _wheel_for(driver_cuda: Optional[str]) -> Optional[str]:
    if not driver_cuda:
        return None
    fitting = [w for w in CUDA_WHEELS if _version(w) <= _version(driver_cuda)]
    return fitting[-1] if fitting else None
