"""An error in a ``%%lightning_train`` cell's own code, in a real kernel (nbclient): the
traceback names the cell's ``In [N]`` and line as the editor shows them, shows the user's own
lines, starts at the cell (none of the magic's frames), and a misspelled name gets Python's
"Did you mean" hint."""

from __future__ import annotations

import re

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


def run_notebook(tmp_path, *sources):
    cell = nbformat.v4.new_code_cell
    notebook = nbformat.v4.new_notebook(
        cells=[cell(s, metadata={"tags": ["raises-exception"]}) for s in sources])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    return notebook


def shown_traceback(cell) -> str:
    errors = [o for o in cell.outputs if o["output_type"] == "error"]
    assert errors, cell.outputs
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(errors[0]["traceback"]))


def test_a_name_error_on_the_last_line_shows_the_cell_as_the_editor_does(kernel_env, tmp_path):
    notebook = run_notebook(
        tmp_path,
        "%load_ext lightning_magic",
        "model = 1",
        "%%lightning_train --accelerator cpu --devices 1\nx = 1\nprint(modle)",
    )
    training = notebook.cells[2]
    assert training.execution_count == 3
    shown = shown_traceback(training)
    assert "Cell In[3], line 3" in shown, shown
    assert "Cell In[4]" not in shown, shown
    assert "----> 3 print(modle)" in shown, shown
    assert "      1 %%lightning_train --accelerator cpu --devices 1" in shown, shown
    assert "__lightning_magic_cell_value__" not in shown, shown
    for own in ("magic.py", "train/run.py", "train/kernel/execute.py"):
        assert own not in shown, shown
    assert shown.rstrip().endswith("Did you mean: 'model'?"), shown
