"""Gather what is known when a run fails (rank, exception, memory) for ``suggestions.explain``."""

from __future__ import annotations

import logging
import shutil
from typing import Any, Optional

_log = logging.getLogger(__name__)


def failure_context(launch: Any, outcome: Any = None) -> dict[str, Any]:
    """The user's settings and the machine's state at the time of the failure (``launch`` is the
    ``session.Launch`` that failed)."""
    session, resolved, model = launch.session, launch.session.resolved, launch.model
    started = launch.started_event
    context: dict[str, Any] = {
        "batch_size": started.get("batch_size"),
        "precision": resolved.precision,
        "devices": resolved.trainer_devices(),
        "accelerator": resolved.accelerator,
        "accumulate_grad_batches": getattr(launch.trainer, "accumulate_grad_batches", 1),
        "ckpt_dir": session.ckpt_dir,
        "num_workers": started.get("num_workers"),
        "module_class": type(model).__name__,
        "module_methods": [n for n, v in vars(type(model)).items() if callable(v)],
        "out": session.flags.out,
        "strategy": resolved.strategy,
        "stage": getattr(launch, "stage", None),
    }
    if resolved.strategy in ("fsdp", "model_parallel"):
        try:
            from ..ranks.sharded import model_bytes

            context["model_bytes"] = model_bytes(model)[1]
        except Exception:  # noqa: BLE001 - context is best effort
            _log.debug("model size unreadable for the failure report", exc_info=True)
    saved = launch.stop_checkpoint(outcome) if outcome is not None else {}
    for key, name in (("saved", "ckpt_path"), ("earlier", "ckpt_earlier"), ("error", "ckpt_error")):
        if saved.get(key):
            context[name] = saved[key]
    try:
        import psutil

        memory = psutil.virtual_memory()
        context["host_memory"] = {"total": memory.total, "used": memory.used,
                                  "available": memory.available, "percent": memory.percent}
    except Exception:  # noqa: BLE001 - context is best effort
        _log.debug("host memory unreadable for the failure report", exc_info=True)
    try:
        shm = shutil.disk_usage("/dev/shm")
        context["shm"] = {"total": shm.total, "free": shm.free}
    except OSError:
        _log.debug("/dev/shm unreadable for the failure report", exc_info=True)
    if resolved.accelerator == "gpu":
        try:
            from ... import readings

            context["gpu_memory"] = [
                {"index": g.get("index"), "name": g.get("name"),
                 "used": (g.get("memory") or {}).get("used"),
                 "total": (g.get("memory") or {}).get("total")}
                for g in readings.snapshot().get("gpus", [])]
        except Exception:  # noqa: BLE001 - context is best effort
            _log.debug("GPU readings unavailable for the failure report", exc_info=True)
    return context


def failure_of(outcome: Any, launch: Any, context: Optional[dict[str, Any]] = None) -> Any:
    from ...suggestions import Failure

    context = failure_context(launch, outcome) if context is None else context
    world = launch.world_size
    if outcome.status == "interrupted":
        return Failure(kind="interrupt", world_size=world, context=context)
    if outcome.status == "timeout":
        return Failure(kind="timeout", rank=outcome.stalled_rank, world_size=world,
                       timeout=launch.session.flags.timeout, traceback=_stacks_text(outcome.stacks),
                       context=context)
    if outcome.error is not None:
        error = outcome.error
        return Failure(kind="exception", rank=error.rank, world_size=world,
                       ranks=tuple(outcome.error_ranks) or None,
                       exc_type=error.exc_type, message=error.message,
                       traceback=error.traceback,
                       user_frame=tuple(error.user_frame) if error.user_frame else None,
                       context=context)
    tail = (getattr(outcome, "output_tails", {}) or {}).get(outcome.exit_rank)
    if tail:
        context = dict(context, stderr=tail)
    if outcome.exitcode is not None and outcome.exitcode < 0:
        stack = (getattr(outcome, "crash_stacks", {}) or {}).get(outcome.exit_rank) or None
        return Failure(kind="signal", rank=outcome.exit_rank, world_size=world,
                       signal=-outcome.exitcode, traceback=stack, context=context)
    return Failure(kind="exit", rank=outcome.exit_rank, world_size=world,
                   exitcode=outcome.exitcode, context=context)


def report_for(outcome: Any, launch: Any) -> Any:
    from ...suggestions import explain

    return explain(failure_of(outcome, launch))


def _stacks_text(stacks: dict[int, str]) -> Optional[str]:
    if not stacks:
        return None
    return "\n".join(f"--- rank {rank} ---\n{text.strip()}" for rank, text in sorted(stacks.items()))

