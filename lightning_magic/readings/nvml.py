"""NVML readings of the GPUs: one NVML session per process, device handles and the fields
that do not change (name, uuid, PCI bus id, total memory, power limit, compute capability, MIG
mode) read once, the rest on every reading.

A field a device does not report (MIG, consumer cards, vGPU) is None, never an error or 0 (with
MIG on, utilization is None with its ``reason``); an NVML error on one field or one GPU is noted
in that GPU's ``error`` and hides nothing else.
pynvml is imported inside functions; nothing here imports torch or Jupyter.
"""

from __future__ import annotations

import copy
import threading

from .processes import ProcessLabeler

READINGS_STILL_WORK = "CPU and memory readings still work."
MIG_UTILIZATION = ("NVML does not report utilization for a GPU split into MIG instances, nor "
                   "for an instance (DCGM's profiling metrics do)")


class _Gpu:
    """A physical GPU: its handle and the fields that do not change while the driver runs."""

    def __init__(self, index: int, handle, static: dict):
        self.index = index
        self.handle = handle
        self.static = static


class NvmlSession:
    """NVML for this process: started once, closed by ``close``."""

    def __init__(self):
        self.lock = threading.Lock()
        self.started = False
        self.initialized = False
        self.available = False
        self.reason: str | None = None
        self.driver_version: str | None = None
        self.cuda_driver_version: str | None = None  # the newest CUDA the driver runs, "12.4"
        self.gpus: list[_Gpu] = []
        self.labeler = ProcessLabeler()

    def start(self) -> None:
        with self.lock:
            if self.started:
                return
            self.started = True
            try:
                import pynvml
            except ImportError:
                self.reason = (
                    "The nvidia-ml-py package is not installed, so GPUs cannot be read. "
                    "Install it with `pip install nvidia-ml-py`."
                )
                return
            try:
                pynvml.nvmlInit()
            except pynvml.NVMLError as error:
                self.reason = _init_failure(pynvml, error)
                return
            self.initialized = True
            try:
                count = pynvml.nvmlDeviceGetCount()
            except pynvml.NVMLError as error:
                self.reason = f"NVML started but could not count the GPUs ({error})."
                return
            self.available = True
            self.driver_version = _text(_call(pynvml, pynvml.nvmlSystemGetDriverVersion, []))
            cuda = _call(pynvml, pynvml.nvmlSystemGetCudaDriverVersion, [])
            self.cuda_driver_version = f"{cuda // 1000}.{cuda % 1000 // 10}" if cuda else None
            for index in range(count):
                try:
                    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                except pynvml.NVMLError as error:
                    handle, static = None, _static_fields(
                        pynvml, None, index, [f"{error} (nvmlDeviceGetHandleByIndex)"])
                else:
                    static = _static_fields(pynvml, handle, index, [])
                self.gpus.append(_Gpu(index, handle, static))

    def status(self) -> dict:
        """The readings' ``nvml`` object; its reason adds that the rest is still read."""
        return {
            "available": self.available,
            "driver_version": self.driver_version,
            "cuda_driver_version": self.cuda_driver_version,
            "reason": f"{self.reason} {READINGS_STILL_WORK}" if self.reason else None,
        }

    def inventory(self) -> list[dict]:
        """Per GPU: index, uuid, name, memory_total (bytes), compute_capability, pci_bus_id."""
        if not self.available:
            return []
        keys = ("index", "uuid", "name", "memory_total", "compute_capability", "pci_bus_id")
        return [{key: copy.copy(gpu.static[key]) for key in keys} for gpu in self.gpus]

    def read_gpus(self) -> list[dict]:
        if not self.available:
            return []
        import pynvml

        return [_read_gpu(pynvml, gpu, self.labeler) for gpu in self.gpus]

    def close(self) -> None:
        with self.lock:
            if self.initialized:
                import pynvml

                try:
                    pynvml.nvmlShutdown()
                except pynvml.NVMLError:
                    pass


def _init_failure(pynvml, error) -> str:
    if isinstance(error, pynvml.NVMLError_LibraryNotFound):
        return (
            "No NVIDIA driver found: the NVML library (libnvidia-ml.so.1) is not on this machine "
            "or not visible in this container."
        )
    if isinstance(error, pynvml.NVMLError_DriverNotLoaded):
        return (
            "The NVIDIA driver is installed but not loaded. Check `nvidia-smi`; loading the "
            "nvidia kernel module or rebooting usually fixes it."
        )
    if isinstance(error, pynvml.NVMLError_NoPermission):
        return (
            "NVML refused access: the user running Jupyter cannot open /dev/nvidia*. "
            "Ask an administrator to grant access to the GPU devices."
        )
    if isinstance(error, pynvml.NVMLError_LibRmVersionMismatch):
        return (
            "The NVIDIA driver library and kernel module have different versions (the driver "
            "was updated without a reboot). Reboot, or reload the nvidia kernel module."
        )
    return f"NVML could not start: {error}. Check that `nvidia-smi` works for this user."


def _unsupported(pynvml) -> tuple:
    """Errors that mean "this device does not report that field": shown as null, not as errors."""
    return (
        pynvml.NVMLError_NotSupported,
        pynvml.NVMLError_FunctionNotFound,
        pynvml.NVMLError_NotFound,
        pynvml.NVMLError_NoPermission,
        pynvml.NVMLError_InvalidArgument,
    )


def _LibraryMismatch(pynvml) -> type[Exception]:
    """What pynvml raises when an unversioned function is missing from an older driver."""
    return getattr(pynvml, "NVMLLibraryMismatchError", pynvml.NVMLError_FunctionNotFound)


def _call(pynvml, function, errors: list, *args):
    """``function(*args)``, or None when it fails; failures other than "unsupported" are noted."""
    try:
        return function(*args)
    except _unsupported(pynvml):
        return None
    except (pynvml.NVMLError, _LibraryMismatch(pynvml)) as error:
        errors.append(f"{error} ({function.__name__})")
        return None


def _text(value) -> str | None:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value


def _static_fields(pynvml, handle, index: int, errors: list) -> dict:
    if handle is None:
        return {"index": index, "uuid": None, "name": None, "memory_total": None,
                "power_limit": None, "compute_capability": None, "mig_enabled": None,
                "pci_bus_id": None,
                "error": f"NVML could not open this GPU: {errors[0]}"}
    memory = _call(pynvml, pynvml.nvmlDeviceGetMemoryInfo, errors, handle)
    limit = _call(pynvml, pynvml.nvmlDeviceGetEnforcedPowerLimit, errors, handle)
    capability = _call(pynvml, pynvml.nvmlDeviceGetCudaComputeCapability, errors, handle)
    mig_mode = _call(pynvml, pynvml.nvmlDeviceGetMigMode, errors, handle)
    pci = _call(pynvml, pynvml.nvmlDeviceGetPciInfo, errors, handle)
    return {
        "index": index,
        "uuid": _text(_call(pynvml, pynvml.nvmlDeviceGetUUID, errors, handle)),
        "name": _text(_call(pynvml, pynvml.nvmlDeviceGetName, errors, handle)),
        "memory_total": int(memory.total) if memory is not None else None,
        "power_limit": round(limit / 1000.0, 1) if limit is not None else None,
        "compute_capability": list(capability) if capability is not None else None,
        "mig_enabled": bool(mig_mode[0] == pynvml.NVML_DEVICE_MIG_ENABLE) if mig_mode else None,
        "pci_bus_id": _text(getattr(pci, "busId", None)),
        "error": f"NVML error while reading this GPU: {errors[0]}" if errors else None,
    }


def _read_gpu(pynvml, gpu: _Gpu, labeler: ProcessLabeler) -> dict:
    static, handle, errors = gpu.static, gpu.handle, []
    reading = {
        "index": gpu.index,
        "uuid": static["uuid"],
        "name": static["name"],
        "compute_capability": static["compute_capability"],
        "pci_bus_id": static["pci_bus_id"],
        "cuda_index": None,
        "utilization": {"gpu": None, "memory": None,
                        "reason": MIG_UTILIZATION if static["mig_enabled"] else None},
        "memory": {"used": None, "total": static["memory_total"]},
        "temperature": None,
        "power": {"draw": None, "limit": static["power_limit"]},
        "clocks": {"sm": None, "memory": None},
        "fan": None,
        "performance_state": None,
        "ecc_errors": {"corrected": None, "uncorrected": None},
        "mig": {"enabled": static["mig_enabled"], "instances": []},
        "processes": [],
        "error": static["error"],
    }
    if handle is None:
        return reading

    def call(function, *args):
        return _call(pynvml, function, errors, handle, *args)

    utilization = None if static["mig_enabled"] else call(pynvml.nvmlDeviceGetUtilizationRates)
    if utilization is not None:
        reading["utilization"] = {"gpu": int(utilization.gpu), "memory": int(utilization.memory),
                                  "reason": None}
    elif not static["mig_enabled"]:
        reading["utilization"]["reason"] = "NVML does not report it for this GPU"
    memory = call(pynvml.nvmlDeviceGetMemoryInfo)
    if memory is not None:
        reading["memory"] = {"used": int(memory.used), "total": int(memory.total)}
    reading["temperature"] = call(pynvml.nvmlDeviceGetTemperature, pynvml.NVML_TEMPERATURE_GPU)
    draw = call(pynvml.nvmlDeviceGetPowerUsage)
    reading["power"]["draw"] = round(draw / 1000.0, 1) if draw is not None else None
    reading["clocks"] = {
        "sm": call(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_SM),
        "memory": call(pynvml.nvmlDeviceGetClockInfo, pynvml.NVML_CLOCK_MEM),
    }
    reading["fan"] = call(pynvml.nvmlDeviceGetFanSpeed)
    state = call(pynvml.nvmlDeviceGetPerformanceState)
    reading["performance_state"] = f"P{state}" if state is not None and 0 <= state < 32 else None
    reading["ecc_errors"] = {
        kind: call(pynvml.nvmlDeviceGetTotalEccErrors, error_type, pynvml.NVML_VOLATILE_ECC)
        for kind, error_type in (
            ("corrected", pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
            ("uncorrected", pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
        )
    }
    if static["mig_enabled"]:
        reading["mig"]["instances"] = _read_mig_instances(pynvml, handle, errors)
    compute: set[int] = set()
    reading["processes"] = [{**p, "compute": p["pid"] in compute} for p in
                            labeler.label(_gpu_processes(pynvml, handle, errors, compute))]
    if errors and reading["error"] is None:
        reading["error"] = f"NVML error while reading this GPU: {errors[0]}"
    return reading


def _read_mig_instances(pynvml, handle, errors: list) -> list[dict]:
    instances = []
    for slot in range(_call(pynvml, pynvml.nvmlDeviceGetMaxMigDeviceCount, errors, handle) or 0):
        try:
            mig = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
        except pynvml.NVMLError:  # an empty slot
            continue
        memory = _call(pynvml, pynvml.nvmlDeviceGetMemoryInfo, errors, mig)
        instances.append({
            "index": slot,
            "uuid": _text(_call(pynvml, pynvml.nvmlDeviceGetUUID, errors, mig)),
            "cuda_index": None,
            "memory": {
                "used": int(memory.used) if memory is not None else None,
                "total": int(memory.total) if memory is not None else None,
            },
            "utilization": {"gpu": None, "memory": None, "reason": MIG_UTILIZATION},
        })
    return instances


def _gpu_processes(pynvml, handle, errors: list, compute: set) -> dict[int, int | None]:
    """pid -> GPU memory in bytes (None where the driver does not say), compute and graphics;
    the pids of compute processes are added to ``compute``."""
    found: dict[int, int | None] = {}
    for kind in ("Compute", "Graphics"):
        for process in _running_processes(pynvml, kind, handle, errors) or []:
            if kind == "Compute":
                compute.add(process.pid)
            used = [m for m in (getattr(process, "usedGpuMemory", None), found.get(process.pid))
                    if m is not None]
            found[process.pid] = max(used) if used else None
    return found


def _running_processes(pynvml, kind: str, handle, errors: list):
    query = getattr(pynvml, f"nvmlDeviceGet{kind}RunningProcesses")
    try:
        return query(handle)
    except _LibraryMismatch(pynvml):  # a driver older than these bindings
        older = getattr(pynvml, f"nvmlDeviceGet{kind}RunningProcesses_v2")
        return _call(pynvml, older, errors, handle)
    except _unsupported(pynvml):
        return None
    except pynvml.NVMLError as error:
        errors.append(f"{error} ({query.__name__})")
        return None
