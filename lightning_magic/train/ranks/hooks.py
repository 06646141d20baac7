"""Lightning callbacks that cost a step as little as they can: the magic's own callbacks as one
callback in the Trainer (``RunCallbacks``), and hooks left as Lightning's no-ops set to None
(``skip_idle_batch_hooks``)."""

from __future__ import annotations

from typing import Any, Callable, Optional

from lightning.pytorch.callbacks import Callback

# Lightning calls a callback's hook only where it is callable (``_call_callback_hooks`` in
# lightning/pytorch/trainer/call.py), each inside a profiler context, and looks the hook up on
# every callback in the Trainer, every time. On a tiny CPU step each of those lookups and
# contexts is a measurable part of the step, so the magic puts one callback in the Trainer, not
# one per concern, and that one leaves None the hooks none of its parts use.
_STAGES = ("train", "validation", "test", "predict")
_BATCH_HOOKS = tuple(f"on_{stage}_batch_{when}" for stage in _STAGES for when in ("start", "end")) + (
    "on_before_backward", "on_after_backward", "on_before_optimizer_step", "on_before_zero_grad")
# every hook Lightning calls through _call_callback_hooks; it calls the checkpoint hooks and
# state_dict itself, on every callback, so those keep Callback's own
_DISPATCHED = tuple(name for name in vars(Callback)
                    if (name.startswith("on_") or name in ("setup", "teardown"))
                    and name not in ("on_save_checkpoint", "on_load_checkpoint"))


def skip_idle_batch_hooks(callback: Any) -> None:
    """Set to None the per-batch hooks ``callback``'s class leaves as Lightning's no-ops."""
    for name in _BATCH_HOOKS:
        if not _implements(callback, name):
            setattr(callback, name, None)


def _implements(callback: Any, name: str) -> bool:
    return getattr(type(callback), name) is not getattr(Callback, name)


class RunCallbacks(Callback):
    """The magic's callbacks (``parts``) as one callback in the Trainer: each hook calls the
    parts that implement it, in their order; a hook none of them implements is None, so
    Lightning skips it. Put where the parts would have been, every other callback sees the same
    order as before."""

    def __init__(self, *parts: Any) -> None:
        self.parts = parts
        for name in _DISPATCHED:
            setattr(self, name, _in_turn([getattr(part, name) for part in parts
                                          if _implements(part, name)]))

    def part(self, kind: type) -> Any:
        """The part of class ``kind``, if there is one."""
        return next((part for part in self.parts if isinstance(part, kind)), None)


def _in_turn(hooks: list[Callable[..., Any]]) -> Optional[Callable[..., Any]]:
    if len(hooks) <= 1:
        return hooks[0] if hooks else None

    def call(*args: Any, **kwargs: Any) -> None:
        for hook in hooks:
            hook(*args, **kwargs)
    return call
