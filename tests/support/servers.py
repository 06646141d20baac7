"""A real Jupyter server for tests (pytest-jupyter): its configuration with authentication
required, the endpoint's JSON Schema, and a checked GET of the readings."""

from __future__ import annotations

import json
from importlib.resources import files

from jupyter_server.serverapp import ServerApp

SCHEMA = json.loads(files("lightning_magic").joinpath("schema/gpu-status.schema.json").read_text())
ROUTE = "gpu-status"


def server_config(**gpu_status) -> dict:
    server = {"jpserver_extensions": {"lightning_magic": True, "jupyter_server_terminals": False}}
    if ServerApp.class_traits().get("allow_unauthenticated_access") is not None:
        server["allow_unauthenticated_access"] = False
    return {"ServerApp": server, "GpuStatus": {"sample_interval": 0.25, **gpu_status}}


async def get_json(jp_fetch, **kwargs) -> dict:
    response = await jp_fetch(ROUTE, **kwargs)
    assert response.code == 200
    return json.loads(response.body)
