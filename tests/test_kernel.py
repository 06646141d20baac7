"""Interrupts and kernel death in a real Jupyter kernel: ranks stop, nothing is left behind."""

from __future__ import annotations

import os
import threading

import psutil
import pytest
from support.kernels import ENDLESS_SETUP
from jupyter_client.manager import start_new_kernel

pytestmark = pytest.mark.slow

SETUP = ENDLESS_SETUP


@pytest.fixture
def kernel(tmp_path, kernel_env):
    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path))
    try:
        reply = kc.execute_interactive(SETUP, timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]
        yield km, kc
    finally:
        kc.stop_channels()
        if km.is_alive():
            km.shutdown_kernel(now=True)


def start_training_and_wait(kc, tmp_path, line):
    """Start a training cell, and return once rank 0 has trained three steps."""
    fifo = tmp_path / "training.fifo"
    os.mkfifo(fifo)
    msg_id = kc.execute(f"{line}\nmodel = Endless({str(fifo)!r})\ntrain_loader = loader")
    reader = {}
    thread = threading.Thread(target=lambda: reader.update(text=fifo.read_text()), daemon=True)
    thread.start()
    thread.join(timeout=120)
    assert reader.get("text") == "training\n", "the training cell never started training"
    return msg_id


def rank_processes(km) -> list[psutil.Process]:
    kernel = psutil.Process(km.provisioner.process.pid)
    return [p for p in kernel.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]


def test_interrupt_in_a_notebook_stops_ranks_and_resume_continues(tmp_path, kernel_env):
    """nbclient runs a notebook; the kernel manager interrupts its training cell, as the stop
    button does (SIGINT to the kernel's process group)."""
    import nbformat
    from nbclient import NotebookClient

    fifo, ckpt = tmp_path / "training.fifo", tmp_path / "ckpt"
    os.mkfifo(fifo)
    cell = nbformat.v4.new_code_cell
    notebook = nbformat.v4.new_notebook(cells=[
        cell(SETUP),
        cell(f"%%lightning_train --accelerator cpu --devices 2 --max-epochs 1000 --ckpt-dir {ckpt}\n"
             f"model = Endless({str(fifo)!r})\ntrain_loader = loader",
             metadata={"tags": ["raises-exception"]}),
        cell("print(lightning_run.status, lightning_run.global_step, lightning_run.report.key)"),
        cell(f"%%lightning_train --accelerator cpu --devices 2 --ckpt-dir {ckpt} --resume last "
             "--max-steps {lightning_run.global_step + 4}\nmodel = Endless()\ntrain_loader = loader"),
        cell("print(lightning_run.status, lightning_run.global_step, "
             "min(r['step'] for r in lightning_run.history))"),
    ])
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                       "language": "python"}
    client = NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    failures = []

    def execute():
        try:
            client.execute()
        except Exception as error:  # noqa: BLE001 - reported by the assertions below
            failures.append(error)

    runner = threading.Thread(target=execute, daemon=True)
    runner.start()
    reader = {}
    waiting = threading.Thread(target=lambda: reader.update(text=fifo.read_text()), daemon=True)
    waiting.start()
    waiting.join(timeout=180)
    assert reader.get("text") == "training\n", "the training cell never started training"
    kernel = psutil.Process(client.km.provisioner.process.pid)
    ranks = [p for p in kernel.children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE]
    assert len(ranks) >= 2
    import asyncio

    asyncio.run(client.km.interrupt_kernel())  # nbclient's kernel manager is the async one
    gone, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive, "a rank outlived the interrupt"
    runner.join(timeout=300)
    assert not runner.is_alive() and not failures, failures

    training = notebook.cells[1]
    assert not [o for o in training.outputs if o["output_type"] == "error"]  # a stop is no error
    said = "".join(o.get("text", "") for o in training.outputs if o.get("name") == "stdout")
    assert "Training stopped at epoch 0/999" in said and "Traceback" not in said
    status, step, key = "".join(o.get("text", "") for o in notebook.cells[2].outputs).split()
    assert (status, key) == ("interrupted", "interrupted") and int(step) >= 3
    assert (ckpt / "last.ckpt").is_file()
    final, final_step, first_step = "".join(
        o.get("text", "") for o in notebook.cells[4].outputs).split()
    assert final == "finished" and int(final_step) == int(step) + 4
    assert int(first_step) == int(step) + 1, "training went on from the interrupt's checkpoint"


def test_ranks_die_with_the_kernel(kernel, tmp_path):
    km, kc = kernel
    start_training_and_wait(kc, tmp_path,
                            "%%lightning_train --accelerator cpu --devices 2 --max-epochs 1000")
    ranks = rank_processes(km)
    assert len(ranks) >= 2
    km.provisioner.process.kill()  # the kernel dies without any chance to clean up
    gone, alive = psutil.wait_procs(ranks, timeout=15)
    assert not alive, f"ranks outlived their kernel: {[p.pid for p in alive]}"


def test_what_a_rank_started_dies_with_a_killed_kernel(kernel, tmp_path):
    km, kc = kernel
    pids = tmp_path / "started.pid"
    reply = kc.execute_interactive(f'''
import subprocess
class Starts(Endless):
    def on_train_start(self):
        child = subprocess.Popen(["sleep", "300"])
        with open({str(pids)!r}, "a") as handle:
            handle.write(f"{{child.pid}}\\n")
''', timeout=60)
    assert reply["content"]["status"] == "ok", reply["content"]
    fifo = tmp_path / "training.fifo"
    os.mkfifo(fifo)
    kc.execute(f"%%lightning_train --accelerator cpu --devices 2 --max-epochs 1000\n"
               f"model = Starts({str(fifo)!r})\ntrain_loader = loader")
    assert fifo.read_text() == "training\n"
    started = [psutil.Process(int(pid)) for pid in pids.read_text().split()]
    assert len(started) == 2 and all(p.is_running() for p in started)
    km.provisioner.process.kill()  # no cleanup in the kernel can run
    gone, alive = psutil.wait_procs(started, timeout=30)
    assert not alive, f"processes a rank started outlived the killed kernel: {alive}"


def test_a_stop_reads_as_a_notice_and_the_cells_queued_after_it_do_not_run(kernel, tmp_path):
    """The stop button (SIGINT to the kernel) while a cell trains, with another cell queued
    behind it as "Run all" queues it: the training cell shows its stop as output (the report in
    calm colours, one plain line), with no error output, and the queued cell is not run."""
    km, kc = kernel
    training = start_training_and_wait(
        kc, tmp_path, "%%lightning_train --accelerator cpu --devices 2 --max-epochs 1000")
    queued = kc.execute("print('the queued cell ran')")
    km.interrupt_kernel()
    replies = {}
    while len(replies) < 2:
        reply = kc.get_shell_msg(timeout=300)
        replies[reply["parent_header"].get("msg_id")] = reply["content"]
    messages = []
    while True:  # the training cell's output, up to its idle (the queued cell's after it)
        message = kc.get_iopub_msg(timeout=300)
        messages.append(message)
        if message["parent_header"].get("msg_id") == queued and \
                message["msg_type"] == "status" and \
                message["content"]["execution_state"] == "idle":
            break
    ours = [m for m in messages if m["parent_header"].get("msg_id") == training]
    assert not [m for m in ours if m["msg_type"] == "error"], [m["content"] for m in ours]
    said = "".join(m["content"]["text"] for m in ours
                   if m["msg_type"] == "stream" and m["content"]["name"] == "stdout")
    assert "Training stopped at epoch 0/999" in said
    assert "run the cell again with --resume last to continue." in said
    shown = [m["content"]["data"].get("text/html", "") for m in ours
             if m["msg_type"] == "display_data"]
    assert any('data-tone="notice"' in html for html in shown), shown
    assert replies[training]["status"] == "error"  # the cell still ends the run of the notebook
    assert replies[training]["ename"] == "TrainingStopped"
    assert replies[queued]["status"] == "aborted"
    assert not any("the queued cell ran" in m["content"].get("text", "") for m in messages)
