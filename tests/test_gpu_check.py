"""`make gpu-check` on a machine without a GPU, and the Python it would run in on one.

The check itself needs a GPU; here it must say so and install nothing. Its environment must see
the packages of the interpreter that runs it (a GPU image's CUDA torch, often in a virtual
environment of its own) and ask only for the rest.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import gpu_setup  # noqa: E402 - bench/ is not a package


@pytest.mark.skipif(Path("/dev/nvidia0").exists(), reason="this machine has a GPU")
def test_without_a_gpu_it_says_so_and_installs_nothing(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    section = (tmp_path / "gpu_check.md").read_text()
    assert section.startswith("## ") and "GPU check (`make gpu-check`)" in section
    assert "Machine: no NVIDIA GPU" in section
    assert "nothing was installed" in section
    assert "$ " not in (tmp_path / "gpu_check.log").read_text()  # no command was run


def test_what_it_installs_and_what_it_leaves_to_the_image():
    names = [gpu_setup._name(r) for r in gpu_setup.requirements()]
    assert {"ipython", "ipykernel", "jupyter-server", "pytest", "pytest-timeout"} <= set(names)
    wheels = [gpu_setup._name(r) for r in gpu_setup.wheel_requirements()]
    assert "torch" not in wheels and "lightning" not in wheels and "ipython" in wheels


def test_its_environment_sees_the_running_interpreters_packages(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_setup, "VENV", tmp_path / "gpu-check")
    said: list[str] = []

    def run(command, timeout):
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        return done.returncode, done.stdout + done.stderr

    python = gpu_setup.make_venv(run, said.append)
    assert python is not None and not said
    assert python.parent.parent == tmp_path / "gpu-check"
    # torch and IPython are not installed in it, yet import from the interpreter running the tests
    probe = subprocess.run([str(python), "-c", "import sys, torch, IPython; print(sys.prefix); "
                            "print(torch.__file__)"], capture_output=True, text=True, timeout=120)
    assert probe.returncode == 0, probe.stderr
    prefix, torch_file = probe.stdout.split()
    assert Path(prefix) == tmp_path / "gpu-check"
    assert not torch_file.startswith(str(tmp_path))
    # pip, asked for what is already there, installs nothing (no network needed)
    monkeypatch.setattr(gpu_setup, "WHEELS", tmp_path / "no-wheels")
    assert gpu_setup.install(run, python, ["torch", "ipython"], 120) == 0
    assert not list((tmp_path / "gpu-check").rglob("torch/__init__.py"))
