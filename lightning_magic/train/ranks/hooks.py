"""Lightning callbacks that cost a step nothing for the hooks they do not use, and one dispatch
for the per-batch hooks they do use."""

from __future__ import annotations

from typing import Any, Callable, Optional

from lightning.pytorch.callbacks import Callback

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


class BatchHooks(Callback):
    """The per-batch hooks of ``callbacks``, each called by Lightning once for all of them, in
    their order: one dispatch a batch instead of one per callback. The callbacks stay in the
    Trainer for their other hooks, with their per-batch ones None there; put this one where the
    first of them was, so every other callback sees the same order as before."""

    def __init__(self, *callbacks: Any) -> None:
        self.callbacks = callbacks
        for name in _BATCH_HOOKS:
            bound = [getattr(cb, name) for cb in callbacks if callable(getattr(cb, name))]
            for callback in callbacks:
                setattr(callback, name, None)
            setattr(self, name, _in_turn(bound))


def _in_turn(hooks: list[Callable[..., Any]]) -> Optional[Callable[..., Any]]:
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def call(*args: Any, **kwargs: Any) -> None:
        for hook in hooks:
            hook(*args, **kwargs)
    return call
