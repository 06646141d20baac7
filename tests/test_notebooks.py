"""The notebooks in notebooks/, executed top to bottom in a real Jupyter kernel (nbclient)."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"


def execute(name: str, workdir: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return notebook


def text_of(cell) -> str:
    parts = []
    for output in cell.get("outputs", []):
        if output.get("output_type") == "stream":
            parts.append(output["text"])
        elif "data" in output:
            parts.append(output["data"].get("text/plain", ""))
            parts.append(output["data"].get("text/html", ""))
    return "".join(parts)


def cell_with(notebook, marker: str):
    return next(c for c in notebook.cells if c.cell_type == "code" and marker in c.source)


def test_quickstart(kernel_env, tmp_path):
    notebook = execute("quickstart.ipynb", tmp_path)
    training = cell_with(notebook, "%%lightning_train")
    streams = [o for o in training.outputs if o["output_type"] == "stream"]
    stream_text = "".join(o["text"] for o in streams)
    assert "Training Classifier on 2 CPU processes" in stream_text
    assert len(stream_text.splitlines()) <= 6, stream_text  # notes only, no per-rank noise
    result = next(o for o in training.outputs if o["output_type"] == "execute_result")
    assert "TrainingRun" in result["data"]["text/html"] and "finished" in result["data"]["text/html"]

    accuracy = float(re.search(r"trained model in the kernel: ([0-9.]+)",
                               text_of(cell_with(notebook, "model.eval()"))).group(1))
    assert accuracy > 0.6  # four well separated classes: the weights that came back learned them
    summary = text_of(next(c for c in notebook.cells if "summary" in c.metadata.get("tags", [])))
    assert "status:   finished" in summary and "val_acc=" in summary and "elapsed:" in summary
    assert (tmp_path / "lightning_runs").is_dir()
    status = text_of(cell_with(notebook, "%gpu_status"))
    assert "CPU" in status or "cpu" in status


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")
                                        if p.name not in ("quickstart.ipynb", "scale-out.ipynb")
                                        and not p.name.endswith(".executed.ipynb")))
def test_other_notebooks_run_clean(kernel_env, tmp_path, name):
    """Every cell runs, and only those tagged raises-exception end in error
    (scale-out.ipynb is executed, with more checks, by test_export.py)."""
    notebook = execute(name, tmp_path)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            assert output["output_type"] != "error" or "raises-exception" in \
                cell.metadata.get("tags", []), (name, cell.source[:80])


def training_notebook(max_steps: int) -> nbformat.NotebookNode:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [
        nbformat.v4.new_code_cell("%load_ext lightning_magic"),
        nbformat.v4.new_code_cell(
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
            "        self.log('lr_scale', 1.0 / (1 + self.global_step))\n"
            "        return loss\n"
            "    def validation_step(self, batch, batch_idx):\n"
            "        x, y = batch\n"
            "        self.log('val_loss', torch.nn.functional.mse_loss(self.layer(x), y), "
            "sync_dist=True)\n"
            "    def configure_optimizers(self):\n"
            "        return torch.optim.SGD(self.parameters(), lr=0.05)\n\n"
            "X = torch.randn(256, 8)\ndata = TensorDataset(X, X.sum(1, keepdim=True))"),
        nbformat.v4.new_code_cell(
            f"%%lightning_train --accelerator cpu --devices 2 --max-steps {max_steps}\n"
            "model = Net()\ntrain_loader = DataLoader(data, batch_size=16)\n"
            "val_loader = DataLoader(data, batch_size=64)"),
    ]
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    return notebook


class RecordingClient(NotebookClient):
    """nbclient, keeping every message the kernel sent (to see displays updated in place)."""

    def process_message(self, msg, cell, cell_index):
        self.resources.setdefault("messages", []).append(msg)
        return super().process_message(msg, cell, cell_index)


def test_live_view_leaves_a_summary_with_charts_and_bounded_output(kernel_env, tmp_path):
    sizes = []
    for steps in (320, 3200):  # 40 and 400 epochs of 8 steps
        notebook = training_notebook(steps)
        client = RecordingClient(notebook, timeout=300, kernel_name="python3",
                                 resources={"metadata": {"path": str(tmp_path)}})
        client.execute()
        views = [m["content"] for m in client.resources["messages"]
                 if m["msg_type"] in ("display_data", "update_display_data")
                 and m["content"].get("transient", {}).get("display_id")]  # the live view
        live = [v["data"].get("text/html", "") for v in views]
        assert len({v["transient"]["display_id"] for v in views}) == 1  # one view, in place
        assert any("<svg" in html and "train_loss" in html and "epoch" in html for html in live)
        assert len(live) < steps / 2  # throttled: far fewer renders than steps
        training = notebook.cells[-1]
        streams = "".join(o["text"] for o in training.outputs if o["output_type"] == "stream")
        assert len(streams.splitlines()) <= 5, streams  # the notes, not per-step progress lines
        html = "".join(o.get("data", {}).get("text/html", "") for o in training.outputs)
        assert "<svg" in html
        for name in ("train_loss", "val_loss", "lr_scale", "epoch"):
            assert name in html, name
        assert "finished" in html
        sizes.append(len(nbformat.writes(notebook)))
    assert sizes[1] < 1.25 * sizes[0], \
        f"a 10x longer run grew the notebook from {sizes[0]} to {sizes[1]} bytes"


def test_rank_output_in_a_kernel(kernel_env, tmp_path):
    """Rank 0 prints into the cell, other ranks do not; a warning from every rank is kept once;
    --progress bar shows Lightning's bar from rank 0."""
    notebook = training_notebook(16)
    notebook.cells[-1] = nbformat.v4.new_code_cell(
        "%%lightning_train --accelerator cpu --devices 2 --max-epochs 1 --progress none\n"
        "import warnings\n"
        "class Chatty(Net):\n"
        "    def training_step(self, batch, batch_idx):\n"
        "        if batch_idx == 0:\n"
        "            print(f'hello from rank {self.global_rank}')\n"
        "            warnings.warn('the same advice from every rank')\n"
        "        return super().training_step(batch, batch_idx)\n"
        "model = Chatty()\ntrain_loader = DataLoader(data, batch_size=16)")
    notebook.cells.append(nbformat.v4.new_code_cell(
        "print(sum('the same advice from every rank' in w for w in lightning_run.warnings))"))
    notebook.cells.append(nbformat.v4.new_code_cell(
        "%%lightning_train --accelerator cpu --devices 2 --max-epochs 1 --progress bar\n"
        "model = Net()\ntrain_loader = DataLoader(data, batch_size=16)"))
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    chatty, count, bar = notebook.cells[-3], notebook.cells[-2], notebook.cells[-1]
    shown = text_of(chatty)
    assert "hello from rank 0" in shown and "hello from rank 1" not in shown
    assert "the same advice from every rank" not in shown
    assert text_of(count).strip() == "1"
    assert "Epoch 0" in text_of(bar)


def test_a_failure_names_the_cell_and_line_the_notebook_shows(kernel_env, tmp_path):
    """Through a real kernel on the installed IPython (9 counts a cell before it runs): the
    report names the training cell's own In [N], and the line as the editor numbers it (the
    %%lightning_train line is line 1)."""
    notebook = training_notebook(4)
    notebook.cells[-1] = nbformat.v4.new_code_cell(
        "%%lightning_train --accelerator cpu --devices 2 --max-steps 4\n"
        "class Fails(Net):\n"
        "    def training_step(self, batch, batch_idx):\n"
        "        raise ValueError('raised in the training cell')\n"
        "model = Fails()\ntrain_loader = DataLoader(data, batch_size=16)",
        metadata={"tags": ["raises-exception"]})
    notebook.cells.append(nbformat.v4.new_code_cell("print(lightning_run.report.what_happened)"))
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    training, told = notebook.cells[-2], notebook.cells[-1]
    assert training.execution_count == 3
    assert "cell In [3], line 4" in text_of(told), text_of(told)
    assert "cell In [4]" not in text_of(training) + text_of(told)
