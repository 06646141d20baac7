"""What a training cell shows in a real kernel (nbclient), as JupyterLab shows it: rank 0's notes
in the summary, a line every rank logs shown once, the cell's other fits named, the callbacks of
a cell without a Trainer used, and ``--progress bar`` as one bar updated in place.

One notebook runs once in one kernel; each test reads its own cell (a cell that fails fails its
own test, not the others)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from support.streams import jupyterlab_lines, terminal_lines

pytestmark = pytest.mark.slow

SETUP = '''
%load_ext lightning_magic
import torch
import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, LearningRateFinder
from torch.utils.data import DataLoader, TensorDataset


class Net(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)
        self.lr = 0.01

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1])
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", torch.nn.functional.mse_loss(self.layer(batch[0]), batch[1]),
                 sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


class Wide(Net):
    """Twelve more layers than it uses: a long model summary table."""

    def __init__(self):
        super().__init__()
        for index in range(12):
            setattr(self, f"extra{index}", torch.nn.Linear(4, 4))


X = torch.randn(64, 4)
data = TensorDataset(X, X.sum(1, keepdim=True))
train_loader = DataLoader(data, batch_size=8)  # 4 batches a rank with 2 ranks
val_loader = DataLoader(data, batch_size=8)
'''

TWO_RANKS = "%%lightning_train --accelerator cpu --devices 2"
QUIET = "logger=False, enable_checkpointing=False, num_sanity_val_steps=0"
CELLS = {
    "batch": f"{TWO_RANKS}\nmodel = Net()\n"
             f"trainer = pl.Trainer(max_epochs=1, {QUIET})\n"
             "trainer.fit(model, train_loader, val_loader)",
    # 5 steps are too few for a suggestion: every rank's LR finder logs that it has none
    "lr_finder": f"{TWO_RANKS}\nmodel = Net()\n"
                 f"trainer = pl.Trainer(max_epochs=1, {QUIET},\n"
                 "                     callbacks=[LearningRateFinder(num_training_steps=5)])\n"
                 "trainer.fit(model, train_loader, val_loader)",
    "two_fits": f"{TWO_RANKS}\nmodel = Net()\n"
                f"trainer = pl.Trainer(max_epochs=1, {QUIET})\n"
                "trainer.fit(model, train_loader, val_loader)\n"
                f"trainer = pl.Trainer(max_epochs=2, {QUIET})\n"
                "trainer.fit(model, train_loader, val_loader)",
    "two_fits_bound": "print(len(lightning_run.earlier), lightning_run.earlier[0].max_epochs, "
                      "lightning_run.max_epochs)",
    # no Trainer: the magic makes it, and it stops at the first validation (threshold reached)
    "callbacks": f"{TWO_RANKS} --max-epochs 3\nmodel = Net()\n"
                 "train_loader = DataLoader(data, batch_size=8)\n"
                 "val_loader = DataLoader(data, batch_size=8)\n"
                 "callbacks = [EarlyStopping('val_loss', stopping_threshold=1e9)]",
    "callbacks_used": "print(lightning_run.epoch_reached(), lightning_run.max_epochs)",
    "bar": f"{TWO_RANKS} --progress bar\nmodel = Net()\n"
           f"trainer = pl.Trainer(max_epochs=3, {QUIET})\n"
           "trainer.fit(model, train_loader, val_loader)",
    # Lightning's model summary table: shown as a fit starts, as plain Lightning logs it
    "model_table": f"{TWO_RANKS} --progress none\nmodel = Net()\n"
                   f"trainer = pl.Trainer(max_epochs=1, {QUIET})\n"
                   "trainer.fit(model, train_loader)",
    "long_model_table": "%%lightning_train --accelerator cpu --devices 1 --progress none\n"
                        "model = Wide()\n"
                        f"trainer = pl.Trainer(max_epochs=1, {QUIET})\n"
                        "trainer.fit(model, train_loader)",
    "no_model_table": f"{TWO_RANKS} --progress none\nmodel = Net()\n"
                      f"trainer = pl.Trainer(max_epochs=1, enable_model_summary=False, {QUIET})\n"
                      "trainer.fit(model, train_loader)",
}
# Plain Lightning's bar, written by a script to a pipe: its forked rank 0 writes the bytes in
# order. (In a kernel, ipykernel forwards a forked child's writes and under load delivers them
# out of order, so a reference read there is not one.)
PLAIN_BAR = (SETUP.replace("%load_ext lightning_magic", "") +
             "trainer = pl.Trainer(max_epochs=3, accelerator='cpu', devices=2, "
             f"strategy='ddp_notebook', {QUIET})\n"
             "trainer.fit(Net(), train_loader, val_loader)\n")


@pytest.fixture(scope="module")
def cells(tmp_path_factory) -> dict[str, nbformat.NotebookNode]:
    import lightning_magic

    workdir = tmp_path_factory.mktemp("cell-output")
    package_root = str(Path(lightning_magic.__file__).resolve().parent.parent)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(SETUP)] + [
        nbformat.v4.new_code_cell(source) for source in CELLS.values()])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    with pytest.MonkeyPatch.context() as patch:  # the kernel imports this lightning_magic
        patch.setenv("PYTHONPATH", os.pathsep.join(
            p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
        NotebookClient(notebook, timeout=300, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(workdir)}}).execute()
    return dict(zip(CELLS, notebook.cells[1:]))


def summary(cell) -> dict[str, str]:
    """The cell's value as the notebook shows it: its text/plain and its text/html."""
    results = [o for o in cell.outputs if o["output_type"] == "execute_result"]
    assert results, cell.outputs
    result = results[0]
    return {kind: result["data"][kind] for kind in ("text/plain", "text/html")}


def stream(cell, name: str = "stdout") -> str:
    errors = [o for o in cell.outputs if o["output_type"] == "error"]
    assert not errors, "".join(errors[0]["traceback"])
    return "".join(o["text"] for o in cell.outputs
                   if o["output_type"] == "stream" and o["name"] == name)


def test_the_summary_says_the_effective_batch_size_and_the_threads(cells):
    """Rank 0 knows the batch size and its threads; the summary shows them, in both forms."""
    shown = summary(cells["batch"])
    for kind, text in shown.items():
        assert "Effective batch size: 16 (8 x 2 processes)" in text, (kind, text)
        assert "CPU thread" in text and "torch.get_num_threads()" in text, (kind, text)
    assert "Effective batch size" not in stream(cells["batch"])  # shown once, in the summary


def test_a_line_every_rank_logs_reaches_the_cell_once(cells):
    """Lightning's LR finder logs from every rank; the cell shows rank 0's line, once."""
    output = stream(cells["lr_finder"], "stderr") + stream(cells["lr_finder"])
    assert output.count("Failed to compute suggestion for learning rate") == 1, output


def test_the_summary_names_the_cells_earlier_fits(cells):
    shown = summary(cells["two_fits"])
    for kind, text in shown.items():
        assert "earlier fits" in text and "lightning_run.earlier" in text, (kind, text)
    assert stream(cells["two_fits_bound"]).split() == ["1", "1", "2"]


def test_a_cell_without_a_trainer_trains_with_the_callbacks_it_binds(cells):
    assert stream(cells["callbacks_used"]).split() == ["0", "3"]  # EarlyStopping ended it
    assert "takes its callbacks (EarlyStopping) as Trainer(callbacks=...)" in \
        stream(cells["callbacks"])


def plain_lightning_bar(workdir: Path) -> str:
    script = workdir / "plain_bar.py"
    script.write_text(PLAIN_BAR)
    done = subprocess.run([sys.executable, str(script)], cwd=workdir, capture_output=True,
                          timeout=300)  # bytes: text mode would turn tqdm's "\r" into "\n"
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout.decode()


def test_progress_bar_is_one_bar_updated_in_place_as_plain_lightning_leaves_it(cells, tmp_path):
    """Plain Lightning's bar in a terminal (where tqdm's cursor moves work) leaves one line for
    a 3-epoch fit; the magic's, as JupyterLab shows it, leaves the same one line, and its
    stream is that many lines (every other update is a carriage return)."""
    bar_cell, plain = cells["bar"], plain_lightning_bar(tmp_path)
    text = stream(bar_cell)
    notes, bar_text = text[:text.index("\r")].splitlines(), text[text.index("\r"):]
    shown = [line for line in jupyterlab_lines(bar_cell.outputs) if line not in notes]
    left_by_plain = terminal_lines(plain)
    assert len(shown) == len(left_by_plain) == 1, (shown, left_by_plain)
    for line in shown + left_by_plain:
        assert line.startswith("Epoch 2: 100%|██████████| 4/4"), line
    assert len(bar_text.rstrip("\n").split("\n")) == len(left_by_plain), repr(bar_text)


def shown_tables(cell) -> list[dict]:
    return [o["data"] for o in cell.outputs if o["output_type"] == "display_data"
            and "Total params" in o["data"].get("text/plain", "")]


def test_the_model_summary_table_is_shown_as_the_fit_starts_as_plain_lightning_shows_it(cells):
    """Plain Lightning logs the table at the start of each fit; the magic shows it there (after
    its notes, before training), whole when short, folded in <details> when long, and not when
    the cell's Trainer turned it off."""
    cell = cells["model_table"]
    tables = shown_tables(cell)
    assert len(tables) == 1, cell.outputs
    assert "| layer | Linear | 5 " in tables[0]["text/plain"]
    assert "<details" not in tables[0]["text/html"] and "Total params" in tables[0]["text/html"]
    kinds = [o["output_type"] for o in cell.outputs]
    assert kinds.index("stream") < kinds.index("display_data") < kinds.index("execute_result")
    long_table = shown_tables(cells["long_model_table"])
    assert len(long_table) == 1 and "extra11" in long_table[0]["text/plain"]
    assert long_table[0]["text/html"].startswith("<details")
    assert "Model summary: 245 parameters" in long_table[0]["text/html"]
    assert shown_tables(cells["no_model_table"]) == []
