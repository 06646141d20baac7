"""The GPU status sidebar panel in a real JupyterLab, driven in Debian's Chromium by Playwright.

The server is a real ``jupyter lab`` on loopback with a token, started with the NVML stand-in
(tests/support/serve_with_nvml_standin.py: two GPUs, one reporting every field and busy, one that does
not report power, fan or ECC), so GPU cards render on a machine without a driver. The panel's
refresh interval is set to 0.5 s through the user settings, as a user would in the Settings
Editor. Screenshots land in test-artifacts/.
"""

from __future__ import annotations

import json
import re

import pytest
from support.lab import (  # noqa: F401 - fixtures
    CHROMIUM_MISSING,
    REFRESH_SECONDS,
    TESTS,
    browser,
    jp_asyncio_loop,
    jp_server_cleanup,
    lab,
    wait_for_idle_kernel,
)
from support.lab import screenshot as _screenshot
from support.runs import state

from lightning_magic.readings.runs import PublishedRun

PANEL_ID = "lightning-magic-gpu-panel"
PANEL = f"#{PANEL_ID}"
TAB = f'.jp-SideBar li.lm-TabBar-tab[data-id="{PANEL_ID}"]'

pytestmark = [pytest.mark.browser, CHROMIUM_MISSING]


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
    page.on("pageerror", lambda error: errors.append(f"{error}\n{error.stack or ''}"))  # where
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


# JupyterLab (4.6, apputils-extension's splash plugin) shows its splash while it loads a theme
# and removes it from the page 200 ms after it starts to fade out. A theme change within those
# 200 ms shows the same splash again, which the pending removal then takes away; the change's
# own removal finds nothing to remove and throws "Failed to execute 'removeChild' on 'Node'" in
# the page. A user cannot change the theme through the splash, so neither do the tests.
NO_SPLASH = "!document.getElementById('jupyterlab-splash')"


def change_theme(page, theme: str) -> None:
    """Change JupyterLab's theme once the splash of the page's start (or of the last change) has
    gone, and return once the splash of this change has gone: its stylesheets are applied then."""
    page.wait_for_function(
        f"() => window.jupyterapp && document.body.dataset.jpThemeName && {NO_SPLASH}",
        timeout=60_000)
    page.evaluate(
        "theme => window.jupyterapp.commands.execute('apputils:change-theme', {theme})", theme)
    page.wait_for_function(
        f"theme => document.body.dataset.jpThemeName === theme && {NO_SPLASH}", arg=theme)


# Notes when the start's splash begins to fade out.
SPLASH_FADING = """document.addEventListener('DOMContentLoaded', () => {
  new MutationObserver(() => {
    const splash = document.getElementById('jupyterlab-splash');
    if (splash && splash.classList.contains('splash-fade')) window.__splashFading = true;
  }).observe(document.body, {subtree: true, attributes: true, attributeFilter: ['class']});
});"""


def test_a_run_card_reads_as_the_cell_and_follows_its_run(page, lab):
    """A kernel's run file, as PublishedRun writes it in the server's runtime directory: its card
    writes the epoch as the cell's view does ("epoch 33/299" of max_epochs=300), and shows each
    update the kernel writes."""
    from playwright.sync_api import expect

    page, requests = page
    tab, panel = _open_panel(page)
    run = PublishedRun(state("browser-card", max_epochs=300, epoch=33, step=1200),
                       str(lab.home / "runtime"), min_interval=0.0)
    run.publish()
    runs = _card(panel, "Training runs")
    try:
        progress = runs.locator(".lmagic-Run-progress")
        expect(progress).to_have_text(re.compile(r"^epoch 33/299 · step 1200 · since "))
        run.update(epoch=34, step=1236)
        expect(progress).to_have_text(re.compile(r"^epoch 34/299 · step 1236 · since "))
    finally:
        run.remove()
    expect(runs).to_have_count(0)
    tab.click()
    expect(panel).to_be_hidden()


def test_a_theme_change_waits_for_the_splash_to_leave(lab, browser):
    """The start's splash is fading out when the test asks for another theme."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.add_init_script(SPLASH_FADING)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"{error}\n{error.stack or ''}"))
    try:
        page.goto(lab.url)
        page.wait_for_function("() => window.__splashFading", timeout=60_000)
        change_theme(page, "JupyterLab Dark")
        # The failed removal comes 200 ms after the splash has left; an absence can only be
        # observed over time.
        page.wait_for_timeout(1000)
    finally:
        context.close()
    assert not errors, f"errors in the page: {errors}"


@pytest.mark.parametrize("theme", ["JupyterLab Light", "JupyterLab Dark"])
def test_panel_is_readable_in_light_and_dark_themes(page, theme):
    from playwright.sync_api import expect

    page, _ = page
    change_theme(page, theme)
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


# -- what the kernel shows, in every theme -------------------------------------------------------

THEMES = ["JupyterLab Light", "JupyterLab Dark", "JupyterLab Dark High Contrast"]
OUTPUTS = {"gpu-status": ".lm-gpu-status", "summary": ".lightning-magic-run[data-status='finished']",
           "failure": ".lightning-magic-report", "failed-summary": ".lightning-magic-run[data-status='failed']"}
RUN_NOTEBOOK = {
    "cells": [
        {"cell_type": "code", "source": "%load_ext lightning_magic"},
        {"cell_type": "code", "source": "%gpu_status"},
        {"cell_type": "code", "source": (
            "import torch\nimport lightning.pytorch as pl\n"
            "from torch.utils.data import DataLoader, TensorDataset\n\n"
            "class Net(pl.LightningModule):\n"
            "    def __init__(self):\n"
            "        super().__init__()\n"
            "        self.layer = torch.nn.Linear(8, 1)\n"
            "    def training_step(self, batch, batch_idx):\n"
            "        x, y = batch\n"
            "        loss = torch.nn.functional.mse_loss(self.layer(x), y)\n"
            "        self.log('train_loss', loss)\n"
            "        self.log('lr', 1e-4 / (1 + self.global_step))\n"
            "        return loss\n"
            "    def validation_step(self, batch, batch_idx):\n"
            "        x, y = batch\n"
            "        self.log('val_loss', torch.nn.functional.mse_loss(self.layer(x), y))\n"
            "    def configure_optimizers(self):\n"
            "        return torch.optim.SGD(self.parameters(), lr=0.05)\n\n"
            "X = torch.randn(256, 8)\ndata = TensorDataset(X, X.sum(1, keepdim=True))")},
        {"cell_type": "code", "source": (
            "%%lightning_train --accelerator cpu --devices 2 --max-epochs 4\n"
            "model = Net()\ntrain_loader = DataLoader(data, batch_size=32)\n"
            "val_loader = DataLoader(data, batch_size=64)")},
        {"cell_type": "code", "metadata": {"tags": ["raises-exception"]}, "source": (
            "%%lightning_train --accelerator cpu --devices 2 --max-epochs 2\n"
            "class Fails(Net):\n"
            "    def training_step(self, batch, batch_idx):\n"
            "        if self.global_step == 5:\n"
            "            raise ValueError('a value the model cannot use')\n"
            "        return super().training_step(batch, batch_idx)\n"
            "model = Fails()\ntrain_loader = DataLoader(data, batch_size=32)")},
    ],
    "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)", "language": "python",
                                "name": "python3"}},
    "nbformat": 4, "nbformat_minor": 5,
}

# WCAG contrast of every piece of text in ``root`` against what is behind it: colours as the
# page computed them (alpha composed over the backgrounds below), SVG text by its fill.
CONTRAST_JS = """root => {
  const parse = c => {
    let m = c.match(/^rgba?\\(([^)]+)\\)/);
    if (m) { const v = m[1].split(/[ ,\\/]+/).filter(Boolean).map(Number);
             return [v[0], v[1], v[2], v.length > 3 ? v[3] : 1]; }
    m = c.match(/^color\\(srgb ([^)]+)\\)/);
    if (m) { const v = m[1].split(/[ \\/]+/).filter(Boolean).map(Number);
             return [v[0] * 255, v[1] * 255, v[2] * 255, v.length > 3 ? v[3] : 1]; }
    return null;
  };
  const over = (top, bottom) => {
    const a = top[3];
    return [0, 1, 2].map(i => top[i] * a + bottom[i] * (1 - a)).concat([1]);
  };
  const lum = c => {
    const f = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(c[0]) + 0.7152 * f(c[1]) + 0.0722 * f(c[2]);
  };
  const background = el => {
    const layers = [];
    for (let node = el; node && node.nodeType === 1; node = node.parentElement) {
      if (node instanceof SVGElement && !(node instanceof SVGSVGElement)) continue;
      const c = parse(getComputedStyle(node).backgroundColor);
      if (c && c[3] > 0) { layers.push(c); if (c[3] >= 1) break; }
    }
    let colour = [255, 255, 255, 1];
    for (const layer of layers.reverse()) colour = over(layer, colour);
    return colour;
  };
  const found = [];
  const walker = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  for (let text = walker.nextNode(); text; text = walker.nextNode()) {
    const el = text.parentElement;
    if (!text.textContent.trim() || seen.has(el) || !el.getClientRects().length) continue;
    if (el.closest('details:not([open]) > :not(summary)')) continue;
    if (el.closest('title, style')) continue;
    seen.add(el);
    const style = getComputedStyle(el);
    const back = background(el);
    const fg = over(parse(el instanceof SVGElement ? style.fill : style.color) || [0, 0, 0, 1], back);
    const [a, b] = [lum(fg), lum(back)];
    found.push({text: text.textContent.trim().slice(0, 40),
                ratio: (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05)});
  }
  return found;
}"""

# Every label of every chart inside its own SVG's box.
CLIPPED_JS = """root => {
  const clipped = [];
  for (const svg of root.querySelectorAll('svg.lightning-magic-chart')) {
    const box = svg.getBoundingClientRect();
    for (const label of svg.querySelectorAll('text')) {
      const r = label.getBoundingClientRect();
      if (r.left < box.left - 0.5 || r.right > box.right + 0.5 || r.top < box.top - 0.5
          || r.bottom > box.bottom + 0.5) {
        clipped.push(label.textContent);
      }
    }
  }
  return clipped;
}"""


@pytest.fixture(scope="module")
def ran_notebook(lab, browser):
    """A notebook run top to bottom in the lab: %gpu_status, a run and a failing run."""
    (lab.home / "notebooks" / "outputs.ipynb").write_text(json.dumps({
        **RUN_NOTEBOOK, "cells": [dict(cell, metadata=cell.get("metadata", {}), outputs=[],
                                       execution_count=None) for cell in RUN_NOTEBOOK["cells"]]}))
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    page = context.new_page()
    page.goto(lab.url.replace("/lab?reset", "/lab/tree/outputs.ipynb?reset"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    wait_for_idle_kernel(page)
    page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    try:
        for selector in OUTPUTS.values():
            page.wait_for_selector(selector, timeout=240_000)
    except Exception:
        _screenshot(page, "outputs-not-shown.png")
        raise
    try:
        yield page
    finally:
        context.close()


def _output_of(page, selector: str):
    return page.locator(".jp-OutputArea-output", has=page.locator(selector)).first


@pytest.mark.parametrize("theme", THEMES)
def test_what_the_kernel_shows_is_readable_in_every_theme(ran_notebook, theme):
    page = ran_notebook
    change_theme(page, theme)
    slug = theme.removeprefix("JupyterLab ").lower().replace(" ", "-")
    low = []
    for name, selector in OUTPUTS.items():
        output = _output_of(page, selector)
        output.scroll_into_view_if_needed()
        _screenshot(output, f"output-{name}-{slug}.png")
        for item in output.evaluate(CONTRAST_JS):
            if item["ratio"] < 4.5:
                low.append(f"{name}: {item['text']!r} {item['ratio']:.2f}")
    assert not low, f"{theme}: text below WCAG AA (4.5:1):\n" + "\n".join(low)


def test_chart_labels_sit_inside_their_charts_and_stay_legible_in_a_narrow_notebook(ran_notebook):
    page = ran_notebook
    summary = _output_of(page, OUTPUTS["summary"])
    assert summary.locator("svg.lightning-magic-chart").count() >= 3
    assert summary.evaluate(CLIPPED_JS) == []
    labels = summary.locator("svg.lightning-magic-chart text")
    assert "epoch 0" in " ".join(labels.all_text_contents())  # as Lightning names the first
    # with the sidebar open the charts wrap instead of shrinking their text
    page.set_viewport_size({"width": 900, "height": 1100})
    page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")
    page.wait_for_timeout(300)
    assert summary.evaluate(CLIPPED_JS) == []
    smallest = summary.evaluate(
        "el => Math.min(...Array.from(el.querySelectorAll('svg.lightning-magic-chart text'))"
        ".map(t => t.getBoundingClientRect().height))")
    assert smallest >= 9, f"chart text is {smallest:.1f} px high with the sidebar open"
    _screenshot(summary, "output-summary-narrow.png")
    page.evaluate("window.jupyterapp.commands.execute('application:toggle-left-area')")
    page.set_viewport_size({"width": 1400, "height": 1100})


def test_the_quickstart_opens_unmodified(lab, browser):
    """JupyterLab writes the kernel's language_info and kernelspec into a notebook it opens and
    then marks it modified when they differ: the committed notebooks carry what the kernel says."""
    import platform
    import shutil

    source = TESTS.parent / "notebooks" / "quickstart.ipynb"
    version = json.loads(source.read_text())["metadata"]["language_info"].get("version")
    if version != platform.python_version():
        pytest.skip(f"the notebook names Python {version}; this kernel is "
                    f"{platform.python_version()}, and JupyterLab records the kernel's")
    shutil.copy(source, lab.home / "notebooks" / "quickstart.ipynb")
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        page.goto(lab.url.replace("/lab?reset", "/lab/tree/quickstart.ipynb?reset"))
        wait_for_idle_kernel(page, info=True)
        page.wait_for_function(  # the language_info of the kernel's reply is in the model
            "() => window.jupyterapp.shell.currentWidget.model.getMetadata('language_info')"
            ".version !== undefined")
        assert page.evaluate("window.jupyterapp.shell.currentWidget.context.model.dirty") is False
    finally:
        context.close()
