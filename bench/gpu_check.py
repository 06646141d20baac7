"""Every GPU claim in one run, for a GPU machine that is there only now and then (`make gpu-check`).

On a bare machine with an NVIDIA driver and Python 3.11+ it:
  1. says what the machine is (GPU, driver, CPUs, memory, Python);
  2. makes `.venv/gpu-check`, which sees the packages of the Python that runs this script (so an
     image's CUDA torch is used as it is), and installs what is missing (see gpu_setup): a CUDA
     build of torch when the torch there has none ($TORCH, default `torch`, with
     $TORCH_PIP_ARGS, e.g. `--index-url <PyTorch's CUDA wheel index>`), then the package's own
     dependencies and the test packages, from `.whl/` when it holds wheels (a machine without
     network: fill it elsewhere with `--download-wheels`), else from the package index;
  3. runs every `gpu`-marked test, from the source tree;
  4. runs the GPU benchmarks: bench/gpu_parity.py, and bench/sharded.py on one GPU (a 1-rank
     ModelParallelStrategy run against the same Trainer under torchrun);
  5. prints it all as a bench/RESULTS.md section, and writes that section and the full log to
     $OUT (or --out DIR) when set: gpu_check.md, gpu_check.log.
It keeps to --budget seconds (default 470: under 8 minutes with the set-up), each step with its
share. Where no NVIDIA GPU is found it says so after step 1 and exits 0, having installed nothing.

    python3 bench/gpu_check.py [--budget 470] [--out DIR]
    python3 bench/gpu_check.py --download-wheels [--wheel-python 3.12]   # where there is network
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import gpu_setup

ROOT = gpu_setup.ROOT
# the share of what is left that each step may take
STEPS = (("gpu-marked tests", 0.55), ("bench/gpu_parity.py", 0.55), ("bench/sharded.py", 1.0))


class Log:
    def __init__(self, out: Path | None) -> None:
        self.out, self.lines, self.section = out, [], []

    def say(self, text: str = "", section: bool = True) -> None:
        print(text, flush=True)
        self.lines.append(text)
        if section:
            self.section.append(text)

    def write(self) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "gpu_check.md").write_text("\n".join(self.section) + "\n")
        (self.out / "gpu_check.log").write_text("\n".join(self.lines) + "\n")


def nvidia_smi() -> list[str]:
    """One line per GPU: name, memory, driver (empty where there is no driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version,"
                               "compute_cap", "--format=csv,noheader"], capture_output=True,
                              text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] \
        if done.returncode == 0 else []


def memory_gib() -> str:
    try:
        with open("/proc/meminfo") as handle:
            kib = int(next(line for line in handle if line.startswith("MemTotal")).split()[1])
        return f"{kib / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        return "unknown memory"


def run(log: Log, command: list[str], timeout: float,
        env: dict[str, str] | None = None) -> tuple[int, str]:
    """(exit status, output); the output goes to the log, not the section."""
    log.say(f"$ {' '.join(command)}", section=False)
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True,
                              timeout=max(1.0, timeout), env=env)
        output, status = done.stdout + done.stderr, done.returncode
    except subprocess.TimeoutExpired as exc:
        output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) \
            else (exc.stdout or "")
        status = 124
        output += f"\n(stopped after {timeout:.0f} s, its share of the budget)"
    log.say(output.rstrip(), section=False)
    return status, output


def prepare_python(log: Log, deadline: float) -> Path | None:
    """The interpreter of gpu_setup.VENV, with a CUDA torch and the test dependencies, or None."""
    def step(command: list[str], timeout: float) -> tuple[int, str]:
        return run(log, command, min(timeout, deadline - time.time()))

    python = gpu_setup.make_venv(step, log.say)
    if python is None:
        return None
    status, output = run(log, [str(python), "-c", "import torch; print(torch.version.cuda or '')"],
                         120)
    lines = output.strip().splitlines()
    if status != 0 or not lines or not lines[-1].strip():
        torch_spec = os.environ.get("TORCH") or "torch"
        extra = os.environ.get("TORCH_PIP_ARGS", "").split()
        if gpu_setup.install(step, python, [torch_spec], deadline - time.time(), extra,
                             wheels=False) != 0:
            log.say(f"Could not install a CUDA build of torch ({torch_spec} {' '.join(extra)}): "
                    "see gpu_check.log. Give TORCH and TORCH_PIP_ARGS (a CUDA wheel index) to "
                    "make gpu-check, or run it with a Python that has one (PYTHON=...).")
            return None
    source = f"the wheels in {gpu_setup.WHEELS.name}/" if gpu_setup.have_wheels() else \
        "the package index"
    if gpu_setup.install(step, python, gpu_setup.requirements(), deadline - time.time()) != 0:
        log.say(f"Could not install what the tests need from {source} (see gpu_check.log); "
                "what is there is used. Without network, bring the wheels: `python3 "
                "bench/gpu_check.py --download-wheels` on a machine with network fills "
                f"{gpu_setup.WHEELS.name}/.")
    else:
        log.say(f"Set-up: {python.parent.parent.relative_to(ROOT)} over {sys.executable}'s "
                f"packages, what was missing from {source}.")
        log.say()
    return python


def summary_line(output: str) -> str:
    lines = [line for line in output.splitlines() if " passed" in line or " failed" in line
             or " skipped" in line or " error" in line]
    return lines[-1].strip("= ") if lines else "no pytest summary (see gpu_check.log)"


def table(output: str) -> list[str]:
    """The benchmark's own heading and markdown table."""
    lines = output.rstrip().splitlines()
    rows = [i for i, line in enumerate(lines) if line.startswith("|")]
    if not rows:
        return [f"no table; last line: {lines[-1] if lines else '(nothing)'}"]
    start = rows[0] - 1 if rows[0] > 0 else rows[0]
    return lines[start:rows[-1] + 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=470.0, help="seconds for everything")
    parser.add_argument("--out", default=os.environ.get("OUT") or None)
    parser.add_argument("--python", help="use this interpreter (with torch and the tests' "
                        f"packages) instead of making {gpu_setup.VENV.relative_to(ROOT)}")
    parser.add_argument("--download-wheels", action="store_true",
                        help=f"only fill {gpu_setup.WHEELS.name}/ with the wheels a GPU machine "
                             "without network needs (run where there is network)")
    parser.add_argument("--wheel-python", default="3.12",
                        help="the GPU machine's Python version, for --download-wheels")
    parser.add_argument("--force", action="store_true",
                        help="go on without a GPU (a dry run: the tests and benchmarks skip)")
    args = parser.parse_args()
    if args.download_wheels:
        return gpu_setup.download_wheels(
            lambda command, timeout: run(Log(None), command, timeout), args.wheel_python)
    started = time.time()
    deadline = started + args.budget
    log = Log(Path(args.out) if args.out else None)
    gpus = nvidia_smi()
    today = datetime.date.today().isoformat()
    log.say(f"## {today} — GPU check (`make gpu-check`)")
    log.say()
    log.say(f"Machine: {'; '.join(gpus) if gpus else 'no NVIDIA GPU'} "
            f"(name, memory, driver, compute capability); {os.cpu_count()} CPUs, {memory_gib()}; "
            f"{platform.system()} {platform.machine()}, Python {platform.python_version()}.")
    log.say()
    if not gpus and not args.force:
        log.say("Skipped: nvidia-smi finds no NVIDIA GPU here, so there is nothing to check and "
                "nothing was installed. Run `make gpu-check` on a machine with one.")
        log.write()
        return 0
    python = Path(args.python) if args.python else \
        prepare_python(log, started + args.budget * 0.35)
    if python is None:
        log.write()
        return 1
    versions = run(log, [str(python), "-c", "import torch, lightning; print(f'torch "
                         "{torch.__version__} (CUDA {torch.version.cuda}), lightning "
                         "{lightning.__version__}')"], 60)[1].strip().splitlines()
    log.say(f"Software: {versions[-1] if versions else 'unknown'}; set-up took "
            f"{time.time() - started:.0f} s.")
    log.say()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p), PYTHONUNBUFFERED="1")
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text())
    commands = {
        "gpu-marked tests": [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m",
                             "gpu", *files],
        "bench/gpu_parity.py": [str(python), "bench/gpu_parity.py"],
        "bench/sharded.py": [str(python), "bench/sharded.py", "--accelerator", "gpu",
                             "--devices", "1", "--batches", "300", "--width", "2048"],
    }
    failed = False
    for name, share in STEPS:
        left = deadline - time.time()
        if left < 20:
            log.say(f"### {name}\n\nNot run: the budget was spent.\n")
            failed = True
            continue
        step_started = time.time()
        status, output = run(log, commands[name], left * share, env)
        log.say(f"### {name} ({time.time() - step_started:.0f} s, exit {status})")
        log.say()
        if name == "gpu-marked tests":
            log.say(f"{len(files)} files: {summary_line(output)}")
            for line in output.splitlines():
                if line.startswith(("FAILED", "ERROR", "SKIPPED")):
                    log.say(f"- {line}")
        else:
            for line in table(output):
                log.say(line)
        log.say()
        failed |= status != 0
    log.say(f"Total {time.time() - started:.0f} s.")
    log.write()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
