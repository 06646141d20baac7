"""Failures in real forked CPU ranks: each is classified, reported, cleaned up, and the next run works."""

from __future__ import annotations

import os
import signal
import socket

import pytest
import torch
from support.processes import live_children
from IPython.utils.capture import capture_output

from lightning_magic.train.launch import launcher
from lightning_magic.train.returns.results import TrainingFailed

pytestmark = pytest.mark.slow

DEFINITIONS = '''
import os, signal, threading, time
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, Dataset, TensorDataset


class Model(pl.LightningModule):
    """Fails on `fail_rank` at batch `fail_at` with `failure()`."""

    def __init__(self, failure=None, fail_rank=1, fail_at=2):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)
        self.failure, self.fail_rank, self.fail_at = failure, fail_rank, fail_at

    def training_step(self, batch, batch_idx):
        if self.failure and self.global_rank == self.fail_rank and batch_idx == self.fail_at:
            self.failure()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


generator = torch.Generator().manual_seed(0)
X = torch.randn(256, 8, generator=generator)
dataset = TensorDataset(X, X.sum(1, keepdim=True))
loader = DataLoader(dataset, batch_size=8)
'''

RUN = "%%lightning_train --accelerator cpu --devices 2 --max-epochs 1"


@pytest.fixture
def shell(ip):
    assert ip.run_cell(DEFINITIONS).success
    return ip


def failing_run(shell, body, line=RUN, extra_cell=""):
    """Run a cell whose rank fails; return (run, text shown in the cell)."""
    fail_at = 0 if "--check" in line else 2
    with capture_output() as captured:
        result = shell.run_cell(f"{line}\n{extra_cell}def failure():\n{body}\n"
                                f"model = Model(failure, fail_at={fail_at})\ntrain_loader = loader")
    assert isinstance(result.error_in_exec, TrainingFailed), result.error_in_exec
    run = shell.user_ns["lightning_run"]
    assert run.status in ("failed", "timeout", "interrupted")
    shown = captured.stdout + captured.stderr + "".join(
        str(o.data.get("text/plain", "")) for o in captured.outputs)
    assert not live_children(), "a rank outlived the failed run"
    return run, shown


def next_run_works(shell):
    with capture_output():
        result = shell.run_cell(f"{RUN}\nmodel = Model()\ntrain_loader = loader")
    assert result.success and result.result.status == "finished"
    assert not live_children()


def test_exception_in_a_rank_names_rank_and_users_line(shell):
    run, shown = failing_run(shell, "    raise ValueError('bad <value> & more')")
    assert run.report.key == "generic"
    assert "rank 1" in run.report.what_happened.lower()
    assert "ValueError: bad <value> & more" in run.report.what_happened
    assert "raise ValueError" in " ".join(run.report.what_to_do) + run.report.what_happened
    assert "Traceback" in run.traceback and "ValueError" in run.traceback
    # the cell shows the report, not a wall of rank tracebacks
    assert shown.count("Traceback (most recent call last)") == 0
    html = run.report.html()
    assert "&lt;value&gt; &amp;" in html and "<details" in html
    next_run_works(shell)


def test_the_same_exception_on_every_rank_is_reported_as_every_ranks(shell, tmp_path):
    # rank 1 raises first (it tells rank 0 through a FIFO), then rank 0 raises the same error
    fifo = tmp_path / "raised.fifo"
    os.mkfifo(fifo)
    with capture_output():
        result = shell.run_cell(
            f"{RUN}\nclass Both(Model):\n"
            "    def training_step(self, batch, batch_idx):\n"
            "        if batch_idx == 2:\n"
            f"            with open({str(fifo)!r}, 'w' if self.global_rank == 1 else 'r') as f:\n"
            "                f.write('raised') if self.global_rank == 1 else f.read()\n"
            "            raise ValueError('the same bug')\n"
            "        return super().training_step(batch, batch_idx)\n"
            "model = Both()\ntrain_loader = loader")
    assert isinstance(result.error_in_exec, TrainingFailed), result.error_in_exec
    report = shell.user_ns["lightning_run"].report
    assert report.title.endswith(" on every rank"), report.title
    assert report.what_happened.startswith("Every rank raised ValueError: the same bug")
    assert not live_children()


def test_rank_exit_is_reported(shell):
    run, _ = failing_run(shell, "    os._exit(3)")
    assert "rank 1" in run.report.what_happened.lower() and "3" in run.report.what_happened
    next_run_works(shell)


def test_a_rank_that_exits_with_status_zero_is_the_cause_not_its_peers_gloo_error(shell):
    run, _ = failing_run(shell, "    os._exit(0)")
    assert run.report.key != "generic" and "gloo" not in run.report.title.lower()
    assert "rank 1" in (run.report.title + run.report.what_happened).lower()
    assert "exit code 0" in run.report.what_happened
    next_run_works(shell)


@pytest.mark.parametrize("signum, name", [("SIGKILL", "SIGKILL"), ("SIGSEGV", "SIGSEGV"),
                                          ("SIGABRT", "SIGABRT")])
def test_rank_killed_by_a_signal(shell, signum, name):
    # SIGKILL comes from outside; a crash (SIGSEGV, SIGABRT) happens in the thread that crashes
    body = "    os.kill(os.getpid(), signal.SIGKILL)" if signum == "SIGKILL" else \
        f"    signal.pthread_kill(threading.get_ident(), signal.{signum})"
    run, _ = failing_run(shell, body)
    assert run.report.key == "signal_killed"
    assert name in run.report.title + run.report.what_happened
    assert "rank 1" in run.report.what_happened.lower()
    advice = " ".join(run.report.what_to_do)
    assert "memory" in (run.report.what_happened + advice).lower()
    if signum != "SIGKILL":  # a crash leaves the rank's Python stack, down to the user's code
        assert "in failure" in run.report.traceback and "in training_step" in run.report.traceback
    next_run_works(shell)


def test_a_crash_stack_survives_the_kernels_signal_handlers_being_reset(shell):
    # the kernel enabled faulthandler (as our own advice says), then something set the crash
    # signals' handlers back (plain Lightning's fit restores every handler it saw on teardown)
    import faulthandler

    faulthandler.enable()
    saved = {s: signal.getsignal(s) for s in (signal.SIGSEGV, signal.SIGABRT)}
    try:
        for signum in saved:
            signal.signal(signum, signal.SIG_DFL)
        run, _ = failing_run(shell, "    signal.pthread_kill(threading.get_ident(), "
                                    "signal.SIGSEGV)")
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        faulthandler.disable()
        faulthandler.enable()  # pytest's own fault handler, as it was
    assert run.report.key == "signal_killed"
    assert "in failure" in run.report.traceback and "in training_step" in run.report.traceback


def test_cuda_out_of_memory(shell):
    run, _ = failing_run(shell, "    raise torch.cuda.OutOfMemoryError('CUDA out of memory. "
                                "Tried to allocate 2.00 GiB')")
    assert run.report.key == "cuda_oom"
    advice = " ".join(run.report.what_to_do)
    assert "8" in advice  # the current batch size, from the training DataLoader
    assert "--accumulate-grad-batches" in advice and "bf16-mixed" in advice
    next_run_works(shell)


def test_bad_fork_after_the_fact(shell):
    run, _ = failing_run(shell, "    raise RuntimeError('Cannot re-initialize CUDA in forked "
                                "subprocess. To use CUDA with multiprocessing, you must use the "
                                "spawn start method')")
    assert run.report.key == "bad_fork"
    assert "restart" in (run.report.what_happened + " ".join(run.report.what_to_do)).lower()


def test_process_group_error(shell):
    run, _ = failing_run(shell, "    raise torch.distributed.DistBackendError('NCCL error in: "
                                "ProcessGroupNCCL.cpp:1970, unhandled system error')")
    assert run.report.key == "nccl"
    advice = " ".join(run.report.what_to_do)
    assert "NCCL_DEBUG=INFO" in advice and "--timeout" in advice


def test_device_mismatch(shell):
    run, _ = failing_run(shell, "    raise RuntimeError('Expected all tensors to be on the same "
                                "device, but found at least two devices, cuda:0 and cpu!')")
    assert run.report.key == "device_mismatch"
    advice = " ".join(run.report.what_to_do)
    assert "self.device" in advice and "register_buffer" in advice


def test_openmp_after_fork(shell):
    run, _ = failing_run(shell, "    raise RuntimeError('Invalid thread pool!')")
    assert run.report.key == "openmp_fork"


def test_non_finite_loss(shell):
    with capture_output():
        result = shell.run_cell(
            f"{RUN}\nclass Diverging(Model):\n"
            "    def training_step(self, batch, batch_idx):\n"
            "        loss = super().training_step(batch, batch_idx)\n"
            "        return loss * float('nan') if batch_idx == 3 else loss\n"
            "model = Diverging()\ntrain_loader = loader")
    assert isinstance(result.error_in_exec, TrainingFailed)
    run = shell.user_ns["lightning_run"]
    assert run.report.key == "non_finite_loss"
    assert "nan" in run.report.what_happened.lower() and "batch 3" in run.report.what_happened
    advice = " ".join(run.report.what_to_do).lower()
    assert "learning rate" in advice and "gradient" in advice
    assert not live_children()


def test_dataloader_worker_failure(shell):
    with capture_output():
        result = shell.run_cell(
            f"{RUN}\nclass Broken(Dataset):\n"
            "    def __len__(self): return 64\n"
            "    def __getitem__(self, i):\n"
            "        if i == 20: raise KeyError(f'sample {i} is missing')\n"
            "        return torch.zeros(8), torch.zeros(1)\n"
            "model = Model()\ntrain_loader = DataLoader(Broken(), batch_size=4, num_workers=1)")
    assert isinstance(result.error_in_exec, TrainingFailed)
    run = shell.user_ns["lightning_run"]
    assert run.report.key == "dataloader_worker"
    assert "sample 20 is missing" in run.report.what_happened
    assert not live_children()


def test_misconfigured_training_step(shell):
    with capture_output():
        result = shell.run_cell(
            f"{RUN}\nclass NoLoss(Model):\n"
            "    def training_step(self, batch, batch_idx):\n"
            "        return {'not_loss': super().training_step(batch, batch_idx)}\n"
            "model = NoLoss()\ntrain_loader = loader")
    assert isinstance(result.error_in_exec, TrainingFailed)
    run = shell.user_ns["lightning_run"]
    assert "loss" in run.report.what_happened
    assert not live_children()


def test_hang_is_ended_by_timeout_and_names_the_stalled_rank(shell):
    run, _ = failing_run(shell, "    time.sleep(600)",
                         line="%%lightning_train --accelerator cpu --devices 2 --max-epochs 1 "
                              "--timeout 8")
    assert run.status == "timeout"
    assert run.report.key == "timeout"
    assert "rank 1" in (run.report.title + run.report.what_happened).lower()
    assert "--timeout 8" in run.report.what_happened
    assert "time.sleep(600)" in run.traceback or "in failure" in run.traceback  # its stack
    next_run_works(shell)


def test_interrupt_checkpoints_stops_and_resume_continues(shell, tmp_path):
    ckpt = tmp_path / "ckpt"
    body = "    os.kill(os.getppid(), signal.SIGINT)"
    run, _ = failing_run(shell, body, line=f"%%lightning_train --accelerator cpu --devices 2 "
                                           f"--max-epochs 3 --ckpt-dir {ckpt}")
    assert run.status == "interrupted"
    assert run.report.key == "interrupted"
    saved = torch.load(ckpt / "last.ckpt", weights_only=False)
    assert saved["global_step"] >= 2  # the state at the moment of the interrupt
    assert run.global_step == saved["global_step"]
    # the kernel is alive and the next cell resumes from that checkpoint
    with capture_output():
        result = shell.run_cell(f"%%lightning_train --accelerator cpu --devices 2 --max-epochs 3 "
                                f"--ckpt-dir {ckpt} --resume last\nmodel = Model()\n"
                                "train_loader = loader")
    resumed = result.result
    assert resumed.status == "finished" and resumed.global_step == 48
    first = [r["step"] for r in resumed.history if r["stage"] == "train"]
    assert first and first[0] == saved["global_step"] + 1, "training went on from the checkpoint"
    assert not live_children()


def test_address_in_use_is_retried_on_another_port(shell, monkeypatch):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    ports = iter([busy.getsockname()[1]])
    real = launcher.free_port
    monkeypatch.setattr(launcher, "free_port", lambda: next(ports, None) or real())
    try:
        with capture_output():
            result = shell.run_cell(f"{RUN}\nmodel = Model()\ntrain_loader = loader")
    finally:
        busy.close()
    assert result.success and result.result.status == "finished"


def test_address_in_use_twice_is_reported(shell, monkeypatch):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    monkeypatch.setattr(launcher, "free_port", lambda: busy.getsockname()[1])
    try:
        with capture_output():
            result = shell.run_cell(f"{RUN}\nmodel = Model()\ntrain_loader = loader")
    finally:
        busy.close()
    assert isinstance(result.error_in_exec, TrainingFailed)
    assert shell.user_ns["lightning_run"].report.key == "address_in_use"
    assert not live_children()


def test_check_is_a_dry_run(shell):
    with capture_output():
        result = shell.run_cell("%%lightning_train --accelerator cpu --devices 2 --check\n"
                                "model = Model()\nbefore = model.layer.weight.detach().clone()\n"
                                "train_loader = loader")
    run = result.result
    assert result.success and run.status == "checked"
    assert run.checks["all_reduce"] == 2.0 and "loss" in run.checks
    assert "The configuration works" in repr(run)
    assert torch.equal(shell.user_ns["model"].layer.weight, shell.user_ns["before"])
    assert not os.path.exists("lightning_runs") or not any(
        p.endswith(".ckpt") for _, _, files in os.walk("lightning_runs") for p in files)


def test_check_reports_what_failed(shell):
    run, _ = failing_run(shell, "    raise ValueError('broken forward')",
                         line="%%lightning_train --accelerator cpu --devices 2 --check",
                         extra_cell="")
    assert run.status == "failed" and "broken forward" in run.report.what_happened


def test_interrupt_during_validation_stops_every_rank(shell, tmp_path):
    with capture_output():
        result = shell.run_cell(
            f"%%lightning_train --accelerator cpu --devices 2 --max-epochs 3 "
            f"--ckpt-dir {tmp_path / 'ckpt'}\n"
            "class Validating(Model):\n"
            "    def validation_step(self, batch, batch_idx):\n"
            "        if self.global_rank == 0 and batch_idx == 1 and not self.trainer.sanity_checking:\n"
            "            os.kill(os.getppid(), signal.SIGINT)\n"
            "        x, y = batch\n"
            "        return torch.nn.functional.mse_loss(self.layer(x), y)\n"
            "model = Validating()\ntrain_loader = loader\nval_loader = DataLoader(dataset, batch_size=4)")
    assert isinstance(result.error_in_exec, TrainingFailed)
    run = shell.user_ns["lightning_run"]
    assert run.status == "interrupted" and run.report.key == "interrupted"
    assert run.epochs == 0  # stopped in the first validation, not after the 5 s grace
    assert not live_children()
    next_run_works(shell)


def test_a_misspelled_name_in_a_rank_gets_did_you_mean(shell):
    """Python 3.11 gives the hint only from its own excepthook, which a rank's report does not
    pass through: the report must say it."""
    run, _ = failing_run(shell, "    learning_rate = 0.1\n    print(learning_rat)")
    assert run.report.key == "name_error", run.report.text()
    assert "Did you mean: 'learning_rate'?" in run.report.what_happened
    assert "Write `learning_rate` instead of `learning_rat`" in " ".join(run.report.what_to_do)
    next_run_works(shell)
