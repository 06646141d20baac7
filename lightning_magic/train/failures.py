"""Gather what is known when a run fails (rank, exception, memory) for ``suggestions.explain``."""

from __future__ import annotations

import os
import shutil
from typing import Any, Optional


def failure_context(plan: Any) -> dict[str, Any]:
    """The user's settings and the machine's state at the time of the failure."""
    context: dict[str, Any] = {
        "batch_size": plan.batch_size,
        "precision": plan.resolved.precision,
        "devices": plan.resolved.trainer_devices(),
        "accelerator": plan.resolved.accelerator,
        "accumulate_grad_batches": plan.flags.accumulate_grad_batches,
        "ckpt_dir": plan.ckpt_dir,
        "num_workers": getattr(plan.found.train, "num_workers", None),
        "module_class": type(plan.found.model).__name__,
        "module_methods": [n for n, v in vars(type(plan.found.model)).items() if callable(v)],
        "out": plan.flags.out,
    }
    stop_checkpoint = os.path.join(plan.ckpt_dir, "last.ckpt")
    if os.path.isfile(stop_checkpoint):
        context["ckpt_path"] = stop_checkpoint
    try:
        import psutil

        memory = psutil.virtual_memory()
        context["host_memory"] = {"total": memory.total, "used": memory.used,
                                  "available": memory.available, "percent": memory.percent}
    except Exception:  # noqa: BLE001 - context is best effort
        pass
    try:
        shm = shutil.disk_usage("/dev/shm")
        context["shm"] = {"total": shm.total, "free": shm.free}
    except OSError:
        pass
    if plan.resolved.accelerator == "gpu":
        try:
            from .. import readings

            context["gpu_memory"] = [
                {"index": g.get("index"), "name": g.get("name"),
                 "used": (g.get("memory") or {}).get("used"),
                 "total": (g.get("memory") or {}).get("total")}
                for g in readings.snapshot().get("gpus", [])]
        except Exception:  # noqa: BLE001
            pass
    return context


def failure_of(outcome: Any, plan: Any, context: Optional[dict[str, Any]] = None) -> Any:
    from ..suggestions import Failure

    context = failure_context(plan) if context is None else context
    world = plan.resolved.num_processes
    if outcome.status == "interrupted":
        return Failure(kind="interrupt", world_size=world, context=context)
    if outcome.status == "timeout":
        return Failure(kind="timeout", rank=outcome.stalled_rank, world_size=world,
                       timeout=plan.flags.timeout, traceback=_stacks_text(outcome.stacks),
                       context=context)
    if outcome.error is not None:
        error = outcome.error
        return Failure(kind="exception", rank=error.rank, world_size=world,
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


def report_for(outcome: Any, plan: Any) -> Any:
    from ..suggestions import explain

    return explain(failure_of(outcome, plan))


def _stacks_text(stacks: dict[int, str]) -> Optional[str]:
    if not stacks:
        return None
    return "\n".join(f"--- rank {rank} ---\n{text.strip()}" for rank, text in sorted(stacks.items()))

