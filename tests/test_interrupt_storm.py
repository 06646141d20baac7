"""However often the user presses stop, and whenever: the cell ends with its run bound (and a
report when it was cut short), no temporary file left, and a kernel that keeps working. The
presses are real SIGINTs sent to the shell's process from a rank, as the stop button sends."""

from __future__ import annotations

import os
import signal
import tempfile

import pytest
from IPython.utils.capture import capture_output
from support.processes import live_children

pytestmark = pytest.mark.slow

MODULE = '''
import os, signal, torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Presses(pl.LightningModule):
    """Rank 0 presses stop many times at the moment named by ``when``."""

    def __init__(self, when):
        super().__init__()
        self.layer = torch.nn.Linear(64, 64)
        self.when = when
        self.presses = 20

    def press(self):
        if self.global_rank == 0:
            for _ in range(self.presses):
                os.kill(os.getppid(), signal.SIGINT)

    def training_step(self, batch, batch_idx):
        if self.when == "training" and batch_idx == 2:
            self.press()
        return self.layer(batch[0]).pow(2).mean()

    def on_train_end(self):
        if self.when == "end":  # the kernel is about to take the weights back
            self.press()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


loader = DataLoader(TensorDataset(torch.randn(256, 64)), batch_size=8)
'''


@pytest.mark.parametrize("when, statuses", [
    ("training", {"interrupted"}),
    # as training ends: the first press asks for a stop no batch is left to take; the second
    # ends the ranks, perhaps before their results came back: either is honest
    ("end", {"finished", "interrupted"}),
])
def test_a_storm_of_stop_presses_ends_the_cell_cleanly(ip, tmp_path, monkeypatch, when,
                                                       statuses):
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    assert ip.run_cell(MODULE).success
    with capture_output():
        result = ip.run_cell("%%lightning_train --accelerator cpu --devices 2 --max-epochs 2\n"
                             f"model = Presses({when!r})\ntrain_loader = loader")
    run = ip.user_ns.get("lightning_run")
    assert run is not None and run.status in statuses, (result.error_in_exec, run)
    assert not isinstance(result.error_in_exec, (KeyboardInterrupt, SystemExit))
    if run.status == "interrupted":
        assert type(result.error_in_exec).__name__ == "TrainingStopped" and run.report is not None
        if "Checkpoints are in" in run.report.text() or "--resume last" in run.report.text():
            assert os.path.isfile(os.path.join(run.ckpt_dir, "last.ckpt"))
    else:
        assert result.success and any("Stop was pressed" in n for n in run.notes), run.notes
    ours = [n for n in os.listdir(scratch) if not n.startswith("torchinductor_")]  # torch's cache
    assert ours == [], "temporary files were left behind"
    assert not live_children()
    assert ip.run_cell("still_works = 1 + 1").success


def test_a_stop_checkpoint_that_cannot_be_written_is_reported_as_not_saved(ip):
    """The ranks may write no file over 64 KiB (RLIMIT_FSIZE, refused as a full disk would):
    the state at the stop is not saved, and the report says so instead of offering it."""
    assert ip.run_cell(MODULE.replace("torch.nn.Linear(64, 64)", "torch.nn.Linear(64, 160)")
                       + CRAMPED).success
    # inherited by the ranks: a write past the limit fails instead of killing the rank
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    try:
        with capture_output():
            result = ip.run_cell("%%lightning_train --accelerator cpu --devices 2 --max-epochs 2 "
                                 "--logger none --ckpt-dir ckpts\n"
                                 "model = Cramped('training')\ntrain_loader = loader")
    finally:
        signal.signal(signal.SIGXFSZ, previous)
    run = ip.user_ns["lightning_run"]
    assert run.status == "interrupted", (result.error_in_exec, run.traceback)
    text = run.report.text()
    assert "could not be saved" in text, text
    assert "--resume last" not in text
    assert not any(n.startswith("last.ckpt") for n in os.listdir("ckpts")), os.listdir("ckpts")


CRAMPED = """
import resource

class Cramped(Presses):
    def __init__(self, when):
        super().__init__(when)
        self.presses = 1

    def configure_optimizers(self):  # Adam's moments: the weights fit, a checkpoint does not
        return torch.optim.Adam(self.parameters())

    def on_train_start(self):  # in the ranks only
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, resource.RLIM_INFINITY))
"""
