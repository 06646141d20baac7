"""``%%lightning_sweep --background`` in a real Jupyter kernel (jupyter_client): the cell returns
while its trials train, other cells run, the table keeps updating in the sweep's own cell, the
sweep goes on while the kernel is idle, ``wait()`` gives the finished sweep with the best trial's
model bound, ``stop()`` ends every trial and leaves no process behind.

Ordering is proven with events: a trial's rank 0 writes a FIFO once it is training, and the
trials that must still be running when a check is made train until stopped."""

from __future__ import annotations

import os

import psutil
import pytest
from IPython.utils.capture import capture_output
from support.cells import DEFINITIONS
from support.jupyter_kernels import fifo_reader, package_kernel, wait_for

pytest.importorskip("optuna")
pytestmark = pytest.mark.slow

SIGNALS = '''
class Signals(pl.Callback):
    """Rank 0 writes "training" to the FIFO ``fifo`` (once) at step 3; None: it writes nothing."""

    def __init__(self, fifo):
        self.fifo = fifo

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.fifo and trainer.global_rank == 0 and trainer.global_step == 3:
            with open(self.fifo, "w") as signal_test:
                signal_test.write("training\\n")
            self.fifo = None
'''
HEAD = ("%%lightning_sweep --background --metric val_loss --accelerator cpu "
        "--devices-per-trial 1 --sampler random")
CELL = '''
model = Regressor(lr=trial.suggest_float("lr", 1e-3, 1e-1, log=True))
trainer = pl.Trainer(callbacks=[Signals({fifo} if trial.number == {signaller} else None)])
trainer.fit(model, DataLoader(dataset, batch_size=16), DataLoader(dataset, batch_size=32))
'''


@pytest.fixture(scope="module")
def kernel(tmp_path_factory):
    kernel = package_kernel(str(tmp_path_factory.mktemp("sweep-background")),
                            "%load_ext lightning_magic\n" + DEFINITIONS + SIGNALS)
    yield kernel
    kernel.close()


def table_messages(kernel, display_id):
    return [m for m in kernel.messages if m["msg_type"] in ("display_data", "update_display_data")
            and m["content"].get("transient", {}).get("display_id") == display_id]


def test_a_background_sweep_returns_while_its_trials_train_and_stop_ends_every_one(
        kernel, tmp_path):
    fifo, release = tmp_path / "training.fifo", tmp_path / "release.fifo"
    training = fifo_reader(fifo)
    sweep = kernel.execute(f"{HEAD} --trials 6 --max-epochs 1000\n" +
                           CELL.format(fifo=repr(str(fifo)), signaller=0))
    reply = kernel.reply(sweep)
    assert reply["status"] == "ok", (reply.get("ename"), reply.get("evalue"))
    shown = kernel.value(sweep)
    assert shown.startswith("SweepRun sweep-") and ": running, 0 of 6 trials ended, " in shown
    assert "Sweep of" not in shown, "the running trials are counted twice"
    now = kernel.ok("print(lightning_sweep.status, lightning_sweep.done(), 'model' in dir(), "
                    "'trial' in dir(), len(lightning_sweep.trials))").split()
    assert now[:4] == ["running", "False", "False", "False"], "the best is bound only at the end"
    slots = int(now[4])
    assert slots >= 1
    wait_for(training, "the sweep's first trial never trained")
    table_id = kernel.display_id(sweep, "table")
    kernel.updated_while_another_cell_runs(table_id, release, "the table")
    late = kernel.execute("lightning_sweep.wait(timeout=0)")
    late_reply = kernel.reply(late)
    assert late_reply["status"] == "error" and late_reply["ename"] == "TimeoutError"
    assert "is still running after 0 s" in late_reply["evalue"]
    ranks = kernel.children()
    assert len(ranks) >= slots, "each running trial has its rank"
    stopped = kernel.ok("done = lightning_sweep.stop()\n"
                        "print(type(done).__name__, lightning_sweep.status, lightning_sweep.done(),"
                        " len(done.trials), *[t.run.status for t in done.trials])").split()
    assert stopped[:4] == ["Sweep", "stopped", "True", str(slots)], "no trial started after stop"
    assert stopped[4:] == ["interrupted"] * slots
    states = kernel.ok("print(*[t.state.name for t in lightning_sweep.study.trials])").split()
    assert states == ["FAIL"] * slots
    gone, alive = psutil.wait_procs(ranks, timeout=30)
    assert not alive, f"processes outlived stop(): {[p.pid for p in alive]}"
    assert not kernel.children()
    parents = {m["parent_header"].get("msg_id") for m in table_messages(kernel, table_id)}
    assert parents == {sweep}, "the table sent output as another cell's"
    assert "(at stop())." in kernel.stdout(sweep), "the sweep's cell says where it came back"


def test_the_sweep_goes_on_while_the_kernel_is_idle_and_wait_binds_the_best_model(
        kernel, tmp_path):
    fifo = tmp_path / "last.fifo"
    last_trains = fifo_reader(fifo)
    slots = int(kernel.ok("from lightning_magic.sweep.slots import slots\n"
                          "print(len(slots(1, 'cpu')))"))
    # the last trial starts only once an earlier one ended: with no cell run after the sweep's,
    # only the idle kernel can have started it
    sweep = kernel.execute(f"{HEAD} --trials {slots + 1} --max-epochs 2\n" +
                           CELL.format(fifo=repr(str(fifo)), signaller=slots))
    assert kernel.reply(sweep)["status"] == "ok"
    wait_for(last_trains, "the last trial never started while the kernel was idle")
    out = kernel.ok("done = lightning_sweep.wait()\nbest = done.best_record()\n"
                    "print(type(done).__name__, lightning_sweep.status, "
                    "*[t.status for t in done.trials])\n"
                    "print(model is best.model, trainer is best.bound['trainer'], "
                    "model.lr == done.best_params['lr'], trainer.global_step > 0, "
                    "'trial' in dir())").splitlines()
    assert out[0].split() == ["Sweep", "finished"] + ["complete"] * (slots + 1)
    assert out[1].split() == ["True", "True", "True", "True", "False"]
    note = kernel.stdout(sweep)  # in the sweep's own cell, not in the one that took it back
    assert "finished" in note and "model, trainer bound" in note
    assert not kernel.children()


def test_an_error_that_stops_a_background_sweep_is_raised_by_wait_not_into_another_cell(ip):
    import threading

    assert ip.run_cell(DEFINITIONS).success and ip.run_cell(SIGNALS).success
    cores = os.sched_getaffinity(0)
    cell = ("if trial.number == 1:\n    raise ValueError('no data here')\n" +
            CELL.format(fifo=None, signaller=-1))
    os.sched_setaffinity(0, {min(cores)})  # one slot: trial 1 starts once trial 0 has ended
    try:
        with capture_output():
            result = ip.run_cell(f"{HEAD} --trials 3 --max-epochs 1\n{cell}")
    finally:
        os.sched_setaffinity(0, cores)
    assert result.success, result.error_in_exec
    handle = ip.user_ns["lightning_sweep"]
    assert handle is result.result and [t.status for t in handle.trials] == ["running"]
    ended = threading.Event()
    handle.trials[0].handle.add_done_callback(lambda run: ended.set())
    assert ended.wait(300), "trial 0 never ended"
    with capture_output() as captured:  # trial 1 starts before this cell, and its cell raises
        other = ip.run_cell("x = 1")
    assert other.success and ip.user_ns["x"] == 1, other.error_in_exec
    assert "stopped by ValueError: no data here" in captured.stdout
    assert handle.done() and handle.status == "failed"
    assert [t.status for t in handle.trials] == ["complete", "failed"]
    with pytest.raises(ValueError, match="no data here"):
        handle.wait()
    assert ip.user_ns["model"] is handle.trials[0].model, "the best trial's model is bound"
    assert "trial" not in ip.user_ns


GATE = '''
class Gate(pl.Callback):
    """Rank 0 writes "training" to ``fifo``, then waits until ``release`` is written."""

    def __init__(self, fifo, release):
        self.fifo, self.release = fifo, release

    def on_train_start(self, trainer, pl_module):
        if trainer.global_rank == 0:
            with open(self.fifo, "w") as signal_test:
                signal_test.write("training\\n")
            with open(self.release) as wait_here:
                wait_here.read()
'''


def test_a_background_trial_is_pruned_while_another_cell_runs(kernel, tmp_path):
    fifo, release = tmp_path / "pruned-trains.fifo", tmp_path / "release.fifo"
    os.mkfifo(release)
    trains = fifo_reader(fifo)
    kernel.ok(GATE + "import os\ncores = os.sched_getaffinity(0)\n"
              "os.sched_setaffinity(0, {min(cores)})")  # one slot: the trials run in turn
    # --seed: every trial starts from the same weights; trial 5 (after MedianPruner's five
    # startup trials, all told by the time it starts) does not learn (lr 0), so its first epoch
    # is worse than the median there; unpruned it would train far longer than the cell waits
    cell = (f"gate = Gate({str(fifo)!r}, {str(release)!r}) if trial.number == 5 else None\n"
            + CELL.replace('Regressor(lr=trial.suggest_float("lr", 1e-3, 1e-1, log=True))',
                           'Regressor(lr=trial.suggest_float("lr", 1e-2, 1e-1, log=True) '
                           'if trial.number < 5 else 0.0)')
            .replace("pl.Trainer(callbacks=[Signals({fifo} if trial.number == {signaller} "
                     "else None)]",
                     "pl.Trainer(max_epochs=2 if trial.number < 5 else 100000, "
                     "callbacks=[gate] if gate else []"))
    sweep = kernel.execute(f"{HEAD} --trials 6 --pruner median --seed 0\n{cell}")
    try:
        assert kernel.reply(sweep)["status"] == "ok"
    finally:
        kernel.ok("os.sched_setaffinity(0, cores)")
    wait_for(trains, "trial 5 never started while the kernel was idle")
    # this cell lets trial 5 train, then waits for its ranks to be gone: only a prune made
    # while this cell runs can end them
    seen = kernel.ok("import threading\nrecord = lightning_sweep.trials[5]\n"
                     "ended = threading.Event()\n"
                     "record.handle.add_done_callback(lambda run: ended.set())\n"
                     f"with open({str(release)!r}, 'w') as go:\n    go.write('go')\n"
                     "print(ended.wait(90), record.status, '|', record.note)")
    stopped = "" if seen.startswith("True") else kernel.ok("lightning_sweep.stop(wait=False)")
    assert seen.strip().split(None, 2) == ["True", "running", "| pruned at epoch 0"], \
        (seen, stopped)
    out = kernel.ok("done = lightning_sweep.wait()\n"
                    "print(*[t.status for t in done.trials], done.trials[5].run.status, "
                    "done.study.trials[5].state.name, "
                    "0 in done.study.trials[5].intermediate_values)")
    assert out.split() == ["complete"] * 5 + ["pruned", "interrupted", "PRUNED", "True"]
    assert not kernel.children()
