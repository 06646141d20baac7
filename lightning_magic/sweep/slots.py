"""Where trials run: the machine's devices cut into disjoint slots of ``--devices-per-trial``
each, one trial a slot at a time. GPUs go in CUDA order (slot 0 is GPU 0..D-1); without GPUs (or
with ``--accelerator cpu``) a slot is D CPU processes, and there are cores // D slots; each of
its processes computes with its share of the cores (``threads``: cores // (D x slots), at least
one), as Lightning gives each of several processes its share, so that trials side by side do
not spin more OpenMP threads than there are cores."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from IPython.core.error import UsageError


@dataclass(frozen=True)
class Slot:
    accelerator: str  # "cpu" or "gpu"
    devices: str      # the --devices of a trial in it: "2" (CPU processes) or "0,1" (GPUs)
    threads: int = 0  # torch threads of each CPU process (0: Lightning's choice, on GPUs)

    def describe(self) -> str:
        if self.accelerator == "gpu":
            return f"GPU {', '.join(self.devices.split(','))}"
        count = int(self.devices)
        return f"{count} CPU process{'es' if count > 1 else ''}"


def slots(per_trial: int, accelerator: Optional[str]) -> list[Slot]:
    """The disjoint slots of this machine for trials of ``per_trial`` devices."""
    from ..options import hardware
    from ..options.values import usable_cores

    gpus, reason = ([], "") if accelerator == "cpu" else hardware.detect_gpus()
    if accelerator == "gpu" and not gpus:
        raise UsageError(f"%%lightning_sweep --accelerator gpu: this kernel sees no GPU "
                         f"({reason or 'NVML sees none'}); leave out --accelerator to sweep on "
                         "CPU processes.")
    if not gpus:
        cores = usable_cores()
        count = max(1, cores // per_trial)
        return [Slot("cpu", str(per_trial), max(1, cores // (per_trial * count)))] * count
    if len(gpus) < per_trial:
        raise UsageError(f"%%lightning_sweep --devices-per-trial {per_trial}: this kernel sees "
                         f"{len(gpus)} GPU{'s' if len(gpus) > 1 else ''}; ask for at most "
                         f"{len(gpus)}, or sweep on CPU processes with --accelerator cpu.")
    return [Slot("gpu", ",".join(str(n) for n in range(k * per_trial, (k + 1) * per_trial)))
            for k in range(len(gpus) // per_trial)]
