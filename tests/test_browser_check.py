"""JupyterLab's own smoke test, ``python -m jupyterlab.browser_check``, with the installed
lightning-magic labextension: JupyterLab starts in a real Chromium and nothing logs an error.

browser_check drives Chromium through the ``playwright`` npm package, which it installs into
JupyterLab's application directory (``<app dir>/browser_test``), and then asks Playwright to
download Playwright's own Chromium build. Where that download host is out of reach and Debian's
Chromium is installed, the test registers /usr/bin/chromium, in a private
PLAYWRIGHT_BROWSERS_PATH, as the build Playwright expects: a launcher script at Playwright's
executable path and the marker files that say the build is installed, so Playwright's install
step has nothing to fetch. browser_check then runs unchanged.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
ANSI = re.compile(r"\x1b\[[0-9;]*m")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's Chromium is not installed at /usr/bin/chromium "
               "(apt-get install chromium)",
    ),
    pytest.mark.skipif(
        shutil.which("npm") is None or shutil.which("node") is None,
        reason="jupyterlab.browser_check needs Node.js and npm to run Playwright",
    ),
]


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)


def _jupyter(*args: str) -> list[str]:
    return [sys.executable, "-m", "jupyter", *args]


def _playwright_env(browsers: Path) -> dict:
    return {**os.environ, "PLAYWRIGHT_BROWSERS_PATH": str(browsers)}


def _install_browser_check_playwright(target: Path) -> None:
    """What browser_check does on its first run, done ahead so its output can be checked."""
    if (target / "node_modules" / "playwright").exists():
        return
    target.mkdir(parents=True, exist_ok=True)
    for command in (["npm", "init", "-y"], ["npm", "install", "playwright@^1.9.2"]):
        done = _run(command, cwd=target, timeout=300)
        assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}"


def _register_debian_chromium(target: Path, browsers: Path) -> None:
    env = _playwright_env(browsers)
    dry_run = _run(["npx", "playwright", "install", "--dry-run", "chromium"],
                   cwd=target, env=env, timeout=120)
    assert dry_run.returncode == 0, dry_run.stdout + dry_run.stderr
    locations = re.findall(r"Install location:\s+(\S+)", dry_run.stdout)
    assert locations, f"no install locations in:\n{dry_run.stdout}"
    for location in map(Path, locations):
        location.mkdir(parents=True, exist_ok=True)
        (location / "INSTALLATION_COMPLETE").touch()
        (location / "DEPENDENCIES_VALIDATED").touch()

    executable = _run(
        ["node", "-e", "console.log(require('playwright').chromium.executablePath())"],
        cwd=target, env=env, timeout=60,
    )
    assert executable.returncode == 0, executable.stderr
    launcher = Path(executable.stdout.strip())
    assert browsers in launcher.parents, launcher
    launcher.parent.mkdir(parents=True, exist_ok=True)
    # Playwright starts it "headed" (see JLAB_BROWSER_HEADLESS below); it runs headless.
    launcher.write_text(f'#!/bin/sh\nexec {CHROMIUM} {" ".join(CHROMIUM_ARGS)} "$@"\n')
    launcher.chmod(launcher.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_labextension_is_installed_enabled_and_ok():
    listing = _run(_jupyter("labextension", "list"), timeout=120)
    lines = ANSI.sub("", listing.stdout + listing.stderr).splitlines()
    ours = [line for line in lines if line.strip().startswith("lightning-magic ")]
    assert ours, (
        "The lightning-magic labextension is not installed in this environment; "
        "`pip install --no-deps .` builds and installs it.\n" + "\n".join(lines))
    assert "enabled" in ours[0] and "OK" in ours[0], ours[0]
    assert "(python, lightning_magic)" in ours[0], ours[0]


def test_jupyterlab_browser_check_passes(tmp_path):
    from jupyterlab.commands import get_app_dir

    target = Path(get_app_dir()) / "browser_test"
    browsers = tmp_path / "browsers"
    _install_browser_check_playwright(target)
    _register_debian_chromium(target, browsers)

    screenshots = ARTIFACTS / "browser-check"
    env = {
        **_playwright_env(browsers),
        "JLAB_BROWSER_HEADLESS": "false",
        "JLAB_BROWSER_CHECK_OUTPUT": str(screenshots),
    }
    command = [sys.executable, "-m", "jupyterlab.browser_check"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    done = _run(command, env=env, cwd=tmp_path, timeout=280)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"jupyterlab.browser_check failed:\n{output[-6000:]}"
    assert "Browser test complete" in output, output[-6000:]
    assert "lightning_magic | extension was successfully loaded" in output, output[-6000:]
