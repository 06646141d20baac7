"""The warnings a run counts are the cell's own: a warning its code raises is counted once (not
once a rank) and kept on ``lightning_run.warnings``; what Lightning and torch raise from their
own code (a torch deprecation Lightning trips on, Lightning's tips) is kept apart, on
``lightning_run.library_warnings``, and not counted; what the magic itself causes (the run.json
it writes beside Lightning's checkpoints) is neither. Real IPython shell, real forked ranks."""

from __future__ import annotations

import pytest
from IPython.utils.capture import capture_output
from support.processes import live_children

pytestmark = pytest.mark.slow

DEFINITIONS = '''
import warnings, torch
import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset


class Warns(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        if batch_idx == 0:
            warnings.warn("the cell's own warning")
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Quiet(Warns):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)


X = torch.randn(64, 8)
data = TensorDataset(X, X.sum(1, keepdim=True))
'''


@pytest.fixture
def shell(ip):
    assert ip.run_cell(DEFINITIONS).success
    return ip


def run(shell, cell):
    with capture_output() as captured:
        result = shell.run_cell(f"%%lightning_train --accelerator cpu --devices 2\n{cell}")
    assert result.success, (result.error_in_exec, captured.stdout, captured.stderr)
    return result.result


def test_only_the_cells_own_warnings_are_counted(shell, no_orphans):
    run_ = run(shell, "model = Warns()\ntrainer = pl.Trainer(max_epochs=2)\n"
                      "trainer.fit(model, DataLoader(data, batch_size=16))")
    assert run_.warnings == ["UserWarning: the cell's own warning"], run_.warnings
    assert ("warnings", "1 warning in lightning_run.warnings") in run_.rows()
    # Lightning's own (its log_every_n_steps tip, raised from its fit loop) is kept, apart
    assert any("log_every_n_steps" in w for w in run_.library_warnings), run_.library_warnings
    quiet = run(shell, "model = Quiet()\ntrainer = pl.Trainer(max_epochs=1)\n"
                       "trainer.fit(model, DataLoader(data, batch_size=16))")
    assert quiet.warnings == [] and not [r for r in quiet.rows() if r[0] == "warnings"]
    assert "warning" not in repr(quiet)
    assert not live_children()


def test_the_magics_own_files_cause_no_warning(shell, no_orphans):
    """run.json, written beside the checkpoints before the ranks start, made Lightning warn that
    the logger's and the checkpoints' folders were not empty; plain Lightning does not."""
    run_ = run(shell, "model = Quiet()\n"
                      "trainer = pl.Trainer(max_epochs=1, logger=CSVLogger('logs'))\n"
                      "trainer.fit(model, DataLoader(data, batch_size=16))")
    seen = run_.warnings + run_.library_warnings
    assert not [w for w in seen if "exists and is not empty" in w], seen
    assert not live_children()
