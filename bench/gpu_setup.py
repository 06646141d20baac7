"""The Python that `make gpu-check` runs in, and the wheels it needs where there is no network.

A GPU machine's image usually has a CUDA build of torch and Lightning, but not IPython, Jupyter's
packages or pytest-timeout, and it may have no network at all. So:

- ``.venv/gpu-check`` is a virtual environment that sees every package of the interpreter that
  runs the check (a ``.pth`` file names that interpreter's site-packages, also where that
  interpreter is itself a virtual environment), and gets only what is missing;
- what is missing comes from ``.whl/`` when it holds wheels (``--no-index``), else from the
  package index. ``python3 bench/gpu_check.py --download-wheels`` fills ``.whl/`` on a machine
  with network, for the GPU machine's Python (``--wheel-python``, default 3.12) on x86-64 Linux:
  every package the check needs but torch and Lightning, which a GPU image is expected to have.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv" / "gpu-check"  # git-ignored with .venv/; make clean removes it
WHEELS = ROOT / ".whl"  # git-ignored; filled by --download-wheels
# what the gpu-marked test files import beyond the package's own dependencies
TEST_NEEDS = ("pytest", "pytest-timeout", "nbclient", "nbformat", "jsonschema")
# expected on a GPU image, and never fetched as wheels (a CUDA torch is gigabytes)
IMAGE_HAS = ("torch", "lightning")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64")

Run = Callable[..., "tuple[int, str]"]


def _name(requirement: str) -> str:
    for mark in "<>=!~[; ":
        requirement = requirement.split(mark)[0]
    return requirement.strip().lower()


def requirements() -> list[str]:
    """The package's dependencies and the test packages the gpu-marked tests import."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tests = [d for d in project["optional-dependencies"]["test"] if _name(d) in TEST_NEEDS]
    return list(project["dependencies"]) + tests


def wheel_requirements() -> list[str]:
    return [r for r in requirements() if _name(r) not in IMAGE_HAS]


def have_wheels() -> bool:
    return WHEELS.is_dir() and any(WHEELS.glob("*.whl"))


def download_wheels(run: Run, python_version: str) -> int:
    """Into .whl/: the wheels for a GPU machine without network (run where there is one)."""
    WHEELS.mkdir(exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--only-binary=:all:",
               "--python-version", python_version, "--implementation", "cp",
               *[arg for platform in PLATFORMS for arg in ("--platform", platform)],
               "-d", str(WHEELS), *wheel_requirements()]
    status, _ = run(command, 600)
    size = sum(p.stat().st_size for p in WHEELS.glob("*.whl"))
    print(f"{len(list(WHEELS.glob('*.whl')))} wheels, {size / 2**20:.1f} MiB, in {WHEELS}" if
          status == 0 else f"pip download failed (exit {status}): see above")
    return status


def site_dirs(python: str) -> list[str]:
    """The site-packages of ``python`` (its own, then its user site)."""
    code = ("import site, sys; paths = site.getsitepackages() + "
            "([site.getusersitepackages()] if site.ENABLE_USER_SITE else []); "
            "print('\\n'.join(p for p in paths if p))")
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, timeout=60)
    return [line for line in done.stdout.splitlines() if os.path.isdir(line)]


def make_venv(run: Run, say: Callable[[str], None]) -> Path | None:
    """VENV, seeing the running interpreter's packages; its python, or None."""
    python = VENV / "bin" / "python"
    if not python.exists():
        status, _ = run([sys.executable, "-m", "venv", str(VENV)], 180)
        if status != 0:  # no ensurepip here: the running interpreter's pip installs into it
            status, _ = run([sys.executable, "-m", "venv", "--clear", "--without-pip",
                             str(VENV)], 120)
        if status != 0:
            say(f"Could not make {VENV}: see gpu_check.log.")
            return None
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()"
                           "['purelib'])"], capture_output=True, text=True, timeout=60)
    purelib = Path(site.stdout.strip())
    if site.returncode != 0 or not purelib.is_absolute() or not purelib.is_dir():
        say(f"{python} does not run ({site.stderr.strip()[-200:]}): remove {VENV} and try again.")
        return None
    (purelib / "gpu_check_image.pth").write_text("\n".join(site_dirs(sys.executable)) + "\n")
    return python


def _pip(python: Path) -> list[str]:
    """The venv's own pip when it has one (it sees the image's packages through the .pth);
    else the running interpreter's, aimed at the venv (pip 22.3 and newer)."""
    has_pip = subprocess.run([str(python), "-c", "import pip"], capture_output=True,
                             timeout=60).returncode == 0
    if has_pip and not (VENV / "bin" / "pip").exists():
        has_pip = False  # the image's pip, seen through the .pth: it would install there
    return [str(python), "-m", "pip"] if has_pip else \
        [sys.executable, "-m", "pip", "--python", str(python)]


def install(run: Run, python: Path, specs: list[str], timeout: float,
            index_args: list[str] | None = None, wheels: bool = True) -> int:
    """``specs`` into ``python``'s environment; what is already there (the image's packages too)
    stays. From .whl/ alone when it holds wheels and ``wheels`` is true (torch never is)."""
    source = ["--no-index", "--find-links", str(WHEELS)] if wheels and have_wheels() else []
    command = [*_pip(python), "install", "--quiet", "--disable-pip-version-check", *source,
               *(index_args or []), *specs]
    status, _ = run(command, timeout)
    return status
