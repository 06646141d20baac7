"""What a run leaves behind: threads and processes its ranks left running, and the temporary
folders of kernels that were killed. Real shell, real ranks."""

from __future__ import annotations

import os
import tempfile

import pytest
from IPython.utils.capture import capture_output
from support.processes import live_children

from lightning_magic.train.launch import leftovers

pytestmark = pytest.mark.slow

MODULE = '''
import multiprocessing, os, threading, time, torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Leaves(pl.LightningModule):
    """Starts a thread, an os.fork child and a multiprocessing child that outlive training."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def on_train_end(self):
        threading.Thread(target=time.sleep, args=(120,), name="left-behind").start()
        multiprocessing.get_context("fork").Process(target=time.sleep, args=(120,)).start()
        if os.fork() == 0:
            time.sleep(120)
            os._exit(0)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


loader = DataLoader(TensorDataset(torch.randn(32, 4), torch.randn(32, 1)), batch_size=8)
'''


@pytest.mark.timeout(90)  # a run that waited for what its ranks left would take 120 s
def test_threads_and_processes_a_rank_leaves_do_not_hold_the_cell(ip, no_orphans):
    assert ip.run_cell(MODULE).success
    with capture_output():
        result = ip.run_cell("%%lightning_train --accelerator cpu --devices 2 --max-epochs 1\n"
                             "model = Leaves()\ntrain_loader = loader")
    run = result.result
    assert result.success and run.status == "finished"
    note = next(n for n in run.notes if n.startswith("Rank 0 left"))
    assert "thread 'left-behind'" in note and note.count("process ") == 2, note
    assert not live_children()


def test_temporary_folders_of_killed_kernels_are_removed(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = os.fork()
    if dead == 0:
        os._exit(0)
    os.waitpid(dead, 0)  # a pid that is surely gone now
    stale = tmp_path / f"lightning-magic-{dead}-abc"
    mine = tmp_path / f"lightning-magic-{os.getpid()}-def"
    other = tmp_path / "lightning-magic-notapid"
    for folder in (stale, mine, other):
        folder.mkdir()
    made = leftovers.work_dir()
    assert not stale.exists() and mine.exists() and other.exists()
    assert os.path.basename(made).startswith(f"lightning-magic-{os.getpid()}-")


def test_runs_leave_no_folder_in_the_temporary_directory(ip, tmp_path, monkeypatch):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert ip.run_cell(MODULE.replace("on_train_end", "unused_hook")).success
    for _ in range(3):
        with capture_output():
            result = ip.run_cell("%%lightning_train --accelerator cpu --devices 2 --max-steps 2\n"
                                 "model = Leaves()\ntrain_loader = loader")
        assert result.result.status == "finished"
    assert os.listdir(scratch) == []
