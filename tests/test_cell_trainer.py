"""A Lightning cell as written, under %%lightning_train: the cell's own Trainer keeps its
arguments, and its fit/validate/test/predict run in real forked ranks and return what Lightning
returns; after the cell the Trainer reads like a finished one. Real IPython shell, real ranks."""

from __future__ import annotations

import os
import zipfile

import pytest
import torch
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from support.processes import live_children

from lightning_magic.train.returns.results import TrainingRun

pytestmark = pytest.mark.slow

DEFINITIONS = '''
import os, torch
import lightning.pytorch as pl
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset


class Reg(pl.LightningModule):
    def __init__(self, lr=0.05):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        self.lr = lr

    def loss(self, batch):
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", self.loss(batch), sync_dist=True)

    def test_step(self, batch, batch_idx):
        self.log("test_loss", self.loss(batch), sync_dist=True)

    def predict_step(self, batch, batch_idx):
        return self.layer(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


generator = torch.Generator().manual_seed(0)
X = torch.randn(128, 8, generator=generator)
data = TensorDataset(X, X.sum(1, keepdim=True))
'''

CPU2 = "%%lightning_train --accelerator cpu --devices 2"


@pytest.fixture
def shell(ip):
    assert ip.run_cell(DEFINITIONS).success
    return ip


def run(shell, source, ok=True):
    with capture_output() as captured:
        result = shell.run_cell(source)
    if ok:
        assert result.success, (result.error_in_exec, captured.stdout, captured.stderr)
    return result, captured


def test_a_tutorial_cell_keeps_its_trainer_and_its_callbacks_state(shell, no_orphans):
    result, captured = run(shell, f"""{CPU2}
model = Reg()
stopper = EarlyStopping("val_loss", patience=0, min_delta=10.0)
trainer = pl.Trainer(max_epochs=20, callbacks=[stopper], log_every_n_steps=2)
trainer.fit(model, DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
""")
    run_ = result.result
    assert isinstance(run_, TrainingRun) and shell.user_ns["lightning_run"] is run_
    trainer, stopper = shell.user_ns["trainer"], shell.user_ns["stopper"]
    # EarlyStopping ran in the ranks, and its state is in the kernel's object
    assert trainer.current_epoch < 20 and stopper.stopped_epoch == trainer.current_epoch - 1
    assert (f"Training stopped early: EarlyStopping('val_loss') stopped it in epoch "
            f"{stopper.stopped_epoch} (patience 0).") in run_.notes
    assert stopper.best_score is not None and float(stopper.best_score) > 0
    assert trainer.global_step == trainer.current_epoch * 4 == run_.global_step
    assert trainer.log_every_n_steps == 2  # the cell's own argument, kept
    assert set(trainer.callback_metrics) >= {"train_loss", "val_loss"}
    assert trainer.state.finished
    # the logger is Lightning's default one (TensorBoard is installed), in the run's folder
    assert type(trainer.logger).__name__ == "TensorBoardLogger"
    assert trainer.logger.log_dir.startswith(run_.ckpt_dir) and trainer.logger.version == 0
    assert os.path.isfile(trainer.checkpoint_callback.best_model_path)
    assert "Training Reg on 2 CPU processes" in captured.stdout
    assert not [w for w in run_.warnings if "exists and is not empty" in w]


def test_validate_test_and_predict_return_what_lightning_returns(shell, no_orphans):
    cell = """
model = Reg()
trainer = pl.Trainer(max_epochs=2)
trainer.fit(model, DataLoader(data, batch_size=16))
validated = trainer.validate(model, DataLoader(data, batch_size=32))
tested = trainer.test(model, DataLoader(data, batch_size=32))
predicted = trainer.predict(model, DataLoader(data, batch_size=10))
"""
    run(shell, f"{CPU2}\n{cell}")
    ns = shell.user_ns
    model, predicted = ns["model"], ns["predicted"]
    # every rank's predictions, in dataset order, nothing padded: as one process predicts
    assert len(predicted) == 13 and sum(len(p) for p in predicted) == len(ns["data"])
    with torch.no_grad():
        expected = [model.layer(x) for x, _ in torch.utils.data.DataLoader(ns["data"],
                                                                           batch_size=10)]
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(predicted, expected, strict=True))
    # test metrics: the same as one process on the trained weights (128 samples split evenly)
    with torch.no_grad():
        single = torch.stack([model.loss(b) for b in torch.utils.data.DataLoader(
            ns["data"], batch_size=32)]).mean()
    assert ns["tested"][0]["test_loss"] == pytest.approx(float(single), rel=1e-5)
    assert ns["validated"][0]["val_loss"] == pytest.approx(float(single), rel=1e-5)
    assert isinstance(ns["lightning_run"], TrainingRun)


def test_predict_on_two_ranks_equals_one_process(shell):
    run(shell, "torch.manual_seed(0)\nmodel = Reg()")
    run(shell, f"{CPU2}\ntwo = pl.Trainer().predict(model, DataLoader(data, batch_size=7))")
    run(shell, "%%lightning_train --accelerator cpu --devices 1\n"
               "one = pl.Trainer().predict(model, DataLoader(data, batch_size=7))")
    two, one = shell.user_ns["two"], shell.user_ns["one"]
    assert len(two) == len(one) == 19
    assert torch.equal(torch.cat(two), torch.cat(one))


def test_a_later_cell_calls_the_trainer_in_ranks_too_with_the_best_checkpoint(shell,
                                                                              no_orphans):
    run(shell, f"""{CPU2} --monitor val_loss
model = Reg()
trainer = pl.Trainer(max_epochs=3)
trainer.fit(model, DataLoader(data, batch_size=16), DataLoader(data, batch_size=32))
""")
    trainer = shell.user_ns["trainer"]
    best = trainer.checkpoint_callback
    assert best.monitor == "val_loss" and os.path.isfile(best.best_model_path)
    scores = {path: float(score) for path, score in best.best_k_models.items()}
    assert best.best_model_path == min(scores, key=scores.get)
    result, captured = run(shell, "trainer.test(model, DataLoader(data, batch_size=32), "
                                  "ckpt_path='best')")
    assert "Testing Reg on 2 CPU processes" in captured.stdout
    assert result.result[0]["test_loss"] > 0
    assert not live_children()


def test_a_call_that_fails_in_a_later_cell_is_bound_and_reported_like_the_magics(shell,
                                                                                 no_orphans):
    from lightning_magic.train.returns.results import TrainingFailed

    run(shell, f"{CPU2}\nmodel = Reg()\ntrainer = pl.Trainer(max_epochs=1)\n"
               "trainer.fit(model, DataLoader(data, batch_size=16))")
    fit = shell.user_ns["lightning_run"]
    assert fit.ok and fit.metrics
    # no %%lightning_train on this cell; the model has no validation_step
    result, captured = run(shell, "class NoVal(Reg):\n    validation_step = None\n"
                                  "trainer.validate(NoVal(), DataLoader(data, batch_size=32))",
                           ok=False)
    assert isinstance(result.error_in_exec, TrainingFailed), result.error_in_exec
    failed = shell.user_ns["lightning_run"]
    assert failed is result.error_in_exec.run and failed is not fit and not failed.ok
    assert failed.report is not None and failed.report.key == "missing_hook"
    assert "stopped before validating" in failed.report.what_happened
    assert failed.metrics == {}  # not the fit's, which are still on the Trainer
    shown = captured.stdout + "".join(str(o.data.get("text/plain", "")) for o in captured.outputs)
    assert "validation_step" in shown and "train_loss" not in shown.split("Validating")[-1]


def test_a_damaged_ckpt_path_the_cell_passes_is_refused_before_the_fork(shell, tmp_path,
                                                                        no_orphans):
    run(shell, f"{CPU2}\nmodel = Reg()\ntrainer = pl.Trainer(max_epochs=1, "
               f"default_root_dir={str(tmp_path)!r})\n"
               "trainer.fit(model, DataLoader(data, batch_size=16))")
    whole = shell.ev("trainer.checkpoint_callback.best_model_path")
    cut = os.path.join(os.path.dirname(whole), "cut.ckpt")
    with open(whole, "rb") as source, open(cut, "wb") as target:
        target.write(source.read()[:100])  # a save cut short
    os.utime(cut, (os.path.getmtime(whole) + 10,) * 2)  # and newer than the whole one
    result, captured = run(shell, f"{CPU2}\ntrainer = pl.Trainer(max_epochs=2)\n"
                                  f"trainer.fit(model, DataLoader(data, batch_size=16), "
                                  f"ckpt_path={cut!r})", ok=False)
    assert isinstance(result.error_in_exec, UsageError), result.error_in_exec
    message = str(result.error_in_exec)
    assert f"ckpt_path={cut!r}: the checkpoint {cut} is damaged" in message
    offered = message.split("Continue from the newest whole one with ckpt_path=")[1]
    offered = offered.split("'")[1]
    assert offered != cut and os.path.dirname(offered) == os.path.dirname(cut)
    assert zipfile.is_zipfile(offered)
    assert "Training Reg" not in captured.stdout  # nothing was forked
    result, _ = run(shell, f"trainer.test(model, DataLoader(data, batch_size=32), "
                           f"ckpt_path={cut!r})", ok=False)
    message = str(result.error_in_exec)
    assert "Use the newest whole one with ckpt_path=" in message
    assert message.endswith("or test without ckpt_path.")
    # a whole one, by its path, resumes as in Lightning
    result, _ = run(shell, f"{CPU2}\ntrainer = pl.Trainer(max_epochs=2)\n"
                           f"trainer.fit(model, DataLoader(data, batch_size=16), "
                           f"ckpt_path={whole!r})")
    assert result.result.global_step == 8


def test_one_device_is_a_single_device_run_after_the_kernel_used_openmp(shell, no_orphans):
    # the kernel's own OpenMP pool, started before the fork, must not hang the rank
    run(shell, "torch.set_num_threads(2)\n"
               "torch.nn.functional.log_softmax(torch.randn(4096, 1000), 1).sum()")
    result, _ = run(shell, "%%lightning_train --accelerator cpu --devices 1 --timeout 60\n"
                           "model = Reg()\ntrainer = pl.Trainer(max_epochs=1)\n"
                           "trainer.fit(model, DataLoader(data, batch_size=16))")
    run_ = result.result
    assert run_.status == "finished" and run_.strategy == "single_device"
    assert type(shell.user_ns["trainer"].strategy).__name__ == "NotebookSingleDeviceStrategy"
    assert any("2 CPU threads" in note for note in run_.notes), run_.notes


def test_the_cells_hardware_is_used_unless_a_flag_says_otherwise(shell):
    result, _ = run(shell, "%%lightning_train\nmodel = Reg()\n"
                           "trainer = pl.Trainer(accelerator='cpu', devices=2, max_steps=2)\n"
                           "trainer.fit(model, DataLoader(data, batch_size=16))")
    assert result.result.num_processes == 2
    result, captured = run(shell, "%%lightning_train --devices 1\nmodel = Reg()\n"
                                  "trainer = pl.Trainer(accelerator='cpu', devices=2, max_steps=2)"
                                  "\ntrainer.fit(model, DataLoader(data, batch_size=16))")
    assert result.result.num_processes == 1
    assert "--devices 1 replaces the cell's Trainer(devices=2)" in captured.stdout


def test_pytorch_lightning_is_the_same_code_under_another_name(shell, no_orphans):
    result, _ = run(shell, f"""{CPU2}
import pytorch_lightning as ptl

class Old(ptl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.05)

old = Old()
before = old.layer.weight.detach().clone()
trainer = ptl.Trainer(max_epochs=1, callbacks=[ptl.callbacks.EarlyStopping("loss")])
trainer.fit(old, DataLoader(data, batch_size=16))
""")
    assert result.result.status == "finished" and result.result.global_step == 4
    assert not torch.equal(shell.user_ns["old"].layer.weight, shell.user_ns["before"])
    assert isinstance(shell.user_ns["trainer"].checkpoint_callback,
                      __import__("pytorch_lightning").callbacks.ModelCheckpoint)


def test_a_module_compiled_in_configure_model_gets_its_weights_back(shell, no_orphans):
    result, _ = run(shell, f"""{CPU2}
class Compiled(Reg):
    def configure_model(self):
        self.layer = torch.compile(self.layer, backend="eager")

model = Compiled()
before = model.layer.weight.detach().clone()
pl.Trainer(max_epochs=1).fit(model, DataLoader(data, batch_size=16))
""")
    assert result.result.status == "finished"
    assert not torch.equal(shell.user_ns["model"].layer.weight, shell.user_ns["before"])


def test_a_compiled_model_without_a_trainer_call_is_trained(shell):
    # (a compiled training_step may not call self.log: torch.compile fails on it, in plain
    # Lightning too)
    run(shell, "class Quiet(Reg):\n    def training_step(self, batch, batch_idx):\n"
               "        return self.loss(batch)")
    result, _ = run(shell, "%%lightning_train --accelerator cpu --devices 1 --max-epochs 1\n"
                           "inner = Quiet()\nbefore = inner.layer.weight.detach().clone()\n"
                           "model = torch.compile(inner, backend='eager')\n"
                           "loader = DataLoader(data, batch_size=16)")
    assert result.result.status == "finished"
    assert not torch.equal(shell.user_ns["inner"].layer.weight, shell.user_ns["before"])


def test_the_runs_last_checkpoint_stays_beside_the_modules_own_checkpoint(shell):
    result, _ = run(shell, f"""{CPU2} --max-epochs 2
class OwnCheckpoint(Reg):
    def configure_callbacks(self):
        return [ModelCheckpoint(dirpath=os.path.abspath("mine"), monitor="val_loss")]

model = OwnCheckpoint()
train_loader = DataLoader(data, batch_size=16)
val_loader = DataLoader(data, batch_size=32)
""")
    run_ = result.result
    assert os.path.isfile(os.path.join(run_.ckpt_dir, "last.ckpt"))
    assert os.listdir("mine") and run_.best_model_path.startswith(os.path.abspath("mine"))


def test_resume_last_continues_only_a_run_of_the_same_model(shell):
    run(shell, "%%lightning_train --accelerator cpu --devices 1 --max-epochs 1\n"
               "model = Reg()\nloader = DataLoader(data, batch_size=16)")
    result, _ = run(shell, "%%lightning_train --accelerator cpu --devices 1 --resume last\n"
                           "class Other(Reg):\n    pass\n"
                           "model = Other()\npl.Trainer(max_epochs=2).fit(model, "
                           "DataLoader(data, batch_size=16))", ok=False)
    error = result.error_in_exec
    assert isinstance(error, UsageError) and "trained a Other" in str(error) \
        and "Reg" in str(error)
    assert not live_children()


@pytest.mark.parametrize("arguments, words", [
    ("num_nodes=2", ["Trainer(num_nodes=2)", "--export"]),
    ("strategy=pl.strategies.SingleDeviceStrategy(device=\"cpu\")",
     ["SingleDeviceStrategy", "script launch"]),
])
def test_trainer_arguments_a_notebook_cannot_honour_are_usage_errors(shell, arguments, words):
    result, _ = run(shell, f"{CPU2}\ntrainer = pl.Trainer({arguments})\nreached = True", ok=False)
    assert isinstance(result.error_in_exec, UsageError)
    for word in words:
        assert word in str(result.error_in_exec)
    assert "reached" not in shell.user_ns


def test_an_unknown_trainer_argument_is_lightnings_own_error(shell):
    result, _ = run(shell, f"{CPU2}\ntrainer = pl.Trainer(max_epoch=2)", ok=False)
    assert isinstance(result.error_in_exec, TypeError)
    assert "max_epoch" in str(result.error_in_exec)
    assert not live_children()


def test_a_cell_without_fit_shows_its_last_value(shell):
    run(shell, f"{CPU2}\nmodel = Reg()\npl.Trainer(max_epochs=1).fit(model, "
               "DataLoader(data, batch_size=16))")
    result, _ = run(shell, f"{CPU2}\ntrainer = pl.Trainer()\n"
                           "trainer.test(model, DataLoader(data, batch_size=32))")
    assert isinstance(result.result, list) and "test_loss" in result.result[0]


def test_a_trainer_without_checkpointing_gets_no_checkpoint_and_keeps_its_logged_metrics(shell):
    result, captured = run(shell, f"""{CPU2}
model = Reg()
trainer = pl.Trainer(max_epochs=1, enable_checkpointing=False, log_every_n_steps=1)
trainer.fit(model, DataLoader(data, batch_size=16))
""")
    run_ = result.result
    assert not os.path.exists(os.path.join(run_.ckpt_dir, "last.ckpt"))
    assert not [name for name in os.listdir(run_.ckpt_dir) if name.endswith(".ckpt")]
    assert "enable_checkpointing=False" in captured.stdout
    assert "train_loss" in shell.user_ns["trainer"].logged_metrics


def test_an_abbreviated_flag_is_a_typo_to_name(shell):
    with pytest.raises(UsageError, match="did you mean --max-epochs"):
        shell.run_cell_magic("lightning_train", "--max-epoch 1", "ran = 1")
    assert "ran" not in shell.user_ns


def test_the_learning_rate_finder_runs_in_a_rank_and_its_result_comes_back(shell):
    result, _ = run(shell, """%%lightning_train --accelerator cpu --devices 1
from lightning.pytorch.tuner import Tuner
model = Reg()
trainer = pl.Trainer(max_epochs=1)
finder = Tuner(trainer).lr_find(model, train_dataloaders=DataLoader(data, batch_size=4),
                                num_training=30, early_stop_threshold=None)
""")
    finder, model = shell.user_ns["finder"], shell.user_ns["model"]
    assert len(finder.results["lr"]) == 30 and finder.suggestion() is not None
    assert model.lr == finder.suggestion()  # Tuner's update_attr, made in the rank, is kept


def test_the_batch_size_finder_runs_on_one_device_and_its_size_comes_back(shell):
    result, _ = run(shell, """%%lightning_train --accelerator cpu --devices 1
from lightning.pytorch.tuner import Tuner

class Sized(Reg):
    validation_step = None

    def __init__(self):
        super().__init__()
        self.batch_size = 2

    def train_dataloader(self):
        return DataLoader(data, batch_size=self.batch_size)

model = Sized()
found = Tuner(pl.Trainer(max_epochs=1)).scale_batch_size(model, mode="power", max_trials=3,
                                                         steps_per_trial=1)
""")
    assert shell.user_ns["found"] == 8 == shell.user_ns["model"].batch_size  # 2 -> 4 -> 8


ONE_PROCESS = '''
import random
from torch.utils.data import random_split


class Jitter(torch.utils.data.Dataset):
    """Python's `random` at every item, as augmentation libraries use it."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        x, y = self.base[index]
        return x + random.random(), y


class SplitData(pl.LightningDataModule):
    """As in Lightning's data module guide: setup("fit") makes the split, setup("validate")
    nothing; a later validate uses what the fit's setup made."""

    def setup(self, stage):
        if stage == "fit":
            self.train_set, self.val_set = random_split(Jitter(data), [96, 32])

    def train_dataloader(self):
        return DataLoader(self.train_set, batch_size=16, shuffle=True)

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=16)


class Cycled(Reg):
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=self.lr)
        steps = self.trainer.estimated_stepping_batches
        return {"optimizer": optimizer, "lr_scheduler": {
            "scheduler": torch.optim.lr_scheduler.OneCycleLR(optimizer, 0.1, total_steps=steps),
            "interval": "step"}}
'''

ONE_PROCESS_FIT = '''dm = SplitData()
model = Cycled()
trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=2, logger=False,
                     enable_progress_bar=False, default_root_dir={root!r})
trainer.fit(model, dm)
'''

LATER = '''validated = trainer.validate(model, dm, verbose=False)
stepping, stopped = trainer.estimated_stepping_batches, trainer.should_stop
drawn = (random.random(), float(torch.rand(1)))
'''


def test_one_process_gives_what_plain_lightning_gives_in_the_kernel(shell, tmp_path, no_orphans):
    """Seeded once at the top of the cell, as a script is: a shuffled loader, python's random in
    a dataset, a random_split in setup("fit"); then, in a later plain cell, validate (whose
    setup makes nothing), estimated_stepping_batches, should_stop and the next random draws."""
    assert shell.run_cell(ONE_PROCESS).success
    seen = {}
    for name, head in (("plain", "pl.seed_everything(0)\n"),
                       ("magic", "%%lightning_train --accelerator cpu --devices 1 --seed 0\n")):
        run(shell, head + ONE_PROCESS_FIT.format(root=str(tmp_path / name)))
        run(shell, LATER)
        seen[name] = {"weights": {k: v.clone() for k, v in shell.ev("model").state_dict().items()},
                      **{key: shell.ev(key) for key in ("validated", "stepping", "stopped",
                                                        "drawn")}}
    plain, magic = seen["plain"], seen["magic"]
    for key, value in plain["weights"].items():
        assert torch.equal(magic["weights"][key], value), key
    assert magic["validated"] == plain["validated"]
    assert magic["stepping"] == plain["stepping"] == 12 and magic["stopped"] == plain["stopped"]
    assert magic["drawn"][0] == plain["drawn"][0]  # python's random went on as in the kernel
    # torch's differs by what plain Lightning's estimated_stepping_batches drew in the kernel


def test_a_fit_that_max_time_ended_says_so(shell, no_orphans):
    result, _ = run(shell, f"{CPU2}\nmodel = Reg()\n"
                           "trainer = pl.Trainer(max_epochs=-1, max_time={'seconds': 1})\n"
                           "trainer.fit(model, DataLoader(data, batch_size=16))")
    run_, trainer = result.result, shell.user_ns["trainer"]
    assert trainer.should_stop and run_.status == "finished"
    assert f"Training stopped early: max_time (1 s) ran out after step {run_.global_step}." \
        in run_.notes


def test_fast_dev_run_writes_no_checkpoint_and_no_run_folder(shell, tmp_path, monkeypatch,
                                                             no_orphans):
    monkeypatch.chdir(tmp_path)
    result, captured = run(shell, f"{CPU2}\nmodel = Reg()\ntrainer = pl.Trainer(fast_dev_run=True)"
                                  "\ntrainer.fit(model, DataLoader(data, batch_size=16))")
    assert result.result.status == "finished" and result.result.global_step == 1
    assert "checkpoints in" not in captured.stdout
    assert any(note.startswith("fast_dev_run: a quick run") for note in result.result.notes)
    assert not (tmp_path / "lightning_runs").exists() or \
        not any((tmp_path / "lightning_runs").iterdir())
    assert result.result.last_model_path is None and result.result.best_model_path is None


def test_hardware_the_cells_trainer_asks_for_is_named_as_the_cell_wrote_it(shell):
    from lightning_magic import readings

    if readings.list_gpus():
        pytest.skip("NVML sees a GPU here: the cell's Trainer(accelerator='gpu') would train")
    with pytest.raises(UsageError) as caught:
        shell.run_cell_magic("lightning_train", "",
                             "model = Reg()\n"
                             "trainer = pl.Trainer(accelerator='gpu', devices=1, max_steps=2)\n"
                             "trainer.fit(model, DataLoader(data, batch_size=16))")
    message = str(caught.value)
    assert message.startswith("Trainer(devices=1) asks for 1 GPU, but NVML sees no NVIDIA GPU")
    assert "--devices 1" not in message and "--accelerator cpu" in message
