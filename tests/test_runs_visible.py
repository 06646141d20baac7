"""A %%lightning_train run in a real kernel of a real Jupyter server shows up in /gpu-status
``runs`` while it trains (its ranks labelled on the GPUs), and is gone once it ends."""

from __future__ import annotations

import asyncio
import json
import os

import jsonschema
import pytest
from support.kernels import ENDLESS_SETUP
from support.nvml_standin import GIB
from support.servers import SCHEMA, get_json, server_config

from lightning_magic import readings

pytest_plugins = ["pytest_jupyter.jupyter_server"]
pytestmark = pytest.mark.slow

CELL = ENDLESS_SETUP


@pytest.fixture
def jp_server_config():
    return server_config()


@pytest.fixture(autouse=True)
def kernel_imports_this_package(kernel_env):
    readings.shutdown()
    yield
    readings.shutdown()


async def reply_to(client, msg_id, timeout=120):
    while True:
        reply = await client.get_shell_msg(timeout=timeout)
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply["content"]


async def test_a_training_run_is_listed_while_it_trains(fake_nvml, jp_fetch, jp_serverapp,
                                                         tmp_path):
    session = json.loads((await jp_fetch("api", "sessions", method="POST", body=json.dumps({
        "path": "train.ipynb", "type": "notebook", "name": "train.ipynb",
        "kernel": {"name": "python3"},
    }))).body)
    kernel_id = session["kernel"]["id"]
    kernel = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    client = kernel.client()
    client.start_channels()
    fifo = tmp_path / "training.fifo"
    os.mkfifo(fifo)
    loop = asyncio.get_running_loop()
    try:
        await client.wait_for_ready(timeout=120)
        setup = await client.execute_interactive(CELL, timeout=120)
        assert setup["content"]["status"] == "ok"
        msg_id = client.execute("%%lightning_train --accelerator cpu --devices 2 --max-epochs 1000\n"
                                f"model = Endless({str(fifo)!r})\ntrain_loader = loader")
        said = await asyncio.wait_for(loop.run_in_executor(None, fifo.read_text), timeout=120)
        assert said == "training\n"

        body = await get_json(jp_fetch)
        jsonschema.Draft202012Validator(SCHEMA).validate(body)
        [run] = body["runs"]
        assert run["kernel_id"] == kernel_id and run["pid"] == kernel.provisioner.pid
        assert run["model"] == "Endless" and run["accelerator"] == "cpu"
        assert len(run["rank_pids"]) == 2 and run["status"] == "running"
        assert run["notebook_path"] == "train.ipynb"
        assert run["max_epochs"] == 1000  # the card reads "epoch 0/999", as the cell does

        # the ranks, seen on a GPU by NVML, carry their kernel, run and rank
        fake_nvml.gpus[1].processes = [(pid, 3 * GIB) for pid in run["rank_pids"]]
        await loop.run_in_executor(None, readings.get_sampler().wait_next)
        body = await get_json(jp_fetch)
        processes = {p["pid"]: p for p in body["gpus"][1]["processes"]}
        for rank, pid in enumerate(run["rank_pids"]):
            assert processes[pid]["rank"] == rank and processes[pid]["role"] == "rank"
            assert processes[pid]["kernel_id"] == kernel_id
            assert processes[pid]["run_id"] == run["run_id"]
            assert processes[pid]["notebook_path"] == "train.ipynb"

        await jp_serverapp.kernel_manager.interrupt_kernel(kernel_id)
        content = await reply_to(client, msg_id)
        assert content["ename"] == "TrainingStopped"  # interrupted, as the stop button does
        body = await get_json(jp_fetch)
        assert body["runs"] == []
    finally:
        client.stop_channels()
        await jp_fetch("api", "sessions", session["id"], method="DELETE")
