"""Lightning callbacks that cost a step nothing for the hooks they do not use."""

from __future__ import annotations

from typing import Any

# Lightning calls a callback's hook only where it is callable (``_call_callback_hooks`` in
# lightning/pytorch/trainer/call.py), each inside a profiler context. The per-batch hooks a magic
# callback leaves as Callback's no-ops are None on the instance, so a step does not enter that
# context a dozen times for hooks that do nothing (a tenth of a tiny CPU step, four callbacks).
_STAGES = ("train", "validation", "test", "predict")
_BATCH_HOOKS = tuple(f"on_{stage}_batch_{when}" for stage in _STAGES for when in ("start", "end")) + (
    "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")


def skip_idle_batch_hooks(callback: Any) -> None:
    """Set to None the per-batch hooks ``callback``'s class leaves as Lightning's no-ops."""
    for name in _BATCH_HOOKS:
        if getattr(type(callback), name).__qualname__ == f"Callback.{name}":
            setattr(callback, name, None)
