"""``%gpu_status`` in a real IPython shell: an HTML table for notebooks, text for terminals,
the NVML-unavailable state, n/a for fields a device does not report; and no CUDA in the kernel."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from IPython.core.error import UsageError
from IPython.testing.tools import AssertPrints
from support.nvml_standin import GIB

from lightning_magic import readings
from lightning_magic.view.gpu_status import GpuStatusReport


@pytest.fixture(autouse=True)
def fresh_readings():
    readings.shutdown()
    yield
    readings.shutdown()


@pytest.fixture
def ip(ip):
    """The real shell, formatting for a notebook front end as ipykernel does (HTML enabled)."""
    formatter = ip.display_formatter
    before = list(formatter.active_types)
    formatter.active_types = ["text/plain", "text/html"]
    yield ip
    formatter.active_types = before


def formatted(ip, report) -> dict:
    data, _ = ip.display_formatter.format(report)
    return data


def test_two_gpus_as_an_html_table_with_bars(ip, fake_nvml):
    report = ip.run_line_magic("gpu_status", "")

    html = formatted(ip, report)["text/html"]
    assert isinstance(report, GpuStatusReport)
    assert "<table" in html
    assert "NVIDIA A100-SXM4-80GB" in html and "NVIDIA GeForce RTX 3090" in html
    assert 'aria-label="GPU 0 utilization" aria-valuemin="0" aria-valuemax="100" ' \
           'aria-valuenow="87"' in html
    assert 'aria-label="GPU 0 memory"' in html and 'aria-valuenow="38"' in html  # 30 of 80 GiB
    assert "30.0 / 80.0 GiB" in html
    assert "287.5 / 400 W" in html
    assert "NVML unavailable" not in html


def test_fields_a_device_does_not_report_are_na_not_zero(ip, fake_nvml):
    report = ip.run_line_magic("gpu_status", "")

    text = formatted(ip, report)["text/plain"]
    rtx = text.split("GPU 1", 1)[1]
    assert "power n/a" in rtx and "fan n/a" in rtx and "ECC n/a" in rtx
    assert "power 0" not in rtx


def test_without_nvml_the_reason_is_shown_and_cpu_memory_too(ip, nvml_missing):
    report = ip.run_line_magic("gpu_status", "")

    data = formatted(ip, report)
    assert "NVML unavailable:</strong> No NVIDIA driver found" in data["text/html"]
    assert 'aria-label="CPU"' in data["text/html"] and 'aria-label="Memory"' in data["text/html"]
    assert data["text/plain"].startswith("NVML unavailable: No NVIDIA driver found")
    assert "CPU " in data["text/plain"] and "Memory " in data["text/plain"]


def test_a_terminal_shell_prints_the_text(ip, nvml_missing):
    with AssertPrints("NVML unavailable: No NVIDIA driver found"):
        result = ip.run_cell("%gpu_status")
    assert result.success
    assert isinstance(result.result, GpuStatusReport)


def test_processes_and_errors_are_shown_per_gpu(ip, fake_nvml):
    fake_nvml.gpus[0].processes = [(os.getpid(), 5 * GIB)]
    readings.snapshot()
    fake_nvml.gpus[1].fail_after_calls = fake_nvml.gpus[1].calls

    data = formatted(ip, ip.run_line_magic("gpu_status", ""))

    assert f"pid {os.getpid()} · 5.0 GiB" in data["text/html"]
    assert 'role="alert">NVML error while reading this GPU: GPU is lost' in data["text/html"]
    assert "! NVML error while reading this GPU: GPU is lost" in data["text/plain"]


def test_names_from_the_driver_are_escaped(ip, fake_nvml):
    fake_nvml.gpus[0].name = "<img src=x onerror=alert(1)>"

    html = formatted(ip, ip.run_line_magic("gpu_status", ""))["text/html"]

    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt;" in html


def test_arguments_are_refused(ip, nvml_missing):
    with pytest.raises(UsageError, match="takes no arguments"):
        ip.run_line_magic("gpu_status", "--all")


def test_rank_and_kernel_labels_render():
    reading = readings.snapshot()
    reading["nvml"] = {"available": True, "driver_version": "550.54.15", "reason": None}
    gpu = {
        "index": 0, "uuid": "GPU-x", "name": "NVIDIA L4", "compute_capability": [8, 9],
        "utilization": {"gpu": None, "memory": None}, "memory": {"used": None, "total": None},
        "temperature": None, "power": {"draw": None, "limit": None},
        "clocks": {"sm": None, "memory": None}, "fan": None, "performance_state": None,
        "ecc_errors": {"corrected": None, "uncorrected": None},
        "mig": {"enabled": True, "instances": [
            {"index": 3, "uuid": "MIG-abc", "memory": {"used": 1 * GIB, "total": 10 * GIB}}]},
        "processes": [
            {"pid": 11, "memory_used": 2 * GIB, "user": "ana", "name": "python",
             "command": "python -m ipykernel_launcher -f kernel-0123456789ab.json",
             "kernel_id": "0123456789ab", "notebook_path": "train.ipynb", "rank": 1,
             "run_id": "r", "role": "rank"},
            {"pid": 12, "memory_used": None, "user": "bo", "name": None, "command": None,
             "kernel_id": None, "notebook_path": None, "rank": None, "run_id": None,
             "role": None},
        ],
        "error": None,
    }
    reading["gpus"] = [gpu]
    report = GpuStatusReport(reading)

    html, text = report._repr_html_(), repr(report)

    assert "train.ipynb, rank 1" in html and "train.ipynb, rank 1" in text
    assert "user bo" in text and "n/a GiB" in text
    assert "MIG 3 MIG-abc: 1.0 / 10.0 GiB" in text
    assert 'aria-label="GPU 0 utilization: not available">n/a' in html
    assert 'title="python -m ipykernel_launcher' in html


def test_the_magic_never_imports_torch_in_the_kernel():
    code = textwrap.dedent("""
        import sys
        from IPython.testing.globalipapp import start_ipython
        ip = start_ipython()
        ip.run_line_magic("load_ext", "lightning_magic")
        report = ip.run_line_magic("gpu_status", "")
        ip.display_formatter.format(report)
        print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.gpu
def test_real_gpus_in_the_table_and_the_kernel_holds_no_gpu_memory(ip):
    if not readings.list_gpus():
        pytest.skip(f"NVML sees no NVIDIA GPU here: {readings.nvml_status()['reason']}")

    report = ip.run_line_magic("gpu_status", "")

    html = formatted(ip, report)["text/html"]
    for gpu in readings.list_gpus():
        assert gpu["name"] in html
    pids = [p["pid"] for gpu in report.reading["gpus"] for p in gpu["processes"]]
    assert os.getpid() not in pids


def test_the_gpus_this_kernel_can_use_are_marked(ip, fake_nvml, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    reading = readings.snapshot()
    if "cuda_index" not in reading["gpus"][0]:
        pytest.skip("these readings do not carry cuda_index yet")
    data = formatted(ip, GpuStatusReport(reading))

    assert "In this kernel" in data["text/html"] and "<b>cuda:0</b>" in data["text/html"]
    assert "hidden</td>" in data["text/html"] and 'class="lm-hidden"' in data["text/html"]
    assert "Running on this machine · CUDA_VISIBLE_DEVICES='1'" in data["text/plain"]
    text = data["text/plain"]
    # CUDA numbers the newer RTX 3090 (compute 8.6) first, so its device 1 is the A100
    assert "GPU 0  NVIDIA A100-SXM4-80GB  (cuda:0 in this kernel)" in text
    assert "GPU 1  NVIDIA GeForce RTX 3090  (hidden from this kernel by CUDA_VISIBLE_DEVICES)" in text


def test_readings_without_cuda_index_or_environment_still_render(ip, fake_nvml):
    reading = readings.snapshot()
    reading.pop("environment", None)
    for gpu in reading["gpus"]:
        gpu.pop("cuda_index", None)
    data = formatted(ip, GpuStatusReport(reading))

    assert "In this kernel" not in data["text/html"] and "cuda:" not in data["text/plain"]
    assert "NVIDIA A100-SXM4-80GB" in data["text/html"] and "Running on" not in data["text/plain"]


def test_an_environment_other_than_a_plain_machine_is_named(ip, nvml_missing):
    reading = dict(readings.snapshot(), environment={
        "kind": "slurm", "label": "SLURM job 42 on node7", "details": {"job_id": "42"}})
    data = formatted(ip, GpuStatusReport(reading))

    assert "Running on SLURM job 42 on node7" in data["text/plain"]
    assert 'class="lm-environment">Running on SLURM job 42 on node7<' in data["text/html"]
