"""The GPUs this kernel may use, and which of them ``--devices`` selects.

``detect_gpus`` reads NVML (through ``readings``) and keeps the devices CUDA lets this process
use (``CUDA_VISIBLE_DEVICES``, ``CUDA_DEVICE_ORDER``, MIG), in CUDA's order: the position of a
GPU in that list is its CUDA device number, what Lightning and torch call device 0, 1. Each
``Gpu`` keeps its NVML index for the readings, and what is running on it for ``--devices free``.
``select`` is pure: it turns ``--devices`` into GPUs or a number of CPU processes. Nothing here
imports torch, touches CUDA or forks.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from typing import Optional, Sequence

from IPython.core.error import UsageError

GIB = 2**30
BUSY_MEMORY_SHARE = 0.05   # a GPU with more than this share of its memory in use is busy...
BUSY_MEMORY_MIN = 1 * GIB  # ...and more than this many bytes (drivers keep some in use)


@dataclass(frozen=True)
class Gpu:
    index: int                                   # NVML index (nvidia-smi's number)
    name: str
    memory_total: Optional[int] = None           # bytes
    compute_capability: Optional[tuple[int, int]] = None
    uuid: Optional[str] = None
    mig_slot: Optional[int] = None               # a MIG instance of NVML GPU ``index``
    memory_used: Optional[int] = None
    others: tuple[str, ...] = ()                 # users of other users' compute processes on it

    def busy(self) -> str:
        """Why ``--devices free`` skips this GPU, or "" when it is free."""
        reasons = []
        if self.others:
            users = ", ".join(sorted(set(self.others)))
            count = len(self.others)
            reasons.append(f"{count} compute process{'es' if count > 1 else ''} of other users "
                           f"({users})")
        if self.memory_used is not None and self.memory_total and self.memory_used > max(
                BUSY_MEMORY_MIN, BUSY_MEMORY_SHARE * self.memory_total):
            reasons.append(f"{self.memory_used / GIB:.1f} of {self.memory_total / GIB:.0f} GiB "
                           "in use")
        return " and ".join(reasons)


class Inventory(list):
    """The GPUs this kernel may use, in CUDA order, with what ``detect_gpus`` found around them."""

    def __init__(self, gpus=(), *, notes: Sequence[str] = (), hidden: int = 0,
                 cuda_visible_devices: Optional[str] = None, environment: Optional[dict] = None):
        super().__init__(gpus)
        self.notes = tuple(notes)          # how CUDA numbers them, entries it ignores
        self.hidden = hidden               # GPUs NVML sees that CUDA_VISIBLE_DEVICES hides
        self.cuda_visible_devices = cuda_visible_devices
        self.environment = environment


def same_numbering(gpus: Sequence[Gpu]) -> bool:
    return all(g.index == n and g.mig_slot is None for n, g in enumerate(gpus))


def name_of(gpus: Sequence[Gpu], number: int, *, details: bool = True) -> str:
    """"GPU 0: NVIDIA A100, 80 GiB", or "GPU 0 = NVML 2, NVIDIA H100, 80 GiB" where CUDA's
    numbers differ from NVML's (``number`` is the CUDA device number)."""
    gpu = gpus[number]
    memory = f", {gpu.memory_total / GIB:.0f} GiB" if gpu.memory_total and details else ""
    if same_numbering(gpus):
        return f"GPU {number}: {gpu.name}{memory}"
    where = f"NVML {gpu.index}" if gpu.mig_slot is None else \
        f"MIG {gpu.mig_slot} of NVML {gpu.index}"
    return f"GPU {number} = {where}, {gpu.name}{memory}"


def gpu_list(gpus: Sequence[Gpu]) -> str:
    return "; ".join(name_of(gpus, n) for n in range(len(gpus))) if gpus else "none"


def detect_gpus() -> tuple[Inventory, str]:
    """The GPUs this kernel may use (CUDA order), and why there are none when the list is empty."""
    from ..readings.environment import describe_environment, visible_devices
    from ..readings.sampler import no_gpu_reason, read_gpus

    readings_gpus = read_gpus()
    visibility = visible_devices(readings_gpus)
    by_index = {g["index"]: g for g in readings_gpus}
    me = _user()
    gpus = []
    for device in visibility.devices:
        reading = by_index[device.nvml_index]
        cc = reading.get("compute_capability")
        common = dict(index=device.nvml_index, name=str(reading.get("name") or "GPU"),
                      compute_capability=tuple(cc) if cc else None, uuid=device.uuid)
        if device.mig_slot is None:
            others = tuple(p["user"] or "unknown" for p in reading["processes"]
                           if p.get("compute") and p["user"] != me)
            memory = reading["memory"]
            gpus.append(Gpu(memory_total=memory["total"], memory_used=memory["used"],
                            others=others, **common))
        else:
            instance = next(i for i in reading["mig"]["instances"]
                            if i["index"] == device.mig_slot)
            gpus.append(Gpu(memory_total=instance["memory"]["total"],
                            memory_used=instance["memory"]["used"], mig_slot=device.mig_slot,
                            **common))
    cvd = os.environ.get("CUDA_VISIBLE_DEVICES")
    notes = list(visibility.notes)
    if visibility.restricted and gpus:
        notes.insert(0, f"CUDA_VISIBLE_DEVICES={cvd!r}: this kernel may use {len(gpus)} "
                        f"device{'s' if len(gpus) > 1 else ''} of the {len(readings_gpus)} GPUs "
                        f"NVML sees ({gpu_list(gpus)}).")
    elif not same_numbering(gpus) and all(g.mig_slot is None for g in gpus):
        notes.insert(0, "CUDA numbers these GPUs fastest first, not as nvidia-smi does "
                        f"({gpu_list(gpus)}); start the kernel with CUDA_DEVICE_ORDER=PCI_BUS_ID "
                        "to number them alike.")
    inventory = Inventory(gpus, notes=notes, hidden=len(readings_gpus) if not gpus else 0,
                          cuda_visible_devices=cvd, environment=describe_environment())
    reason = no_gpu_reason()
    if not gpus:
        reason = reason or (f"CUDA_VISIBLE_DEVICES={cvd!r} hides all {len(readings_gpus)} of "
                            "them" if readings_gpus else "NVML reports no NVIDIA GPU")
    return inventory, "" if gpus else reason


def _user() -> Optional[str]:
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return None


def _no_gpu(what: str, gpus: Sequence[Gpu], why: str) -> UsageError:
    hidden = getattr(gpus, "hidden", 0)
    if hidden:
        cvd = getattr(gpus, "cuda_visible_devices", None)
        return UsageError(f"{what}, but CUDA_VISIBLE_DEVICES={cvd!r} hides all {hidden} GPUs "
                          "NVML sees from this kernel. Restart the kernel with a "
                          "CUDA_VISIBLE_DEVICES that names them (or unset it), or use "
                          "--accelerator cpu --devices N to train on N CPU processes.")
    why = f" ({why})" if why else ""
    return UsageError(f"{what}, but NVML sees no NVIDIA GPU on this machine{why}. "
                      "Use --accelerator cpu --devices N to train on N CPU processes.")


def select(spec: str, accelerator: str, gpus: Sequence[Gpu], no_gpu_reason: str,
           notes: list[str]) -> tuple[list[Gpu], int]:
    """(selected GPUs, CPU process count) for ``--devices spec``; exactly one is non-empty.
    GPU numbers in ``spec`` are CUDA device numbers: positions in ``gpus``."""
    text = spec.strip().lower().replace(" ", "")

    def need_gpus(what: str) -> None:
        if not gpus:
            raise _no_gpu(what, gpus, no_gpu_reason)

    if text == "auto":
        if accelerator == "cpu" or (accelerator == "auto" and not gpus):
            return [], 1
        need_gpus("--accelerator gpu asks for a GPU")
        return _warn_busy(_one_mig(list(gpus), spec, notes), gpus, notes), 0
    if text == "free" or text.startswith("free:"):
        return _free(spec, text, accelerator, gpus, notes, need_gpus), 0
    if text == "cpu":
        if accelerator == "gpu":
            raise UsageError("--devices cpu contradicts --accelerator gpu: pick one of them.")
        return [], 1
    if _is_int(text):
        count = int(text)
        if count == 0 or count < -1:
            if accelerator == "cpu" or (accelerator == "auto" and not gpus):
                raise UsageError(f"--devices {spec!r} selects nothing: give a number of CPU "
                                 "processes of at least 1, for example --devices 2.")
            hint = " (to use GPU 0 alone, write --devices gpu:0)" if count == 0 else ""
            raise UsageError(f"--devices {spec!r} selects nothing{hint}: give a count of at least "
                             "1, -1 for every GPU, or GPU numbers such as 0,1.")
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
            return _warn_busy(_one_mig(list(gpus), spec, notes), gpus, notes), 0
        if count > len(gpus):
            raise UsageError(f"--devices {spec} asks for {count} GPUs, but this kernel can use "
                             f"{len(gpus)}: {gpu_list(gpus)}.")
        return _warn_busy(_one_mig(list(gpus[:count]), spec, notes, strict=True), gpus, notes), 0
    return _listed(spec, text, accelerator, gpus, notes, need_gpus), 0


def _listed(spec, text, accelerator, gpus, notes, need_gpus) -> list[Gpu]:
    """A list: "0,1", "gpu:0,gpu:1", possibly with a "cpu" entry."""
    wants_cpu = False
    numbers: list[int] = []
    for entry in (e for e in text.split(",") if e):
        if entry == "cpu":
            wants_cpu = True
            continue
        number = entry.split(":", 1)[1] if entry.startswith(("gpu:", "cuda:")) else entry
        if not _is_int(number) or int(number) < 0:
            raise UsageError(f"--devices {spec!r}: {entry!r} is not a GPU number. Allowed: auto, "
                             "free, free:N, cpu, a count N, or CUDA device numbers such as 0,1 "
                             "or gpu:0,gpu:1.")
        if int(number) in numbers:
            raise UsageError(f"--devices {spec!r} names GPU {number} twice: list each GPU once.")
        numbers.append(int(number))
    if not numbers:
        if wants_cpu and accelerator != "gpu":
            return []
        raise UsageError(f"--devices {spec!r} selects nothing: give 'auto', 'free', 'cpu', a "
                         "count, or GPU numbers such as 0,1.")
    if accelerator == "cpu":
        raise UsageError(f"--devices {spec} names GPUs, but --accelerator is cpu: drop "
                         "--accelerator cpu, or give a number of CPU processes.")
    need_gpus(f"--devices {spec} names GPU{'s' if len(numbers) > 1 else ''} "
              f"{', '.join(map(str, numbers))}")
    missing = [n for n in numbers if n >= len(gpus)]
    if missing:
        hidden = " (CUDA numbers only the GPUs CUDA_VISIBLE_DEVICES lets it see, from 0)" \
            if getattr(gpus, "cuda_visible_devices", None) is not None else ""
        raise UsageError(f"--devices {spec}: there is no GPU {', '.join(map(str, missing))} for "
                         f"this kernel{hidden}. The GPUs it can use are {gpu_list(gpus)}.")
    if wants_cpu:
        notes.append("CPU is ignored when GPUs are selected.")
    chosen = _one_mig([gpus[n] for n in numbers], spec, notes, strict=True)
    return _warn_busy(chosen, gpus, notes)


def _free(spec, text, accelerator, gpus, notes, need_gpus) -> list[Gpu]:
    wanted = None
    if text != "free":
        number = text.split(":", 1)[1]
        if not number.isdigit() or int(number) < 1:
            raise UsageError(f"--devices {spec!r}: after 'free:' give how many idle GPUs to "
                             "use, for example free:2.")
        wanted = int(number)
    if accelerator == "cpu":
        raise UsageError(f"--devices {spec} picks idle GPUs, but --accelerator is cpu.")
    need_gpus(f"--devices {spec} asks for idle GPUs")
    free = [n for n, g in enumerate(gpus) if not g.busy()]
    skipped = [f"{name_of(gpus, n, details=False)} ({g.busy()})"
               for n, g in enumerate(gpus) if g.busy()]
    if not free or (wanted is not None and len(free) < wanted):
        raise UsageError(f"--devices {spec}: {len(free)} of the {len(gpus)} GPUs this kernel can "
                         f"use {'is' if len(free) == 1 else 'are'} idle; busy: "
                         f"{'; '.join(skipped)}. Wait for them, give fewer, or name GPUs with "
                         "--devices 0,1.")
    chosen = [gpus[n] for n in free[:wanted]]
    note = f"--devices {spec}: {', '.join(name_of(gpus, n, details=False) for n in free[:wanted])}"
    notes.append(note + (f"; skipped {'; '.join(skipped)}." if skipped else "."))
    return _one_mig(chosen, spec, notes)


def _one_mig(chosen: list[Gpu], spec: str, notes: list[str], strict: bool = False) -> list[Gpu]:
    """A CUDA process uses one MIG instance at most, and DDP cannot span MIG instances."""
    if len(chosen) <= 1 or all(g.mig_slot is None for g in chosen):
        return chosen
    if strict:
        raise UsageError(f"--devices {spec} selects {len(chosen)} devices, and some are MIG "
                         "instances: a process can use one MIG instance, and DDP does not span "
                         "them. Use --devices 1, or one GPU number such as gpu:0.")
    notes.append(f"--devices {spec}: training on one MIG instance, the first, because a process "
                 "can use only one and DDP does not span them.")
    return chosen[:1]


def _warn_busy(chosen: list[Gpu], gpus: Sequence[Gpu], notes: list[str]) -> list[Gpu]:
    for gpu in chosen:
        if gpu.busy():
            number = next(n for n, g in enumerate(gpus) if g is gpu)
            notes.append(f"{name_of(gpus, number, details=False)} is busy "
                         f"({gpu.busy()}); --devices free picks idle GPUs.")
    return chosen


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit() and text.count("-") <= 1 and not text.endswith("-")
