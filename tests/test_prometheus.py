"""``GET {base_url}gpu-status/metrics`` in a real Jupyter server (pytest-jupyter, authentication
required): the Prometheus text parsed back with ``prometheus_client.parser``, from the same
sampler as the JSON endpoint (a scrape adds no NVML call), and 403 without a token."""

from __future__ import annotations

import asyncio
import json
import os

import psutil
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from support.nvml_standin import GIB, another_users_process  # noqa: F401 - a fixture
from support.servers import server_config

from lightning_magic import readings
from lightning_magic.readings.runs import PublishedRun

pytest_plugins = ["pytest_jupyter.jupyter_server"]

ROUTE = "gpu-status/metrics"
A100 = "GPU-0a4c1b56-7d2e-4f51-9b0e-000000000000"


@pytest.fixture
def jp_server_config():
    return server_config()


@pytest.fixture(autouse=True)
def fresh_readings(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    readings.shutdown()
    yield
    readings.shutdown()


async def scrape(jp_fetch) -> dict[str, list]:
    """name -> [(labels, value)] for every sample of the scrape."""
    response = await jp_fetch(ROUTE)
    assert response.code == 200
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    samples: dict[str, list] = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def value(samples: dict, metric: str, /, **labels):
    found = [v for got, v in samples.get(metric, []) if labels.items() <= got.items()]
    assert len(found) == 1, (metric, labels, samples.get(metric))
    return found[0]


async def test_the_gpus_parse_back_with_their_labels(fake_nvml, jp_fetch):
    samples = await scrape(jp_fetch)

    a100 = {"gpu": "0", "uuid": A100, "name": "NVIDIA A100-SXM4-80GB"}
    assert value(samples, "lightning_magic_gpu_utilization_percent", **a100) == 87
    assert value(samples, "lightning_magic_gpu_memory_used_bytes", **a100) == 30 * GIB
    assert value(samples, "lightning_magic_gpu_memory_total_bytes", **a100) == 80 * GIB
    assert value(samples, "lightning_magic_gpu_temperature_celsius", **a100) == 64
    assert value(samples, "lightning_magic_gpu_power_draw_watts", **a100) == 287.5
    assert value(samples, "lightning_magic_gpu_sm_clock_hertz", **a100) == 1410e6
    assert value(samples, "lightning_magic_gpu_ecc_errors_total", type="corrected", **a100) == 2
    assert value(samples, "lightning_magic_gpu_info", **a100, cuda_index="0") == 1
    assert value(samples, "lightning_magic_nvml_available", driver_version="550.54.15") == 1
    assert value(samples, "lightning_magic_memory_total_bytes") == psutil.virtual_memory().total


async def test_what_a_gpu_does_not_report_has_no_sample_rather_than_zero(fake_nvml, jp_fetch):
    samples = await scrape(jp_fetch)

    gpus_with_power = {labels["gpu"] for labels, _ in
                       samples["lightning_magic_gpu_power_draw_watts"]}
    assert gpus_with_power == {"0"}  # the RTX 3090 does not report power
    assert {labels["gpu"] for labels, _ in samples["lightning_magic_gpu_ecc_errors_total"]} == {
        "0"}


async def test_without_nvml_the_host_is_still_scraped(nvml_missing, jp_fetch):
    samples = await scrape(jp_fetch)

    assert value(samples, "lightning_magic_nvml_available") == 0
    assert "lightning_magic_gpu_utilization_percent" not in samples
    assert value(samples, "lightning_magic_cpu_utilization_percent") >= 0


async def test_processes_and_runs_are_labelled_and_no_command_line_is_shown(
        fake_nvml, jp_fetch, another_users_process, jp_runtime_dir):
    run = PublishedRun({"run_id": "r1", "kernel_id": "kernel-1", "pid": os.getpid(),
                        "rank_pids": [], "devices": [0], "accelerator": "gpu",
                        "started": 1_700_000_000.0, "model": "Regressor", "epoch": 2,
                        "step": 300, "metrics": {}, "status": "running"}, str(jp_runtime_dir))
    run.publish()
    try:
        fake_nvml.gpus[0].processes = [(os.getpid(), 3 * GIB), (another_users_process, 5 * GIB)]
        await asyncio.get_running_loop().run_in_executor(None, readings.get_sampler().wait_next)

        samples = await scrape(jp_fetch)
    finally:
        run.remove()

    name = "lightning_magic_gpu_process_memory_used_bytes"
    mine = value(samples, name, pid=str(os.getpid()))
    other = value(samples, name, pid=str(another_users_process), user="nobody")
    assert (mine, other) == (3 * GIB, 5 * GIB)
    for labels, _ in samples[name]:
        assert "command" not in labels and labels["name"] == "NVIDIA A100-SXM4-80GB"
    assert value(samples, "lightning_magic_run_step", run_id="r1", model="Regressor") == 300
    assert value(samples, "lightning_magic_run_epoch", run_id="r1", kernel_id="kernel-1") == 2


@pytest.mark.parametrize("jp_server_config", [server_config(show_other_users_processes=False)])
async def test_other_users_processes_follow_the_setting(fake_nvml, jp_fetch,
                                                        another_users_process):
    fake_nvml.gpus[0].processes = [(os.getpid(), 1 * GIB), (another_users_process, 3 * GIB)]
    await asyncio.get_running_loop().run_in_executor(None, readings.get_sampler().wait_next)

    samples = await scrape(jp_fetch)

    pids = {labels["pid"] for labels, _ in
            samples["lightning_magic_gpu_process_memory_used_bytes"]}
    assert pids == {str(os.getpid())}


@pytest.mark.parametrize("jp_server_config", [server_config(sample_interval=3600)])
async def test_a_scrape_adds_no_nvml_call_and_matches_the_json(fake_nvml, jp_fetch):
    body = json.loads((await jp_fetch("gpu-status")).body)
    calls = fake_nvml.device_calls()

    scrapes = await asyncio.gather(*(scrape(jp_fetch) for _ in range(10)))

    assert fake_nvml.device_calls() == calls
    for samples in scrapes:
        assert value(samples, "lightning_magic_reading_timestamp_seconds") == body["timestamp"]


@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_without_a_valid_token_nothing_is_read(fake_nvml, http_server_client, jp_base_url,
                                                     token):
    headers = {"Authorization": f"token {token}"} if token else {}

    response = await http_server_client.fetch(jp_base_url + ROUTE, headers=headers,
                                              raise_error=False, follow_redirects=False)

    assert response.code == 403
    assert b"lightning_magic_" not in (response.body or b"")
    assert fake_nvml.device_calls() == 0


async def test_a_scraper_sends_the_token(fake_nvml, http_server_client, jp_base_url,
                                         jp_serverapp):
    token = jp_serverapp.identity_provider.token
    response = await http_server_client.fetch(jp_base_url + ROUTE,
                                              headers={"Authorization": f"token {token}"})
    assert response.code == 200 and b"lightning_magic_gpu_utilization_percent" in response.body
