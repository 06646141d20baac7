"""The GPU status sidebar panel in a real JupyterLab, driven in Debian's Chromium by Playwright.

The server is a real ``jupyter lab`` on loopback with a token, started with the NVML stand-in
(tests/support/serve_with_nvml_standin.py: two GPUs, one reporting every field and busy, one that does
not report power, fan or ECC), so GPU cards render on a machine without a driver. The panel's
refresh interval is set to 0.5 s through the user settings, as a user would in the Settings
Editor. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import os
import queue
import re
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
TESTS = Path(__file__).resolve().parent
ARTIFACTS = TESTS.parent / "test-artifacts"
SERVE = TESTS / "support" / "serve_with_nvml_standin.py"

PANEL_ID = "lightning-magic-gpu-panel"
PANEL = f"#{PANEL_ID}"
TAB = f'.jp-SideBar li.lm-TabBar-tab[data-id="{PANEL_ID}"]'
REFRESH_SECONDS = 0.5
SERVER_START_TIMEOUT = 120  # seconds; a cold start on a small machine takes ~10

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's Chromium is not installed at /usr/bin/chromium "
               "(apt-get install chromium)",
    ),
]


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
        }
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


class GpuStatusRequests:
    """Every request the page sends to /gpu-status, as it is sent."""

    def __init__(self, page):
        self.urls: list[str] = []
        page.on("request", self._on_request)

    def _on_request(self, request) -> None:
        if re.search(r"/gpu-status(\?|$)", request.url):
            self.urls.append(request.url)

    def __len__(self) -> int:
        return len(self.urls)


@pytest.fixture
def page(lab, browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    requests = GpuStatusRequests(page)
    page.goto(lab.url)
    page.wait_for_selector("#jp-main-dock-panel", state="visible", timeout=60_000)
    try:
        yield page, requests
    finally:
        context.close()
    assert not errors, f"errors in the page: {errors}"


def _open_panel(page):
    tab = page.locator(TAB)
    assert tab.count() == 1, (
        "The GPU Status tab is not in JupyterLab's sidebars: the lightning-magic labextension "
        "is not installed in this environment (pip install --no-deps . builds and installs it)."
    )
    tab.click()
    panel = page.locator(PANEL)
    panel.wait_for(state="visible")
    return tab, panel


def _card(panel, label: str):
    return panel.locator(f'section[aria-label^="{label}"]')


def _screenshot(page_or_locator, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page_or_locator.screenshot(path=str(path))
    return path


def test_panel_shows_live_readings_and_polls_only_while_open(page):
    from playwright.sync_api import expect

    page, requests = page
    tab = page.locator(TAB)
    expect(tab).to_have_attribute("title", "GPU Status")
    # The panel is closed on a fresh workspace, so it has not asked for anything.
    assert len(requests) == 0

    tab, panel = _open_panel(page)

    # Readings appear: a card per GPU, with named bars and their numbers.
    a100 = _card(panel, "GPU 0: NVIDIA A100-SXM4-80GB")
    rtx = _card(panel, "GPU 1: NVIDIA GeForce RTX 3090")
    expect(a100).to_be_visible()
    expect(rtx).to_be_visible()
    memory = a100.get_by_role("meter", name="GPU 0 memory")
    expect(memory).to_have_attribute("aria-valuetext", re.compile(r"^\d+\.\d / 80\.0 GiB$"))
    expect(rtx.get_by_role("meter", name="GPU 1 memory")).to_have_attribute(
        "aria-valuetext", "1.0 / 24.0 GiB")
    # What the consumer card does not report reads "n/a", not 0.
    power = rtx.locator("dt", has_text="Power").locator("xpath=following-sibling::dd")
    expect(power).to_have_text("n/a")
    expect(a100.locator("dt", has_text="Power").locator("xpath=following-sibling::dd")).to_have_text(
        re.compile(r"^\d+ / 400 W$"))
    # The server's own process is on the A100 and is listed there.
    expect(a100.locator("tbody tr")).to_have_count(1)
    expect(_card(panel, "CPU and memory").get_by_role("meter", name="CPU use")).to_be_visible()

    # Readings refresh: the sparkline gains points as new readings arrive.
    line = a100.locator("polyline").first
    page.wait_for_function(
        "el => el.getAttribute('points').split(' ').length >= 10", arg=line.element_handle())
    assert len(requests) >= 10

    shot = _screenshot(panel, "gpu-panel.png")
    assert shot.stat().st_size > 0
    _screenshot(page, "lab-with-gpu-panel.png")

    # Closing the panel (clicking its tab again) stops the requests.
    tab.click()
    expect(panel).to_be_hidden()
    sent_while_open = len(requests)
    # Absence can only be observed over time: 8 refresh intervals, in which an open panel
    # would have sent about 8 requests.
    page.wait_for_timeout(8 * REFRESH_SECONDS * 1000)
    assert len(requests) == sent_while_open, (
        f"{len(requests) - sent_while_open} requests to /gpu-status after the panel closed: "
        f"{requests.urls[sent_while_open:]}")

    # Opening it again asks at once.
    with page.expect_request(re.compile(r"/gpu-status(\?|$)")):
        tab.click()
    expect(panel).to_be_visible()


def _contrast(page, locator) -> float:
    """WCAG contrast ratio between an element's text colour and the background behind it."""
    return page.evaluate(
        """el => {
            const rgb = c => c.match(/[\\d.]+/g).slice(0, 4).map(Number);
            const lum = ([r, g, b]) => {
              const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
              return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
            };
            let bg = el;
            while (bg && (getComputedStyle(bg).backgroundColor === 'rgba(0, 0, 0, 0)'
                          || getComputedStyle(bg).backgroundColor === 'transparent')) {
              bg = bg.parentElement;
            }
            const fg = lum(rgb(getComputedStyle(el).color));
            const back = lum(rgb(getComputedStyle(bg).backgroundColor));
            return (Math.max(fg, back) + 0.05) / (Math.min(fg, back) + 0.05);
        }""",
        locator.element_handle(),
    )


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_panel_is_readable_in_light_and_dark_themes(page, theme):
    from playwright.sync_api import expect

    page, _ = page
    page.evaluate(
        "theme => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme)
    page.wait_for_function(
        "theme => document.body.dataset.jpThemeName === theme", arg=theme)
    _, panel = _open_panel(page)
    a100 = _card(panel, "GPU 0")
    expect(a100).to_be_visible()
    for text in (a100.locator(".lmagic-Card-index"),
                 a100.locator(".lmagic-Meter-value").first,
                 a100.locator(".lmagic-Fact dd").first):
        ratio = _contrast(page, text)
        assert ratio >= 4.5, f"{theme}: contrast {ratio:.2f} of {text} is below WCAG AA (4.5)"
    slug = theme.split()[-1].lower()
    _screenshot(panel, f"gpu-panel-{slug}.png")


def test_panel_moves_to_the_other_sidebar(page):
    from playwright.sync_api import expect

    page, requests = page
    right_tab = page.locator(f'.jp-SideBar.jp-mod-right li[data-id="{PANEL_ID}"]')
    expect(right_tab).to_have_count(1)
    right_tab.click(button="right")
    # Moving the panel opens it in the left sidebar, where it reads as before.
    with page.expect_request(re.compile(r"/gpu-status(\?|$)")):
        page.locator(".lm-Menu-item", has_text="Switch Sidebar Side").click()
    left_tab = page.locator(f'.jp-SideBar.jp-mod-left li[data-id="{PANEL_ID}"]')
    expect(left_tab).to_have_count(1)
    expect(right_tab).to_have_count(0)
    panel = page.locator(f"#jp-left-stack {PANEL}")
    expect(_card(panel, "GPU 0")).to_be_visible()
    # Its tab there closes it.
    left_tab.click()
    expect(panel).to_be_hidden()
