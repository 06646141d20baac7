"""Lightning's multiprocessing launcher, made safe for a notebook kernel.

``NotebookLauncher`` keeps Lightning's way of returning rank 0's results to the kernel (weights
loaded into the user's model, trainer state, callback metrics) and replaces the part that waits
for the ranks: it watches every rank and the kernel's interrupts at once, so that a crash, a hang
or Ctrl+C ends with a report and no process left behind, instead of a SystemExit in the kernel.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import socket
import time
import traceback as tb_module
from multiprocessing.connection import wait
from typing import Any, Callable, Optional

from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.strategies.launchers.multiprocessing import (
    _MultiProcessingLauncher,
)

from . import callbacks
from .rank import WarningCollector, prepare_rank_process
from .control import RunControl
from .supervision import (
    SETTLE_S,
    STOP_GRACE_S,
    Outcome,
    RankError,
    address_in_use,
    end_ranks,
    pick_stalled,
    root_cause,
)


class RanksFailed(Exception):
    """Raised through Trainer.fit when the ranks did not finish; carries the Outcome."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status)
        self.outcome = outcome


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _user_frame(exc: BaseException) -> Optional[tuple[str, int, str]]:
    from ..suggestions import user_frame_from_traceback

    try:
        return user_frame_from_traceback(exc.__traceback__)
    except Exception:  # noqa: BLE001 - a report without a location is still a report
        return None


class NotebookLauncher(_MultiProcessingLauncher):
    def __init__(self, strategy: Any, control: RunControl, settings: dict[str, Any]) -> None:
        super().__init__(strategy, start_method="fork")
        self.control = control
        self.settings = settings       # seed, timeout, rank_env, stop_checkpoint
        self.outcome = Outcome()

    # -- kernel side -------------------------------------------------------------------------
    def launch(self, function: Callable, *args: Any, trainer: Any = None, **kwargs: Any) -> Any:
        for attempt in (1, 2):
            outcome = self._run_ranks(function, args, kwargs, trainer)
            if attempt == 1 and address_in_use(outcome):
                self.control.reset_stop()
                continue  # another free port, once
            break
        self.outcome = outcome
        if outcome.worker_output is None:
            raise RanksFailed(outcome)
        self._recover_results_in_main_process(outcome.worker_output, trainer)
        return outcome.worker_output.trainer_results

    def _run_ranks(self, function: Callable, args: Any, kwargs: Any, trainer: Any) -> Outcome:
        from lightning.fabric.strategies.launchers.multiprocessing import (
            _check_bad_cuda_fork,
        )

        _check_bad_cuda_fork()  # the last guard: nothing may have initialized CUDA by now
        ctx = mp.get_context("fork")
        results, errors = ctx.SimpleQueue(), ctx.SimpleQueue()
        port = free_port()
        self._strategy.cluster_environment._main_port = port
        saved_port = os.environ.get("MASTER_PORT")
        os.environ["MASTER_PORT"] = str(port)
        self.control.beat_all()
        procs: list = []
        self.procs = []
        try:
            try:
                for rank in range(self._strategy.num_processes):
                    proc = ctx.Process(target=self._rank_main, name=f"lightning-rank-{rank}",
                                       args=(rank, trainer, function, args, kwargs, results,
                                             errors))
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
            started = self.settings.get("on_started")
            if started is not None:
                started([p.pid for p in procs])
            return self._supervise(procs, results, errors)
        finally:
            end_ranks(procs)

    def _supervise(self, procs: list, results: Any, errors: Any) -> Outcome:
        """Wait for the ranks, an interrupt, or a stall; whichever comes first."""
        outcome = Outcome()
        timeout = self.settings.get("timeout")
        reported: list[RankError] = []
        deaths: dict[int, int] = {}          # rank -> non-zero exit code
        settle_deadline: Optional[float] = None
        stop_deadline: Optional[float] = None
        running = {p.sentinel: (rank, p) for rank, p in enumerate(procs)}
        closed: set = set()  # readers whose writers are all gone
        while running:
            try:
                readers = [r for r in (results._reader, errors._reader) if r not in closed]
                ready = wait(list(running) + readers, timeout=0.5)
                if errors._reader in ready:
                    record = _read(errors)
                    if record is None:
                        closed.add(errors._reader)
                    else:
                        reported.append(RankError(**record))
                if results._reader in ready:
                    output = _read(results)
                    if output is None:
                        closed.add(results._reader)
                    else:
                        outcome.worker_output, outcome.extra = output, output.extra
                for sentinel in [s for s in ready if s in running]:
                    rank, proc = running.pop(sentinel)
                    proc.join()
                    if proc.exitcode != 0:
                        deaths[rank] = proc.exitcode
                now = time.monotonic()
                if (reported or deaths) and settle_deadline is None and stop_deadline is None:
                    # The first sign of failure: give the other ranks a moment to report theirs,
                    # so that the root cause is told apart from its echoes in the others.
                    settle_deadline = now + SETTLE_S
                if settle_deadline is not None and now >= settle_deadline:
                    break
                if stop_deadline is not None and now >= stop_deadline:
                    break
                if timeout and running and stop_deadline is None and settle_deadline is None:
                    stalled = self._stalled_rank(timeout, now, [r for r, _ in running.values()])
                    if stalled is not None:
                        outcome.status = "timeout"
                        outcome.stacks = self._dump_stacks(procs)
                        outcome.stalled_rank = pick_stalled(outcome.stacks, stalled)
                        return outcome
            except KeyboardInterrupt:
                outcome.status = "interrupted"
                if stop_deadline is not None:
                    break  # a second interrupt: end the ranks now
                self.control.request_stop()
                stop_deadline = time.monotonic() + STOP_GRACE_S
        while errors._reader not in closed and errors._reader.poll():
            record = _read(errors)
            if record is None:
                break
            reported.append(RankError(**record))
        if outcome.status == "interrupted":
            return outcome
        if reported or deaths:
            outcome.status = "failed"
            root_cause(outcome, reported, deaths)
        elif outcome.extra.get("status") == "interrupted":
            outcome.status = "interrupted"
        return outcome

    def _stalled_rank(self, timeout: float, now: float, alive: list[int]) -> Optional[int]:
        ages = {rank: now - self.control.heartbeat[rank] for rank in alive}
        stale = {rank: age for rank, age in ages.items() if age > timeout}
        return max(stale, key=stale.get) if stale else None

    def _dump_stacks(self, procs: list) -> dict[int, str]:
        for proc in procs:
            if proc.is_alive():
                try:
                    os.kill(proc.pid, signal.SIGUSR1)
                except ProcessLookupError:
                    pass
        stacks: dict[int, str] = {}
        deadline = time.monotonic() + 2.0
        pending = {rank for rank, p in enumerate(procs) if p.is_alive()}
        while pending and time.monotonic() < deadline:
            for rank in list(pending):
                path = self.control.stack_file(rank)
                if os.path.exists(path) and os.path.getsize(path) > 0:
                    with open(path) as handle:
                        stacks[rank] = handle.read()
                    pending.discard(rank)
            if pending:
                wait([procs[r].sentinel for r in pending], timeout=0.05)
        return stacks

    # -- rank side ---------------------------------------------------------------------------
    def _rank_main(self, rank: int, trainer: Any, function: Callable, args: Any, kwargs: Any,
                   results: Any, errors: Any) -> None:
        env = dict(self.settings.get("rank_env", {}), LIGHTNING_MAGIC_RANK=str(rank),
                   LOCAL_RANK=str(rank))
        prepare_rank_process(rank, self.control, env)
        collector = WarningCollector()
        collector.install()
        self._collector = collector
        try:
            from lightning.fabric.utilities.distributed import (
                _set_num_threads_if_needed,
            )

            _set_num_threads_if_needed(num_processes=self._strategy.num_processes)
            if self.settings.get("seed") is not None:
                from lightning.fabric.utilities.seed import seed_everything

                seed_everything(self.settings["seed"], verbose=False)
            status = "finished"
            try:
                output = function(*args, **kwargs)
            except callbacks.StopRequested:
                status, output = "interrupted", None
            self._status = status
            worker_output = self._collect_rank_zero_results(trainer, output)
            if rank == 0:
                from lightning.fabric.utilities import move_data_to_device

                results.put(move_data_to_device(worker_output, "cpu"))
        except BaseException as exc:  # noqa: BLE001 - everything a rank raises is reported
            errors.put({
                "rank": rank,
                "exc_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
                "message": str(exc),
                "traceback": "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__)),
                "user_frame": _user_frame(exc),
            })
            os._exit(1)

    def get_extra_results(self, trainer: Any) -> dict[str, Any]:
        extra = super().get_extra_results(trainer)
        checkpoint = trainer.checkpoint_callback
        history = next((cb.rows for cb in trainer.callbacks
                        if isinstance(cb, callbacks.HistoryRecorder)), [])
        supervisor = next((cb for cb in trainer.callbacks if isinstance(cb, callbacks.RunSupervisor)),
                          None)
        extra.update(
            status=getattr(self, "_status", "finished"),
            history=history,
            last_model_path=getattr(checkpoint, "last_model_path", None) or None,
            warnings=list(getattr(self, "_collector", WarningCollector()).messages),
            global_step=trainer.global_step,
            current_epoch=trainer.current_epoch,
            check=supervisor.check_results if supervisor is not None else {},
        )
        return extra

    def _collect_rank_zero_results(self, trainer: Any, results: Any) -> Any:
        output = super()._collect_rank_zero_results(trainer, results)
        if output is not None and self.settings.get("check") and output.weights_path:
            # a dry run leaves the user's model as it was
            self._strategy.checkpoint_io.remove_checkpoint(output.weights_path)
            output = output._replace(weights_path=None)
        return output

    def update_main_process_results(self, trainer: Any, extra: dict[str, Any]) -> None:
        super().update_main_process_results(trainer, extra)
        self.outcome.extra = extra


class NotebookDDPStrategy(DDPStrategy):
    """``ddp_notebook`` (fork) whose launcher is the notebook-safe one above."""

    def __init__(self, control: RunControl, settings: dict[str, Any], **kwargs: Any) -> None:
        super().__init__(start_method="fork", **kwargs)
        self._control = control
        self._settings = settings

    def _configure_launcher(self) -> None:
        self._launcher = NotebookLauncher(self, self._control, self._settings)


def _read(queue: Any) -> Any:
    """One message from a rank, or None when the ranks are gone (or one died mid-message)."""
    try:
        return queue.get()
    except Exception:  # noqa: BLE001 - EOFError, or the many errors of a truncated pickle
        return None
