"""A stand-in for the NVML library, installed at the pynvml boundary.

Machines without an NVIDIA driver cannot run NVML, so the readings tests replace the functions
of the real ``pynvml`` module that ``lightning_magic`` calls with ones that answer from a
``NvmlSpec``. Everything above pynvml (readings, sampler, server, rendering) runs for real.
This is the only stand-in the test suite uses, and it lives in tests/ only.

In pytest::

    def test_something(fake_nvml):          # two GPUs, see two_gpus()
        fake_nvml.gpus[1].fail_after_calls = 3

    def test_missing(nvml_missing): ...      # nvmlInit raises NVMLError_LibraryNotFound

    def test_shared(fake_nvml, another_users_process):  # a real process of user nobody
        fake_nvml.gpus[0].processes = [(another_users_process, 4 * GIB)]

GPUs have UUIDs and PCI bus ids (``FakeGpu.pci_bus_id``, by default in index order); a
``FakeGpu`` with ``mig=[FakeMig(...), ...]`` has MIG enabled with those instances.

Outside pytest::

    from nvml_standin import install, two_gpus
    fake = install(two_gpus())
    ...
    fake.uninstall()

Functions a spec does not cover are left as they are, so a call to one on a machine without
NVML fails loudly (NVMLError_Uninitialized) instead of returning made-up values.
"""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace

import pytest

GIB = 1024**3


@dataclass
class FakeMig:
    uuid: str
    memory_total: int
    memory_used: int = 0


@dataclass
class FakeGpu:
    name: str
    uuid: str
    memory_total: int
    memory_used: int = 0
    utilization_gpu: int = 0
    utilization_memory: int = 0
    temperature: int = 40
    power_draw_mw: int = 60_000
    power_limit_mw: int = 300_000
    clock_sm: int = 1410
    clock_memory: int = 1593
    fan: int = 30
    performance_state: int = 0
    ecc_corrected: int = 0
    ecc_uncorrected: int = 0
    compute_capability: tuple[int, int] = (8, 0)
    pci_bus_id: str | None = None  # None: "00000000:<n>:00.0", n following the NVML index
    mig: list[FakeMig] | None = None  # None: MIG not supported; a list: MIG enabled
    # (pid, used GPU memory in bytes or None) of compute and graphics processes
    processes: list[tuple[int, int | None]] = field(default_factory=list)
    graphics_processes: list[tuple[int, int | None]] = field(default_factory=list)
    # pynvml function names that raise NVMLError_NotSupported on this GPU
    unsupported: set[str] = field(default_factory=set)
    # unversioned pynvml functions the driver lacks (NVMLLibraryMismatchError, as pynvml raises
    # with a driver older than the bindings); their _v2 variants answer instead
    missing_in_driver: set[str] = field(default_factory=set)
    # after this many calls on this GPU, every call raises ``failure`` (e.g. mid-sample)
    fail_after_calls: int | None = None
    failure: str = "GPU_IS_LOST"
    calls: int = 0


@dataclass
class NvmlSpec:
    gpus: list[FakeGpu] = field(default_factory=list)
    driver_version: str = "550.54.15"
    cuda_driver_version: int = 12040  # as nvmlSystemGetCudaDriverVersion says: 12.4
    # the NVML_ERROR_* name nvmlInit raises, e.g. "LIBRARY_NOT_FOUND", or None
    init_error: str | None = None


def two_gpus() -> NvmlSpec:
    """A data-center GPU that reports everything, and a consumer card that does not report
    power, fan, ECC or MIG (those readings must come back null)."""
    return NvmlSpec(gpus=[
        FakeGpu(
            name="NVIDIA A100-SXM4-80GB", uuid="GPU-0a4c1b56-7d2e-4f51-9b0e-000000000000",
            memory_total=80 * GIB, memory_used=30 * GIB, utilization_gpu=87,
            utilization_memory=41, temperature=64, power_draw_mw=287_500,
            power_limit_mw=400_000, clock_sm=1410, clock_memory=1593, fan=35,
            performance_state=0, ecc_corrected=2, ecc_uncorrected=0, compute_capability=(8, 0),
            mig=None,
        ),
        FakeGpu(
            name="NVIDIA GeForce RTX 3090", uuid="GPU-1b5d2c67-8e3f-4062-ac1f-111111111111",
            memory_total=24 * GIB, memory_used=1 * GIB, utilization_gpu=3,
            utilization_memory=1, temperature=38, clock_sm=210, clock_memory=405,
            performance_state=8, compute_capability=(8, 6),
            unsupported={"nvmlDeviceGetPowerUsage", "nvmlDeviceGetEnforcedPowerLimit",
                         "nvmlDeviceGetFanSpeed", "nvmlDeviceGetTotalEccErrors",
                         "nvmlDeviceGetMigMode"},
        ),
    ])


def missing_library() -> NvmlSpec:
    return NvmlSpec(init_error="LIBRARY_NOT_FOUND")


SCENARIOS = {"two-gpus": two_gpus, "no-nvml": missing_library}


class _Handle:
    def __init__(self, gpu: int, mig: int | None = None):
        self.gpu, self.mig = gpu, mig


class FakeNvml:
    """The installed stand-in: ``gpus`` may be changed while it is installed."""

    def __init__(self, spec: NvmlSpec):
        import pynvml

        self.pynvml = pynvml
        self.spec = spec
        self.gpus = spec.gpus
        self.calls: Counter[str] = Counter()
        self.initialized = 0
        self._lock = threading.Lock()
        self._saved: dict[str, object] = {}

    # -- installation ------------------------------------------------------------------------

    def install(self) -> FakeNvml:
        for name, function in self._functions().items():
            self._saved[name] = getattr(self.pynvml, name)
            function.__name__ = name
            setattr(self.pynvml, name, function)
        return self

    def uninstall(self) -> None:
        for name, original in self._saved.items():
            setattr(self.pynvml, name, original)
        self._saved.clear()

    def device_calls(self) -> int:
        """How many per-device NVML calls were made (the cost the sampler must bound)."""
        with self._lock:
            return sum(n for name, n in self.calls.items() if name.startswith("nvmlDevice"))

    # -- the functions -----------------------------------------------------------------------

    def _error(self, name: str):
        return self.pynvml.NVMLError(getattr(self.pynvml, f"NVML_ERROR_{name}"))

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    def _gpu(self, handle: _Handle, name: str) -> FakeGpu | FakeMig:
        self._count(name)
        if self.initialized <= 0:
            raise self._error("UNINITIALIZED")
        gpu = self.gpus[handle.gpu]
        with self._lock:
            gpu.calls += 1
            failing = gpu.fail_after_calls is not None and gpu.calls > gpu.fail_after_calls
        if failing:
            raise self._error(gpu.failure)
        if name in gpu.unsupported:
            raise self._error("NOT_SUPPORTED")
        if name in gpu.missing_in_driver:
            raise self.pynvml.NVMLLibraryMismatchError(f"{name} is not in this driver")
        if handle.mig is not None:
            return gpu.mig[handle.mig]
        return gpu

    def _functions(self) -> dict:
        nvml = self.pynvml

        def device(name, read):
            def function(handle, *args):
                return read(self._gpu(handle, name), *args)
            return function

        def init():
            self._count("nvmlInit")
            if self.spec.init_error:
                raise self._error(self.spec.init_error)
            self.initialized += 1

        def shutdown():
            self._count("nvmlShutdown")
            if self.initialized <= 0:
                raise self._error("UNINITIALIZED")
            self.initialized -= 1

        def driver_version():
            self._count("nvmlSystemGetDriverVersion")
            return self.spec.driver_version

        def cuda_driver_version():
            self._count("nvmlSystemGetCudaDriverVersion")
            return self.spec.cuda_driver_version

        def pci_info(handle):
            gpu = self._gpu(handle, "nvmlDeviceGetPciInfo")
            return SimpleNamespace(busId=gpu.pci_bus_id or f"00000000:{handle.gpu + 1:02X}:00.0")

        def count():
            self._count("nvmlDeviceGetCount")
            if self.initialized <= 0:
                raise self._error("UNINITIALIZED")
            return len(self.gpus)

        def handle_by_index(index):
            self._count("nvmlDeviceGetHandleByIndex")
            if not 0 <= index < len(self.gpus):
                raise self._error("INVALID_ARGUMENT")
            return _Handle(index)

        def mig_handle(handle, slot):
            self._gpu(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
            instances = self.gpus[handle.gpu].mig or []
            if slot >= len(instances):
                raise self._error("NOT_FOUND")
            return _Handle(handle.gpu, slot)

        def memory(gpu):
            return SimpleNamespace(total=gpu.memory_total, used=gpu.memory_used,
                                   free=gpu.memory_total - gpu.memory_used)

        def mig_mode(gpu):
            if gpu.mig is None:
                raise self._error("NOT_SUPPORTED")
            return [nvml.NVML_DEVICE_MIG_ENABLE, nvml.NVML_DEVICE_MIG_ENABLE]

        def processes(kind):
            def read(gpu):
                return [SimpleNamespace(pid=pid, usedGpuMemory=used)
                        for pid, used in getattr(gpu, kind)]
            return read

        def clock(gpu, which):
            return {nvml.NVML_CLOCK_SM: gpu.clock_sm, nvml.NVML_CLOCK_MEM: gpu.clock_memory}[which]

        def ecc(gpu, error_type, counter_type):
            if error_type == nvml.NVML_MEMORY_ERROR_TYPE_CORRECTED:
                return gpu.ecc_corrected
            return gpu.ecc_uncorrected

        readers = {
            "nvmlDeviceGetName": lambda gpu: gpu.name,
            "nvmlDeviceGetUUID": lambda gpu: gpu.uuid,
            "nvmlDeviceGetMemoryInfo": memory,
            "nvmlDeviceGetEnforcedPowerLimit": lambda gpu: gpu.power_limit_mw,
            "nvmlDeviceGetCudaComputeCapability": lambda gpu: gpu.compute_capability,
            "nvmlDeviceGetMigMode": mig_mode,
            "nvmlDeviceGetMaxMigDeviceCount": lambda gpu: 7,
            "nvmlDeviceGetUtilizationRates": lambda gpu: SimpleNamespace(
                gpu=gpu.utilization_gpu, memory=gpu.utilization_memory),
            "nvmlDeviceGetTemperature": lambda gpu, sensor: gpu.temperature,
            "nvmlDeviceGetPowerUsage": lambda gpu: gpu.power_draw_mw,
            "nvmlDeviceGetClockInfo": clock,
            "nvmlDeviceGetFanSpeed": lambda gpu: gpu.fan,
            "nvmlDeviceGetPerformanceState": lambda gpu: gpu.performance_state,
            "nvmlDeviceGetTotalEccErrors": ecc,
            "nvmlDeviceGetComputeRunningProcesses": processes("processes"),
            "nvmlDeviceGetGraphicsRunningProcesses": processes("graphics_processes"),
            "nvmlDeviceGetComputeRunningProcesses_v2": processes("processes"),
            "nvmlDeviceGetGraphicsRunningProcesses_v2": processes("graphics_processes"),
        }
        functions = {name: device(name, read) for name, read in readers.items()}
        functions.update({
            "nvmlInit": init,
            "nvmlShutdown": shutdown,
            "nvmlSystemGetDriverVersion": driver_version,
            "nvmlSystemGetCudaDriverVersion": cuda_driver_version,
            "nvmlDeviceGetPciInfo": pci_info,
            "nvmlDeviceGetCount": count,
            "nvmlDeviceGetHandleByIndex": handle_by_index,
            "nvmlDeviceGetMigDeviceHandleByIndex": mig_handle,
        })
        return functions


def install(spec: NvmlSpec) -> FakeNvml:
    """Replace pynvml's functions with ones answering from ``spec``; ``uninstall()`` undoes it."""
    return FakeNvml(spec).install()


def _installed(spec: NvmlSpec):
    from lightning_magic import readings

    readings.shutdown()
    fake = install(spec)
    try:
        yield fake
    finally:
        readings.shutdown()
        fake.uninstall()


@pytest.fixture
def fake_nvml():
    """Two GPUs (see ``two_gpus``); tests may change ``fake_nvml.gpus`` before reading."""
    yield from _installed(two_gpus())


@pytest.fixture
def nvml_missing():
    """No NVML library: nvmlInit raises NVMLError_LibraryNotFound."""
    yield from _installed(missing_library())


@pytest.fixture
def make_fake_nvml():
    """A factory: ``make_fake_nvml(spec)`` installs a stand-in for ``spec`` for this test."""
    generators = []

    def make(spec: NvmlSpec) -> FakeNvml:
        generator = _installed(spec)
        generators.append(generator)
        return next(generator)

    yield make
    for generator in reversed(generators):
        generator.close()


@pytest.fixture
def another_users_process():
    """The pid of a real process of user ``nobody`` (for GPUs that other users are on); the
    test is skipped where this process cannot start one (it needs root)."""
    import os
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("starting a process as another user needs root")
    process = subprocess.Popen(["/bin/sh", "-c", "echo ready; cat"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, user=65534, group=65534, cwd="/")
    process.stdout.readline()
    yield process.pid
    process.stdin.close()
    process.wait(timeout=30)
