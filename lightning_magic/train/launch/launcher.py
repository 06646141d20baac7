"""Lightning's multiprocessing launcher, made safe for a notebook kernel.

``NotebookLauncher`` keeps Lightning's way of returning rank 0's results to the kernel (weights
loaded into the user's model, trainer state, callback metrics) and replaces the part that waits
for the ranks: it watches every rank and the stop button at once, so that a crash, a hang or an
interrupt ends with a report and no process left behind. It serves fit, validate, test and
predict alike; predict gathers every rank's share (see ``predictions``).

Inside a rank, Lightning's loops run in a fresh thread: a forked process inherits the kernel's
OpenMP thread pool without its threads, and the first parallel op on the forked main thread
waits forever for them; a new thread starts a pool of its own. The kernel's pool is released
just before the fork (``openmp``), so that the rank's own pool is not slowed by it.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import random
import signal
import socket
import sys
import threading
from types import ModuleType
from typing import Any, Callable

from ..ranks import callbacks, predictions, setups
from ..returns import transfer
from .interrupts import Presses
from .leftovers import Reaper, left_running
from ..ranks.errors import error_record
from ..ranks.loggers import continue_logs
from ..ranks.rank import WarningCollector, prepare_rank_process
from ..ranks.sharded import mesh_shape, settle_metrics
from .openmp import rank_threads, release_pool
from .placement import own_folder_warnings
from .supervision import Outcome, RankError, address_in_use, end_ranks
from .supervision_loop import supervise
from ..returns.wire import pack

BACKGROUND_NICE = 3  # a background run's ranks yield the CPU to the kernel (os.nice)

_CLASSES: dict[str, type] = {}


def launcher_class(space: ModuleType) -> type:
    """``NotebookLauncher`` over the multiprocessing launcher of ``space`` (one namespace)."""
    if space.__name__ not in _CLASSES:
        from importlib import import_module

        base = import_module(f"{space.__name__}.strategies.launchers.multiprocessing")
        _CLASSES[space.__name__] = type("NotebookLauncher",
                                        (NotebookLauncher, base._MultiProcessingLauncher),
                                        {"_worker_output": base._WorkerOutput})
    return _CLASSES[space.__name__]


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class NotebookLauncher:
    """Mixed into a namespace's ``_MultiProcessingLauncher`` by ``launcher_class``."""

    def __init__(self, strategy: Any, session: Any) -> None:
        super().__init__(strategy, start_method="fork")  # type: ignore[call-arg]
        self.session = session
        self.outcome = Outcome()
        self.record: Any = None  # the TrainingRun of the last launch
        self.handle: Any = None  # what a background runner gave back for the last call

    _worker_output: Any = None  # the namespace's _WorkerOutput (set by launcher_class)

    # -- kernel side -------------------------------------------------------------------------
    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        if self.session.runner is not None:  # a background run: it starts the ranks, returns
            return self.session.runner(self, function, args, kwargs, trainer)
        if self.session.claim is not None:  # what a background run holds, waited for
            self.session.claim(self, trainer)
        launch, given = self.begin(trainer, args, kwargs)
        outcome = Outcome(status="interrupted")
        with Presses() as presses:
            try:
                outcome = self.run_ranks(function, args, kwargs, trainer, launch, presses)
            except BaseException:
                self.outcome = outcome
                self.record = launch.end(outcome, list(self.session.kernel_warnings))
                raise
            return self.finish(launch, outcome, trainer, given, presses.count)

    def begin(self, trainer: Any, args: Any, kwargs: Any) -> tuple[Any, list]:
        """The launch's kernel side (notes, live view, published run), and the data modules."""
        from .session import Launch

        stage = trainer.state.fn.value
        resume = args[4] if stage == "fit" and len(args) > 4 else None
        launch = Launch(self.session, trainer, stage, trainer.lightning_module,
                        self._strategy.num_processes, resume=resume)
        return launch, setups.datamodules(args, kwargs)

    def run_ranks(self, function: Callable, args: Any, kwargs: Any, trainer: Any, launch: Any,
                  presses: Any, started: Any = None) -> Outcome:
        """Start the ranks (or take ``started``), wait for them; once more on a taken port."""
        for attempt in (1, 2):
            ranks = started if attempt == 1 and started is not None else \
                self.start_ranks(function, args, kwargs, trainer, launch)
            outcome = self.wait_ranks(ranks, launch, presses)
            if attempt == 1 and address_in_use(outcome):
                launch.control.reset_stop()
                continue  # another free port, once
            break
        return outcome

    def finish(self, launch: Any, outcome: Outcome, trainer: Any, given: list,
               presses: int = 0) -> Any:
        """Rank 0's results into the kernel, the launch ended (``self.record``); the return."""
        results = None
        try:
            if outcome.worker_output is not None:
                results = self._recover(outcome, trainer, launch.stage, given[0] if given else None)
        finally:
            self.outcome = outcome
            self.record = launch.end(outcome, list(self.session.kernel_warnings))
        if self.record.status in ("finished", "interrupted"):  # not a --check dry run
            setups.record(given, launch.stage, (outcome.extra or {}).get("setup_states"))
        if presses and self.record.ok:
            self.record.notes.append("Stop was pressed after the ranks had finished: nothing "
                                     "was cut short.")
        return results

    def _recover(self, outcome: Outcome, trainer: Any, stage: str, datamodule: Any) -> Any:
        """Rank 0's results into the kernel's Trainer and model; predict's from every rank."""
        output = outcome.worker_output
        try:
            transfer.restore(trainer, output, outcome.extra, self, datamodule)
        except Exception as exc:  # noqa: BLE001 - reported like a rank's failure
            outcome.status, outcome.error = "failed", RankError(**error_record(0, exc))
            outcome.worker_output = None
            return None
        if stage == "predict" and outcome.rank_outputs is not None:
            shares = [output.trainer_results] + [outcome.rank_outputs.get(rank) for rank in
                                                 range(1, self._strategy.num_processes)]
            _, group = mesh_shape(self._strategy, self._strategy.num_processes)
            return predictions.merge(shares, outcome.extra.get("predict_loaders", 1), group)
        return output.trainer_results

    def start_ranks(self, function: Callable, args: Any, kwargs: Any, trainer: Any,
                    launch: Any) -> tuple:
        """Fork the ranks and return at once: (procs, results, errors, reaper) for wait_ranks."""
        from lightning.fabric.strategies.launchers.multiprocessing import _check_bad_cuda_fork

        _check_bad_cuda_fork()  # the last guard: nothing may have initialized CUDA by now
        ctx = mp.get_context("fork")
        results, errors = ctx.SimpleQueue(), ctx.SimpleQueue()
        port = free_port()
        environment = getattr(self._strategy, "cluster_environment", None)
        if environment is not None:
            environment._main_port = port
        saved_port = os.environ.get("MASTER_PORT")
        os.environ["MASTER_PORT"] = str(port)
        launch.control.beat_all()
        # a forked child's `random` is reseeded from the OS (random's at-fork hook): one process
        # takes the kernel's back, so it draws what plain Lightning in the kernel would
        self._python_random = random.getstate()
        procs: list = []
        self.procs = []
        reaper = Reaper()  # ends what the ranks started if the kernel itself is killed
        self._reaper_fd = reaper.fd
        release_pool()  # the ranks' own pools then compute as fast as the kernel's (see openmp)
        try:
            try:
                for rank in range(self._strategy.num_processes):
                    proc = ctx.Process(target=self._rank_main, name=f"lightning-rank-{rank}",
                                       args=(rank, trainer, function, args, kwargs, results,
                                             errors, launch.rank_env()))
                    proc.start()
                    procs.append(proc)
            finally:
                if saved_port is None:
                    os.environ.pop("MASTER_PORT", None)
                else:
                    os.environ["MASTER_PORT"] = saved_port
            # Only the ranks write to these: once they are all gone, a read ends (EOFError)
            # instead of waiting for a message a killed rank never finished.
            results._writer.close()
            errors._writer.close()
            self.procs = procs
            reaper.watch([p.pid for p in procs])
            launch.started_ranks([p.pid for p in procs])
        except BaseException:
            end_ranks(procs)
            reaper.close()
            raise
        return procs, results, errors, reaper

    def wait_ranks(self, ranks: tuple, launch: Any, presses: Any) -> Outcome:
        """Supervise until every rank is gone, on any thread (``presses``: a ``Presses`` or
        anything with its ``active``/``count``/``drain``/``fileno``)."""
        procs, results, errors, reaper = ranks
        try:
            return supervise(procs, results, errors, launch.control, presses,
                             self.session.flags.timeout)
        finally:
            end_ranks(procs)
            reaper.close()

    # -- rank side ---------------------------------------------------------------------------
    def _rank_main(self, rank: int, trainer: Any, function: Callable, args: Any, kwargs: Any,
                   results: Any, errors: Any, env: dict[str, str]) -> None:
        try:
            os.close(self._reaper_fd)  # only the kernel's death may close the reaper's pipe
        except OSError:
            pass
        env = dict(env, LIGHTNING_MAGIC_RANK=str(rank), LOCAL_RANK=str(rank))
        prepare_rank_process(rank, self.session.control, env)
        if self.session.flags.background:  # the kernel wins the CPU when it needs it
            with contextlib.suppress(OSError):
                os.nice(BACKGROUND_NICE)
        self._collector = WarningCollector(own_folder_warnings(self.session))
        self._collector.install()
        done: dict[str, bool] = {}
        worker = threading.Thread(
            target=self._rank_work, name="lightning-magic-rank",
            args=(rank, trainer, function, args, kwargs, results, errors, done))
        worker.start()
        worker.join()
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - the rank is ending either way
                pass
        # Exit now: threads or child processes the user's code left behind do not hold the
        # rank open (the kernel ends the rank's process group once every rank is gone).
        if done.get("ok"):
            self.session.control.completed[rank] = 1
        os._exit(0 if done.get("ok") else 1)

    def _rank_work(self, rank: int, trainer: Any, function: Callable, args: Any, kwargs: Any,
                   results: Any, errors: Any, done: dict[str, bool]) -> None:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})  # stack dumps: main thread
        try:
            from lightning.fabric.utilities import move_data_to_device

            rank_threads(getattr(self.session.prepared, "cpu_threads", None),
                         self._strategy.num_processes)
            self._strategy._launcher = None  # inside a rank nothing launches again
            if self._strategy.num_processes == 1:  # several: Lightning's reset_seed, as in DDP
                random.setstate(self._python_random)
            if rank == 0 and self.session.records:  # a later launch of this Trainer
                self._collector.ignore(continue_logs(trainer))
            # no seeding here: one process goes on from the kernel's random state, as plain
            # Lightning in one process does; several are seeded again by Lightning's own
            # strategies (reset_seed() from the seed_everything of the cell or of --seed)
            setups.prepare(args, kwargs)  # what earlier launches did to a data module
            status = "finished"
            try:
                output = function(*args, **kwargs)
            except callbacks.StopRequested:
                status, output = "interrupted", None
            except BaseException as exc:
                if type(exc).__name__ != "_TunerExitException":  # the tuner's normal end
                    raise
                output = None
            self._status = status
            if trainer.state.fn.value == "predict" and output is not None:
                output = predictions.trim(output, trainer)
            worker_output = self._collect_rank_zero_results(trainer, output)
            if rank == 0:
                results.put(pack(move_data_to_device(worker_output, "cpu")))
            elif trainer.state.fn.value == "predict":
                _, group = mesh_shape(self._strategy, self._strategy.num_processes)
                share = output if rank % group == 0 else []  # its group's first rank speaks
                results.put(pack(("predictions", rank, move_data_to_device(share, "cpu"))))
            done["ok"] = True
        except BaseException as exc:  # noqa: BLE001 - everything a rank raises is reported
            errors.put(error_record(rank, exc))

    def _collect_rank_zero_results(self, trainer: Any, results: Any) -> Any:
        """Lightning's, with the weights written to the launch's own folder (removed with it)
        and only for fit; a dry run (``--check``) leaves the user's model as it was."""
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_path", None) if checkpoint else None
        # on every rank: sharded metrics, or a sharded model's full state gathered to rank 0
        settle_metrics(trainer)
        full_state = getattr(self._strategy, "full_state_dict", None)
        state_dict = full_state() if full_state is not None else \
            trainer.lightning_module.state_dict()
        if self._strategy.local_rank != 0:
            return None
        weights_path = None
        if trainer.state.fn.value == "fit" and not self.session.flags.check:
            weights_path = os.path.join(self.session.control.stack_dir, "weights.ckpt")
            self._strategy.checkpoint_io.save_checkpoint(state_dict, weights_path)
        return self._worker_output(best, weights_path, trainer.state, results,
                                   self.get_extra_results(trainer))

    def get_extra_results(self, trainer: Any) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)  # type: ignore[misc]
        ours = next((cb for cb in trainer.callbacks if isinstance(cb, callbacks.RunCallbacks)),
                    None)
        recorder = ours.part(callbacks.HistoryRecorder) if ours is not None else None
        history = recorder.rows if recorder is not None else []
        supervisor = ours.part(callbacks.RunSupervisor) if ours is not None else None
        last = next((cb.path for cb in trainer.callbacks
                     if isinstance(cb, callbacks.LastCheckpoint)), None)
        extra.update(
            status=getattr(self, "_status", "finished"),
            history=history,
            last_model_path=last if last and os.path.exists(last) else None,  # or a folder
            left_running=left_running(),
            warnings=list(getattr(self, "_collector", WarningCollector()).messages),
            library=list(getattr(self, "_collector", WarningCollector()).library),
            global_step=trainer.global_step,
            current_epoch=trainer.current_epoch,
            check=supervisor.check_results if supervisor is not None else {},
            trained_batches=supervisor.batches if supervisor is not None else None,
            stop_checkpoint={"saved": getattr(supervisor, "stop_saved", None),
                             "error": getattr(supervisor, "stop_error", None)},
            predict_loaders=len(getattr(trainer, "num_predict_batches", []) or [1]),
            **transfer.collect(trainer),
        )
        return extra
