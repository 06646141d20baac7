"""Start JupyterLab (or a bare Jupyter server) with the NVML stand-in installed in-process, so
that ``/gpu-status`` reports GPUs on a machine without an NVIDIA driver. For browser tests of
the sidebar panel and for screenshots; never for real use.

Usage::

    python tests/support/serve_with_nvml_standin.py [--nvml SCENARIO] [lab|server] [JUPYTER ARGS...]

SCENARIO is ``two-gpus`` (default: an A100 that reports every field, busy, with this server's
process on it, and an RTX 3090 that reports no power, fan or ECC: "n/a" in the panel) or
``no-nvml`` (the NVML library is missing: the panel's "unavailable" state). ``lab`` (default)
runs ``jupyter lab``, ``server`` runs ``jupyter server``; every other argument is passed on, e.g.::

    python tests/support/serve_with_nvml_standin.py lab --no-browser --port 8899 \\
        --IdentityProvider.token=secret --ServerApp.root_dir=/tmp/nb

The A100's utilization, memory and power change every second, so sparklines move.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from nvml_standin import GIB, SCENARIOS, FakeNvml, install  # noqa: E402

USAGE = __doc__.split("Usage::", 1)[1].strip().splitlines()[0]


def parse(argv: list[str]) -> tuple[str, str, list[str]]:
    scenario, app = "two-gpus", "lab"
    if argv[:1] == ["--nvml"]:
        scenario, argv = (argv[1] if len(argv) > 1 else ""), argv[2:]
    elif argv and argv[0].startswith("--nvml="):
        scenario, argv = argv[0].split("=", 1)[1], argv[1:]
    if scenario not in SCENARIOS:
        raise SystemExit(f"Unknown --nvml scenario {scenario!r}; choose one of "
                         f"{', '.join(SCENARIOS)}.\nUsage: {USAGE}")
    if argv[:1] in (["lab"], ["server"]):
        app, argv = argv[0], argv[1:]
    return scenario, app, argv


def keep_changing(fake: FakeNvml) -> None:
    """Vary the first GPU's load once a second, like a training run would."""
    busy = fake.gpus[0]
    stop = threading.Event()
    step = 0
    while not stop.wait(1.0):
        step += 1
        wave = (math.sin(step / 4) + 1) / 2
        busy.utilization_gpu = round(55 + 40 * wave)
        busy.utilization_memory = round(20 + 30 * wave)
        busy.memory_used = round((26 + 8 * wave) * GIB)
        busy.power_draw_mw = round(200_000 + 150_000 * wave)


def main(argv: list[str]) -> None:
    scenario, app, rest = parse(argv)
    fake = install(SCENARIOS[scenario]())
    if fake.gpus:
        fake.gpus[0].processes = [(os.getpid(), 6 * GIB)]
        threading.Thread(target=keep_changing, args=(fake,), daemon=True).start()
    if app == "lab":
        from jupyterlab.labapp import LabApp as App
    else:
        from jupyter_server.serverapp import ServerApp as App
    App.launch_instance(argv=rest)


if __name__ == "__main__":
    main(sys.argv[1:])
