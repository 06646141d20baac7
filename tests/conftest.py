"""Shared fixtures: a real IPython shell with the extension loaded, a scratch working
directory, and a check that no process outlives a run. The NVML stand-in (the only
stand-in of the suite) and other helpers live in support/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from support.nvml_standin import fake_nvml, make_fake_nvml, nvml_missing  # noqa: F401 - fixtures
from support.processes import live_children

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")


@pytest.fixture(scope="session")
def _shell():
    from IPython.testing.globalipapp import start_ipython

    shell = start_ipython()
    shell.run_line_magic("load_ext", "lightning_magic")
    return shell


@pytest.fixture
def ip(_shell, tmp_path, monkeypatch):
    """The real InteractiveShell, in an empty working directory, with a clean namespace."""
    monkeypatch.chdir(tmp_path)
    before = set(_shell.user_ns)
    yield _shell
    for name in set(_shell.user_ns) - before:
        del _shell.user_ns[name]


@pytest.fixture
def no_orphans():
    """Fails the test if a process it started is still alive at its end."""
    yield
    left = live_children()
    assert not left, f"processes left running: {[(p.pid, p.cmdline()[:3]) for p in left]}"


@pytest.fixture
def gpu_available():
    """The GPUs NVML sees; skips the test (with the reason) where there are none."""
    from lightning_magic.readings import list_gpus, nvml_status

    gpus = list_gpus()
    if not gpus:
        pytest.skip(f"no NVIDIA GPU: {nvml_status().get('reason') or 'NVML sees none'}")
    return gpus


@pytest.fixture
def kernel_env(monkeypatch):
    """Kernels started by the test import the same lightning_magic as the test itself."""
    import lightning_magic

    package_root = str(Path(lightning_magic.__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
