"""Failures explained: each built from the real exception, signal or exit a rank produces."""

from __future__ import annotations

import errno
import faulthandler
import html
import mmap
import multiprocessing
import os
import resource
import signal
import socket
import sys
import tempfile
import traceback
from html.parser import HTMLParser

from IPython.utils.capture import capture_output

import psutil
import pytest
import torch
import torch.nn.functional as F

from lightning_magic.suggestions import (
    Failure,
    Report,
    explain,
    user_frame_from_traceback,
)
from lightning_magic.suggestions.frames import describe_frame, is_library_filename

FORK = multiprocessing.get_context("fork")
HTML_TAGS = {"div", "p", "table", "tr", "td", "ol", "li", "code", "br", "details", "summary", "pre"}
THIS_FILE = os.path.abspath(__file__)


# -- running code the way a rank runs it ------------------------------------------------------------


def in_rank(fn, *, rank=1, world_size=2, context=None) -> Failure:
    """Run ``fn`` in a forked process, as a rank runs, and return the Failure it reports."""
    receive, send = FORK.Pipe(duplex=False)

    def target():
        try:
            fn()
        except BaseException as exc:  # noqa: BLE001 - a rank reports whatever it raised
            send.send(Failure.from_exception(exc, rank=rank, world_size=world_size, context=context))
        else:
            send.send(None)

    process = FORK.Process(target=target)
    process.start()
    try:
        assert receive.poll(120), "the forked rank reported nothing"
        failure = receive.recv()
    finally:
        process.join(30)
    assert failure is not None, "the code was expected to raise in the rank"
    return failure


def killed_rank(fn) -> int:
    """Run ``fn`` in a forked process that dies in it; return the process's exit code."""
    process = FORK.Process(target=fn)
    process.start()
    process.join(60)
    assert process.exitcode is not None, "the forked process did not end"
    return process.exitcode


def raised_here(fn, *, rank=1, world_size=2, context=None) -> Failure:
    """Call ``fn`` in this process and build the Failure from what it raised."""
    try:
        fn()
    except Exception as exc:
        return Failure.from_exception(exc, rank=rank, world_size=world_size, context=context)
    raise AssertionError("expected an exception")


def host_memory() -> dict:
    memory = psutil.virtual_memory()
    return {"total": memory.total, "used": memory.used, "available": memory.available, "percent": memory.percent}


# -- what every report must satisfy -----------------------------------------------------------------


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)


def check(report: Report, key: str, rank: int | None = 1) -> Report:
    assert report.key == key, (report.key, report.text())
    if rank is not None:
        assert f"rank {rank}" in (report.title + report.what_happened).lower()
    assert report.what_to_do and all(step.strip() for step in report.what_to_do)
    if key not in ("cuda_initialized", "bad_fork"):
        assert not report.restart_kernel

    block = report.html()
    parser = _Tags()
    parser.feed(block)
    assert set(parser.tags) <= HTML_TAGS, f"unescaped markup in {sorted(set(parser.tags) - HTML_TAGS)}"
    assert html.escape(report.title) in block.replace("<code>", "`").replace("</code>", "`")
    if report.traceback:
        assert "<details" in block and "<summary" in block
        assert html.escape(report.traceback.rstrip()) in block
    else:
        assert "<details" not in block

    text = report.text()
    for markup in ("<div", "<p ", "<code>", "<br>", "<details", "<li>", "&lt;", "&gt;", "&amp;", "&quot;"):
        assert markup not in text
    assert report.title in text and report.what_happened in text
    assert all(step in text for step in report.what_to_do)
    return report


def steps(report: Report) -> str:
    return "\n".join(report.what_to_do)


# -- CUDA --------------------------------------------------------------------------------------------

OOM_MESSAGE = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.10 GiB of which "
    "1.06 GiB is free. Process 4242 has 78.03 GiB memory in use. Of the allocated memory 76.12 GiB is "
    "allocated by PyTorch, and 1.21 GiB is reserved by PyTorch but unallocated. If reserved but unallocated "
    "memory is large try setting PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation."
)


def test_cuda_oom_names_batch_size_precision_and_gpu_memory():
    def forward():
        raise torch.cuda.OutOfMemoryError(OOM_MESSAGE)

    gpus = [{"index": 0, "name": "NVIDIA H100 80GB HBM3", "used": 78 * 2**30, "total": 80 * 2**30}]
    failure = raised_here(forward, context={"batch_size": 64, "precision": "32-true", "gpu_memory": gpus})
    assert failure.exc_type == "torch.OutOfMemoryError"
    report = check(explain(failure), "cuda_oom")

    assert report.title == "CUDA out of memory on rank 1"
    raised = "Rank 1 (of 2) raised torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert raised in report.what_happened
    assert f"{THIS_FILE}, line" in report.what_happened  # the user's line, not torch's
    assert "`batch_size=64`" in steps(report) and "`batch_size=32`" in steps(report)
    assert "`--accumulate-grad-batches 2` with `batch_size=32`" in steps(report)
    assert "effective batch of 64" in steps(report)
    assert "precision='32-true'" in steps(report) and "--precision bf16-mixed" in steps(report)
    assert "gradient checkpointing" in steps(report)
    assert "expandable_segments:True" in steps(report)
    assert report.facts == (("GPU 0 (NVIDIA H100 80GB HBM3)", "78.0 GiB of 80.0 GiB used (98%)"),)
    assert "<td" in report.html() and "NVIDIA H100 80GB HBM3" in report.text()


def test_cuda_oom_without_readings_or_batch_size_still_advises():
    def forward():
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB.")

    report = check(explain(raised_here(forward, context={"precision": "bf16-mixed", "accumulate_grad_batches": 4})),
                   "cuda_oom")
    assert report.facts == ()
    assert "--accumulate-grad-batches" in steps(report)
    assert "--precision" not in steps(report)  # already mixed precision


def test_cuda_oom_of_a_sharded_run_names_the_share_of_each_rank_and_sharding_options():
    def forward():
        raise torch.cuda.OutOfMemoryError(OOM_MESSAGE)

    context = {"strategy": "model_parallel", "model_bytes": 16 * 2**30, "precision": "bf16-mixed"}
    report = check(explain(raised_here(forward, context=context)), "cuda_oom")
    assert "Each rank held about 8.00 GiB of the 16.00 GiB model (2 ranks)" in report.what_happened
    assert "--precision bf16-true" in steps(report) and "cpu_offload=True" in steps(report)
    assert "activation_checkpointing_policy" in steps(report)


BAD_FORK_MESSAGE = (
    "Cannot re-initialize CUDA in forked subprocess. To use CUDA with multiprocessing, you must use the "
    "'spawn' start method"
)


def test_cuda_initialized_in_kernel_names_the_cell_and_requires_restart():
    failure = Failure("cuda_initialized", context={"cuda_culprit": {"cell": 3, "reason": "import bitsandbytes"}})
    report = check(explain(failure), "cuda_initialized", rank=None)
    assert report.restart_kernel
    assert "cell In [3] (import bitsandbytes)" in report.what_happened
    assert "Restart the kernel" in report.what_to_do[0]
    assert "import it inside your LightningModule" in steps(report)
    assert "%gpu_status" in steps(report)


def test_cuda_initialized_without_culprit_lists_likely_causes():
    report = check(explain(Failure("cuda_initialized")), "cuda_initialized", rank=None)
    assert report.restart_kernel and ".cuda()" in report.what_happened


def test_bad_fork_after_the_fact_requires_restart():
    def rank():
        raise RuntimeError(BAD_FORK_MESSAGE)

    failure = in_rank(rank, context={"cuda_culprit": {"cell": 7, "reason": "`.cuda()` call"}})
    report = check(explain(failure), "bad_fork")
    assert report.restart_kernel
    assert "cell In [7]" in report.what_happened
    assert "Rank 1 (of 2) raised RuntimeError: Cannot re-initialize" in report.what_happened
    assert "Restart the kernel" in report.what_to_do[0]


class _Items(torch.utils.data.Dataset):
    def __init__(self, fail):
        self.fail = fail

    def __len__(self):
        return 4

    def __getitem__(self, index):
        self.fail()
        return torch.zeros(2)


def _load_one_batch(fail, num_workers=1):
    loader = torch.utils.data.DataLoader(_Items(fail), batch_size=2, num_workers=num_workers)
    next(iter(loader))


def test_bad_fork_in_a_dataloader_worker_does_not_ask_for_restart():
    def cuda_in_worker():
        raise RuntimeError(BAD_FORK_MESSAGE)

    report = check(explain(in_rank(lambda: _load_one_batch(cuda_in_worker))), "bad_fork")
    assert not report.restart_kernel
    assert "DataLoader worker" in report.title and "num_workers=0" in steps(report)


def test_device_mismatch_from_a_real_operation():
    def step():
        return torch.cat([torch.ones(2), torch.ones(2, device="meta")])

    report = check(explain(raised_here(step)), "device_mismatch")
    assert "(meta and cpu)" in report.what_happened
    assert "self.device" in steps(report) and "register_buffer" in steps(report) and "type_as" in steps(report)
    assert f"Look at {THIS_FILE}, line" in report.what_to_do[0]


def test_device_mismatch_cuda_message():
    def step():
        raise RuntimeError(
            "Expected all tensors to be on the same device, but found at least two devices, cuda:0 and cpu! "
            "(when checking argument for argument mat1 in method wrapper_CUDA_addmm)"
        )

    report = check(explain(raised_here(step)), "device_mismatch")
    assert "(cuda:0 and cpu)" in report.what_happened and ".cuda()" in steps(report)


def test_device_side_assert():
    error = getattr(torch, "AcceleratorError", RuntimeError)

    def step():
        raise error(
            "CUDA error: device-side assert triggered\n"
            "Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions."
        )

    report = check(explain(raised_here(step, context={"accelerator": "gpu"})), "device_assert")
    assert "--accelerator cpu" in steps(report) and "CUDA_LAUNCH_BLOCKING=1" in steps(report)


# -- ranks that die -----------------------------------------------------------------------------------


def _die(number):
    def target():
        faulthandler.disable()  # pytest enables it; the crash report is not what is tested
        if number == signal.SIGSEGV:
            faulthandler._sigsegv()
        elif number == signal.SIGABRT:
            os.abort()
        elif number == signal.SIGBUS:
            _bus_error()
        os.kill(os.getpid(), number)

    return target


def _bus_error():
    """Touch a mapped page past the end of its file: the kernel answers with SIGBUS, as when /dev/shm is full."""
    with tempfile.TemporaryFile() as file:
        file.truncate(mmap.PAGESIZE * 2)
        mapped = mmap.mmap(file.fileno(), mmap.PAGESIZE * 2)
        file.truncate(0)
        return mapped[mmap.PAGESIZE]


@pytest.mark.parametrize(
    ("number", "title", "clue"),
    [
        (signal.SIGKILL, "Rank 1 was killed (SIGKILL)", "out-of-memory killer"),
        (signal.SIGSEGV, "Rank 1 crashed (segmentation fault)", "faulthandler.enable()"),
        (signal.SIGABRT, "Rank 1 aborted (SIGABRT)", "NCCL_DEBUG=INFO"),
        (signal.SIGTERM, "Rank 1 was terminated (SIGTERM)", "scheduler"),
    ],
)
def test_rank_killed_by_a_real_signal(number, title, clue):
    exitcode = killed_rank(_die(number))
    assert exitcode == -number
    context = {"host_memory": host_memory(), "num_workers": 4}
    by_signal = Failure("signal", rank=1, world_size=2, signal=-exitcode, context=context)
    by_exitcode = Failure("exit", rank=1, world_size=2, exitcode=exitcode, context=context)
    for failure in (by_signal, by_exitcode):
        report = check(explain(failure), "signal_killed")
        assert report.title == title
        assert f"Rank 1 (of 2) was killed by {signal.Signals(number).name} (signal {number})" in report.what_happened
        assert clue in report.text()
        assert "Host memory" in report.what_happened and "available" in report.what_happened
    if number == signal.SIGKILL:
        assert "`num_workers=4` on each of the 2 ranks, 8 worker processes in all; try `num_workers=2`" in steps(report)
        assert "dmesg" in steps(report) and "mmap_mode" in steps(report)
        assert "the kill itself frees memory" in report.what_happened  # this machine had memory to spare


def test_sigkill_with_host_memory_nearly_full_blames_memory():
    exitcode = killed_rank(_die(signal.SIGKILL))
    full = {"total": 24 * 2**30, "used": 23 * 2**30, "available": 2**29, "percent": 97.5}
    report = check(explain(Failure("signal", rank=0, world_size=2, signal=-exitcode, context={"host_memory": full})),
                   "signal_killed", rank=0)
    assert report.title == "Rank 0 was killed (SIGKILL, likely out of host memory)"
    assert "Host memory at the time: 23.0 GiB of 24.0 GiB used (98%), 512.0 MiB available." in report.what_happened


def test_rank_killed_by_sigbus_is_shared_memory():
    exitcode = killed_rank(_die(signal.SIGBUS))
    assert exitcode == -signal.SIGBUS
    shm = {"total": 64 * 2**20, "free": 0}
    report = check(explain(Failure("signal", rank=0, world_size=2, signal=-exitcode, context={"shm": shm})),
                   "shm_exhausted", rank=0)
    assert "SIGBUS" in report.what_happened and "0 MiB free of 64 MiB" in report.what_happened
    assert "--shm-size" in steps(report) and ("/dev/shm", "0 B free of 64.0 MiB") in report.facts


def test_rank_that_exits_without_an_exception():
    exitcode = killed_rank(lambda: os._exit(3))
    failure = Failure("exit", rank=1, world_size=2, exitcode=exitcode, context={"stderr": "fatal: bad input\n"})
    report = check(explain(failure), "rank_exited")
    assert report.title == "Rank 1 exited early (exit code 3)"
    assert "exit code 3" in report.what_happened and "fatal: bad input" in report.what_happened
    assert "os._exit()" in steps(report)


def test_sys_exit_in_the_rank_names_the_line():
    def training_step():
        sys.exit(2)

    report = check(explain(in_rank(training_step)), "rank_exited")
    assert report.title == "Rank 1 exited early (exit code 2)"
    assert "Rank 1 (of 2) called `sys.exit(2)` at " + THIS_FILE in report.what_happened
    assert "`sys.exit(2)`" in report.what_happened


def test_host_oom_from_a_real_allocation():
    report = check(explain(in_rank(lambda: torch.empty(2**50), context={"host_memory": host_memory()})), "host_oom")
    assert "DefaultCPUAllocator: can't allocate memory" in report.what_happened
    assert "a shape is wrong" in steps(report)
    assert report.facts[0][0] == "Host memory"


def test_timeout_names_the_stalled_rank_and_the_flag():
    failure = Failure("timeout", rank=1, world_size=2, timeout=30.0, context={"num_workers": 2})
    report = check(explain(failure), "timeout")
    assert report.title == "Timed out: rank 1 stalled"
    assert "`--timeout 30`" in report.what_happened and "`--timeout 60`" in steps(report)
    assert "(now 2)" in steps(report) and "NCCL_P2P_DISABLE=1" in steps(report)


def test_a_hang_report_leads_with_the_stalled_ranks_own_line_in_cell_terms(ip, tmp_path):
    # a real faulthandler dump (what the launcher gathers from a stalled rank) of cell code
    dump = tmp_path / "stack.txt"
    defined = ip.run_cell("import faulthandler\ndef waits(path):\n    with open(path, 'w') as f:\n"
                          "        faulthandler.dump_traceback(f)\n", store_history=True)
    assert ip.run_cell(f"waits({str(dump)!r})", store_history=True).success
    stack = dump.read_text()
    stacks = ("--- rank 0 ---\nThread 0x1 (most recent call first):\n"
              '  File "/site-packages/torch/distributed/distributed_c10d.py", line 2 in all_reduce\n'
              f"--- rank 1 ---\n{stack}")
    host = {"total": 64 * 2**30, "used": 8 * 2**30, "available": 56 * 2**30, "percent": 12.5}
    failure = Failure("timeout", rank=1, world_size=2, timeout=8.0, traceback=stacks,
                      context={"host_memory": host})
    report = check(explain(failure), "timeout")

    cell = defined.execution_count
    assert report.what_happened.startswith(
        f"Rank 1 is stuck at cell In [{cell}], line 4: `faulthandler.dump_traceback(f)` (in `waits`).")
    assert "--timeout 8" in report.what_happened
    assert f"cell In [{cell}], line 4 in waits" in report.traceback
    assert "ipython-input" not in report.traceback and "all_reduce" in report.traceback
    assert all(label != "Host memory" for label, _ in report.facts)  # noise in a hang
    assert "<summary style=\"cursor:pointer\">Stacks of every rank</summary>" in report.html()
    assert report.traceback not in report.text()  # folded: the terminal text leaves it out


def test_a_stop_reads_as_the_users_choice_not_as_an_error():
    report = explain(Failure("interrupt", context={"ckpt_dir": "/runs/ckpt"}))
    assert report.title == "Training stopped" and report.tone == "notice"
    assert "error-color" not in report.html() and "Kernel" not in report.text()


def test_a_stopped_predict_reads_as_a_stopped_predict():
    report = explain(Failure("interrupt", context={"ckpt_dir": "/runs/ckpt", "stage": "predict"}))
    assert report.title == "Prediction stopped" and report.tone == "notice"
    assert "Training" not in report.text() and "--resume" not in report.text()


def test_interrupted_points_at_resume():
    failure = Failure("interrupt", context={"ckpt_path": "/runs/ckpt/last.ckpt", "ckpt_dir": "/runs/ckpt"})
    report = check(explain(failure), "interrupted", rank=None)
    assert "/runs/ckpt/last.ckpt" in report.what_happened and "`--resume last`" in steps(report)
    assert not report.restart_kernel and "no restart" in steps(report)


def test_interrupted_without_a_checkpoint_path_does_not_claim_one():
    # the run's folder alone proves nothing was saved there: no checkpoint, no --resume last
    report = check(explain(Failure("interrupt", world_size=2, context={"ckpt_dir": "/runs/ckpt"})), "interrupted",
                   rank=None)
    assert "Checkpoints are in" not in report.what_happened and "saved to" not in report.what_happened
    assert "`--resume last`" not in steps(report) and "start over" in steps(report)


def test_interrupted_with_only_an_earlier_checkpoint_says_it_is_from_before_the_stop():
    context = {"ckpt_dir": "/runs/ckpt", "ckpt_earlier": "/runs/ckpt/last.ckpt",
               "ckpt_error": "RuntimeError: file write failed (No space left on device)"}
    report = check(explain(Failure("interrupt", world_size=2, context=context)), "interrupted", rank=None)
    assert "could not be saved (RuntimeError: file write failed (No space left on device))" \
        in report.what_happened
    assert "/runs/ckpt/last.ckpt, is from before the stop" in report.what_happened
    assert "saved to" not in report.what_happened and "`--resume last`" in steps(report)


def test_real_keyboard_interrupt_is_an_interrupt():
    def rank():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.kill(os.getpid(), signal.SIGINT)  # raises KeyboardInterrupt here, in the rank

    failure = in_rank(rank)
    assert failure.kind == "interrupt" and failure.exc_type == "KeyboardInterrupt"
    check(explain(failure), "interrupted", rank=None)


# -- between ranks ------------------------------------------------------------------------------------


def test_address_in_use_from_a_real_store():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        failure = raised_here(
            lambda: torch.distributed.TCPStore("127.0.0.1", port, is_master=True, wait_for_workers=False)
        )
    assert failure.exc_type == "torch.distributed.DistNetworkError"
    report = check(explain(failure), "address_in_use")
    assert f"MASTER_PORT={port}" in report.what_happened and f"ss -ltnp | grep {port}" in steps(report)


def test_process_group_rendezvous_timeout_from_real_gloo():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    def rank():
        from datetime import timedelta

        torch.distributed.init_process_group(
            "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=2, timeout=timedelta(seconds=1)
        )

    failure = in_rank(rank, rank=0)
    assert failure.exc_type == "torch.distributed.DistStoreError"
    report = check(explain(failure), "nccl", rank=0)
    assert "Only 1 of 2 ranks reached the rendezvous" in report.what_happened
    assert "failed first" in steps(report)


def test_nccl_error_suggests_debug_and_p2p_ib_settings():
    def rank():
        raise torch.distributed.DistBackendError(
            "NCCL error in: /pytorch/torch/csrc/distributed/c10d/ProcessGroupNCCL.cpp:3356, unhandled system "
            "error (run with NCCL_DEBUG=INFO for details), NCCL version 2.21.5\nncclSystemError: System call "
            "(e.g. socket, malloc) or external library call failed or device error."
        )

    report = check(explain(raised_here(rank)), "nccl")
    assert report.title == "NCCL error on rank 1"
    for setting in ("NCCL_DEBUG=INFO", "NCCL_P2P_DISABLE=1", "NCCL_IB_DISABLE=1", "--accelerator cpu", "--timeout"):
        assert setting in steps(report)


def test_nccl_collective_timeout_suggests_timeout_flag():
    def rank():
        raise torch.distributed.DistBackendError(
            "[Rank 1] Watchdog caught collective operation timeout: WorkNCCL(SeqNum=12, OpType=ALLREDUCE, "
            "NumelIn=1, NumelOut=1, Timeout(ms)=600000) ran for 600055 milliseconds before timing out."
        )

    report = check(explain(raised_here(rank)), "nccl")
    assert "--timeout" in steps(report) and "if self.global_rank == 0:" in steps(report)


def test_unused_parameters_from_real_ddp():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.used, self.unused = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)

        def forward(self, x):
            return self.used(x)

    def rank():
        torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
        model = torch.nn.parallel.DistributedDataParallel(TwoHeads())
        for _ in range(2):
            model(torch.ones(1, 2)).sum().backward()

    report = check(explain(in_rank(rank, rank=0, world_size=1)), "unused_parameters", rank=0)
    assert "ddp_notebook_find_unused_parameters_true" in steps(report) and "p.grad is None" in steps(report)


# -- loading data -------------------------------------------------------------------------------------


def test_dataset_error_in_a_real_worker_names_the_user_line():
    def missing_key():
        return {}["label"]

    failure = in_rank(lambda: _load_one_batch(missing_key), context={"num_workers": 1})
    report = check(explain(failure), "dataloader_worker")
    assert report.title == "Error in your dataset (DataLoader worker 0) on rank 1"
    assert "DataLoader worker 0 of rank 1 raised KeyError: 'label'" in report.what_happened
    assert f"{THIS_FILE}, line" in report.what_happened and "return {}[\"label\"]" in report.what_happened
    assert "num_workers=0" in steps(report)


def test_worker_killed_by_the_oom_killer():
    def killed():
        os.kill(os.getpid(), signal.SIGKILL)

    failure = in_rank(lambda: _load_one_batch(killed), context={"num_workers": 1, "host_memory": host_memory()})
    report = check(explain(failure), "dataloader_worker")
    assert "was killed by signal: Killed" in report.what_happened and "rank 1" in report.what_happened
    assert "out-of-memory killer" in report.what_happened
    assert "`num_workers=1` on each of the 2 ranks, 2 worker processes in all; try `num_workers=0`." in steps(report)


def test_worker_bus_error_is_shared_memory():
    def bus_error():
        faulthandler.disable()
        _bus_error()

    shm = {"total": 64 * 2**20, "free": 12 * 2**20}
    report = check(explain(in_rank(lambda: _load_one_batch(bus_error), context={"shm": shm, "num_workers": 8})),
                   "shm_exhausted")
    assert "12 MiB free of 64 MiB" in report.what_happened
    assert "--shm-size" in steps(report) and "`num_workers=4`" in steps(report)


def test_worker_that_exits_unexpectedly():
    report = check(explain(in_rank(lambda: _load_one_batch(lambda: os._exit(5)))), "dataloader_worker")
    assert "exited unexpectedly" in report.what_happened


def test_shared_memory_full():
    def rank():
        raise RuntimeError("unable to write to file </torch_4242_2843417432_0>: No space left on device (28)")

    report = check(explain(raised_here(rank, context={"shm": {"total": 8 * 2**30, "free": 0}})), "shm_exhausted")
    assert "df -h /dev/shm" in steps(report)
    assert "&lt;/torch_4242_2843417432_0&gt;" in report.html()


def test_too_many_open_files_from_a_real_limit():
    def rank():
        resource.setrlimit(resource.RLIMIT_NOFILE, (32, 32))
        handles = [open(os.devnull) for _ in range(64)]  # noqa: SIM115 - exhausting descriptors on purpose
        del handles

    failure = in_rank(rank)
    assert failure.exc_type == "OSError" and f"[Errno {errno.EMFILE}]" in failure.message
    report = check(explain(failure), "open_files")
    assert 'set_sharing_strategy("file_system")' in steps(report)


# -- OpenMP after fork --------------------------------------------------------------------------------


def test_invalid_thread_pool_exception():
    report = check(explain(raised_here(lambda: _raise(RuntimeError("Invalid thread pool!")))), "openmp_fork")
    assert "%env OMP_NUM_THREADS=" in steps(report) and "no kernel restart" in steps(report)


def test_invalid_thread_pool_abort_seen_in_stderr():
    exitcode = killed_rank(_die(signal.SIGABRT))
    stderr = "terminate called after throwing an instance of 'c10::Error'\n  what():  Invalid thread pool!\n"
    report = check(explain(Failure("signal", rank=1, world_size=2, signal=-exitcode, context={"stderr": stderr})),
                   "openmp_fork")
    assert report.traceback == stderr
    assert "Rank 1 (of 2) was killed by SIGABRT." in report.what_happened
    assert "Its last output was: what():  Invalid thread pool!" in report.what_happened


def _raise(exc):
    raise exc


# -- the LightningModule --------------------------------------------------------------------------------


def _fit(module_class):
    import lightning as L

    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False,
    )
    trainer.fit(module_class())


def _module(**methods):
    import lightning as L

    def __init__(self):
        L.LightningModule.__init__(self)
        self.layer = torch.nn.Linear(2, 1)

    def training_step(self, batch, batch_idx):
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(4, 2), batch_size=2)

    body = {"__init__": __init__, "training_step": training_step, "configure_optimizers": configure_optimizers,
            "train_dataloader": train_dataloader}
    body.update(methods)
    body = {name: method for name, method in body.items() if method is not None}
    return type("Classifier", (L.LightningModule,), body)


def _methods(cls):
    return [name for name, value in vars(cls).items() if callable(value)]


def test_missing_training_step_from_a_real_trainer():
    module = _module(training_step=None)
    report = check(explain(in_rank(lambda: _fit(module), context={"module_class": "Classifier"})), "missing_hook")
    assert report.title == "Missing `training_step()` in your LightningModule"
    assert "no `training_step()` on `Classifier`" in report.what_happened
    assert "MisconfigurationException: No `training_step()` method defined" in report.what_happened
    assert "def training_step(self, batch, batch_idx):" in steps(report)
    assert "<code>training_step()</code>" in report.html()


def test_missing_forward_at_predict_says_what_predict_needs():
    import lightning as L

    module = _module()
    loader = torch.utils.data.DataLoader(torch.ones(4, 2), batch_size=2)
    trainer = lambda: L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)  # noqa: E731
    failure = in_rank(lambda: trainer().predict(module(), loader),
                      context={"module_class": "Classifier", "stage": "predict"})
    report = check(explain(failure), "missing_hook")
    assert "stopped before predicting: Lightning found no `forward()` on `Classifier`" in \
        report.what_happened
    assert "`Trainer.predict` needs `predict_step()`" in report.what_happened
    assert "training" not in report.what_happened


def test_misspelled_training_step_is_named():
    module = _module(training_step=None, trainig_step=lambda self, batch, batch_idx: None)
    failure = in_rank(lambda: _fit(module), context={"module_methods": _methods(module)})
    report = check(explain(failure), "missing_hook")
    assert report.title == "`trainig_step` looks like a misspelled `training_step`"
    assert report.what_to_do[0] == "Rename `trainig_step` to `training_step`."


def test_missing_configure_optimizers_from_a_real_trainer():
    module = _module(configure_optimizers=None, configure_optimizer=lambda self: None)
    report = check(explain(in_rank(lambda: _fit(module), context={"module_methods": _methods(module)})),
                   "missing_hook")
    assert "`configure_optimizer` looks like a misspelled `configure_optimizers`" == report.title


def test_missing_train_dataloader_from_a_real_trainer():
    report = check(explain(in_rank(lambda: _fit(_module(train_dataloader=None)))), "missing_hook")
    assert "train_dataloader" in report.title and "def train_dataloader(self)" in steps(report)


def test_removed_epoch_end_hook_from_a_real_trainer():
    module = _module(training_epoch_end=lambda self, outputs: None)
    report = check(explain(in_rank(lambda: _fit(module))), "removed_hook")
    assert report.title == "`training_epoch_end` was removed in Lightning 2"
    assert "Rename `training_epoch_end` to `on_train_epoch_end`" in steps(report)
    assert "in `training_step`" in steps(report)


def test_invalid_precision_from_a_real_trainer():
    import lightning as L

    failure = raised_here(lambda: L.Trainer(accelerator="cpu", precision="fp16"), context={"accelerator": "cpu"})
    report = check(explain(failure), "precision")
    assert report.title == "Unsupported precision 'fp16'"
    assert "`fp16`" in report.what_happened and "On CPU" in steps(report) and "--precision bf16-mixed" in steps(report)
    assert "does not support bfloat16" not in steps(report)


# -- the model's math ----------------------------------------------------------------------------------


def test_matmul_shape_mismatch_points_at_the_users_line():
    layer = torch.nn.Linear(5, 2)
    report = check(explain(raised_here(lambda: layer(torch.ones(4, 3)))), "shape_mismatch")
    assert "mat1 and mat2 shapes cannot be multiplied (4x3 and 5x2)" in report.what_happened
    assert "expects 5 input features, but its input has 3" in report.what_happened
    assert "`nn.Linear(3, 2)`" in steps(report) and "nn.LazyLinear(2)" in steps(report)
    assert report.what_to_do[0].startswith(f"Look at {THIS_FILE}, line")
    assert "layer(torch.ones(4, 3))" in report.what_happened


def test_broadcast_shape_mismatch():
    report = check(explain(raised_here(lambda: torch.ones(4) + torch.ones(3))), "shape_mismatch")
    assert "sizes 4 and 3 in dimension 0" in report.what_happened and "squeeze(-1)" in steps(report)


def test_non_finite_gradient_norm_names_precision_and_learning_rate():
    def step():
        weight = torch.nn.Parameter(torch.ones(2))
        (weight * float("nan")).sum().backward()
        torch.nn.utils.clip_grad_norm_([weight], 1.0, error_if_nonfinite=True)

    report = check(explain(raised_here(step, context={"precision": "16-mixed", "learning_rate": 0.1})),
                   "non_finite_loss")
    assert "is non-finite" in report.what_happened
    assert "(now 0.1)" in steps(report) and "precision='16-mixed'" in steps(report)
    assert "--precision bf16-mixed" in steps(report) and "`--gradient-clip-val 1.0`" in steps(report)


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled", "ignore:Error detected in")
def test_nan_found_by_anomaly_detection():
    def step():
        with torch.autograd.detect_anomaly():
            x = torch.zeros(1, requires_grad=True)
            torch.sqrt(x - 1).sum().backward()

    report = check(explain(raised_here(step)), "non_finite_loss")
    assert "returned nan values" in report.what_happened
    assert "--precision" not in steps(report)  # full precision: no precision advice


def test_non_finite_loss_reported_by_the_rank():
    from lightning_magic.train.ranks.callbacks import NonFiniteLoss

    def step():
        raise NonFiniteLoss("the training loss is nan at step 3 (epoch 0, batch 3)")

    report = check(explain(raised_here(step)), "non_finite_loss")
    assert "NonFiniteLoss: the training loss is nan at step 3" in report.what_happened


def test_training_step_returning_a_dict_without_loss_from_a_real_trainer():
    module = _module(training_step=lambda self, batch, batch_idx: {"not_loss": self.layer(batch).sum()})
    report = check(explain(in_rank(lambda: _fit(module))), "bad_step_output")
    assert "the 'loss' key needs to be present" in report.what_happened
    assert "`return loss`" in steps(report)


def test_loss_without_grad():
    report = check(explain(raised_here(lambda: torch.ones(2).sum().backward())), "loss_without_grad")
    assert "loss.item()" in steps(report)


def test_label_out_of_range():
    failure = raised_here(lambda: F.cross_entropy(torch.zeros(2, 3), torch.tensor([0, 10])))
    assert failure.exc_type == "IndexError"
    report = check(explain(failure), "label_out_of_range")
    assert "(10)" in report.what_happened


# -- anything else --------------------------------------------------------------------------------------


def test_generic_names_rank_last_line_and_user_frame():
    def training_step():
        return 1 / 0

    failure = in_rank(training_step, rank=1, world_size=4)
    report = check(explain(failure), "generic")
    assert report.title == "ZeroDivisionError on rank 1"
    assert "Rank 1 (of 4) raised ZeroDivisionError: division by zero" in report.what_happened
    assert f"Raised at {THIS_FILE}, line" in report.what_happened and "`return 1 / 0`" in report.what_happened
    assert "`lightning_run.traceback`" in steps(report) and "--devices 1" in steps(report)


FULL_CONTEXT = {
    "batch_size": 8, "precision": "32-true", "devices": 2, "accelerator": "cpu", "accumulate_grad_batches": 1,
    "num_workers": 0, "ckpt_dir": "/runs/ckpt",
    "host_memory": {"total": 24 * 2**30, "used": 2**30, "available": 23 * 2**30, "percent": 4.2},
    "shm": {"total": 12 * 2**30, "free": 12 * 2**30},
}


@pytest.mark.parametrize("accelerator", ["cpu", "gpu"])
def test_a_plain_error_stays_generic_whatever_the_context(accelerator):
    context = dict(FULL_CONTEXT, accelerator=accelerator)
    report = check(explain(in_rank(lambda: _raise(ValueError("bad <value> & more")), context=context)), "generic")
    assert "Rank 1 (of 2) raised ValueError: bad <value> & more" in report.what_happened


def test_generic_names_the_result_variable_chosen_with_out():
    report = check(explain(in_rank(lambda: 1 / 0, context={"out": "run2"})), "generic")
    assert "`run2.traceback`" in steps(report)


def test_generic_from_a_real_ipython_cell_names_the_cell(ip):
    shell = ip
    defined = shell.run_cell("def boom():\n    return {}['missing']\n", store_history=True)
    result = shell.run_cell("boom()", store_history=True)
    failure = Failure.from_exception(result.error_in_exec, rank=0, world_size=2)
    assert failure.user_frame[0].startswith("<ipython-input-")
    report = check(explain(failure), "generic", rank=0)
    assert f"cell In [{defined.execution_count}], line 2: `return {{}}['missing']`" in report.what_happened


def test_builtin_type_names_are_shown_bare():
    failure = Failure("exception", rank=1, world_size=2, exc_type="builtins.ValueError", message="bad value")
    assert check(explain(failure), "generic").what_happened == "Rank 1 (of 2) raised ValueError: bad value"


def test_launcher_failure_without_rank():
    report = check(explain(raised_here(lambda: _raise(ValueError("no free port")), rank=None)), "generic", rank=None)
    assert report.what_happened.startswith("The launcher raised ValueError: no free port")


# -- finding the user's frame ---------------------------------------------------------------------------


def test_user_frame_skips_torch_frames():
    layer = torch.nn.Linear(5, 2)
    try:
        layer(torch.ones(4, 3))
    except RuntimeError:
        filename, lineno, source = user_frame_from_traceback(sys.exc_info()[2])
    assert filename == THIS_FILE and source == "layer(torch.ones(4, 3))"


def test_user_frame_prefers_cells_and_skips_libraries_and_this_package(tmp_path):
    import lightning_magic.suggestions.report as own

    source = "def step():\n    return undefined_name\n"
    cell = tmp_path / "ipykernel_4242" / "2931585839.py"  # where ipykernel puts a cell's code
    cell.parent.mkdir()
    cell.write_text(source)
    cell = str(cell)
    code = compile(source, cell, "exec")
    scope = {}
    exec(code, scope)
    try:
        scope["step"]()
    except NameError:
        frames = traceback.extract_tb(sys.exc_info()[2])
    site = os.path.join(sys.prefix, "lib", "python3", "site-packages", "lightning", "pytorch", "trainer", "call.py")
    frames.append(traceback.FrameSummary(own.__file__, 10, "explain", line="x"))
    frames.append(traceback.FrameSummary(site, 47, "_call_and_handle_interrupt", line="y"))
    assert user_frame_from_traceback(frames) == (cell, 2, "return undefined_name")
    assert describe_frame((cell, 2, "return undefined_name")) == "your notebook cell, line 2: `return undefined_name`"
    assert is_library_filename(own.__file__) and is_library_filename(site) and is_library_filename(torch.__file__)
    assert is_library_filename("<frozen importlib._bootstrap>") and not is_library_filename("<ipython-input-3-9f1c0a>")
    assert user_frame_from_traceback(frames[-2:]) is None


# -- rendering and robustness ------------------------------------------------------------------------


def test_html_escapes_messages_and_text_has_no_markup():
    failure = raised_here(lambda: _raise(ValueError("bad <b>value</b> & \"quotes\"\nsecond line")))
    report = check(explain(failure), "generic")
    block = report.html()
    assert "bad &lt;b&gt;value&lt;/b&gt; &amp; &quot;quotes&quot;" in block
    assert "<b>" not in block and "<details" in block and "<pre" in block
    assert "bad <b>value</b> & \"quotes\"" in report.text()
    assert report.traceback.rstrip() in report.text(traceback=True)
    assert report.traceback.rstrip() not in report.text()
    assert report._repr_html_() == block and str(report) == report.text()


@pytest.mark.parametrize(
    "context",
    [
        {"gpu_memory": "unavailable", "host_memory": [1, 2], "shm": None, "batch_size": "big", "num_workers": True},
        {"gpu_memory": [None, {"index": 0}], "host_memory": {"percent": "high"}, "cuda_culprit": "cell 3"},
    ],
)
@pytest.mark.parametrize("kind", ["exception", "signal", "exit", "timeout", "interrupt", "cuda_initialized"])
def test_explain_never_raises_on_odd_input(kind, context):
    failure = Failure(kind, rank=0, world_size=0, exc_type="torch.OutOfMemoryError", message="CUDA out of memory",
                      signal=9 if kind == "signal" else None, exitcode=-9 if kind == "exit" else None,
                      timeout=float("nan") if kind == "timeout" else None, user_frame=("x",), context=context)
    report = explain(failure)
    assert isinstance(report, Report) and report.title and report.what_to_do
    report.html(), report.text()


def test_failure_rejects_unknown_kinds():
    with pytest.raises(ValueError, match="'crash' is not one of"):
        Failure("crash")


def test_failure_survives_the_pipe_from_a_rank():
    failure = in_rank(lambda: _raise(KeyError("label")), context={"batch_size": 8})
    assert failure.exc_type == "KeyError" and failure.message == "'label'"
    assert failure.context == {"batch_size": 8} and failure.user_frame[0] == THIS_FILE


SLICING_SUBCLASS = ('''
import torch
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset


class Base(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(8, 1)

    def forward(self, x):
        return self.layer(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


X = torch.randn(32, 8)
loader = DataLoader(TensorDataset(X, X.sum(1, keepdim=True)), batch_size=8)
''', '''
class FirstHalf(Base):
    def training_step(self, batch, batch_idx):
        x, y = batch
        y_hat = self(x[:, :4])
        return torch.nn.functional.mse_loss(y_hat, y)
''')


def test_a_shape_mismatch_from_a_slice_in_a_subclass_blames_the_slice_not_the_layer(ip,
                                                                                   no_orphans):
    """The subclass's training_step (its own cell) slices the input that the base class's forward
    (another cell) gives its layer: the report names the slice's line, says the values came from
    there, and offers no resized layer (the layer is right; the slice made the input narrow)."""
    base = ip.run_cell(SLICING_SUBCLASS[0], store_history=True)
    sub = ip.run_cell(SLICING_SUBCLASS[1], store_history=True)
    assert base.success and sub.success
    with capture_output():
        result = ip.run_cell("%%lightning_train --accelerator cpu --devices 1 --max-epochs 1\n"
                             "model = FirstHalf()\ntrain_loader = loader", store_history=True)
    assert not result.success
    report = ip.user_ns["lightning_run"].report
    assert report.key == "shape_mismatch", report.text()
    text = report.text()
    def line_of(source, text):  # as IPython numbers a cell (its leading blank lines dropped)
        return next(n for n, line in enumerate(source.strip("\n").splitlines(), 1) if text in line)

    slice_line = f"cell In [{sub.execution_count}], line " \
                 f"{line_of(SLICING_SUBCLASS[1], 'x[:, :4]')}"
    forward_line = f"cell In [{base.execution_count}], line " \
                   f"{line_of(SLICING_SUBCLASS[0], 'return self.layer(x)')}"
    assert f"`y_hat = self(x[:, :4])`" in text and slice_line in report.what_to_do[0], text
    assert forward_line in text, text  # where it failed, named too
    assert "nn.Linear(4, 1)" not in text and "LazyLinear" not in text, text
    # no slice to blame, but the values still came from another cell: unsure, so both are named
    # and no resized layer is offered
    other = ip.run_cell("class Narrow(Base):\n    def training_step(self, batch, batch_idx):\n"
                        "        x, y = batch\n        return torch.nn.functional.mse_loss("
                        "self(x), y)\n\n"
                        "narrow = DataLoader(TensorDataset(X[:, :4], X.sum(1, keepdim=True)), "
                        "batch_size=8)", store_history=True)
    with capture_output():
        result = ip.run_cell("%%lightning_train --accelerator cpu --devices 1 --max-epochs 1\n"
                             "model = Narrow()\ntrain_loader = narrow", store_history=True)
    report = ip.user_ns["lightning_run"].report
    text = report.text()
    assert not result.success and report.key == "shape_mismatch", text
    assert f"cell In [{other.execution_count}], line 4" in report.what_to_do[0], text
    assert forward_line in report.what_to_do[0], text
    assert "nn.Linear(4, 1)" not in text and "LazyLinear" not in text, text
