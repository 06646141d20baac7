"""Resolve --devices, --accelerator, --precision and --strategy against the machine.

Pure functions over a GPU inventory read from NVML (``readings.list_gpus``); nothing here
imports torch or touches CUDA, and nothing here forks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

from IPython.core.error import UsageError

# Strategies a forked notebook run can use, and what each resolves to.
NOTEBOOK_STRATEGIES = {
    "auto": "ddp_notebook",
    "ddp_notebook": "ddp_notebook",
    "ddp_fork": "ddp_notebook",
    "ddp_notebook_find_unused_parameters_true": "ddp_notebook_find_unused_parameters_true",
    "ddp_fork_find_unused_parameters_true": "ddp_notebook_find_unused_parameters_true",
}

# Strategies that cannot start from a notebook cell, and why.
SCRIPT_ONLY_STRATEGIES = {
    "ddp": "it starts every rank by re-running the program as a script, and a notebook is not one",
    "ddp_spawn": "it starts fresh interpreters that must import (pickle) every object, and classes "
                 "defined in a notebook cell cannot be imported",
    "ddp_find_unused_parameters_true": "it re-runs the program as a script, and a notebook is not one",
    "ddp_spawn_find_unused_parameters_true": "it pickles notebook-defined classes, which fails",
    "fsdp": "it needs a script launch (torchrun or the Trainer re-running the script)",
    "deepspeed": "it needs a script launch (the deepspeed or torchrun launcher)",
    "dp": "DataParallel was removed from Lightning 2",
    "xla": "it needs TPUs and its own launcher",
    "single_xla": "it needs TPUs",
}
for _variant in ("deepspeed_stage_1", "deepspeed_stage_2", "deepspeed_stage_2_offload",
                 "deepspeed_stage_3", "deepspeed_stage_3_offload", "deepspeed_stage_3_offload_nvme"):
    SCRIPT_ONLY_STRATEGIES[_variant] = SCRIPT_ONLY_STRATEGIES["deepspeed"]
SCRIPT_ONLY_STRATEGIES["fsdp_cpu_offload"] = SCRIPT_ONLY_STRATEGIES["fsdp"]

BF16_MIN_CAPABILITY = (8, 0)  # Ampere and newer


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    memory_total: Optional[int] = None  # bytes
    compute_capability: Optional[tuple[int, int]] = None

    def describe(self) -> str:
        memory = f", {self.memory_total / 2**30:.0f} GiB" if self.memory_total else ""
        return f"{self.index}: {self.name}{memory}"


@dataclass(frozen=True)
class Resolved:
    """The hardware side of a run, as Lightning's Trainer will receive it."""

    accelerator: str                  # "cpu" | "gpu"
    devices: tuple[int, ...] | int    # GPU indices, or a number of CPU processes
    num_processes: int
    strategy: str                     # "ddp_notebook" (always forked)
    precision: str
    notes: tuple[str, ...] = field(default=())
    gpus: tuple[Gpu, ...] = field(default=())  # the selected GPUs

    def describe(self) -> str:
        if self.accelerator == "gpu":
            where = f"{self.num_processes} GPU{'s' if self.num_processes > 1 else ''} " \
                    f"[{', '.join(str(g.index) for g in self.gpus)}]"
        else:
            where = f"{self.num_processes} CPU process{'es' if self.num_processes > 1 else ''}"
        return f"{where} · strategy {self.strategy} · precision {self.precision}"

    def trainer_devices(self) -> Any:
        return list(self.devices) if isinstance(self.devices, tuple) else self.devices


def detect_gpus() -> tuple[list[Gpu], str]:
    """The GPUs NVML sees, and why there are none when the list is empty."""
    from . import readings

    status = readings.nvml_status()
    gpus = []
    for info in readings.list_gpus():
        cc = info.get("compute_capability")
        gpus.append(Gpu(index=int(info["index"]), name=str(info.get("name") or "GPU"),
                        memory_total=info.get("memory_total"),
                        compute_capability=tuple(cc) if cc else None))
    reason = "" if gpus else (status.get("reason") or "NVML reports no NVIDIA GPU")
    return gpus, reason


def resolve(devices: str, accelerator: str, strategy: str, precision: str,
            gpus: Sequence[Gpu], no_gpu_reason: str = "") -> Resolved:
    """Turn the flags into a configuration, or raise a UsageError that says how to fix them."""
    notes: list[str] = []
    selected_gpus, cpu_processes = _select(devices, accelerator, gpus, no_gpu_reason, notes)
    if selected_gpus:
        resolved_accelerator = "gpu"
        count = len(selected_gpus)
        resolved_devices: tuple[int, ...] | int = tuple(g.index for g in selected_gpus)
    else:
        resolved_accelerator = "cpu"
        count = cpu_processes
        resolved_devices = cpu_processes
    if count > 1:
        notes.append(f"Multi-{'GPU' if selected_gpus else 'process'} (DDP) will be used "
                     f"automatically: {count} processes.")
    resolved_strategy = _strategy(strategy)
    _check_precision(precision, resolved_accelerator, selected_gpus)
    return Resolved(accelerator=resolved_accelerator, devices=resolved_devices,
                    num_processes=count, strategy=resolved_strategy, precision=precision,
                    notes=tuple(notes), gpus=tuple(selected_gpus))


def resolve_for_export(devices: str, accelerator: str, precision: str,
                       gpus: Sequence[Gpu]) -> tuple[str, int]:
    """(accelerator, processes per node) for a job that runs on other machines: GPUs named in
    --devices need not exist here (a login node often has none)."""
    text = devices.strip().lower().replace(" ", "")
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


def _gpu_list(gpus: Sequence[Gpu]) -> str:
    return "; ".join(g.describe() for g in gpus) if gpus else "none"


def _select(spec: str, accelerator: str, gpus: Sequence[Gpu], no_gpu_reason: str,
            notes: list[str]) -> tuple[list[Gpu], int]:
    """Return (selected GPUs, CPU process count); exactly one of them is non-empty."""
    text = spec.strip().lower().replace(" ", "")
    by_index = {g.index: g for g in gpus}

    def need_gpus(what: str) -> None:
        if not gpus:
            why = f" ({no_gpu_reason})" if no_gpu_reason else ""
            raise UsageError(f"{what}, but NVML sees no NVIDIA GPU on this machine{why}. "
                             "Use --accelerator cpu --devices N to train on N CPU processes.")

    if text == "auto":
        if accelerator == "cpu" or (accelerator == "auto" and not gpus):
            return [], 1
        need_gpus("--accelerator gpu asks for a GPU")
        return list(gpus), 0
    if text == "cpu":
        if accelerator == "gpu":
            raise UsageError("--devices cpu contradicts --accelerator gpu: pick one of them.")
        return [], 1
    if _is_int(text):
        count = int(text)
        if count == 0 or count < -1:
            hint = " (to use GPU 0 alone, write --devices gpu:0)" if count == 0 else ""
            raise UsageError(f"--devices {spec!r} selects nothing{hint}: give a count of at least "
                             "1, -1 for every GPU, or GPU indices such as 0,1.")
        if accelerator == "cpu" or (accelerator == "auto" and not gpus):
            if count == -1:
                raise UsageError("--devices -1 means every GPU, and there is none to use here: "
                                 "give a number of CPU processes instead, for example 2.")
            if accelerator == "auto":
                notes.append(f"No GPU visible to NVML: training on {count} CPU "
                             f"process{'es' if count > 1 else ''}.")
            return [], count
        need_gpus(f"--devices {spec} asks for {count} GPU{'s' if count != 1 else ''}")
        if count == -1:
            return list(gpus), 0
        if count > len(gpus):
            raise UsageError(f"--devices {spec} asks for {count} GPUs, but there are {len(gpus)}: "
                             f"{_gpu_list(gpus)}.")
        return list(gpus[:count]), 0
    # A list: "0,1", "gpu:0,gpu:1", possibly with a "cpu" entry.
    entries = [e for e in text.split(",") if e]
    wants_cpu = False
    indices: list[int] = []
    for entry in entries:
        if entry == "cpu":
            wants_cpu = True
            continue
        number = entry[4:] if entry.startswith("gpu:") else entry[5:] if entry.startswith("cuda:") else entry
        if not _is_int(number) or int(number) < 0:
            raise UsageError(f"--devices {spec!r}: {entry!r} is not a GPU index. Allowed: auto, "
                             "cpu, a count N, or GPU indices such as 0,1 or gpu:0,gpu:1.")
        if int(number) in indices:
            raise UsageError(f"--devices {spec!r} names GPU {number} twice: list each GPU once.")
        indices.append(int(number))
    if not indices:
        if wants_cpu and accelerator != "gpu":
            return [], 1
        raise UsageError(f"--devices {spec!r} selects nothing: give 'auto', 'cpu', a count, or "
                         "GPU indices such as 0,1.")
    if accelerator == "cpu":
        raise UsageError(f"--devices {spec} names GPUs, but --accelerator is cpu: drop "
                         "--accelerator cpu, or give a number of CPU processes.")
    need_gpus(f"--devices {spec} names GPU{'s' if len(indices) > 1 else ''} "
              f"{', '.join(map(str, indices))}")
    missing = [i for i in indices if i not in by_index]
    if missing:
        raise UsageError(f"--devices {spec}: there is no GPU {', '.join(map(str, missing))}. "
                         f"The GPUs here are {_gpu_list(gpus)}.")
    if wants_cpu:
        notes.append("CPU is ignored when GPUs are selected.")
    return [by_index[i] for i in indices], 0


def _strategy(strategy: str) -> str:
    name = strategy.strip().lower()
    if name in NOTEBOOK_STRATEGIES:
        return NOTEBOOK_STRATEGIES[name]
    if name in SCRIPT_ONLY_STRATEGIES:
        raise UsageError(f"--strategy {strategy!r} cannot run from a notebook: "
                         f"{SCRIPT_ONLY_STRATEGIES[name]}. Use --strategy ddp_notebook (the "
                         "default), or --export PATH to write a script for it.")
    raise UsageError(f"--strategy {strategy!r} is not a strategy a notebook can use. "
                     "Allowed: auto, ddp_notebook, ddp_notebook_find_unused_parameters_true.")


def _check_precision(precision: str, accelerator: str, gpus: Sequence[Gpu]) -> None:
    if accelerator == "cpu" and precision in ("16-mixed", "16-true"):
        suggestion = "bf16-mixed" if precision == "16-mixed" else "bf16-true"
        raise UsageError(f"--precision {precision} needs a GPU: float16 on the CPU is not "
                         f"supported. Use --precision {suggestion} (or 32) to train on the CPU.")
    if accelerator == "gpu" and precision.startswith("bf16"):
        lacking = [g for g in gpus if g.compute_capability is not None
                   and tuple(g.compute_capability) < BF16_MIN_CAPABILITY]
        if lacking:
            names = ", ".join(f"GPU {g.index} ({g.name}, compute capability "
                              f"{g.compute_capability[0]}.{g.compute_capability[1]})" for g in lacking)
            alternative = "16-mixed" if precision == "bf16-mixed" else "16-true"
            raise UsageError(f"--precision {precision} needs bfloat16, which {names} lacks "
                             f"(it needs compute capability 8.0 or newer). Use --precision "
                             f"{alternative} instead.")


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit() and text.count("-") <= 1 and not text.endswith("-")
