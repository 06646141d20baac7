"""Sharded training from a cell: Lightning's ModelParallelStrategy (FSDP2 ``fully_shard`` in
``configure_model``) on two real forked CPU ranks (gloo), and FSDPStrategy on GPUs (``gpu``).

The trained weights come back into the kernel's model whole, and equal those of the same Trainer
launched as a script by torchrun; interrupts write a distributed checkpoint that ``--resume last``
continues; a rank that raises and a rank that hangs end with their reports and no rank left.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from IPython.core.error import UsageError
from IPython.utils.capture import capture_output
from support.processes import live_children

from lightning_magic.train.launch.checkpoints import check_whole
from lightning_magic.train.returns.results import TrainingFailed

TORCHRUN = Path(sys.executable).parent / "torchrun"

MODULE = '''
import os, signal, time
import torch
import lightning.pytorch as pl
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.utils.data import DataLoader, TensorDataset


class Sharded(pl.LightningModule):
    """Layers made in __init__, sharded with FSDP2 in configure_model; `failure` runs on rank
    `fail_rank` at batch `fail_at`."""

    def __init__(self, failure=None, fail_rank=1, fail_at=2):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(),
                                       torch.nn.Linear(32, 1))
        self.failure, self.fail_rank, self.fail_at = failure, fail_rank, fail_at

    def configure_model(self):
        from torch.distributed.fsdp import fully_shard

        mesh = self.device_mesh["data_parallel"]
        for layer in self.net:
            if isinstance(layer, torch.nn.Linear):
                fully_shard(layer, mesh=mesh)
        fully_shard(self.net, mesh=mesh)

    def training_step(self, batch, batch_idx):
        if self.failure and self.global_rank == self.fail_rank and batch_idx == self.fail_at:
            self.failure()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.net(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=0.01)


generator = torch.Generator().manual_seed(0)
X = torch.randn(256, 8, generator=generator)
loader = DataLoader(TensorDataset(X, X.sum(1, keepdim=True)), batch_size=8)
'''

TRAINER = ("trainer = pl.Trainer(accelerator='cpu', devices=2, max_epochs=2, "
           "strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1))\n")

SCRIPT = f'''
import sys
import lightning.pytorch as pl
pl.seed_everything(0)
{MODULE}
model = Sharded()
{TRAINER.replace("max_epochs=2, ", "max_epochs=2, logger=False, enable_progress_bar=False, "
                 "enable_checkpointing=False, ")}
trainer.fit(model, loader)
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict
state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True,
                                                             cpu_offload=True))
if trainer.global_rank == 0:
    torch.save(state, sys.argv[1])
# as PyTorch asks of a torchrun script: left to interpreter exit, the gloo group's threads are
# torn down unjoined and a rank may abort ("terminate called without an active exception")
torch.distributed.barrier()
torch.distributed.destroy_process_group()
'''

RUN = "%%lightning_train --accelerator cpu --devices 2 --strategy model_parallel --seed 0"
ONE_MESH = ("Trainer(strategy=ModelParallelStrategy(data_parallel_size=2, tensor_parallel_size=1)"
            ", accelerator='cpu', devices=2)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def shell(ip):
    assert ip.run_cell(MODULE).success
    return ip


def shown(captured) -> str:
    return captured.stdout + captured.stderr + "".join(
        str(o.data.get("text/plain", "")) for o in captured.outputs)


def failing(shell, line: str, cell: str):
    with capture_output() as captured:
        result = shell.run_cell(f"{line}\n{cell}")
    assert isinstance(result.error_in_exec, TrainingFailed), result.error_in_exec
    assert not live_children(), "a rank outlived the failed run"
    return shell.user_ns["lightning_run"], shown(captured)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_trained_weights_are_whole_in_the_kernel_and_equal_a_torchrun_script(shell, tmp_path):
    with capture_output() as captured:
        result = shell.run_cell(f"%%lightning_train --seed 0 --ckpt-dir {tmp_path / 'ckpt'}\n"
                                f"model = Sharded()\n{TRAINER}trainer.fit(model, loader)")
    assert result.success, shown(captured)
    run = shell.user_ns["lightning_run"]
    assert run.status == "finished" and run.strategy == "model_parallel"
    assert run.num_processes == 2 and run.global_step == 32
    sharded = next(note for note in run.notes if note.startswith("Sharded:"))
    assert "data_parallel 2 x tensor_parallel 1" in sharded  # the cell's own strategy, kept
    assert "321 parameters" in sharded and "sharded over 2 ranks" in sharded
    # checkpoints are Lightning's distributed checkpoints: folders, one shard per rank
    last = tmp_path / "ckpt" / "last.ckpt"
    assert run.last_model_path == str(last) and last.is_dir()
    assert {"meta.pt", ".metadata"} <= set(os.listdir(last))
    check_whole(str(last), "last")
    kernel = {k: v.clone() for k, v in shell.user_ns["model"].state_dict().items()}
    assert all(type(v) is torch.Tensor for v in kernel.values())  # whole tensors, not shards

    script, weights = tmp_path / "script.py", tmp_path / "script_weights.pt"
    script.write_text(SCRIPT)
    done = subprocess.run(
        [str(TORCHRUN), "--nproc-per-node", "2", "--master-addr", "127.0.0.1",
         "--master-port", str(free_port()), str(script), str(weights)],
        cwd=tmp_path, capture_output=True, text=True, timeout=150,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:] + done.stdout[-1000:]  # the error first
    expected = torch.load(weights)
    assert set(expected) == set(kernel)
    untrained = shell.ev("Sharded()").state_dict()
    for name, value in expected.items():
        assert not torch.equal(value, untrained[name]), f"{name} was not trained"
        torch.testing.assert_close(kernel[name], value, rtol=1e-5, atol=1e-6, msg=name)
    assert not live_children()


@pytest.mark.slow
def test_a_model_made_on_the_meta_device_gets_its_trained_weights(shell):
    with capture_output() as captured:
        result = shell.run_cell(f"{RUN} --max-epochs 1\nwith torch.device('meta'):\n"
                                "    model = Sharded()\ntrain_loader = loader")
    assert result.success, shown(captured)
    run = result.result
    assert any("on the meta device in the kernel" in note for note in run.notes)
    assert any("data_parallel 1 x tensor_parallel 2" in note for note in run.notes)
    params = dict(shell.user_ns["model"].named_parameters())
    assert params and not any(p.is_meta for p in params.values())
    assert all(p.requires_grad and torch.isfinite(p).all() for p in params.values())


@pytest.mark.slow
def test_layers_made_in_configure_model_are_made_in_the_kernel_or_the_run_says_where(shell):
    # made in configure_model without the ranks' mesh: made in the kernel on the meta device
    with capture_output() as captured:
        result = shell.run_cell(
            f"{RUN} --max-epochs 1\nclass Late(Sharded):\n"
            "    def __init__(self):\n        super().__init__()\n        self.net = None\n"
            "    def configure_model(self):\n"
            "        if self.net is None:\n"
            "            self.net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 1))\n"
            "model = Late()\ntrain_loader = loader")
    assert result.success, shown(captured)
    assert shell.ev("model.net[0].weight.shape") == (4, 8)
    assert not shell.ev("model.net[0].weight.is_meta")
    # fully_shard in the same hook needs the ranks' mesh: nothing loaded, the report says where
    run, text = failing(shell, f"{RUN} --max-epochs 1", (
        "class LateSharded(Sharded):\n"
        "    def __init__(self):\n        super().__init__()\n        self.net = None\n"
        "    def configure_model(self):\n"
        "        if self.net is None:\n"
        "            self.net = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.Linear(4, 1))\n"
        "        super().configure_model()\n"
        "model = LateSharded()\ntrain_loader = loader"))
    assert "which cannot run in the kernel" in run.report.what_happened
    assert "consolidate_checkpoint CKPT" in run.traceback
    assert shell.ev("model.net") is None  # left as it was


@pytest.mark.slow
def test_interrupt_writes_a_distributed_checkpoint_and_resume_continues(shell, tmp_path):
    ckpt = tmp_path / "ckpt"
    line = f"{RUN} --max-epochs 2 --ckpt-dir {ckpt}"
    run, _ = failing(shell, line, "def failure():\n    os.kill(os.getppid(), signal.SIGINT)\n"
                                  "model = Sharded(failure, fail_rank=0, fail_at=3)\n"
                                  "train_loader = loader")
    assert run.status == "interrupted" and run.report.key == "interrupted"
    last = ckpt / "last.ckpt"
    assert last.is_dir() and {"meta.pt", ".metadata"} <= set(os.listdir(last))
    saved = torch.load(last / "meta.pt", weights_only=False)
    assert saved["global_step"] >= 4 and run.global_step == saved["global_step"]
    with capture_output() as captured:
        result = shell.run_cell(f"{line} --resume last\nmodel = Sharded()\ntrain_loader = loader")
    assert result.success, shown(captured)
    resumed = result.result
    assert f"Resuming from {last}" in captured.stdout
    assert resumed.status == "finished" and resumed.global_step == 64  # data_parallel 1
    steps = [row["step"] for row in resumed.history if row["stage"] == "train"]
    assert steps and steps[0] == saved["global_step"] + 1, "training went on from the checkpoint"
    assert not live_children()


@pytest.mark.slow
def test_a_rank_that_raises_is_reported(shell):
    run, text = failing(shell, f"{RUN} --max-epochs 1",
                        "def failure():\n    raise ValueError('shard went wrong')\n"
                        "model = Sharded(failure)\ntrain_loader = loader")
    assert run.status == "failed" and "rank 1" in run.report.what_happened.lower()
    assert "ValueError: shard went wrong" in run.report.what_happened
    assert text.count("Traceback (most recent call last)") == 0


@pytest.mark.slow
def test_a_rank_that_hangs_is_ended_by_timeout(shell):
    run, _ = failing(shell, f"{RUN} --max-epochs 1 --timeout 6",
                     "def failure():\n    time.sleep(600)\n"
                     "model = Sharded(failure)\ntrain_loader = loader")
    assert run.status == "timeout" and "rank 1" in (run.report.title +
                                                    run.report.what_happened).lower()


def test_the_sharding_note_says_what_the_trainer_does_and_hints_only_at_defaults():
    from lightning.pytorch.strategies import ModelParallelStrategy

    from lightning_magic.train.ranks.sharded import sharding_notes

    model = torch.nn.Linear(4, 4)
    default = sharding_notes(ModelParallelStrategy(), model, 2, "32-true")[0]
    assert "data_parallel 1 x tensor_parallel 2" in default
    assert "for FSDP2 over all 2 ranks, give Trainer(strategy=ModelParallelStrategy(" in default
    assert ("Trainer precision 32-true: the Trainer adds no mixed precision; a policy given to "
            "configure_model's fully_shard(mp_policy=...) applies as it is") in default
    chosen = sharding_notes(ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=2),
                            model, 2, "bf16-mixed")[0]
    assert "data_parallel 1 x tensor_parallel 2" in chosen and "for FSDP2" not in chosen
    assert "Trainer precision bf16-mixed: parameters and optimizer state stay float32" in chosen


def test_what_cannot_run_is_refused_before_the_fork(shell, tmp_path):
    with pytest.raises(UsageError, match="has no configure_model"):
        shell.run_cell_magic("lightning_train", "--accelerator cpu --devices 2 --strategy "
                             "model_parallel", "class Plain(Sharded):\n"
                             "    configure_model = pl.LightningModule.configure_model\n"
                             "model = Plain()\ntrain_loader = loader")
    with pytest.raises(UsageError, match="Lightning's FSDP needs a GPU"):
        shell.run_cell_magic("lightning_train", "--accelerator cpu --devices 2 --strategy fsdp",
                             "model = Sharded()\ntrain_loader = loader")
    with pytest.raises(UsageError, match="ModelParallelStrategy supports"):
        shell.run_cell_magic("lightning_train", "--accelerator cpu --devices 2 --strategy "
                             "model_parallel --precision 64",
                             "model = Sharded()\ntrain_loader = loader")
    with pytest.raises(UsageError, match=r"tensor_parallel_size=2\) is a mesh of 2 x 2 = 4 "
                                         r"processes, and this run has 2"):
        shell.run_cell_magic("lightning_train", "", "model = Sharded()\ntrainer = pl.Trainer("
                             "accelerator='cpu', devices=2, strategy=ModelParallelStrategy("
                             "data_parallel_size=2, tensor_parallel_size=2))\n"
                             "trainer.fit(model, loader)")
    with pytest.raises(UsageError, match=r"ModelParallelStrategy\(data_parallel_size=4, "
                                         r"tensor_parallel_size='auto'\) is a mesh of 4 x 2"):
        shell.run_cell_magic("lightning_train", "", "trainer = pl.Trainer(accelerator='cpu', "
                             "devices=2, strategy=ModelParallelStrategy(data_parallel_size=4))\n"
                             "trainer.predict(Sharded(), loader)")
    assert not live_children()
    cut = tmp_path / "cut.ckpt"
    cut.mkdir()
    (cut / "__0_0.distcp").write_bytes(b"x")
    with pytest.raises(UsageError, match=r"not a whole distributed checkpoint \(it has no "
                                         r"\.metadata and no meta\.pt"):
        check_whole(str(cut), "last")


TENSOR_PARALLEL = '''
class Parallel(pl.LightningModule):
    """Two layers split over the tensor-parallel ranks (column-, then row-wise)."""

    def __init__(self):
        super().__init__()
        self.w1, self.w2 = torch.nn.Linear(8, 16), torch.nn.Linear(16, 1)

    def configure_model(self):
        from torch.distributed.tensor.parallel import (ColwiseParallel, RowwiseParallel,
                                                       parallelize_module)
        parallelize_module(self, self.device_mesh["tensor_parallel"],
                           {"w1": ColwiseParallel(), "w2": RowwiseParallel()})

    def forward(self, x):
        return self.w2(torch.relu(self.w1(x)))

    def training_step(self, batch, batch_idx):
        loss = torch.nn.functional.mse_loss(self(batch[0]), batch[1])
        self.log("loss", loss)
        self.log("w1_square", self.w1.weight.pow(2).sum())  # a DTensor under tensor parallel
        return loss

    def predict_step(self, batch, batch_idx):
        return self(batch[0])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


odd_loader = DataLoader(TensorDataset(X[:72], X[:72].sum(1, keepdim=True)), batch_size=8)
'''


def plain_forward(shell, loader: str) -> list:
    shell.run_cell(f"with torch.no_grad():\n    expected = [model(b[0]) for b in {loader}]")
    return shell.user_ns["expected"]


@pytest.mark.slow
def test_tensor_parallel_trains_as_one_process_and_predicts_each_batch_once(shell):
    assert shell.run_cell(TENSOR_PARALLEL).success
    fit = ("%%lightning_train --accelerator cpu --strategy model_parallel --seed 0 "
           "--max-epochs 2 --devices {}\nmodel = Parallel()\ntrainer = pl.Trainer()\n"
           "trainer.fit(model, odd_loader)")
    with capture_output() as captured:
        result = shell.run_cell(fit.format(1))
    assert result.success, shown(captured)
    one = {k: v.clone() for k, v in shell.user_ns["model"].state_dict().items()}
    one_square = float(result.result.metrics["w1_square"])
    with capture_output() as captured:
        result = shell.run_cell(fit.format(2))
    assert result.success, shown(captured)
    run = result.result
    # the logged DTensor comes back as a plain tensor (its mesh means nothing in the kernel)
    assert type(shell.user_ns["trainer"].callback_metrics["w1_square"]) is torch.Tensor
    assert run.metrics["w1_square"] == pytest.approx(one_square, rel=1e-5)
    assert run.global_step == 18  # both ranks took every batch: data_parallel 1
    assert "Effective batch size: 8 (8 x 1 data-parallel group; the 2 tensor-parallel ranks " \
           "of a group share each batch)" in run.notes
    for name, value in shell.user_ns["model"].state_dict().items():
        assert type(value) is torch.Tensor
        torch.testing.assert_close(value, one[name], rtol=1e-5, atol=1e-6, msg=name)
    # predict: both ranks of the group see the same batches; every batch comes back once
    with capture_output() as captured:
        result = shell.run_cell("%%lightning_train --accelerator cpu --devices 2 --strategy "
                                "model_parallel\ntrainer = pl.Trainer(logger=False)\n"
                                "predicted = trainer.predict(model, odd_loader)")
    assert result.success, shown(captured)
    predicted, expected = shell.user_ns["predicted"], plain_forward(shell, "odd_loader")
    assert len(predicted) == len(expected) == 9
    for got, want in zip(predicted, expected):
        assert type(got) is torch.Tensor
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not live_children()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_fsdp2_predict_with_an_odd_number_of_batches_ends_with_each_batch_once(shell):
    # FSDP2 over 2 data-parallel ranks: every forward is an all-gather of both ranks, so the
    # rank with 4 of the 9 batches repeats its last one (dropped) instead of leaving rank 0 alone
    assert shell.run_cell(TENSOR_PARALLEL).success
    with capture_output() as captured:
        result = shell.run_cell(f"%%lightning_train --timeout 60\nclass Predicting(Sharded):\n"
                                "    def forward(self, x):\n        return self.net(x)\n"
                                "    def predict_step(self, batch, batch_idx, dataloader_idx=0):\n"
                                "        return self(batch[0])\nmodel = Predicting()\n"
                                f"trainer = pl.{ONE_MESH}\n"
                                "predicted = trainer.predict(model, odd_loader)")
    assert result.success, shown(captured)
    predicted, expected = shell.user_ns["predicted"], plain_forward(shell, "odd_loader")
    assert len(predicted) == 9
    for got, want in zip(predicted, expected):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    # loaders given as a dict: one list per loader, each batch once
    with capture_output() as captured:
        result = shell.run_cell("both = trainer.predict(model, {'a': odd_loader, 'b': odd_loader})")
    assert result.success, shown(captured)
    both = shell.user_ns["both"]
    assert [len(share) for share in both] == [9, 9]
    for share in both:
        for got, want in zip(share, expected):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not live_children()


# --- on GPUs ---------------------------------------------------------------------------------

GPU_CELL = '''
class Wide(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(*[torch.nn.Linear(1024, 1024) for _ in range(8)])

    def training_step(self, batch, batch_idx):
        return self.net(batch[0]).pow(2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=1e-3)


wide_loader = DataLoader(TensorDataset(torch.randn(512, 1024)), batch_size=64)
model = Wide()
'''


@pytest.mark.gpu
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["fsdp", "model_parallel"])
def test_one_gpu_sharded_run_gives_its_weights_back(shell, gpu_available, strategy):
    cell = GPU_CELL if strategy == "fsdp" else MODULE.split("generator =")[0] + \
        "model = Sharded()\n"
    loader = "wide_loader" if strategy == "fsdp" else "loader"
    with capture_output() as captured:
        result = shell.run_cell(f"%%lightning_train --devices 1 --strategy {strategy} "
                                f"--precision bf16-mixed --max-epochs 1\n{cell}"
                                f"train_loader = {loader}")
    assert result.success, shown(captured)
    run = result.result
    assert run.status == "finished" and run.accelerator == "gpu" and run.strategy == strategy
    before = shell.ev(f"{'Wide' if strategy == 'fsdp' else 'Sharded'}().state_dict()")
    after = shell.user_ns["model"].state_dict()
    assert set(after) == set(before) and all(v.device.type == "cpu" for v in after.values())
    assert not torch.cuda.is_initialized()


@pytest.mark.gpu
@pytest.mark.slow
def test_fsdp_shards_a_model_bigger_than_one_ranks_share(shell, gpu_available):
    if len(gpu_available) < 2:
        pytest.skip(f"needs two GPUs to shard over; NVML sees {len(gpu_available)}")
    with capture_output() as captured:
        result = shell.run_cell(
            f"%%lightning_train --devices 2 --strategy fsdp --max-epochs 1\n{GPU_CELL}"
            "class Measured(Wide):\n"
            "    def on_train_batch_end(self, outputs, batch, batch_idx):\n"
            "        local = sum(p.numel() for p in self.parameters())\n"
            "        self.log('local_params', float(local), rank_zero_only=True)\n"
            "model = Measured()\ntrain_loader = wide_loader")
    assert result.success, shown(captured)
    total = sum(p.numel() for p in shell.user_ns["model"].parameters())
    assert result.result.metrics["local_params"] < total
