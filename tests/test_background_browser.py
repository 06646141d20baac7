"""A ``%%lightning_train --background`` run in a real JupyterLab, driven in Debian's Chromium by
Playwright: the live view keeps updating in its own cell while another cell runs (and never lands
in that cell's output), a closed tab loses nothing (``lightning_magic.attach`` redraws the view
in the asking cell of a new tab, which follows the run), and ``stop()`` leaves no rank behind.

Every wait is on an event: text the page shows (a step count that changes is one), a cell's
execution count, a process's exit. The other cell blocks on a FIFO until the test has seen the
view update, so "while it runs" is proven, not hoped for.
"""

from __future__ import annotations

import json
import os
import re

import psutil
import pytest
from support.kernels import BEACON_SETUP, ENDLESS
from support.lab import (  # noqa: F401 - fixtures
    CHROMIUM_MISSING,
    browser,
    jp_asyncio_loop,
    jp_server_cleanup,
    lab,
    screenshot,
    wait_for_idle_kernel,
)

pytestmark = [pytest.mark.browser, pytest.mark.slow, CHROMIUM_MISSING]

UNENDING = ENDLESS.replace("--max-epochs 1000", "--max-epochs -1")  # ends only when stopped
NOTEBOOK = "background.ipynb"
START_TIMEOUT = 240_000  # ms: torch, Lightning and two ranks starting on a small, shared machine
UPDATE_TIMEOUT = 60_000  # ms: the view is redrawn at most every 0.25 s while rank 0 trains
SETUP, RUN, OTHER, ATTACH, STOP = range(5)

# In the current notebook: the step the live view in cell ``i`` shows (null without one).
STEP_JS = """i => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[i];
  const view = cell && cell.node.querySelector('.jp-OutputArea .lightning-magic-live');
  const step = view && view.textContent.match(/\\bstep (\\d+)/);
  return step ? Number(step[1]) : null;
}"""
# A later step than ``above`` in cell ``i``'s live view, while cell ``busy`` (if any) still runs.
LATER_STEP_JS = """([i, above, busy]) => {
  const step = (%s)(i);
  const cells = window.jupyterapp.shell.currentWidget.content.widgets;
  const running = busy === null || cells[busy].model.executionCount === null;
  if (!running) throw new Error('the other cell ended before the view updated');
  return step !== null && step > above;
}""" % STEP_JS
# The status the live view in cell ``i`` reads ("starting", "running", "finishing"), if any.
STATUS_JS = """i => {
  const cell = window.jupyterapp.shell.currentWidget.content.widgets[i];
  const status = cell.node.querySelector('.lightning-magic-live > div:first-child > span');
  return status && status.textContent;
}"""
ENDED_JS = "i => (%s)(i) !== 'running'" % STATUS_JS
# Cell ``i`` has run (its execute reply came: JupyterLab sets its execution count then).
RAN_JS = """i => window.jupyterapp.shell.currentWidget.content.widgets[i].model.executionCount
                 !== null"""


def _notebook(fifo: str) -> dict:
    sources = {
        SETUP: BEACON_SETUP + "import os\nimport lightning_magic\n"
                              "print('kernel pid', os.getpid())\n",
        RUN: f"{UNENDING}\nmodel = Beacon()\nrun = pl.Trainer().fit(model, loader)",
        OTHER: f"print('the other cell runs', flush=True)\nopen({fifo!r}).read()\n"
               "x = 1 + 1; x",
        ATTACH: "lightning_magic.attach(lightning_run.id)",
        STOP: "print('stopped:', lightning_run.stop().status)",
    }
    return {
        "cells": [{"cell_type": "code", "source": sources[i], "metadata": {}, "outputs": [],
                   "execution_count": None} for i in range(len(sources))],
        "metadata": {"kernelspec": {"display_name": "Python 3 (ipykernel)",
                                    "language": "python", "name": "python3"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def _open(context, lab):
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(f"{error}\n{error.stack or ''}"))
    page.goto(lab.url.replace("/lab?reset", f"/lab/tree/{NOTEBOOK}?reset"))
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    wait_for_idle_kernel(page)
    return page, errors


def _run_cell(page, i: int) -> None:
    """Run cell ``i`` alone, as Ctrl+Enter does; returns once it is sent (the command's promise
    settles only when the cell has run, and the other cell runs until the test releases it)."""
    page.evaluate("""i => { const notebook = window.jupyterapp.shell.currentWidget.content;
                            notebook.deselectAll(); notebook.activeCellIndex = i;
                            window.jupyterapp.commands.execute('notebook:run-cell'); }""",
                  i)


def _ran(page, i: int, timeout: float = START_TIMEOUT) -> None:
    page.wait_for_function(RAN_JS, arg=i, timeout=timeout)


def _output(page, i: int):
    return page.locator(".jp-Notebook .jp-Cell").nth(i).locator(".jp-OutputArea")


def _step(page, i: int) -> int | None:
    return page.evaluate(STEP_JS, i)


def _later_step(page, i: int, above: int, busy: int | None = None) -> int:
    page.wait_for_function(LATER_STEP_JS, arg=[i, above, busy], timeout=UPDATE_TIMEOUT)
    return _step(page, i)


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.timeout(600)  # a cold JupyterLab, torch and two ranks on a small shared machine
def test_a_background_run_updates_in_its_cell_survives_a_closed_tab_and_stops(
        lab, browser, tmp_path):
    fifo = tmp_path / "other-cell.fifo"
    os.mkfifo(fifo)
    (lab.home / "notebooks" / NOTEBOOK).write_text(json.dumps(_notebook(str(fifo))))
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = None
    try:
        page, errors = _open(context, lab)
        _run_cell(page, SETUP)
        _ran(page, SETUP)
        pid = re.search(r"kernel pid (\d+)", _output(page, SETUP).inner_text())
        assert pid, f"the set-up cell failed: {_output(page, SETUP).inner_text()}"
        kernel = psutil.Process(int(pid.group(1)))

        # 1. The background cell returns while its run goes on, its view in its own output.
        _run_cell(page, RUN)
        _ran(page, RUN)
        page.wait_for_function(f"() => ({STEP_JS})({RUN}) !== null", timeout=START_TIMEOUT)
        first = _step(page, RUN)

        # 2. While the other cell runs (it has printed, and blocks on the FIFO), the view in
        # the run's cell updates; nothing of it lands in the other cell.
        _run_cell(page, OTHER)
        _output(page, OTHER).get_by_text("the other cell runs").wait_for(timeout=UPDATE_TIMEOUT)
        during = _later_step(page, RUN, first, busy=OTHER)
        during = _later_step(page, RUN, during, busy=OTHER)  # and again: it keeps updating
        fifo.write_text("go")
        _ran(page, OTHER, timeout=UPDATE_TIMEOUT)
        other = _output(page, OTHER)
        shown = [text.strip() for text in other.locator(".jp-OutputArea-output").all_inner_texts()]
        assert shown == ["the other cell runs", "2"], f"the other cell's output: {shown}"
        after = _later_step(page, RUN, during)  # after the other cell too
        assert other.locator(".lightning-magic-live").count() == 0
        assert [text.strip() for text in other.locator(".jp-OutputArea-output")
                .all_inner_texts()] == shown, "the other cell's output changed after it ran"
        assert page.locator(".lightning-magic-live").count() == 1, "a second live view"
        screenshot(page, "background-run-live-view.png")
        assert not errors, f"errors in the page: {errors}"

        # 3. A closed tab; a new one opens the notebook (as saved: no outputs) on the same
        # kernel, and attach redraws the live view in the asking cell, which follows the run.
        page.close()
        page, errors = _open(context, lab)
        assert page.locator(".lightning-magic-live").count() == 0
        _run_cell(page, ATTACH)
        _ran(page, ATTACH, timeout=UPDATE_TIMEOUT)
        page.wait_for_function(f"() => ({STEP_JS})({ATTACH}) !== null", timeout=UPDATE_TIMEOUT)
        redrawn = _step(page, ATTACH)
        assert redrawn >= after, f"attach drew step {redrawn}, the run was at {after} before"
        assert "(attached)" in _output(page, ATTACH).inner_text()
        followed = _later_step(page, ATTACH, redrawn)
        _later_step(page, ATTACH, followed)
        assert page.locator(".lightning-magic-live").count() == 1
        screenshot(page, "background-run-attached.png")

        # 4. stop(): the run ends, and no rank (no process of the kernel's) is left.
        ranks = kernel.children(recursive=True)
        assert ranks, "the kernel has no rank processes while its run trains"
        _run_cell(page, STOP)
        _ran(page, STOP, timeout=UPDATE_TIMEOUT)
        assert "stopped: interrupted" in _output(page, STOP).inner_text()
        _, alive = psutil.wait_procs(ranks, timeout=30)
        assert not alive, f"processes outlived stop(): {[p.pid for p in alive]}"
        left = [p for p in kernel.children(recursive=True) if _alive(p)]
        assert not left, f"processes of the kernel left after stop(): {left}"
        assert not errors, f"errors in the page: {errors}"
        print("steps seen:", first, during, after, "| attached:", redrawn, followed)

        # The attached view follows the run to its end, and says how it ended, as the journal
        # does (its follower polls the journal every 0.25 s).
        page.wait_for_function(ENDED_JS, arg=ATTACH, timeout=UPDATE_TIMEOUT)
        assert page.evaluate(STATUS_JS, ATTACH) == "interrupted"
    except Exception:
        if page is not None and not page.is_closed():
            screenshot(page, "background-run-failed.png")
        raise
    finally:
        context.close()
