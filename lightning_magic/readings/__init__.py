"""Readings of this machine: NVML per GPU, psutil for CPU, memory and disk, and the runs that
kernels publish in Jupyter's runtime directory.

The rule of this folder: it reads, it never trains. Nothing here imports torch (so nothing can
initialize CUDA) or the Jupyter server; pynvml is imported inside the functions that use it, so
the kernel, the server and ``%gpu_status`` share these modules without paying for each other.

- ``sampler``: one reading now (``snapshot``) and the process's background sampler.
- ``nvml``: the NVML session and per-GPU fields; ``processes``: who a GPU process is.
- ``host``: CPU, memory, disk; ``environment``: where this process runs, the checkpoint root,
  CPUs, and the GPUs CUDA lets it use.
- ``runs``: the published run files (written by the kernel, read by the server).
"""

from .environment import checkpoint_root
from .sampler import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_INTERVAL,
    MIN_INTERVAL,
    SCHEMA_VERSION,
    Sampler,
    get_sampler,
    list_gpus,
    nvml_status,
    shutdown,
    snapshot,
)

__all__ = [
    "DEFAULT_IDLE_TIMEOUT", "DEFAULT_INTERVAL", "MIN_INTERVAL", "SCHEMA_VERSION", "Sampler",
    "checkpoint_root", "get_sampler", "list_gpus", "nvml_status", "shutdown", "snapshot",
]
