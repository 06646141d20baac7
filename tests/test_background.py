"""``%%lightning_train --background`` in real Jupyter kernels (jupyter_client): the cell returns
while its ranks train, other cells run, the live view stays in its own cell, results come back
between cells or at ``wait()``, ``stop()`` and a dying kernel leave no process behind.

Ordering is proven with events: rank 0 writes a FIFO once it is training, and the runs that must
still be running when a check is made train until stopped (``--max-epochs 1000``)."""

from __future__ import annotations

import os

import psutil
import pytest
from support.jupyter_kernels import Kernel, fifo_reader, package_kernel, wait_for
from support.kernels import BEACON_SETUP as SETUP
from support.kernels import ENDLESS

from lightning_magic.train.launch.launcher import BACKGROUND_NICE

pytestmark = pytest.mark.slow

UNENDING = ENDLESS.replace("--max-epochs 1000", "--max-epochs -1")  # ends only when stopped

@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    kernel = package_kernel(str(tmp_path_factory.mktemp("background")), SETUP)
    yield kernel
    kernel.close()


def test_a_background_fit_returns_while_its_ranks_train_and_other_cells_run(kernel, tmp_path):
    training = fifo_reader(tmp_path / "training.fifo")
    fit = kernel.execute(f"{ENDLESS}\nmodel = Beacon({str(tmp_path / 'training.fifo')!r})\n"
                         "before = model.layer.weight.detach().clone()\n"
                         "run = pl.Trainer().fit(model, loader)\nprint('status', run.status)")
    reply = kernel.reply(fit)
    assert reply["status"] == "ok", (reply.get("ename"), reply.get("evalue"))
    assert "status running" in kernel.stdout(fit)
    assert kernel.ok("print(1 + 1, run.done(), run.status)").split() == ["2", "False", "running"]
    wait_for(training, "the background run never trained")
    untouched = kernel.ok("print(torch.equal(before, model.layer.weight), run.done())")
    assert untouched.split() == ["True", "False"], "the kernel's model changed mid-run"
    listed = kernel.execute("%lightning_runs")
    assert kernel.reply(listed)["status"] == "ok"
    table = kernel.value(listed)
    ident = kernel.ok("print(run.id)").strip()
    row = next(line for line in table.splitlines() if line.startswith(ident))
    assert row.split()[1:4] == ["Beacon", "fit", "running"] and "2 CPU processes" in row
    assert row.endswith(f"In [{reply['execution_count']}]"), "the run's cell as the notebook numbers it"
    ranks = kernel.children()
    assert len(ranks) >= 2
    stopped = kernel.ok("stopped = run.stop()\nprint(type(stopped).__name__, stopped.status, "
                        "stopped.last_model_path is not None, "
                        "torch.equal(before, model.layer.weight))")
    assert stopped.split() == ["TrainingRun", "interrupted", "True", "False"]
    assert "its state in the Trainer (at stop())." in kernel.stdout(fit), \
        "the run's cell says where its results came back"
    gone, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive, f"processes outlived stop(): {[p.pid for p in alive]}"
    assert not kernel.children()


def test_wait_returns_the_training_run_with_the_weights_in_the_kernels_model(kernel):
    out = kernel.ok("%%lightning_train --background --accelerator cpu --devices 2 "
                    "--max-epochs 2\nmodel = Beacon()\nstart = model.layer.weight.detach().clone()"
                    "\ntrainer = pl.Trainer()\nrun = trainer.fit(model, loader)")
    assert "Training Beacon on 2 CPU processes" in out
    result = kernel.ok("done = run.wait()\nprint(type(done).__name__, done.status, "
                       "done is run.record, done.global_step, trainer.global_step, "
                       "torch.equal(start, model.layer.weight), run.done())")
    name, status, same, steps, trainer_steps, unchanged, finished = result.split()
    assert (name, status, same, unchanged, finished) == ("TrainingRun", "finished", "True",
                                                         "False", "True")
    assert int(steps) == int(trainer_steps) == 2 * 256 // 8 // 2


def test_results_come_back_at_the_next_cell_with_a_note_in_the_runs_cell(kernel, tmp_path):
    done = tmp_path / "done.fifo"
    ended = fifo_reader(done)  # the run's done callback tells the test once the ranks are gone
    started = kernel.execute("%%lightning_train --background --accelerator cpu --devices 2 "
                             "--max-epochs 1\nmodel = Beacon()\n"
                             "start = model.layer.weight.detach().clone()\n"
                             "run = pl.Trainer().fit(model, loader)\n"
                             f"run.add_done_callback(lambda r: open({str(done)!r}, 'w').write("
                             "'ended'))")
    assert kernel.reply(started)["status"] == "ok"
    wait_for(ended, "the run never ended")
    out = kernel.ok("print(run.delivered(), torch.equal(start, model.layer.weight))")
    assert out.split() == ["True", "False"], "pre_run_cell did not bring the results back"
    note = kernel.stdout(started)  # in the run's own cell, not in the one that took it back
    assert "Background run" in note and "finished" in note and "back before In [" in note


def test_the_live_view_updates_in_its_own_cell_while_another_cell_runs(kernel, tmp_path):
    training, release = tmp_path / "training.fifo", tmp_path / "release.fifo"
    began = fifo_reader(training)
    origin = kernel.execute(f"{ENDLESS}\nmodel = Beacon({str(training)!r})\n"
                            "run = pl.Trainer().fit(model, loader)")
    assert kernel.reply(origin)["status"] == "ok"
    wait_for(began, "the background run never trained")
    view_id = kernel.display_id(origin, "live view")
    other = kernel.updated_while_another_cell_runs(view_id, release, "the view")
    kernel.ok("run.stop()")
    of_view = [m for m in kernel.messages if m["msg_type"] in (
        "display_data", "update_display_data")
        and m["content"].get("transient", {}).get("display_id") == view_id]
    parents = {m["parent_header"].get("msg_id") for m in of_view}
    assert parents == {origin}, "the live view sent output as another cell's"
    assert not kernel.of(other, "display_data", "update_display_data")


def test_the_stop_button_during_another_cell_interrupts_that_cell_not_the_run(kernel, tmp_path):
    training, hold = tmp_path / "training.fifo", tmp_path / "hold.fifo"
    began = fifo_reader(training)
    origin = kernel.execute(f"{ENDLESS}\nmodel = Beacon({str(training)!r})\n"
                            "run = pl.Trainer().fit(model, loader)")
    assert kernel.reply(origin)["status"] == "ok"
    wait_for(began, "the background run never trained")
    os.mkfifo(hold)
    inside = fifo_reader(tmp_path / "inside.fifo")  # the cell's code itself runs: no race
    blocked = kernel.execute(f"open({str(tmp_path / 'inside.fifo')!r}, 'w').write('in')\n"
                             f"open({str(hold)!r}).read()")  # blocks until interrupted
    wait_for(inside, "the other cell never ran")
    kernel.km.interrupt_kernel()
    reply = kernel.reply(blocked)
    assert reply["status"] == "error" and reply["ename"] == "KeyboardInterrupt"
    assert kernel.ok("print(run.status, run.done())").split() == ["running", "False"]
    assert "interrupted" in kernel.ok("%lightning_stop all\nprint(run.status)")
    told = "".join(m["content"]["text"] for m in kernel.of(origin, "stream"))
    assert "its state in the Trainer (at %lightning_stop)." in told, told


def test_a_call_on_a_trainer_whose_run_goes_on_waits_for_it_or_with_no_wait_is_refused(
        kernel, tmp_path):
    kernel.ok(f"{ENDLESS} --no-wait\nmodel = Beacon()\ntrainer = pl.Trainer()\n"
              "first = trainer.fit(model, loader)")
    ident = kernel.ok("print(first.id)").strip()
    refused = kernel.execute("trainer.validate(model, loader)")
    reply = kernel.reply(refused)
    assert reply["status"] == "error" and reply["ename"] == "UsageError"
    assert f"--no-wait: the validate of Beacon needs its trainer and its model, held by " \
           f"background run {ident} (fit of Beacon" in reply["evalue"]
    assert kernel.ok("print(first.status)").strip() == "running"
    kernel.ok(f"%lightning_stop {ident[:6]}")

    press = tmp_path / "press.fifo"
    os.mkfifo(press)
    kernel.ok(f"{ENDLESS}\nmodel = Beacon()\ntrainer = pl.Trainer()\n"
              "first = trainer.fit(model, loader)\nimport threading\n"
              f"threading.Thread(target=lambda: (open({str(press)!r}).read(), "
              "first.stop(wait=False)), daemon=True).start()")
    ident = kernel.ok("print(first.id)").strip()
    second = kernel.execute("checked = trainer.validate(model, loader)")
    kernel.wait_until(lambda m: m["msg_type"] == "stream" and m["parent_header"].get(
        "msg_id") == second and f"Waiting for background run {ident}" in m["content"]["text"],
        "the note naming the run it waits for")
    press.write_text("stop")  # the first run stops; the second call then starts
    assert kernel.reply(second)["status"] == "ok"
    out = kernel.ok("print(first.status, first.delivered(), type(checked).__name__, "
                    "type(checked.wait()).__name__, checked.status)")
    assert out.split() == ["interrupted", "True", "BackgroundRun", "list", "finished"]


def test_a_foreground_call_on_a_model_a_run_holds_waits_for_that_run(kernel, tmp_path):
    press = tmp_path / "press-foreground.fifo"
    os.mkfifo(press)
    kernel.ok(f"{UNENDING}\nmodel = Beacon()\nfirst = pl.Trainer().fit(model, loader)\n"
              "import threading\n"
              f"threading.Thread(target=lambda: (open({str(press)!r}).read(), "
              "first.stop(wait=False)), daemon=True).start()")
    ident = kernel.ok("print(first.id)").strip()
    second = kernel.execute("%%lightning_train --accelerator cpu --devices 1\n"
                            "checked = pl.Trainer().validate(model, loader)")
    def note_or_done(m):
        if m["parent_header"].get("msg_id") != second:
            return False
        return m["msg_type"] == "stream" and "Waiting for" in m["content"]["text"] or \
            m["msg_type"] == "status" and m["content"]["execution_state"] == "idle"

    first_sign = kernel.messages[kernel.wait_until(note_or_done, "the call's note or its end")]
    assert first_sign["msg_type"] == "stream", "the call ran while the run held its model"
    assert f"Waiting for background run {ident}" in first_sign["content"]["text"]
    assert "its model, which the validate of Beacon needs" in first_sign["content"]["text"]
    press.write_text("stop")  # the run stops; the foreground call then validates its weights
    assert kernel.reply(second)["status"] == "ok"
    out = kernel.ok("print(first.status, first.delivered(), type(checked).__name__, "
                    "'val_loss' in checked[0])")
    assert out.split() == ["interrupted", "True", "list", "True"]


def test_a_kernel_shut_down_mid_run_leaves_no_rank_behind(tmp_path, kernel_env):
    own = Kernel(str(tmp_path), SETUP)
    try:
        training = fifo_reader(tmp_path / "training.fifo")
        own.ok(f"{ENDLESS}\nmodel = Beacon({str(tmp_path / 'training.fifo')!r})\n"
               "run = pl.Trainer().fit(model, loader)")
        wait_for(training, "the background run never trained")
        ranks = own.children()
        assert len(ranks) >= 2
        own.km.shutdown_kernel(now=False)  # a shutdown request, as JupyterLab's
        gone, alive = psutil.wait_procs(ranks, timeout=60)
        assert not alive, f"processes outlived their kernel: {[p.pid for p in alive]}"
    finally:
        own.close()


@pytest.mark.parametrize("detach", ["", " --detach"])
def test_a_run_that_fails_before_any_checkpoint_leaves_no_run_folder_nor_journal(kernel, detach):
    """No logger: nothing but the magic's own files would be left (a logger's are kept, as in
    plain Lightning)."""
    kernel.ok("class Broken(Beacon):\n    def training_step(self, batch, batch_idx):\n"
              "        raise ValueError('broken step')")
    out = kernel.ok(f"%%lightning_train --background{detach} --accelerator cpu --devices 2 "
                    "--max-epochs 1 --logger none\nbroken = Broken()\n"
                    "run = pl.Trainer().fit(broken, loader)\n"
                    "print(run.journal.path)")
    path = out.split()[-1]  # journaled while it ran (the run may be over and back already)
    failed = kernel.execute("run.wait()")
    reply = kernel.reply(failed)
    assert reply["status"] == "error" and reply["ename"] == "TrainingFailed"
    assert "broken step" in kernel.ok("print(run.report.what_happened)")
    assert not os.path.exists(path), "a journal with nothing to attach to is kept"
    assert not os.path.exists(os.path.dirname(path)), "the failed run left its run folder"
    indexed = kernel.ok("from lightning_magic.background import index\n"
                        "print(run.id in index.indexed())")
    assert indexed.strip() == "False"


def test_a_background_runs_ranks_yield_the_cpu_to_the_kernel_and_a_foreground_runs_do_not(kernel):
    kernel.ok("class Niceness(Beacon):\n    def training_step(self, batch, batch_idx):\n"
              "        self.niceness = os.nice(0)  # a plain attribute: it comes back\n"
              "        return super().training_step(batch, batch_idx)")
    kernel.ok("%%lightning_train --background --accelerator cpu --devices 2 --max-epochs 1\n"
              "behind = Niceness()\npl.Trainer(limit_train_batches=2).fit(behind, loader).wait()")
    kernel.ok("%%lightning_train --accelerator cpu --devices 2 --max-epochs 1\n"
              "ahead = Niceness()\npl.Trainer(limit_train_batches=2).fit(ahead, loader)")
    out = kernel.ok("print(behind.niceness - os.nice(0), ahead.niceness - os.nice(0))")
    assert BACKGROUND_NICE > 0 and out.split() == [str(BACKGROUND_NICE), "0"]
