"""``--detach``: a background run that survives Jupyter's restart of its kernel (jupyter_client's
``restart_kernel``, which ends the kernel and its process group). The new kernel lists the run,
attaches to it, waits for it to end by itself (or stops it) and loads its weights; once it has
ended no process of it is left. Without ``--detach`` the restart ends the run's ranks with it.

Ordering is proven with events: rank 0 writes a FIFO once it is training, and a gated run blocks
rank 0 at step 5 on a second FIFO until the test writes it, after the restart."""

from __future__ import annotations

import os

import psutil
import pytest
from support.jupyter_kernels import fifo_reader, package_kernel, wait_for
from support.kernels import BEACON_SETUP
from support.runs import dead_pid

from lightning_magic.readings.runs import list_runs
from lightning_magic.train.launch.leftovers import KEEPER, PREFIX, remove_stale

pytestmark = pytest.mark.slow

SETUP = BEACON_SETUP + r'''

class Gate(Beacon):
    """Beacon, whose rank 0 waits at step 5 until the test writes the FIFO ``gate``."""

    def __init__(self, fifo=None, gate=None):
        super().__init__(fifo)
        self.gate = gate

    def training_step(self, batch, batch_idx):
        if self.gate and self.global_rank == 0 and self.global_step == 5:
            open(self.gate).read()
            self.gate = None
        return super().training_step(batch, batch_idx)
'''

DETACHED = "%%lightning_train --background --detach --accelerator cpu --devices 2"


def test_a_launch_folder_whose_kernel_is_gone_is_kept_while_its_supervisor_lives(tmp_path):
    kept, stale = tmp_path / f"{PREFIX}{dead_pid()}-a", tmp_path / f"{PREFIX}{dead_pid()}-b"
    for folder, keeper in ((kept, os.getpid()), (stale, dead_pid())):
        folder.mkdir()
        (folder / KEEPER).write_text(str(keeper))
    assert remove_stale(str(tmp_path)) == [str(stale)]
    assert kept.is_dir()


def restart(kernel) -> None:
    kernel.restart(SETUP)  # as JupyterLab's restart: a request, then the kill if need be


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            continue
    return left


def registered(ident: str):
    """The run's card as the server reads the run registry (``/gpu-status`` ``runs``)."""
    return next((run for run in list_runs() if run["run_id"] == ident), None)


def processes_of(pid: int) -> list[psutil.Process]:
    supervisor = psutil.Process(pid)
    return [supervisor] + supervisor.children(recursive=True)


def fails_after_a_restart(kernel, tmp_path, name: str, step: int, message: str,
                          epochs: int) -> tuple[str, str]:
    """A detached run of ``name`` (a Gate that raises ``message`` at ``step``), started, then
    its kernel restarted before rank 0 is let on to fail; once every process of it is gone, its
    id and journal path."""
    training, gate = fifo_reader(tmp_path / "training.fifo"), tmp_path / "gate.fifo"
    os.mkfifo(gate)
    kernel.ok(f"class {name}(Gate):\n    def training_step(self, batch, batch_idx):\n"
              f"        if self.global_step == {step}:\n"
              f"            raise RuntimeError({message!r})\n"
              "        return super().training_step(batch, batch_idx)\n\n"
              "from lightning_magic.background import index")
    out = kernel.ok(f"{DETACHED} --max-epochs {epochs}\nmodel = {name}("
                    f"{str(tmp_path / 'training.fifo')!r}, {str(gate)!r})\n"
                    "run = pl.Trainer().fit(model, loader)\n"
                    "print(run.id, run.detached.pid, run.journal.path, run.id in index.indexed())")
    ident, pid, journal, indexed = out.split()[-4:]
    assert indexed == "True" and os.path.isfile(journal)
    wait_for(training, "the detached run never trained")
    procs = processes_of(int(pid))
    restart(kernel)
    gate.write_text("go")  # rank 0 goes on to ``step``, and raises there
    gone, left = psutil.wait_procs(alive(procs), timeout=120)
    assert not left, f"processes outlived the failed run: {[p.pid for p in left]}"
    return ident, journal


def runs_listing(kernel) -> str:
    """What ``%lightning_runs`` shows in ``kernel``."""
    msg_id = kernel.execute("%lightning_runs")
    assert kernel.reply(msg_id)["status"] == "ok"
    return kernel.value(msg_id)


def row_of(listing: str, ident: str):
    """The row of run ``ident`` in a ``%lightning_runs`` listing, split in words; or None."""
    return next((line.split() for line in listing.splitlines() if line.startswith(ident)), None)


@pytest.fixture
def kernel(tmp_path):
    kernel = package_kernel(str(tmp_path), SETUP)
    yield kernel
    kernel.close()


def test_a_detached_run_survives_a_restart_ends_by_itself_and_its_weights_load(kernel, tmp_path):
    training, gate = fifo_reader(tmp_path / "training.fifo"), tmp_path / "gate.fifo"
    os.mkfifo(gate)
    out = kernel.ok(f"{DETACHED} --max-epochs 1\nmodel = Gate({str(tmp_path / 'training.fifo')!r}"
                    f", {str(gate)!r})\ntrainer = pl.Trainer()\nrun = trainer.fit(model, "
                    "loader)\nprint(run.id, run.detached.pid, run.status)")
    ident, pid, status = out.split()[-3:]
    assert status == "running"
    wait_for(training, "the detached run never trained")
    procs = processes_of(int(pid))
    assert len(procs) >= 3, "the supervisor and its two ranks"
    kernel_pid = kernel.km.provisioner.process.pid
    assert all(kernel_pid not in [p.pid for p in proc.parents()] for proc in procs)

    card = registered(ident)
    assert card is not None and card["pid"] == int(pid), "the supervisor owns the run's card"
    restart(kernel)
    assert len(alive(procs)) == len(procs), "the restart ended the detached run"
    card = registered(ident)
    assert card is not None, "the card of a run that trains on went with its kernel"
    assert card["pid"] == int(pid) and card["status"] == "running"
    assert len(card["rank_pids"]) == 2 and set(card["rank_pids"]) <= {p.pid for p in procs}
    row = row_of(runs_listing(kernel), ident)
    assert row is not None and row[1:4] == ["Gate", "fit", "running"]
    kernel.ok(f"import lightning_magic\nfound = lightning_magic.attach({ident[:8]!r})")
    kernel.ok("%%lightning_train --accelerator cpu --devices 1 --max-epochs 1\n"
              "pl.Trainer().fit(Beacon(), loader)")  # its launch cleans up stale launch folders
    gate.write_text("go")  # rank 0 trains on to the end of its one epoch
    done = kernel.ok("found.wait(timeout=240)\nfresh = Gate()\n"
                     "path = found.load_into(fresh)\nckpt = torch.load(path, weights_only=True)"
                     "['state_dict']\nprint(found.status, found.done(), "
                     "torch.equal(ckpt['layer.weight'], fresh.layer.weight), "
                     "int(torch.load(path, weights_only=True)['global_step']))")
    status, finished, loaded, steps = done.split()
    assert (status, finished, loaded) == ("finished", "True", "True")
    assert int(steps) == 256 // 8 // 2, "the checkpoint of the run's end"
    assert registered(ident) is None, "the card of an ended run is gone"
    gone, left = psutil.wait_procs(alive(procs), timeout=60)
    assert not left, f"processes outlived the detached run: {[p.pid for p in left]}"


def test_a_detached_run_is_stopped_from_the_new_kernel(kernel, tmp_path):
    training = fifo_reader(tmp_path / "training.fifo")
    out = kernel.ok(f"{DETACHED} --max-epochs 1000\nmodel = Beacon("
                    f"{str(tmp_path / 'training.fifo')!r})\nrun = pl.Trainer().fit(model, loader)"
                    "\nprint(run.id, run.detached.pid)")
    ident, pid = out.split()[-2:]
    wait_for(training, "the detached run never trained")
    procs = processes_of(int(pid))
    restart(kernel)
    stop = kernel.execute(f"%lightning_stop {ident[:8]}")
    assert kernel.reply(stop)["status"] == "ok"
    row = next(line for line in kernel.value(stop).splitlines() if line.startswith(ident))
    assert row.split()[1:4] == ["Beacon", "fit", "interrupted"]
    stopped = kernel.ok(f"import lightning_magic\nfound = lightning_magic.attach({ident!r})\n"
                        "fresh = Beacon()\nfound.load_into(fresh)\n"
                        "print(found.status, found.last_model_path is not None)")
    assert stopped.split() == ["interrupted", "True"]
    gone, left = psutil.wait_procs(alive(procs), timeout=60)
    assert not left, f"processes outlived the stop: {[p.pid for p in left]}"


def test_a_detached_run_that_fails_after_a_restart_is_listed_until_read_then_leaves_nothing(
        kernel, tmp_path):
    ident, journal = fails_after_a_restart(kernel, tmp_path, "Breaks", 6,
                                           "broke after the restart", epochs=1)
    assert os.path.isfile(journal), "the failure's only report went before a kernel read it"
    row = row_of(runs_listing(kernel), ident)
    assert row is not None and row[1:4] == ["Breaks", "fit", "failed"]
    read = kernel.execute(f"import lightning_magic\nfrom lightning_magic.background import index"
                          f"\nfound = lightning_magic.attach({ident!r})\nfound.wait(timeout=60)")
    failure = kernel.reply(read)  # wait() raises for a failed run, as a BackgroundRun's does
    assert failure["status"] == "error" and failure["ename"] == "RunFailed", failure
    shown = "\n".join(failure["traceback"])
    assert shown.count("\n") < 60, "the failure is shown as a report, not a traceback dump"
    assert f"run {ident} (fit of Breaks)" in shown and "broke after the restart" in shown
    assert "What to do" in shown, "the report the kernel would have shown is not there"
    assert "lightning_run" not in shown, "it names a variable this kernel does not have"
    assert "In [N] is the cell's number in the kernel that started the run" in shown
    after = kernel.ok(f"print(found.status, 'broke after the restart' in found.report, "
                      f"{ident!r} in index.indexed())")
    assert after.split() == ["failed", "True", "False"]
    folder = os.path.dirname(journal)
    assert not os.path.exists(journal), "a failed run with no checkpoint kept its journal"
    kept = set(os.listdir(folder)) if os.path.exists(folder) else set()
    assert kept <= {"run.json", "lightning_logs"}, \
        "only what the run's logger wrote stays, as a failed foreground run's would"
    assert ident not in runs_listing(kernel), "a failure already read is listed again"


def test_without_detach_a_restart_ends_the_runs_ranks(kernel, tmp_path):
    training = fifo_reader(tmp_path / "training.fifo")
    kernel.ok("%%lightning_train --background --accelerator cpu --devices 2 --max-epochs 1000\n"
              f"model = Beacon({str(tmp_path / 'training.fifo')!r})\n"
              "run = pl.Trainer().fit(model, loader)")
    wait_for(training, "the background run never trained")
    ident = kernel.ok("print(run.id)").strip()
    ranks = kernel.children()
    assert len(ranks) >= 2
    restart(kernel)
    gone, left = psutil.wait_procs(alive(ranks), timeout=60)
    assert not left, f"processes outlived their kernel: {[p.pid for p in left]}"
    assert ident not in runs_listing(kernel), "a run that ended with its kernel is not listed"
    kernel.ok(f"import lightning_magic\nfound = lightning_magic.attach({ident!r})")
    # the kernel's shutdown ends its children: its own supervision may still have journaled
    # that ("failed"), or the kernel went first ("gone")
    ended = kernel.reply(kernel.execute("found.wait(timeout=60)"))
    assert ended["status"] == "error" and ended["ename"] == "RunFailed", ended
    assert kernel.ok("print(found.status)").strip() in ("gone", "failed")


def test_a_detached_run_of_a_live_kernel_comes_back_as_any_background_run(kernel):
    out = kernel.ok(f"{DETACHED} --max-epochs 1\nmodel = Beacon()\n"
                    "start = model.layer.weight.detach().clone()\n"
                    "run = pl.Trainer().fit(model, loader)\nprint(run.detached.pid)")
    procs = processes_of(int(out.split()[-1]))
    result = kernel.ok("done = run.wait()\nprint(done.status, done.global_step, "
                       "torch.equal(start, model.layer.weight), len(done.history) > 0, "
                       "done.last_model_path is not None)")
    assert result.split() == ["finished", str(256 // 8 // 2), "False", "True", "True"]
    gone, left = psutil.wait_procs(alive(procs), timeout=60)
    assert not left, f"processes outlived the detached run: {[p.pid for p in left]}"


def test_the_kernel_that_started_a_detached_run_stops_it_as_any_background_run(kernel, tmp_path):
    training = fifo_reader(tmp_path / "training.fifo")
    out = kernel.ok(f"{DETACHED} --max-epochs 1000\nmodel = Beacon("
                    f"{str(tmp_path / 'training.fifo')!r})\nrun = pl.Trainer().fit(model, loader)"
                    "\nprint(run.detached.pid)")
    wait_for(training, "the detached run never trained")
    procs = processes_of(int(out.split()[-1]))
    stopped = kernel.ok("stopped = run.stop()\nprint(stopped.status, "
                        "stopped.last_model_path is not None, len(run.history) > 0)")
    assert stopped.split() == ["interrupted", "True", "True"]
    gone, left = psutil.wait_procs(alive(procs), timeout=30)
    assert not left, f"processes outlived stop(): {[p.pid for p in left]}"


def test_a_detached_run_that_stalls_after_a_restart_is_ended_by_its_timeout(kernel, tmp_path):
    training, gate = fifo_reader(tmp_path / "training.fifo"), tmp_path / "gate.fifo"
    os.mkfifo(gate)  # never written: rank 0 stalls at step 5 for good
    out = kernel.ok(f"{DETACHED} --max-epochs 1 --timeout 8\nmodel = Gate("
                    f"{str(tmp_path / 'training.fifo')!r}, {str(gate)!r})\n"
                    "run = pl.Trainer().fit(model, loader)\nprint(run.id, run.detached.pid)")
    ident, pid = out.split()[-2:]
    wait_for(training, "the detached run never trained")
    procs = processes_of(int(pid))
    restart(kernel)
    ended = kernel.reply(kernel.execute(f"import lightning_magic\n"
                                        f"found = lightning_magic.attach({ident!r})\n"
                                        "found.wait(timeout=240)"))
    assert ended["status"] == "error" and ended["ename"] == "RunFailed", ended
    assert "ran past its --timeout" in ended["evalue"] and "`--timeout 8`" in ended["evalue"]
    assert kernel.ok("print(found.status)").strip() == "timeout"
    gone, left = psutil.wait_procs(alive(procs), timeout=60)
    assert not left, f"processes outlived the timeout: {[p.pid for p in left]}"


def test_a_detached_run_is_stopped_with_its_checkpoint_once_it_has_run_its_timeout(kernel):
    out = kernel.ok(f"{DETACHED} --max-epochs -1 --timeout 30\nmodel = Beacon()\n"
                    "run = pl.Trainer().fit(model, loader)\nprint(run.detached.pid)")
    procs = processes_of(int(out.split()[-1]))
    ended = kernel.ok("import os\nrun.join(timeout=300)\nrecord = run.record\n"
                      "print(record.status, record.last_model_path is not None and "
                      "os.path.exists(record.last_model_path), record.global_step > 0)\n"
                      "print(record.report.title)")
    status, saved, trained, title = ended.split(maxsplit=3)
    assert (status, saved, trained) == ("timeout", "True", "True"), ended
    assert "stalled" not in title, "no rank stalled: the run reached its bound"
    gone, left = psutil.wait_procs(alive(procs), timeout=60)
    assert not left, f"processes outlived the timeout: {[p.pid for p in left]}"


def test_a_detached_run_from_a_kernel_that_computed_with_its_openmp_pool_trains(kernel):
    # the kernel's pool is live (a notebook that looked at its data): the supervisor, a fork of
    # the kernel, must not wait for pool threads that did not come across the fork
    kernel.ok("import torch\nx = torch.randn(512, 512) @ torch.randn(512, 512)")
    out = kernel.ok(f"{DETACHED} --max-epochs 1\nmodel = Beacon()\n"
                    "run = pl.Trainer().fit(model, loader)\nprint(run.detached.pid)")
    procs = processes_of(int(out.split()[-1]))
    try:
        ended = kernel.reply(kernel.execute("done = run.wait(timeout=120)\n"
                                            "print(done.status, done.global_step > 0)"))
        assert ended["status"] == "ok", (ended.get("ename"), ended.get("evalue"))
    finally:
        for proc in alive(procs):  # a hung supervisor has left the kernel's session
            proc.kill()
    gone, left = psutil.wait_procs(alive(procs), timeout=60)
    assert not left, f"processes outlived the run: {[p.pid for p in left]}"


def test_a_detached_run_that_fails_after_a_restart_with_a_checkpoint_is_listed_until_read(
        kernel, tmp_path):
    # step 20 is in epoch 1 (16 steps an epoch), after epoch 0's checkpoint
    ident, journal = fails_after_a_restart(kernel, tmp_path, "BreaksLater", 20,
                                           "broke in epoch 1", epochs=3)
    row = row_of(runs_listing(kernel), ident)
    assert row is not None and row[1:4] == ["BreaksLater", "fit", "failed"], \
        "a run that failed after its kernel went is not listed"
    read = kernel.reply(kernel.execute(f"import lightning_magic\nfound = lightning_magic.attach("
                                       f"{ident!r})\nfound.wait(timeout=60)"))
    assert read["status"] == "error" and read["ename"] == "RunFailed", read
    assert "broke in epoch 1" in read["evalue"]
    loaded = kernel.ok("fresh = Beacon()\nprint(os.path.basename(found.load_into(fresh)))")
    assert loaded.split()[-1] == "last.ckpt"
    # it failed before saying which checkpoint was best: the error names those it saved
    best = kernel.reply(kernel.execute("found.load_into(fresh, which='best')"))
    assert best["status"] == "error" and best["ename"] == "UsageError", best
    assert "names no best checkpoint" in best["evalue"]
    assert "epoch=0-step=16.ckpt" in best["evalue"], best["evalue"]
    assert os.path.isfile(journal), "the journal of a run with a checkpoint to load went"
    assert ident not in runs_listing(kernel), "a failure already read is listed again"
