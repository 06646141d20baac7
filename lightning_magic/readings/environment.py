"""What this process's environment says about the machine: where it runs (a Lightning studio,
Colab, Kaggle, a SLURM allocation, or a plain machine), where checkpoints go, how many CPUs it
has, and which GPUs CUDA will let it use (``CUDA_VISIBLE_DEVICES``, ``CUDA_DEVICE_ORDER``).

``checkpoint_root`` is the one definition for the kernel (where a run's folder goes) and the
server (whose disk the panel shows). Everything here reads variables and paths only: no NVML
call, no torch, no CUDA.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional, Sequence

STUDIO_ROOT = "/teamspace/studios/this_studio"  # a Lightning cloud studio's persistent storage
COLAB_DRIVE = "/content/drive/MyDrive"          # Google Drive, once mounted in Colab
KAGGLE_WORKING = "/kaggle/working"              # kept as the notebook's output on Kaggle
CHECKPOINT_DIRNAME = "lightning_runs"


def _writable_dir(path: str) -> bool:
    return os.path.isdir(path) and os.access(path, os.W_OK)


def _persistent_storage(kind: str) -> Optional[str]:
    candidate = {"studio": STUDIO_ROOT, "colab": COLAB_DRIVE, "kaggle": KAGGLE_WORKING}.get(kind)
    return candidate if candidate and _writable_dir(candidate) else None


def _kind(environ: Mapping[str, str]) -> str:
    if environ.get("LIGHTNING_CLOUD_SPACE_ID") or _writable_dir(STUDIO_ROOT):
        return "studio"
    if environ.get("COLAB_RELEASE_TAG") or environ.get("COLAB_GPU") is not None:
        return "colab"
    if environ.get("KAGGLE_KERNEL_RUN_TYPE") or environ.get("KAGGLE_URL_BASE"):
        return "kaggle"
    if environ.get("SLURM_JOB_ID"):
        return "slurm"
    return "local"


def _int(value: Optional[str]) -> Optional[int]:
    """The leading number of a SLURM count such as ``4`` or ``2(x3)``; None when absent."""
    if not value:
        return None
    digits = value.split("(")[0].split(",")[0].strip()
    if ":" in digits:  # SLURM_GPUS_PER_TASK=a100:2
        digits = digits.rsplit(":", 1)[1]
    return int(digits) if digits.isdigit() else None


def _slurm_details(environ: Mapping[str, str]) -> dict:
    gpus_per_task = _int(environ.get("SLURM_GPUS_PER_TASK"))
    if gpus_per_task is None:
        on_node, tasks = _int(environ.get("SLURM_GPUS_ON_NODE")), \
            _int(environ.get("SLURM_NTASKS_PER_NODE")) or _int(environ.get("SLURM_NTASKS"))
        if on_node is not None:
            gpus_per_task = on_node // tasks if tasks else on_node
    return {
        "job_id": environ.get("SLURM_JOB_ID"),
        "job_name": environ.get("SLURM_JOB_NAME"),
        "partition": environ.get("SLURM_JOB_PARTITION"),
        "node": environ.get("SLURMD_NODENAME"),
        "tasks": _int(environ.get("SLURM_NTASKS")),
        "gpus_per_task": gpus_per_task,
        "cpus_per_task": _int(environ.get("SLURM_CPUS_PER_TASK")),
    }


def describe_environment(environ: Optional[Mapping[str, str]] = None) -> dict:
    """``{"kind", "label", "details"}``: where this process runs, as the readings report it."""
    environ = os.environ if environ is None else environ
    kind = _kind(environ)
    storage = _persistent_storage(kind)
    details: dict = {}
    if kind == "studio":
        label = "Lightning studio"
        details = {"space_id": environ.get("LIGHTNING_CLOUD_SPACE_ID")}
    elif kind == "colab":
        label = "Google Colab"
        details = {"drive_mounted": storage is not None}
    elif kind == "kaggle":
        label = "Kaggle notebook"
        details = {"run_type": environ.get("KAGGLE_KERNEL_RUN_TYPE")}
    elif kind == "slurm":
        details = _slurm_details(environ)
        label = f"SLURM job {details['job_id']}"
        if details["node"]:
            label += f" on {details['node']}"
    else:
        label = "this machine"
    if kind != "local":
        details["persistent_storage"] = storage
    for name in ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"):
        if name in environ:
            details[name.lower()] = environ[name]
    return {"kind": kind, "label": label, "details": details}


def checkpoint_root(cwd: str | os.PathLike | None = None,
                    environ: Optional[Mapping[str, str]] = None) -> Path:
    """The folder under which each run gets its own checkpoint folder: the environment's
    persistent storage where it has one (a studio, Colab's mounted Drive, Kaggle's working
    directory), else ``lightning_runs/`` in ``cwd`` (the working directory by default)."""
    storage = _persistent_storage(_kind(os.environ if environ is None else environ))
    if storage is not None:
        return Path(storage) / CHECKPOINT_DIRNAME
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError:  # the working directory was deleted
            cwd = Path.home()
    return Path(cwd) / CHECKPOINT_DIRNAME


def cpus_available(environ: Optional[Mapping[str, str]] = None) -> int:
    """CPUs this process may run on: its affinity mask, bounded by SLURM's CPUs per task."""
    environ = os.environ if environ is None else environ
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    per_task = _int(environ.get("SLURM_CPUS_PER_TASK")) if environ.get("SLURM_JOB_ID") else None
    return max(1, min(count, per_task) if per_task else count)


# -- CUDA_VISIBLE_DEVICES ------------------------------------------------------------------------


@dataclass(frozen=True)
class CudaDevice:
    """One device CUDA will number for this process: a whole GPU or one MIG instance."""

    cuda_index: int
    nvml_index: int
    mig_slot: Optional[int]
    uuid: Optional[str]


@dataclass(frozen=True)
class Visibility:
    devices: tuple[CudaDevice, ...]
    restricted: bool               # CUDA_VISIBLE_DEVICES is set
    notes: tuple[str, ...]         # entries CUDA ignores, and why


def _order(gpus: Sequence[dict], environ: Mapping[str, str]) -> list[dict]:
    """The GPUs in the order CUDA numbers them: PCI bus order with CUDA_DEVICE_ORDER=PCI_BUS_ID;
    otherwise (CUDA's default, FASTEST_FIRST) newest compute capability first, ties in PCI
    order, which is how CUDA ranks GPUs of different generations."""
    by_bus = sorted(gpus, key=lambda g: (g.get("pci_bus_id") or "", g["index"]))
    if environ.get("CUDA_DEVICE_ORDER", "").strip().upper() == "PCI_BUS_ID":
        return by_bus
    return sorted(by_bus, key=lambda g: tuple(-x for x in g.get("compute_capability") or (0, 0)))


def _enumerate(gpus: Sequence[dict], environ: Mapping[str, str]) -> list[tuple[int, Optional[int],
                                                                               Optional[str]]]:
    """(nvml index, MIG slot, uuid) of every device CUDA would show with no restriction: each
    GPU, or each MIG instance of a GPU with MIG enabled."""
    found = []
    for gpu in _order(gpus, environ):
        mig = gpu.get("mig") or {}
        if mig.get("enabled"):
            found += [(gpu["index"], i["index"], i.get("uuid")) for i in mig.get("instances", [])]
        else:
            found.append((gpu["index"], None, gpu.get("uuid")))
    return found


def visible_devices(gpus: Sequence[dict], environ: Optional[Mapping[str, str]] = None
                    ) -> Visibility:
    """Which of ``gpus`` (readings with index, uuid, compute_capability, pci_bus_id, mig) CUDA
    lets this process use, numbered as torch and Lightning number them.

    ``CUDA_VISIBLE_DEVICES`` takes device numbers, ``GPU-<uuid>`` and ``MIG-<uuid>`` (unique
    prefixes too); as CUDA does, the list ends at the first entry that names no device (or one
    already named), and an empty value hides every GPU.
    """
    environ = os.environ if environ is None else environ
    everything = _enumerate(gpus, environ)
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return Visibility(tuple(CudaDevice(n, *d) for n, d in enumerate(everything)), False, ())
    chosen: list[tuple[int, Optional[int], Optional[str]]] = []
    notes: list[str] = []
    for raw in value.split(","):
        entry = raw.strip()
        if not entry and value.strip() == "":
            break
        device = _match(entry, everything, gpus)
        if device is None or device in chosen:
            why = "names it a second time" if device is not None else "names no GPU NVML sees"
            notes.append(f"CUDA_VISIBLE_DEVICES={value!r}: {entry!r} {why}, so CUDA ignores it "
                         "and every entry after it.")
            break
        chosen.append(device)
    return Visibility(tuple(CudaDevice(n, *d) for n, d in enumerate(chosen)), True, tuple(notes))


def _match(entry: str, everything: list, gpus: Sequence[dict]):
    if entry.isdigit():
        number = int(entry)
        return everything[number] if number < len(everything) else None
    if not entry.upper().startswith(("GPU-", "MIG-")):
        return None
    wanted = entry.lower()
    if wanted.startswith("gpu-"):  # a whole GPU, or a MIG-enabled GPU's first instance
        hits = [g for g in gpus if (g.get("uuid") or "").lower().startswith(wanted)]
        if len(hits) != 1:
            return None
        gpu = hits[0]
        mig = gpu.get("mig") or {}
        if mig.get("enabled"):
            instances = mig.get("instances") or []
            return (gpu["index"], instances[0]["index"], instances[0].get("uuid")) \
                if instances else None
        return (gpu["index"], None, gpu.get("uuid"))
    hits = [d for d in everything if d[1] is not None and (d[2] or "").lower().startswith(wanted)]
    return hits[0] if len(hits) == 1 else None
