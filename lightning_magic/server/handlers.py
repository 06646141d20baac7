"""``GET {base_url}gpu-status``: the latest reading of the machine, as JSON.

The handler never reads the machine itself: the process's one sampler (``readings``) does
that in a background thread, and the handler encodes its latest reading once, however many
clients ask for it. Requests do not count as user activity, so a sidebar polling this endpoint
does not keep an idle server or its kernels from being culled. ``GpuStatusEndpoint`` is shared
with the Prometheus handler (``metrics``): both serve the same labelled reading.
"""

from __future__ import annotations

import asyncio
import functools
import json
from typing import Optional

import psutil
from jupyter_core.utils import ensure_async
from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from ..readings import Sampler
from ..readings.runs import list_runs
from .config import GpuStatus

AUTH_RESOURCE = "lightning_magic:gpu-status"
SETTINGS_KEY = "lightning_magic_gpu_status"


class GpuStatusEndpoint:
    """What the handler needs from the server: settings, the sampler, the encoded reading."""

    def __init__(self, config: GpuStatus, sampler: Sampler):
        self.config = config
        self.sampler = sampler
        self.user = psutil.Process().username()
        self._encoded_for: tuple | None = None
        self._encoded = b""
        self._view_for: tuple | None = None
        self._view: tuple[list[dict], list[dict]] = ([], [])
        self._listing: Optional[asyncio.Future] = None  # the listing under way
        self._next: Optional[asyncio.Future] = None     # the one that starts after it

    async def runs(self) -> list[dict]:
        """The active ``%%lightning_train`` runs, read off the event loop after the request came:
        a run file written before a request is in its answer. Requests that come while a listing
        is under way share the next one, which starts when that one ends."""
        if self._next is None:
            self._next = asyncio.ensure_future(self._list_runs(self._listing))
        return await asyncio.shield(self._next)

    async def _list_runs(self, previous: Optional[asyncio.Future]) -> list[dict]:
        if previous is not None:
            await asyncio.wait([previous])
        self._listing, self._next = self._next, None  # later requests wait for the next one
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(None, functools.partial(
                list_runs, show_other_users=self.config.show_other_users_processes))
        except Exception:  # the readings must still be served
            self.config.log.warning("Could not list the active runs", exc_info=True)
            return []

    async def reading(self) -> dict:
        """The sampler's latest reading; waits (off the event loop) for the first one."""
        reading = self.sampler.cached()
        if reading is None:  # the sampler is taking its first reading since it started
            loop = asyncio.get_running_loop()
            try:
                reading = await loop.run_in_executor(None, self.sampler.latest)
            except TimeoutError as error:
                raise web.HTTPError(503, str(error), reason="Readings not ready") from error
        return reading

    async def view(self, reading: dict, session_manager) -> tuple[list[dict], list[dict]]:
        """(gpus, runs) as served: other users' processes per the settings, notebook paths
        added. Worked out once per reading and runs listing, however many requests ask."""
        runs = await self.runs()
        if self._view_for is not None and self._view_for[0] is reading \
                and self._view_for[1] is runs:
            return self._view
        source_runs = runs
        gpus = reading["gpus"]  # ranks of published runs are labelled by the readings
        if not self.config.show_other_users_processes:
            gpus = [
                {**gpu, "processes": [p for p in gpu["processes"] if p["user"] == self.user]}
                for gpu in gpus
            ]
        if runs or any(p["kernel_id"] for gpu in gpus for p in gpu["processes"]):
            try:
                paths = await _notebook_paths(session_manager)
            except Exception:  # the labels are a courtesy; the readings must still be served
                self.config.log.warning("Could not list sessions to name notebooks on GPUs",
                                        exc_info=True)
            else:
                gpus = _with_notebook_paths(gpus, paths)
                runs = [{**run, "notebook_path": paths.get(run.get("kernel_id"))} for run in runs]
        self._view_for, self._view = (reading, source_runs), (gpus, runs)
        return gpus, runs

    async def body(self, reading: dict, session_manager) -> bytes:
        view = await self.view(reading, session_manager)
        if self._encoded_for is not None and self._encoded_for[0] is reading \
                and self._encoded_for[1] is view:
            return self._encoded
        gpus, runs = view
        body = json.dumps({**reading, "gpus": gpus, "runs": runs}).encode()
        self._encoded_for, self._encoded = (reading, view), body
        return body


async def _notebook_paths(session_manager) -> dict[str, str]:
    """kernel id -> the path of the notebook (or console) it serves, for this server's sessions."""
    sessions = await ensure_async(session_manager.list_sessions())
    return {
        session["kernel"]["id"]: session.get("path")
        for session in sessions
        if session.get("kernel") and session.get("path")
    }


def _with_notebook_paths(gpus: list[dict], paths: dict[str, str]) -> list[dict]:
    return [
        {**gpu, "processes": [
            {**p, "notebook_path": paths[p["kernel_id"]]} if p["kernel_id"] in paths else p
            for p in gpu["processes"]
        ]}
        for gpu in gpus
    ]


class ReadOnlyHandler(APIHandler):
    """A GET-only endpoint: every other method, OPTIONS included, is answered 405. A browser's
    CORS preflight (OPTIONS with Origin and Access-Control-Request-Method) still gets Jupyter's
    answer, so cross-origin access works where the server allows it."""

    auth_resource = AUTH_RESOURCE
    _track_activity = False

    @allow_unauthenticated
    def options(self, *args, **kwargs):
        headers = self.request.headers
        if headers.get("Origin") and headers.get("Access-Control-Request-Method"):
            return super().options(*args, **kwargs)
        self.set_status(405)
        self.set_header("Allow", "GET")
        return self.finish(json.dumps({"message": f"{self.request.path} answers GET only."}))


class GpuStatusHandler(ReadOnlyHandler):
    """Live GPU, CPU and memory readings; see lightning_magic/schema/gpu-status.schema.json."""

    @web.authenticated
    @authorized
    async def get(self):
        endpoint: GpuStatusEndpoint = self.settings[SETTINGS_KEY]
        reading = await endpoint.reading()
        body = await endpoint.body(reading, self.session_manager)
        self.set_header("Cache-Control", "no-store")
        await self.finish(body)
