"""Where a run's checkpoints go, against plain Lightning: with the cell's own logger or
``default_root_dir`` they go where plain Lightning puts them (``<logger dir>/version_N/
checkpoints``), with ``last.ckpt`` and ``run.json`` beside them for ``--resume last``; the
Trainer's logger names the version its ranks wrote, also after a failure; ``--ckpt-dir`` over a
cell's ``default_root_dir`` says so; a cell that fails before training leaves no run folder.
Real IPython shell, real forked ranks."""

from __future__ import annotations

import os

import pytest
from IPython.utils.capture import capture_output
from support.processes import live_children

pytestmark = pytest.mark.slow

DEFINITIONS = '''
import os, torch
import lightning.pytorch as pl
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader, TensorDataset


class Reg(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)


class Broken(Reg):
    def training_step(self, batch, batch_idx):
        raise ValueError("broken on purpose")


class FailsInSetup(Reg):
    def setup(self, stage):
        raise ValueError("fails before training")


generator = torch.Generator().manual_seed(0)
X = torch.randn(64, 8, generator=generator)
data = TensorDataset(X, X.sum(1, keepdim=True))
'''

HARDWARE = {"one process": "--accelerator cpu --devices 1",
            "two processes": "--accelerator cpu --devices 2"}
TRAINERS = {
    "own logger": "pl.Trainer(max_epochs=1, logger=CSVLogger('logs'), enable_progress_bar=False)",
    "default_root_dir": "pl.Trainer(max_epochs=1, default_root_dir='root', "
                        "enable_progress_bar=False)",
    "both": "pl.Trainer(max_epochs=1, default_root_dir='root', logger=CSVLogger('logs', "
            "name='mine'), enable_progress_bar=False)",
}


@pytest.fixture
def shell(ip):
    assert ip.run_cell(DEFINITIONS).success
    return ip


def files_under(folder):
    return sorted(os.path.relpath(os.path.join(root, name), folder)
                  for root, _, names in os.walk(folder) for name in names)


def checkpoints_under(folder):
    return [path for path in files_under(folder) if path.endswith(".ckpt")]


def fit_cell(trainer):
    return (f"model = Reg()\ntrainer = {trainer}\n"
            "trainer.fit(model, DataLoader(data, batch_size=16))")


@pytest.mark.parametrize("trainer", TRAINERS.values(), ids=TRAINERS.keys())
@pytest.mark.parametrize("hardware", HARDWARE.values(), ids=HARDWARE.keys())
def test_checkpoints_go_where_plain_lightning_puts_them(shell, tmp_path, monkeypatch, trainer,
                                                        hardware, no_orphans):
    plain, magic = tmp_path / "plain", tmp_path / "magic"
    plain.mkdir(), magic.mkdir()
    monkeypatch.chdir(plain)
    assert shell.run_cell(fit_cell(trainer)).success  # plain Lightning, in this process
    expected = os.path.relpath(shell.user_ns["trainer"].checkpoint_callback.best_model_path)
    wanted = {path for path in checkpoints_under(plain)}
    assert len(wanted) == 1 and "/version_0/checkpoints/epoch=0-" in next(iter(wanted))
    monkeypatch.chdir(magic)
    with capture_output() as captured:
        result = shell.run_cell(f"%%lightning_train {hardware}\n{fit_cell(trainer)}")
    assert result.success, (result.error_in_exec, captured.stdout)
    run = result.result
    folder = os.path.dirname(next(iter(wanted)))
    got = shell.user_ns["trainer"].checkpoint_callback
    if "devices 2" not in hardware:  # the same steps: the same names
        assert set(checkpoints_under(magic)) == wanted | {os.path.join(folder, "last.ckpt")}
        assert os.path.relpath(got.best_model_path) == expected
    # what --resume last needs is beside Lightning's checkpoints, and nothing else was made
    assert os.path.isfile(magic / folder / "last.ckpt") and os.path.isfile(magic / folder / "run.json")
    assert run.ckpt_dir == str(magic / folder) and f"checkpoints in {magic / folder}" in captured.stdout
    assert os.path.dirname(os.path.abspath(run.best_model_path)) == str(magic / folder)
    assert not os.path.exists(magic / "lightning_runs")
    assert {p.split(os.sep)[0] for p in files_under(magic)} == \
        {p.split(os.sep)[0] for p in files_under(plain)}
    # --resume last finds it there, and goes on in a new version, as a new Trainer does
    with capture_output() as captured:
        resumed = shell.run_cell(f"%%lightning_train {hardware} --max-epochs 2 --resume last\n"
                                 f"{fit_cell(trainer).replace('max_epochs=1', 'max_epochs=2')}")
    assert resumed.success, (resumed.error_in_exec, captured.stdout)
    assert f"Resuming from {magic / folder / 'last.ckpt'}" in captured.stdout
    assert resumed.result.ckpt_dir == str(magic / folder.replace("version_0", "version_1"))
    assert resumed.result.epochs == 2
    assert not live_children()


@pytest.mark.parametrize("logger", ["", ", logger=CSVLogger('logs')"], ids=["default", "own"])
def test_the_loggers_version_is_the_one_a_failed_run_wrote(shell, logger, no_orphans):
    with capture_output():
        result = shell.run_cell("%%lightning_train --accelerator cpu --devices 2\nmodel = Broken()\n"
                                f"trainer = pl.Trainer(max_epochs=1{logger})\n"
                                "trainer.fit(model, DataLoader(data, batch_size=16))")
    assert not result.success
    log_dir = shell.user_ns["trainer"].logger.log_dir
    assert os.path.basename(log_dir) == "version_0"
    assert os.path.isdir(log_dir), os.listdir(os.path.dirname(log_dir))


def test_a_cell_that_fails_before_training_leaves_no_run_folder(shell, no_orphans):
    with capture_output():
        result = shell.run_cell("%%lightning_train --accelerator cpu --devices 1\nmodel = Reg()\n"
                                "trainer = pl.Trainer(max_epochs=1)\nundefined_name_here")
    assert isinstance(result.error_in_exec, NameError)
    assert not os.path.exists("lightning_runs") or not os.listdir("lightning_runs")
    with capture_output():  # the ranks fail in setup, before any batch: nothing to keep (a
        # logger would have left its first file, as in plain Lightning)
        result = shell.run_cell("%%lightning_train --accelerator cpu --devices 2\n"
                                "model = FailsInSetup()\ntrainer = pl.Trainer(logger=False)\n"
                                "train_loader = DataLoader(data, batch_size=16)")
    assert not result.success and result.result is None
    run = shell.user_ns["lightning_run"]
    assert run.status == "failed"
    assert not os.path.exists(run.ckpt_dir), files_under(run.ckpt_dir)
    assert not os.path.exists("lightning_runs") or not os.listdir("lightning_runs")


def test_ckpt_dir_over_the_cells_default_root_dir_says_so(shell, tmp_path, no_orphans):
    with capture_output() as captured:
        result = shell.run_cell(f"%%lightning_train --accelerator cpu --devices 1 "
                                f"--ckpt-dir {tmp_path / 'ckpts'}\nmodel = Reg()\n"
                                "trainer = pl.Trainer(max_epochs=1, default_root_dir='root')\n"
                                "trainer.fit(model, DataLoader(data, batch_size=16))")
    assert result.success, result.error_in_exec
    assert f"--ckpt-dir {tmp_path / 'ckpts'} replaces the cell's Trainer(default_root_dir='root')" \
        in captured.stdout
    assert shell.user_ns["trainer"].default_root_dir == str(tmp_path / "ckpts")
    assert os.path.isfile(tmp_path / "ckpts" / "last.ckpt") and not os.path.exists("root")


@pytest.mark.parametrize("hardware", HARDWARE.values(), ids=HARDWARE.keys())
def test_a_resume_with_nothing_to_do_leaves_what_plain_lightning_leaves(shell, tmp_path,
                                                                         monkeypatch, hardware,
                                                                         no_orphans):
    """Plain Lightning, resumed at its max_epochs, trains nothing: its logger's new version
    folder stays empty. The magic's run.json is kept only beside a checkpoint, so it leaves the
    same folders (and the same after a fit that fails before its first checkpoint)."""
    trainer = TRAINERS["own logger"]
    plain, magic = tmp_path / "plain", tmp_path / "magic"
    plain.mkdir(), magic.mkdir()
    monkeypatch.chdir(plain)
    assert shell.run_cell(fit_cell(trainer)).success
    best = shell.user_ns["trainer"].checkpoint_callback.best_model_path
    with capture_output():
        assert shell.run_cell(fit_cell(trainer).replace("))", f"), ckpt_path={best!r})")).success
        assert not shell.run_cell(fit_cell(trainer).replace("Reg()", "Broken()")).success
    monkeypatch.chdir(magic)
    with capture_output() as captured:
        first = shell.run_cell(f"%%lightning_train {hardware}\n{fit_cell(trainer)}")
        assert first.success, (first.error_in_exec, captured.stdout)
        resumed = shell.run_cell(f"%%lightning_train {hardware} --resume last\n{fit_cell(trainer)}")
        assert resumed.success, (resumed.error_in_exec, captured.stdout)
        failed = shell.run_cell(f"%%lightning_train {hardware}\n"
                                f"{fit_cell(trainer).replace('Reg()', 'Broken()')}")
    assert "Nothing to train" in captured.stdout and not failed.success
    kept = os.path.join("logs", "lightning_logs", "version_0", "checkpoints")
    made = set(paths_under(magic)) - {os.path.join(kept, "last.ckpt"), os.path.join(kept, "run.json")}
    assert made == set(paths_under(plain)), sorted(made ^ set(paths_under(plain)))
    assert not live_children()


def paths_under(folder):
    """Every file and folder under ``folder``, relative to it; checkpoint names apart (the
    steps of two processes differ)."""
    found = []
    for root, dirs, names in os.walk(folder):
        found += [os.path.relpath(os.path.join(root, name), folder) for name in dirs + names
                  if not name.startswith("epoch=")]
    return found
