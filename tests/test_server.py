"""The ``/gpu-status`` server extension in a real Jupyter server (pytest-jupyter), with
authentication required, answering from the NVML stand-in or from this machine's psutil."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import jsonschema
import psutil
import pytest
from support.nvml_standin import GIB
from traitlets.config import Config

from support.runs import state
from support.servers import SCHEMA, get_json, server_config

from lightning_magic import readings
from lightning_magic.readings.runs import PublishedRun
from lightning_magic.server.config import GpuStatus

pytest_plugins = ["pytest_jupyter.jupyter_server"]

ROUTE = "gpu-status"


@pytest.fixture
def jp_server_config():
    return server_config()


@pytest.fixture(autouse=True)
def fresh_readings():
    readings.shutdown()
    yield
    readings.shutdown()


async def raw(http_server_client, jp_base_url, path_and_query, token=None, headers=None,
              **kwargs):
    headers = {**({"Authorization": f"token {token}"} if token else {}), **(headers or {})}
    return await http_server_client.fetch(
        jp_base_url + path_and_query, headers=headers, raise_error=False, **kwargs
    )


def token_of(serverapp) -> str:
    return serverapp.identity_provider.token


# -- the payload -------------------------------------------------------------------------------


async def test_readings_of_two_gpus_match_the_schema(fake_nvml, jp_fetch):
    response = await jp_fetch(ROUTE)
    body = json.loads(response.body)

    jsonschema.Draft202012Validator(SCHEMA).validate(body)
    assert response.headers["Content-Type"].startswith("application/json")
    assert response.headers["Cache-Control"] == "no-store"
    assert body["nvml"]["available"] is True
    assert [gpu["name"] for gpu in body["gpus"]] == ["NVIDIA A100-SXM4-80GB",
                                                      "NVIDIA GeForce RTX 3090"]
    assert body["gpus"][1]["power"] == {"draw": None, "limit": None}
    assert body["environment"]["kind"] in ("studio", "colab", "kaggle", "slurm", "local")
    assert {gpu["cuda_index"] for gpu in body["gpus"]} <= {0, 1, None}
    assert body["runs"] == []
    assert body["cpu"]["count"] == psutil.cpu_count()


async def test_the_gpus_the_servers_process_may_use_are_numbered(fake_nvml, jp_fetch,
                                                                monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1b5d2c67")  # the RTX 3090, by a uuid prefix

    body = await get_json(jp_fetch)

    jsonschema.Draft202012Validator(SCHEMA).validate(body)
    assert [gpu["cuda_index"] for gpu in body["gpus"]] == [None, 0]
    assert body["environment"]["details"]["cuda_visible_devices"] == "GPU-1b5d2c67"


async def test_without_nvml_the_reason_is_given_and_cpu_memory_still_served(nvml_missing,
                                                                           jp_fetch):
    body = await get_json(jp_fetch)

    jsonschema.Draft202012Validator(SCHEMA).validate(body)
    assert body["nvml"]["available"] is False
    assert "No NVIDIA driver found" in body["nvml"]["reason"]
    assert body["gpus"] == []
    assert body["memory"]["total"] == psutil.virtual_memory().total


async def test_this_machine_as_it_is(jp_fetch, jp_root_dir):
    body = await get_json(jp_fetch)

    jsonschema.Draft202012Validator(SCHEMA).validate(body)
    assert body["disk"]["path"] == str(jp_root_dir / "lightning_runs")


@pytest.mark.parametrize("jp_server_config", [server_config(sample_interval=3600)])
async def test_requests_share_one_reading_whatever_their_number(fake_nvml, jp_fetch):
    first = await get_json(jp_fetch)
    calls = fake_nvml.device_calls()

    bodies = await asyncio.gather(*(get_json(jp_fetch) for _ in range(25)))

    assert {body["timestamp"] for body in bodies} == {first["timestamp"]}
    assert fake_nvml.device_calls() == calls


async def test_a_run_file_written_before_a_request_is_in_its_answer(nvml_missing, jp_fetch):
    """The panel's run card follows the cell: no listing of the runs older than the request is
    served, to one request or to many at once."""
    run = PublishedRun(state(max_epochs=300), min_interval=0.0)  # in the server's runtime dir
    run.publish()
    try:
        for epoch in range(1, 6):
            run.update(epoch=epoch, step=10 * epoch, metrics={"train_loss": 1 / epoch})
            [listed] = (await get_json(jp_fetch))["runs"]
            assert (listed["epoch"], listed["step"]) == (epoch, 10 * epoch)
            assert listed["max_epochs"] == 300
            assert listed["metrics"] == {"train_loss": 1 / epoch}
        run.update(epoch=6, step=60)
        bodies = await asyncio.gather(*(get_json(jp_fetch) for _ in range(10)))
        assert [body["runs"][0]["step"] for body in bodies] == [60] * 10
    finally:
        run.remove()
    assert (await get_json(jp_fetch))["runs"] == []


@pytest.mark.parametrize("jp_server_config", [server_config(checkpoint_root="/srv/ckpt")])
async def test_the_checkpoint_root_is_configurable(nvml_missing, jp_fetch):
    body = await get_json(jp_fetch)

    assert body["disk"]["path"] == "/srv/ckpt"
    assert body["disk"]["total"] == psutil.disk_usage("/").total


@pytest.mark.parametrize("jp_server_config", [server_config(sample_interval=0.01)])
async def test_a_too_short_interval_is_raised_to_the_minimum(nvml_missing, jp_fetch):
    await get_json(jp_fetch)

    assert readings.get_sampler().interval == readings.MIN_INTERVAL


def test_the_settings_warn_about_values_they_cannot_use(caplog):
    config = Config({"GpuStatus": {"sample_interval": 0.01, "idle_timeout": -5.0}})

    settings = GpuStatus(config=config)

    assert (settings.sample_interval, settings.idle_timeout) == (0.25, 60.0)
    assert "c.GpuStatus.sample_interval = 0.01 is below the minimum of 0.25 seconds" in caplog.text
    assert "c.GpuStatus.idle_timeout = -5.0 must be a positive number" in caplog.text


def test_every_setting_has_help_with_an_example():
    for name, trait in GpuStatus.class_traits(config=True).items():
        assert "Example: c.GpuStatus." + name in " ".join(trait.help.split()), name


# -- GPU processes: kernels of this server, other users ----------------------------------------


FORK_A_RANK = """
import os
_rank_read, _rank_write = os.pipe()
_rank = os.fork()
if _rank == 0:  # like a ddp_notebook rank: forked from the kernel, alive until the kernel goes
    os.close(_rank_write)
    os.read(_rank_read, 1)
    os._exit(0)
os.close(_rank_read)
print(_rank)
"""


async def test_a_kernel_and_its_forked_rank_are_labelled_with_the_notebook(fake_nvml, jp_fetch,
                                                                          jp_serverapp):
    session = json.loads((await jp_fetch("api", "sessions", method="POST", body=json.dumps({
        "path": "experiments/train.ipynb", "type": "notebook", "name": "train.ipynb",
        "kernel": {"name": "python3"},
    }))).body)
    kernel_id = session["kernel"]["id"]
    kernel = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    client = kernel.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=120)
        printed = []
        await client.execute_interactive(
            FORK_A_RANK, timeout=120,
            output_hook=lambda msg: printed.append(msg["content"].get("text", "")))
        rank_pid = int("".join(printed))
        fake_nvml.gpus[0].processes = [(kernel.provisioner.pid, 2 * GIB), (rank_pid, 9 * GIB)]
        await asyncio.get_running_loop().run_in_executor(None, readings.get_sampler().wait_next)

        body = await get_json(jp_fetch)

        processes = {p["pid"]: p for p in body["gpus"][0]["processes"]}
        kernel_process, rank = processes[kernel.provisioner.pid], processes[rank_pid]
        assert kernel_process["kernel_id"] == rank["kernel_id"] == kernel_id
        assert kernel_process["notebook_path"] == rank["notebook_path"] == "experiments/train.ipynb"
        assert (kernel_process["role"], rank["role"]) == ("kernel", "kernel-child")
        assert rank["memory_used"] == 9 * GIB
    finally:
        client.stop_channels()
        await jp_fetch("api", "sessions", session["id"], method="DELETE")


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a process as another user needs root")
@pytest.mark.parametrize("jp_server_config", [server_config(show_other_users_processes=False)])
async def test_other_users_processes_can_be_hidden(fake_nvml, jp_fetch):
    nobody = subprocess.Popen(["/bin/sh", "-c", "echo ready; cat"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, user=65534, group=65534, cwd="/")
    try:
        nobody.stdout.readline()
        fake_nvml.gpus[0].processes = [(os.getpid(), 1 * GIB), (nobody.pid, 3 * GIB)]

        body = await get_json(jp_fetch)

        assert [p["pid"] for p in body["gpus"][0]["processes"]] == [os.getpid()]
    finally:
        nobody.stdin.close()
        nobody.wait(timeout=30)


# -- authentication, odd requests, activity ----------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"])
@pytest.mark.parametrize("token", [None, "wrong-token"])
async def test_without_valid_credentials_nothing_is_read(fake_nvml, http_server_client,
                                                         jp_base_url, method, token):
    body = "{}" if method in {"POST", "PUT", "PATCH"} else None

    response = await raw(http_server_client, jp_base_url, ROUTE, token=token, method=method,
                         body=body, follow_redirects=False)

    assert response.code == 403
    assert b"gpus" not in (response.body or b"")
    assert fake_nvml.device_calls() == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "HEAD"])
async def test_other_methods_are_refused_cleanly(nvml_missing, http_server_client, jp_base_url,
                                                 jp_serverapp, method):
    body = "{}" if method in {"POST", "PUT", "PATCH"} else None

    response = await raw(http_server_client, jp_base_url, ROUTE, token=token_of(jp_serverapp),
                         method=method, body=body)

    assert response.code == 405


async def test_options_is_refused_but_a_cors_preflight_gets_jupyters_answer(
        nvml_missing, http_server_client, jp_base_url, jp_serverapp):
    for route in (ROUTE, ROUTE + "/metrics"):
        plain = await raw(http_server_client, jp_base_url, route, token=token_of(jp_serverapp),
                          method="OPTIONS")
        anonymous = await raw(http_server_client, jp_base_url, route, method="OPTIONS")
        preflight = await raw(http_server_client, jp_base_url, route, method="OPTIONS", headers={
            "Origin": "https://dashboards.example", "Access-Control-Request-Method": "GET"})

        assert (plain.code, anonymous.code) == (405, 405)
        assert plain.headers["Allow"] == "GET"
        assert b"gpus" not in plain.body
        assert preflight.code in (200, 204)
        assert b"gpus" not in (preflight.body or b"")


@pytest.mark.parametrize("query", [
    "?", "?%zz", "?a=%ff%fe", "?&&&==&", "?interval=-1&gpu=99", "?x=" + "A" * 4000,
    "?no_track_activity", "?a=1&a=2&a=%00", "?%E2%82", "?token=",
])
async def test_query_string_garbage_is_ignored(nvml_missing, http_server_client, jp_base_url,
                                               jp_serverapp, query):
    response = await raw(http_server_client, jp_base_url, ROUTE + query,
                         token=token_of(jp_serverapp))

    assert response.code < 500
    if response.code == 200:
        jsonschema.Draft202012Validator(SCHEMA).validate(json.loads(response.body))
    else:
        assert response.code == 400


async def test_polling_does_not_count_as_user_activity(nvml_missing, jp_fetch, jp_serverapp):
    settings = jp_serverapp.web_app.settings
    before = settings.get("api_last_activity")
    for _ in range(5):
        await get_json(jp_fetch)

    assert settings.get("api_last_activity") == before

    await jp_fetch("api", "contents")  # an ordinary API request does count
    assert settings.get("api_last_activity") != before


async def test_the_route_is_under_base_url(nvml_missing, http_server_client, jp_serverapp,
                                           jp_base_url):
    assert jp_base_url != "/"
    outside = await raw(http_server_client, "/", ROUTE, token=token_of(jp_serverapp))
    inside = await raw(http_server_client, jp_base_url, ROUTE, token=token_of(jp_serverapp))

    assert (outside.code, inside.code) == (404, 200)


# -- installation ------------------------------------------------------------------------------


def test_the_extension_is_enabled_and_valid_once_installed():
    result = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "jupyter"), "server", "extension", "list"],
        capture_output=True, text=True, timeout=120,
    )
    listing = result.stdout + result.stderr
    plain = listing.replace("\x1b[32m", "").replace("\x1b[0m", "")
    assert "lightning_magic enabled" in plain, listing
    assert "lightning_magic 0" in plain and "OK" in plain.split("lightning_magic 0", 1)[1][:40], (
        listing)

