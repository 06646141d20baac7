"""Real runs: a real InteractiveShell, real forked CPU ranks (gloo), results back in the kernel."""

from __future__ import annotations

import os

import pytest
import torch
from support.cells import DEFINITIONS
from support.processes import live_children
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output

from lightning_magic.train.returns.results import TrainingRun

pytestmark = pytest.mark.slow


CPU2 = "--accelerator cpu --devices 2 --max-epochs 2"


@pytest.fixture
def shell(ip):
    assert ip.run_cell(DEFINITIONS).success
    return ip


def train(shell, line, cell, expect_ok=True):
    with capture_output() as captured:
        result = shell.run_cell(f"%%lightning_train {line}\n{cell}")
    if expect_ok:
        assert result.success, (result.error_in_exec, captured.stdout, captured.stderr)
    return result, captured


def test_two_ranks_train_the_users_model(shell, no_orphans):
    result, captured = train(shell, CPU2, "model = Regressor()\n"
                                          "before = model.layer.weight.detach().clone()\n"
                                          "train_loader = DataLoader(dataset, batch_size=16)\n"
                                          "val_loader = DataLoader(dataset, batch_size=32)")
    run = result.result
    assert isinstance(run, TrainingRun) and shell.user_ns["lightning_run"] is run
    assert run.status == "finished"
    # rank 0's trained weights are in the object the user holds
    assert not torch.equal(shell.user_ns["model"].layer.weight, shell.user_ns["before"])
    assert run.model is shell.user_ns["model"]
    assert set(run.metrics) >= {"train_loss", "val_loss"}
    assert all(isinstance(v, float) for v in run.metrics.values())
    assert (run.devices, run.accelerator, run.strategy, run.precision, run.num_processes) == \
        (2, "cpu", "ddp_notebook", "32-true", 2)
    assert run.epochs == 2 and run.global_step == 8  # 128 samples / 16 / 2 ranks * 2 epochs
    steps = [row["step"] for row in run.history if row["stage"] == "train"]
    assert steps == list(range(1, 9))
    assert [row["epoch"] for row in run.history if row["stage"] == "validation"] == [0, 1]
    assert run.elapsed > 0
    assert os.path.isfile(run.best_model_path) and os.path.isfile(run.last_model_path)
    assert os.path.dirname(run.best_model_path).startswith(os.path.join(os.getcwd(), "lightning_runs"))
    shown = dict(run.rows())  # both checkpoints named alike: from the notebook's folder
    assert (shown["best checkpoint"], shown["last checkpoint"]) == \
        (os.path.relpath(run.best_model_path), os.path.relpath(run.last_model_path))
    # notes before training, and none of Lightning's default noise
    out = captured.stdout
    assert "Training Regressor on 2 CPU processes" in out
    # the batch size is rank 0's to tell (the kernel never calls the user's dataloaders)
    assert "Effective batch size: 32 (16 x 2 processes)" in run.notes
    assert not [w for w in run.warnings if "exists and is not empty" in w], run.warnings
    assert "No strategy was given, so the 2 processes train with DDP (ddp_notebook)." in out
    for noise in ("GPU available", "💡 Tip", "| Name", "Initializing distributed"):
        assert noise not in captured.stdout + captured.stderr, noise
    assert run.summary and "layer" in run.summary
    assert "<table" in run._repr_html_() and "finished" in repr(run)


def test_the_same_cell_runs_twice_in_one_kernel(shell, no_orphans):
    cell = "model = Regressor()\ntrain_loader = DataLoader(dataset, batch_size=16)"
    first, _ = train(shell, CPU2, cell)
    second, _ = train(shell, CPU2, cell)
    assert first.result.status == second.result.status == "finished"
    assert first.result.ckpt_dir != second.result.ckpt_dir


def test_seed_makes_runs_repeatable(shell):
    cell = "model = Regressor()\ntrain_loader = DataLoader(dataset, batch_size=16, shuffle=True)"
    weights = []
    for _ in range(2):
        train(shell, f"{CPU2} --seed 3", cell)
        weights.append(shell.user_ns["model"].layer.weight.detach().clone())
    assert torch.equal(weights[0], weights[1])


def test_resume_last_continues_with_optimizer_state(shell, tmp_path, no_orphans):
    ckpt = tmp_path / "ckpts"
    cell = "model = Regressor()\ntrain_loader = DataLoader(dataset, batch_size=16)"
    first, _ = train(shell, f"{CPU2} --ckpt-dir {ckpt}", cell)
    assert first.result.global_step == 8
    saved = torch.load(ckpt / "last.ckpt", weights_only=False)
    assert saved["optimizer_states"][0]["state"]  # Adam moments are in the checkpoint
    second, captured = train(shell, f"--accelerator cpu --devices 2 --max-epochs 4 "
                                    f"--ckpt-dir {ckpt} --resume last", cell)
    run = second.result
    assert f"Resuming from {ckpt / 'last.ckpt'}" in captured.stdout
    assert run.status == "finished" and run.epochs == 4 and run.global_step == 16
    steps = [row["step"] for row in run.history if row["stage"] == "train"]
    assert steps[0] == 9, "training continued after the last step, not from zero"


def test_resume_last_without_a_checkpoint_is_a_usage_error(shell, tmp_path):
    with pytest.raises(UsageError, match="has no last.ckpt"):
        shell.run_cell_magic("lightning_train", f"--resume last --ckpt-dir {tmp_path}", "ran = 1")
    assert "ran" not in shell.user_ns
    with pytest.raises(UsageError, match="no run under"):
        shell.run_cell_magic("lightning_train", "--resume last", "ran = 1")
    with pytest.raises(UsageError, match="no such checkpoint"):
        shell.run_cell_magic("lightning_train", "--resume nowhere.ckpt", "ran = 1")


def test_resume_last_finds_the_latest_run(shell, no_orphans):
    cell = "model = Regressor()\ntrain_loader = DataLoader(dataset, batch_size=16)"
    first, _ = train(shell, CPU2, cell)
    second, captured = train(shell, "--accelerator cpu --devices 2 --max-epochs 3 --resume last",
                             cell)
    assert f"Resuming from {first.result.ckpt_dir}/last.ckpt" in captured.stdout
    assert second.result.ckpt_dir == first.result.ckpt_dir  # it goes on in the run's own folder
    assert second.result.global_step == 12


def test_out_names_the_result(shell):
    result, _ = train(shell, "--accelerator cpu --devices 1 --max-steps 2 --out fit1",
                      "model = Regressor()\ntrain_loader = DataLoader(dataset, batch_size=16)")
    assert shell.user_ns["fit1"] is result.result
    assert result.result.num_processes == 1 and result.result.global_step == 2


def test_datamodule_is_discovered(shell):
    result, _ = train(shell, "--accelerator cpu --devices 2 --max-epochs 1",
                      "model = Regressor()\ndm = Data()")
    assert "val_loss" in result.result.metrics


def test_class_only_cell_is_instantiated(shell):
    result, _ = train(shell, "--accelerator cpu --devices 1 --max-steps 2",
                      "class Tiny(WithOwnData):\n    pass")
    run = result.result
    assert type(run.model).__name__ == "Tiny" and run.global_step == 2


def test_modules_own_train_dataloader(shell):
    result, _ = train(shell, "--accelerator cpu --devices 2 --max-epochs 1",
                      "model = WithOwnData()")
    assert result.result.global_step == 4


def test_val_loader_picked_by_name(shell):
    result, _ = train(shell, "--accelerator cpu --devices 1 --max-epochs 1",
                      "model = Regressor()\ntrain_dl = DataLoader(dataset, batch_size=32)\n"
                      "val_dl = DataLoader(dataset, batch_size=64)")
    assert "val_loss" in result.result.metrics


@pytest.mark.parametrize("line, cell, words", [
    ("", "a = DataLoader(dataset)\nb = DataLoader(dataset)\nmodel = Regressor()",
     ["2 DataLoaders (a, b)", "--data NAME"]),
    ("", "m1 = Regressor()\nm2 = Regressor()", ["2 LightningModules (m1, m2)", "--model NAME"]),
    ("", "x = 1", ["binds no LightningModule", "--model NAME"]),
    ("", "class NeedsArgs(Regressor):\n    def __init__(self, width):\n        super().__init__()",
     ["NeedsArgs needs constructor arguments"]),
    ("--model nothing", "x = 1", ["--model nothing", "no variable 'nothing'"]),
    ("--data X", "model = Regressor()", ["--data X", "Tensor", "not a LightningDataModule"]),
    ("", "model = Regressor()", ["no training data", "train_dataloader()"]),
    ("", "class NoStep(pl.LightningModule):\n    def trainig_step(self, b, i): pass\n"
         "    def configure_optimizers(self): pass\nmodel = NoStep()\n"
         "loader = DataLoader(dataset)", ["NoStep has no training_step()", "trainig_step"]),
])
def test_discovery_and_prefork_refusals(shell, line, cell, words):
    with pytest.raises(UsageError) as info:
        shell.run_cell_magic("lightning_train", f"--accelerator cpu --devices 2 {line}", cell)
    for word in words:
        assert word in str(info.value), (word, str(info.value))
    assert not live_children()


def test_model_flag_picks_one_of_several(shell):
    result, _ = train(shell, "--accelerator cpu --devices 1 --max-steps 1 --model m2",
                      "m1 = Regressor()\nm2 = WithOwnData()")
    assert result.result.model is shell.user_ns["m2"]


def test_a_cell_error_is_the_users_own_traceback(shell):
    with capture_output():
        result = shell.run_cell("%%lightning_train --accelerator cpu\nmodel = Regressor()\n1/0")
    assert isinstance(result.error_in_exec, ZeroDivisionError)
    assert "model" in shell.user_ns  # the cell ran in the notebook's namespace up to the error


def test_gpu_readings_for_the_live_view_come_from_nvml(fake_nvml):
    from lightning_magic import readings
    from lightning_magic.train.launch.events import gpu_event

    readings.shutdown()
    try:
        event = gpu_event([1, 0])
    finally:
        readings.shutdown()
    assert event["kind"] == "gpu"
    assert [(r["rank"], r["index"]) for r in event["ranks"]] == [(0, 1), (1, 0)]
    assert event["ranks"][1]["utilization"] == 87
    assert event["ranks"][1]["memory_total"] == 80 * 2**30


def test_max_time_ends_training_with_a_checkpoint(shell):
    result, _ = train(shell, "--accelerator cpu --devices 2 --max-epochs 100000 --max-time 2",
                      "model = Regressor()\ntrain_loader = DataLoader(dataset, batch_size=16)")
    run = result.result
    assert run.status == "finished" and run.epochs < 100000
    assert os.path.isfile(run.last_model_path)


def test_resume_from_a_damaged_last_checkpoint_names_it_and_offers_the_best_one(shell, tmp_path):
    ckpt = tmp_path / "ckpts"
    cell = "model = Regressor()\ntrain_loader = DataLoader(dataset, batch_size=16)"
    train(shell, f"{CPU2} --ckpt-dir {ckpt}", cell)
    (ckpt / "last.ckpt").write_bytes((ckpt / "last.ckpt").read_bytes()[:1000])  # cut short
    with capture_output():
        result = shell.run_cell(f"%%lightning_train {CPU2} --ckpt-dir {ckpt} --resume last\n{cell}")
    error = result.error_in_exec
    assert isinstance(error, UsageError) and "is damaged" in str(error)
    assert str(ckpt / "last.ckpt") in str(error) and "epoch=1-step=8.ckpt" in str(error)
    assert not live_children()


HISTORY_CELL = '''
class Logged(Regressor):
    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("train_loss", loss, on_step=True, on_epoch=True)
        self.log("step_only", loss * 2)
        self.log("epoch_only", loss * 3, on_step=False, on_epoch=True)
        if batch_idx >= 5:  # a value first logged part-way through the epoch
            self.log("late", loss * 4)
        return loss


class Seen(pl.Callback):
    def __init__(self):
        self.rows, self.late = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        metrics = trainer.callback_metrics
        self.rows.append([trainer.global_step, float(metrics["train_loss_step"]),
                          float(metrics["step_only"])])
        if trainer.current_epoch == 0:
            self.late.append(float(metrics["late"]) if "late" in metrics else None)


seen = Seen()
model = Logged()
trainer = pl.Trainer(max_epochs=2, callbacks=[seen], logger=False, enable_checkpointing=False)
many = torch.utils.data.RandomSampler(dataset, replacement=True, num_samples=300)
trainer.fit(model, DataLoader(dataset, batch_size=1, sampler=many))
'''


DISPATCH_CELL = '''
from lightning_magic.train.ranks import callbacks as magic_callbacks


class Dispatched(pl.Callback):
    """Per batch hook: the callbacks Lightning will call it on (it skips what is not callable)."""

    def __init__(self):
        self.callers = {}

    def on_train_start(self, trainer, pl_module):
        for hook in ("on_train_batch_start", "on_train_batch_end", "on_validation_batch_end"):
            self.callers[hook] = [type(cb).__name__ for cb in trainer.callbacks
                                  if isinstance(cb, magic_callbacks.MAGIC_CALLBACKS)
                                  and callable(getattr(cb, hook, None))]
        self.first_magic = next(type(cb).__name__ for cb in trainer.callbacks
                                if isinstance(cb, magic_callbacks.MAGIC_CALLBACKS))
        self.magic = [type(cb).__name__ for cb in trainer.callbacks[1:]]


dispatched = Dispatched()
trainer = pl.Trainer(max_epochs=1, limit_train_batches=4, limit_val_batches=2,
                     callbacks=[dispatched])
trainer.fit(Regressor(), DataLoader(dataset, batch_size=4), DataLoader(dataset, batch_size=4))
'''


def test_the_magics_callbacks_cost_a_batch_one_hook_call(shell, no_orphans):
    # Lightning looks every hook up on every callback and enters a profiler context for each
    # it calls; the magic's per-batch work (history, events, heartbeat and stop) is one callback
    # in the Trainer and one call a batch, behind the cell's own callbacks, and the run still
    # records, reports and stops as before
    result, _ = train(shell, "--accelerator cpu --devices 1", DISPATCH_CELL)
    callers = shell.user_ns["dispatched"].callers
    assert callers == {"on_train_batch_start": [], "on_train_batch_end": ["RunCallbacks"],
                       "on_validation_batch_end": ["RunCallbacks"]}
    assert shell.user_ns["dispatched"].first_magic == "RunCallbacks"
    assert shell.user_ns["dispatched"].magic == ["RunCallbacks", "ModelCheckpoint",
                                                 "LastCheckpoint"]
    run = result.result
    assert [row["step"] for row in run.history if row["stage"] == "train"] == [1, 2, 3, 4]
    assert run.status == "finished"


def test_history_holds_every_steps_logged_values_as_callback_metrics_gave_them(shell, no_orphans):
    # 300 steps an epoch: the values of many steps become floats together, within an epoch and
    # at its end
    result, _ = train(shell, "--accelerator cpu --devices 1", HISTORY_CELL)
    run = result.result
    train_rows = [row for row in run.history if row["stage"] == "train"]
    assert [[row["step"], row["train_loss_step"], row["step_only"]] for row in train_rows] == \
        shell.user_ns["seen"].rows
    assert len(train_rows) == 600 and not any("epoch_only" in row for row in train_rows)
    late = [row.get("late") for row in train_rows if row["epoch"] == 0]
    assert late == shell.user_ns["seen"].late and late[:5] == [None] * 5 and None not in late[5:]
    stages = [row["stage"] for row in run.history]
    first_epoch_end = stages.index("epoch")
    assert stages[:first_epoch_end] == ["train"] * 300
    assert set(run.history[first_epoch_end]) >= {"train_loss", "epoch_only"}
