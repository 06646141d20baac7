"""``GET {base_url}gpu-status/metrics``: the readings in the Prometheus text format.

Rendered from the same labelled reading as the JSON endpoint (``GpuStatusEndpoint.view``), so
a scrape adds no NVML call, and the text is built once per reading however many scrapers ask.
A value the hardware does not report is left out (no sample), never written as 0. Processes
carry their kernel, notebook, rank and run where known, and never a command line.
"""

from __future__ import annotations

from typing import Any, Iterable, Optional

from jupyter_server.auth.decorator import authorized
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from tornado import web

from .handlers import GpuStatusEndpoint, ReadOnlyHandler

PREFIX = "lightning_magic_"
GPU_LABELS = ("gpu", "uuid", "name")
PROCESS_LABELS = GPU_LABELS + ("pid", "user", "role", "kernel_id", "notebook", "rank", "run_id")
RUN_LABELS = ("run_id", "kernel_id", "notebook", "model", "accelerator")


def _label(value: Any) -> str:
    return "" if value is None else str(value)


def _gauge(name: str, documentation: str, labels: Iterable[str] = (), unit: str = ""):
    return GaugeMetricFamily(PREFIX + name, documentation, labels=list(labels), unit=unit)


def _add(family, labels: list[str], value: Optional[float], scale: float = 1.0) -> None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        family.add_metric(labels, float(value) * scale)


def families(reading: dict, gpus: list[dict], runs: list[dict]) -> list:
    """The metric families of one reading (``gpus`` and ``runs`` as the JSON endpoint serves
    them)."""
    nvml = reading.get("nvml") or {}
    available = _gauge("nvml_available", "1 when NVML could be started, else 0.",
                       ["driver_version", "cuda_driver_version"])
    available.add_metric([_label(nvml.get("driver_version")),
                          _label(nvml.get("cuda_driver_version"))],
                         1.0 if nvml.get("available") else 0.0)
    info = _gauge("gpu_info", "1 per GPU; labels say what it is and its CUDA device number "
                  "for the server's process (empty when hidden from it).",
                  GPU_LABELS + ("pci_bus_id", "cuda_index", "compute_capability"))
    gauges = {
        "utilization": _gauge("gpu_utilization", "Percent of time a kernel ran (no sample "
                              "where NVML does not report it, as with MIG).", GPU_LABELS,
                              "percent"),
        "memory_utilization": _gauge("gpu_memory_utilization", "Percent of time device memory "
                                     "was read or written.", GPU_LABELS, "percent"),
        "memory_used": _gauge("gpu_memory_used", "Device memory in use.", GPU_LABELS, "bytes"),
        "memory_total": _gauge("gpu_memory_total", "Device memory.", GPU_LABELS, "bytes"),
        "temperature": _gauge("gpu_temperature", "GPU temperature.", GPU_LABELS, "celsius"),
        "power_draw": _gauge("gpu_power_draw", "Power draw.", GPU_LABELS, "watts"),
        "power_limit": _gauge("gpu_power_limit", "Enforced power limit.", GPU_LABELS, "watts"),
        "sm_clock": _gauge("gpu_sm_clock", "SM clock.", GPU_LABELS, "hertz"),
        "memory_clock": _gauge("gpu_memory_clock", "Memory clock.", GPU_LABELS, "hertz"),
    }
    ecc = CounterMetricFamily(PREFIX + "gpu_ecc_errors", "Volatile ECC errors since the driver "
                              "loaded.", labels=list(GPU_LABELS) + ["type"])
    mig = _gauge("mig_memory_used", "Memory in use per MIG instance.",
                 GPU_LABELS + ("instance", "mig_uuid"), "bytes")
    processes = _gauge("gpu_process_memory_used", "GPU memory per process, labelled with its "
                       "kernel, notebook and rank where known.", PROCESS_LABELS, "bytes")
    for gpu in gpus:
        labels = [_label(gpu.get("index")), _label(gpu.get("uuid")), _label(gpu.get("name"))]
        capability = ".".join(map(str, gpu.get("compute_capability") or []))
        info.add_metric(labels + [_label(gpu.get("pci_bus_id")), _label(gpu.get("cuda_index")),
                                  capability], 1.0)
        utilization, memory = gpu.get("utilization") or {}, gpu.get("memory") or {}
        power, clocks = gpu.get("power") or {}, gpu.get("clocks") or {}
        _add(gauges["utilization"], labels, utilization.get("gpu"))
        _add(gauges["memory_utilization"], labels, utilization.get("memory"))
        _add(gauges["memory_used"], labels, memory.get("used"))
        _add(gauges["memory_total"], labels, memory.get("total"))
        _add(gauges["temperature"], labels, gpu.get("temperature"))
        _add(gauges["power_draw"], labels, power.get("draw"))
        _add(gauges["power_limit"], labels, power.get("limit"))
        _add(gauges["sm_clock"], labels, clocks.get("sm"), 1e6)
        _add(gauges["memory_clock"], labels, clocks.get("memory"), 1e6)
        for kind, count in (gpu.get("ecc_errors") or {}).items():
            _add(ecc, labels + [kind], count)
        for instance in (gpu.get("mig") or {}).get("instances") or []:
            _add(mig, labels + [_label(instance.get("index")), _label(instance.get("uuid"))],
                 (instance.get("memory") or {}).get("used"))
        for process in gpu.get("processes") or []:
            _add(processes, labels + [_label(process.get(key)) for key in (
                "pid", "user", "role", "kernel_id", "notebook_path", "rank", "run_id")],
                process.get("memory_used"))
    step = _gauge("run_step", "Global step of an active %%lightning_train run.", RUN_LABELS)
    epoch = _gauge("run_epoch", "Current epoch (from 0) of an active run.", RUN_LABELS)
    for run in runs:
        labels = [_label(run.get(key)) for key in (
            "run_id", "kernel_id", "notebook_path", "model", "accelerator")]
        _add(step, labels, run.get("step"))
        _add(epoch, labels, run.get("epoch"))
    host = _host_families(reading)
    return [available, info, *gauges.values(), ecc, mig, processes, step, epoch, *host]


def _host_families(reading: dict) -> list:
    cpu = _gauge("cpu_utilization", "Busy share of all cores.", unit="percent")
    _add(cpu, [], (reading.get("cpu") or {}).get("percent"))
    used = _gauge("memory_used", "Host memory in use (total - available).", unit="bytes")
    total = _gauge("memory_total", "Host memory.", unit="bytes")
    _add(used, [], (reading.get("memory") or {}).get("used"))
    _add(total, [], (reading.get("memory") or {}).get("total"))
    disk = reading.get("disk") or {}
    disk_used = _gauge("checkpoint_disk_used", "Used space of the file system holding the "
                       "checkpoint root.", ["path"], "bytes")
    disk_free = _gauge("checkpoint_disk_free", "Free space there.", ["path"], "bytes")
    _add(disk_used, [_label(disk.get("path"))], disk.get("used"))
    _add(disk_free, [_label(disk.get("path"))], disk.get("free"))
    taken = _gauge("reading_timestamp", "When the reading was taken, Unix time.", unit="seconds")
    _add(taken, [], reading.get("timestamp"))
    return [cpu, used, total, disk_used, disk_free, taken]


class _Reading:
    def __init__(self, collected: list):
        self.collected = collected

    def collect(self):
        return self.collected


def render(reading: dict, gpus: list[dict], runs: list[dict]) -> bytes:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Reading(families(reading, gpus, runs)))
    return generate_latest(registry)


class MetricsCache:
    """The text of the latest reading, rendered once per (reading, runs) pair."""

    def __init__(self, endpoint: GpuStatusEndpoint):
        self.endpoint = endpoint
        self._for: tuple | None = None
        self._text = b""

    async def text(self, session_manager) -> bytes:
        reading = await self.endpoint.reading()
        view = await self.endpoint.view(reading, session_manager)
        if self._for is None or self._for[0] is not reading or self._for[1] is not view:
            self._for, self._text = (reading, view), render(reading, *view)
        return self._text


METRICS_KEY = "lightning_magic_gpu_metrics"


class GpuMetricsHandler(ReadOnlyHandler):
    """The readings for Prometheus; authenticated like ``/gpu-status`` (send the token)."""

    @web.authenticated
    @authorized
    async def get(self):
        cache: MetricsCache = self.settings[METRICS_KEY]
        text = await cache.text(self.session_manager)
        self.set_header("Cache-Control", "no-store")
        await self.finish(text, set_content_type=CONTENT_TYPE_LATEST)
