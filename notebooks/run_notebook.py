"""Execute a notebook in a real Jupyter kernel and print its summary.

    python run_notebook.py quickstart.ipynb [--timeout SECONDS]

The executed copy is written next to it as NAME.executed.ipynb. The text printed by cells
tagged "summary" is shown at the end.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError


def summary_text(notebook: nbformat.NotebookNode) -> str:
    lines = []
    for cell in notebook.cells:
        if "summary" in cell.get("metadata", {}).get("tags", []):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "stream":
                    lines.append(output.get("text", ""))
    return "".join(lines).rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    args = parser.parse_args()
    notebook = nbformat.read(args.notebook, as_version=4)
    out = args.notebook.with_suffix(".executed.ipynb")
    client = NotebookClient(notebook, timeout=args.timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(args.notebook.parent.resolve())}})
    started = time.perf_counter()
    print(f"Executing {args.notebook} in a Jupyter kernel ...", flush=True)
    try:
        client.execute()
    except CellExecutionError as exc:
        nbformat.write(notebook, out)
        print(f"A cell failed; the executed notebook is {out.resolve()}\n{exc}", file=sys.stderr)
        return 1
    nbformat.write(notebook, out)
    print(summary_text(notebook))
    print(f"Executed in {time.perf_counter() - started:.1f} s; the executed notebook is "
          f"{out.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
