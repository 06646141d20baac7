"""What a background run holds until its results are back in the kernel: its GPUs, its Trainer
and its model. A later call that needs any of them, in the background or in the foreground,
waits for the holder (a note names it), then takes the holder's results first, so it starts from
them; with ``--no-wait`` (a background call) it is refused."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError


def needs(resolved: Any, trainer: Any, model: Any) -> set[tuple[str, Any]]:
    held = {("trainer", id(trainer)), ("model", id(model))}
    if resolved.accelerator == "gpu":
        held |= {("gpu", index) for index in resolved.nvml_indices}
    return held


def held_by(run: Any) -> set[tuple[str, Any]]:
    return needs(run.resolved, run.trainer, run.model)


def describe(held: set[tuple[str, Any]]) -> str:
    gpus = sorted(index for kind, index in held if kind == "gpu")
    parts = [f"GPU {', '.join(map(str, gpus))}"] if gpus else []
    parts += [f"its {kind}" for kind in ("trainer", "model") if any(k == kind for k, _ in held)]
    return " and ".join(parts)


def claim(needed: set[tuple[str, Any]], runs: Any, no_wait: bool, what: str) -> None:
    """Return once nothing of ``needed`` is held by a run of ``runs`` whose results are not back
    (waiting for each holder in turn); with ``no_wait`` a holder is a ``UsageError``."""
    for holder in runs.pending():
        common = held_by(holder) & needed
        if not common:
            continue
        named = (f"background run {holder.id} ({holder.stage} of {holder.model_name}, "
                 f"In [{holder.cell}], {holder.status})")
        if no_wait:
            raise UsageError(f"--no-wait: the {what} needs {describe(common)}, held by {named}. "
                             f"Stop it (%lightning_stop {holder.id}), wait for it "
                             "(its handle's wait()), or leave out --no-wait to wait here.")
        print(f"Waiting for {named}: it holds {describe(common)}, which the {what} needs.")
        holder.join(when="before the next call on them started")


def claim_call(launcher: Any, trainer: Any, runs: Any, no_wait: bool = False) -> None:
    """``claim`` what this call of ``trainer`` needs; the call keeps the state Lightning set up
    for it (a holder's results come with its own call's state)."""
    model, state = trainer.lightning_module, trainer.state
    call = (state.fn, state.status, state.stage)
    claim(needs(launcher.session.resolved, trainer, model), runs, no_wait,
          f"{state.fn.value} of {type(model).__name__}")
    trainer.state.fn, trainer.state.status, trainer.state.stage = call


def foreground_claim(runs: Any) -> Any:
    """What a foreground call runs before its ranks start (``Session.claim``)."""
    return lambda launcher, trainer: claim_call(launcher, trainer, runs)
