"""``--resume last`` against plain Lightning: the ``last.ckpt`` a run leaves holds the state of the
epoch's ModelCheckpoint (as Lightning's ``save_last=True`` does), so a resumed run knows its best
checkpoint and leaves no orphan with ``save_top_k=1``; a fit with nothing left to do says what
Lightning says; a checkpoint past ``max_epochs`` is refused before the fork with what to do; the
resumed run goes on in the folder it resumed from. Real IPython shell, real forked ranks."""

from __future__ import annotations

import glob
import os

import pytest
import torch
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from support.processes import live_children

pytestmark = pytest.mark.slow

DEFINITIONS = '''
import os, torch
import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset


class Reg(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch), sync_dist=True)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


generator = torch.Generator().manual_seed(0)
X = torch.randn(64, 8, generator=generator)
data = TensorDataset(X, X.sum(1, keepdim=True))
'''

HARDWARE = {"one process": "--accelerator cpu --devices 1",
            "two processes": "--accelerator cpu --devices 2"}
LOADERS = "train_loader = DataLoader(data, batch_size=16)\nval_loader = DataLoader(data, batch_size=32)"


@pytest.fixture
def shell(ip):
    assert ip.run_cell(DEFINITIONS).success
    return ip


def run(shell, line, cell, ok=True):
    with capture_output() as captured:
        result = shell.run_cell(f"%%lightning_train {line}\n{cell}")
    if ok:
        assert result.success, (result.error_in_exec, captured.stdout, captured.stderr)
    return result, captured


def top_k_state(folder):
    """The checkpoint files in ``folder`` (last.ckpt apart) and the ModelCheckpoint state its
    last.ckpt recorded."""
    files = {os.path.basename(p) for p in glob.glob(os.path.join(folder, "epoch=*.ckpt"))}
    saved = torch.load(os.path.join(folder, "last.ckpt"), weights_only=False)
    state = next(v for k, v in saved["callbacks"].items() if k.startswith("ModelCheckpoint"))
    return files, state


def plain_lightning(shell, folder):
    """The same fit and resume in plain Lightning, in this process: a top-1 ModelCheckpoint on
    val_loss with save_last=True, 2 epochs, then 4 from its last.ckpt."""
    for epochs, resume in ((2, None), (4, os.path.join(folder, "last.ckpt"))):
        assert shell.run_cell(
            f"plain = pl.Trainer(max_epochs={epochs}, accelerator='cpu', devices=1, logger=False, "
            "enable_progress_bar=False, enable_model_summary=False, callbacks=[ModelCheckpoint("
            f"dirpath={folder!r}, monitor='val_loss', save_last=True)])\n"
            f"plain.fit(Reg(), DataLoader(data, batch_size=16), DataLoader(data, batch_size=32), "
            f"ckpt_path={resume!r})").success
    return shell.user_ns["plain"].checkpoint_callback


@pytest.mark.parametrize("hardware", HARDWARE.values(), ids=HARDWARE.keys())
def test_resume_knows_its_best_checkpoint_and_leaves_no_orphan(shell, tmp_path, hardware,
                                                              no_orphans):
    plain = plain_lightning(shell, str(tmp_path / "plain"))
    files, state = top_k_state(str(tmp_path / "plain"))
    # plain Lightning: one checkpoint kept, the one its last.ckpt names best
    assert files == {os.path.basename(p) for p in plain.best_k_models} == {"epoch=3-step=16.ckpt"}
    assert state["best_model_path"] == plain.best_model_path

    first, _ = run(shell, f"{hardware} --max-epochs 2 --monitor val_loss", f"model = Reg()\n{LOADERS}")
    folder = first.result.ckpt_dir
    files, state = top_k_state(folder)
    # last.ckpt was written after the epoch's ModelCheckpoint had saved and chosen its best
    assert state["best_model_path"] == first.result.best_model_path
    assert {os.path.basename(p) for p in state["best_k_models"]} == files
    assert files == {os.path.basename(first.result.best_model_path)}

    resumed, captured = run(shell, f"{hardware} --max-epochs 4 --monitor val_loss --resume last",
                            f"model = Reg()\n{LOADERS}")
    run_ = resumed.result
    assert f"Resuming from {folder}/last.ckpt" in captured.stdout
    assert run_.ckpt_dir == folder, "the resumed run goes on in the folder it resumed from"
    files, state = top_k_state(folder)
    assert files == {"epoch=3-step=16.ckpt" if "devices 1" in hardware else "epoch=3-step=8.ckpt"}
    assert os.path.isfile(run_.best_model_path) and os.path.basename(run_.best_model_path) in files
    assert {os.path.basename(p) for p in state["best_k_models"]} == files  # no orphan
    assert run_.metrics and "val_loss" in run_.metrics
    assert not live_children()


def test_a_fit_with_nothing_to_do_says_what_lightning_says_and_keeps_the_metrics(shell,
                                                                                 no_orphans):
    first, _ = run(shell, "--accelerator cpu --devices 2",
                   f"model = Reg()\ntrainer = pl.Trainer(max_epochs=2)\n{LOADERS}\n"
                   "trainer.fit(model, train_loader, val_loader)")
    metrics = first.result.metrics
    assert metrics
    # fit again: max_epochs was reached, plain Lightning trains nothing and says so
    with capture_output() as captured:  # a later cell, without the magic: still in forked ranks
        assert shell.run_cell("trainer.fit(model, train_loader, val_loader)").success
    run_ = shell.user_ns["trainer"]._lightning_magic.records[-1][1]
    said = "`Trainer.fit` stopped: `max_epochs=2` reached."
    assert said in captured.stdout and any(said in note for note in run_.notes)
    assert "Raise max_epochs above 2 to train on (the Trainer's max_epochs, or --max-epochs " \
        "on a %%lightning_train cell)." in " ".join(captured.stdout.split())
    assert run_.metrics == metrics and run_.global_step == first.result.global_step
    # --resume last with the same --max-epochs: the same words
    _, captured = run(shell, "--accelerator cpu --devices 1 --max-epochs 2 --resume last",
                      f"model = Reg()\n{LOADERS}")
    assert said in captured.stdout
    assert not live_children()


def test_resume_past_max_epochs_says_where_the_checkpoint_is_and_what_to_give(shell, no_orphans):
    first, _ = run(shell, "--accelerator cpu --devices 2 --max-epochs 3", f"model = Reg()\n{LOADERS}")
    folder = first.result.ckpt_dir
    result, captured = run(shell, "--accelerator cpu --devices 2 --max-epochs 1 --resume last",
                           f"model = Reg()\n{LOADERS}", ok=False)
    error = result.error_in_exec
    assert isinstance(error, UsageError), error
    message = str(error)
    assert f"the checkpoint {folder}/last.ckpt is at epoch 2 (3 epochs trained)" in message
    assert "max_epochs=1" in message and "--max-epochs 4 or more" in message
    assert "Misconfiguration" not in message and "--devices 1" not in message
    assert "Training Reg" not in captured.stdout  # refused before anything was forked
    # raising --max-epochs goes on, in the same folder
    resumed, _ = run(shell, "--accelerator cpu --devices 2 --max-epochs 4 --resume last",
                     f"model = Reg()\n{LOADERS}")
    assert resumed.result.ckpt_dir == folder and resumed.result.epochs == 4
    assert os.listdir(os.path.dirname(folder)) == [os.path.basename(folder)]
    # a ckpt_path the cell gives is checked the same way
    result, _ = run(shell, "--accelerator cpu --devices 1",
                    f"model = Reg()\ntrainer = pl.Trainer(max_epochs=2)\n"
                    f"trainer.fit(model, DataLoader(data, batch_size=16), "
                    f"ckpt_path={folder + '/last.ckpt'!r})", ok=False)
    assert isinstance(result.error_in_exec, UsageError)
    assert "is at epoch 3 (4 epochs trained), past this fit's max_epochs=2" in \
        str(result.error_in_exec)
    assert not live_children()


def test_the_summary_names_epochs_as_the_checkpoints_do(shell, no_orphans):
    """One convention, Lightning's: the epoch the summary says it reached is the ``epoch=`` of
    the checkpoint it wrote there, and the limit is written as Lightning's RichProgressBar
    writes it (the last epoch of ``max_epochs=3`` is epoch 2/2)."""
    first, captured = run(shell, "--accelerator cpu --devices 2 --max-epochs 3 --monitor val_loss",
                          f"model = Reg()\n{LOADERS}")
    run_ = first.result
    named = os.path.basename(run_.best_model_path).split("-")[0]
    assert named == "epoch=2", run_.best_model_path
    assert run_.progress_text().startswith("epoch 2/2 · ")
    assert "epoch 2/2" in repr(run_) and "epoch 2/2" in run_._repr_html_()
    assert not live_children()


def test_a_checkpoint_torch_will_not_load_says_how_to_load_it_as_lightning_allows(shell,
                                                                                  no_orphans):
    # a learning rate computed with NumPy is a numpy.float64 in last.ckpt's optimizer state,
    # which torch.load(weights_only=True) refuses: in plain Lightning too
    assert shell.run_cell(
        "import numpy as np\nclass NumpyLr(Reg):\n    def configure_optimizers(self):\n"
        "        optimizer = torch.optim.SGD(self.parameters(), lr=0.05)\n"
        "        return [optimizer], [torch.optim.lr_scheduler.LambdaLR(\n"
        "            optimizer, lambda epoch: np.cos(0.1 * epoch))]").success
    run(shell, "--accelerator cpu --devices 1 --max-epochs 2", f"model = NumpyLr()\n{LOADERS}")
    resume = "--accelerator cpu --devices 2 --max-epochs 3 --resume last"
    result, _ = run(shell, resume, f"model = NumpyLr()\n{LOADERS}", ok=False)
    report = shell.user_ns["lightning_run"].report
    assert report is not None and report.title == "Checkpoint not loaded on every rank", report
    text = report.text()
    assert "holds a `numpy." in text and "weights_only=False" in text
    assert "--devices 1" not in text, "advice for a failure that depends on the ranks"
    # what it says to do works
    resumed, _ = run(shell, resume, f"model = NumpyLr()\n{LOADERS}\ntrainer = pl.Trainer()\n"
                     "trainer.fit(model, train_loader, val_loader, weights_only=False)")
    assert resumed.result.ok and resumed.result.epochs == 3
    assert not live_children()
