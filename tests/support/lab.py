"""A real JupyterLab for browser tests, and Debian's Chromium to drive it with Playwright.

The server is a real ``jupyter lab`` on loopback with a token, started with the NVML stand-in
(serve_with_nvml_standin.py), in its own config, data and settings dirs; its kernels import this
checkout's lightning_magic. Browser test modules import the fixtures (``lab``, ``browser`` and
the two that keep pytest-jupyter's in-process server out) and ``CHROMIUM_MISSING``, their skip
mark. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import queue
import secrets
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TESTS = Path(__file__).resolve().parent.parent
ARTIFACTS = TESTS.parent / "test-artifacts"
SERVE = TESTS / "support" / "serve_with_nvml_standin.py"
REFRESH_SECONDS = 0.5  # the GPU Status panel's refresh interval, in the user settings
SERVER_START_TIMEOUT = 120  # seconds; a cold start on a small machine takes ~10

CHROMIUM_MISSING = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="Debian's Chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LabServer:
    """``jupyter lab`` with the NVML stand-in, in its own config, data and settings dirs."""

    def __init__(self, home: Path):
        self.home = home
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        # ?reset: every page starts from the default layout, whatever the last one left
        self.url = f"http://127.0.0.1:{self.port}/lab?reset&token={self.token}"
        self.log: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        settings = self.home / "lab-settings"
        plugin_settings = settings / "lightning-magic" / "plugin.jupyterlab-settings"
        plugin_settings.parent.mkdir(parents=True)
        plugin_settings.write_text(json.dumps({"refreshInterval": REFRESH_SECONDS}))
        # No "get notified about Jupyter news?" toast over the panel in screenshots
        notifications = settings / "@jupyterlab" / "apputils-extension"
        notifications.mkdir(parents=True)
        (notifications / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False}))
        root = self.home / "notebooks"
        root.mkdir()
        env = {
            **os.environ,
            "JUPYTER_CONFIG_DIR": str(self.home / "config"),
            "JUPYTER_RUNTIME_DIR": str(self.home / "runtime"),
            "JUPYTERLAB_SETTINGS_DIR": str(settings),
            "JUPYTERLAB_WORKSPACES_DIR": str(self.home / "workspaces"),
            "PYTHONUNBUFFERED": "1",
            # kernels import this checkout's lightning_magic, as the tests do
            "PYTHONPATH": os.pathsep.join(p for p in (str(TESTS.parent),
                                                       os.environ.get("PYTHONPATH")) if p),
        }
        built = TESTS.parent / "lightning_magic" / "labextension"
        if (built / "package.json").is_file():  # the panel as built from these sources
            extensions = self.home / "jupyter-path" / "labextensions"
            extensions.mkdir(parents=True)
            (extensions / "lightning-magic").symlink_to(built)
            env["JUPYTER_PATH"] = str(self.home / "jupyter-path")
        self.process = subprocess.Popen(
            [sys.executable, str(SERVE), "--nvml", "two-gpus", "lab",
             "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={self.token}",
             f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
             "--LabApp.news_url=None", "--LabApp.extension_manager=readonly",
             "--GpuStatus.sample_interval=0.25",
             *(["--allow-root"] if os.geteuid() == 0 else [])],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        threading.Thread(target=self._read_output, daemon=True).start()
        ready = f"http://127.0.0.1:{self.port}/"
        while True:
            try:
                line = self._lines.get(timeout=SERVER_START_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"jupyter lab did not start within {SERVER_START_TIMEOUT} s:\n"
                            + self.output())
            if line is None:
                pytest.fail("jupyter lab exited while starting:\n" + self.output())
            if ready in line:
                return

    def _read_output(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            self.log.append(line)
            self._lines.put(line)
        self._lines.put(None)

    def output(self) -> str:
        return "".join(self.log[-60:])

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


@pytest.fixture(autouse=True)
def jp_asyncio_loop():
    """Playwright's sync API keeps its own event loop running in this thread for the module;
    pytest-jupyter's per-test loop (loaded for the server tests) must not try to close it."""
    yield None


@pytest.fixture(autouse=True)
def jp_server_cleanup():
    """No in-process Jupyter server here (the lab under test is a separate process)."""
    yield


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    server = LabServer(tmp_path_factory.mktemp("lab"))
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def screenshot(page_or_locator, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page_or_locator.screenshot(path=str(path))
    return path


def wait_for_idle_kernel(page, info: bool = False) -> None:
    """Until the current notebook's kernel is connected and idle (with its kernel_info reply,
    when ``info``); JupyterLab's app object only exists once the page has loaded."""
    page.wait_for_function(
        """(info) => { const app = window.jupyterapp;
                       const panel = app && app.shell.currentWidget;
                       const kernel = panel && panel.sessionContext && panel.sessionContext.session
                                      && panel.sessionContext.session.kernel;
                       return kernel && kernel.connectionStatus === 'connected'
                              && kernel.status === 'idle' && (!info || kernel.info); }""",
        arg=info, timeout=120_000)
