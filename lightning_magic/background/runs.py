"""This kernel's background runs, and their results brought back between cells.

``install`` registers IPython's ``pre_run_cell`` and ``post_run_cell`` events: at each, every run
whose ranks are gone has its weights loaded into the kernel's model and its state into the
Trainer, on the kernel's main thread, never while a cell's own code runs.
"""

from __future__ import annotations

from typing import Any, Callable

from IPython.core.error import UsageError


class Runs:
    def __init__(self) -> None:
        self.all: list[Any] = []

    def add(self, run: Any) -> None:
        self.all.append(run)

    def pending(self) -> list[Any]:
        """The runs whose results are not back in the kernel yet."""
        return [run for run in self.all if not run.delivered()]

    def running(self) -> list[Any]:
        return [run for run in self.all if not run.done()]

    def find(self, ident: str) -> Any:
        """The run whose id is ``ident`` or starts with it."""
        found = [run for run in self.all if run.id.startswith(ident)] if ident else []
        if len(found) == 1:
            return found[0]
        known = ", ".join(run.id for run in self.all) or "none yet"
        what = "names several runs" if found else "is no run of this kernel"
        raise UsageError(f"{ident!r} {what}; this kernel's runs: {known} (%lightning_runs "
                         "lists them).")

    def deliver_ended(self, when: str) -> None:
        for run in self.pending():
            if run.done():
                run.deliver(when)


RUNS = Runs()


def cell_origin(shell: Any) -> Any:
    """The running cell's ``view.origin.Origin``, for output that code outside this folder sends
    from a background thread into the cell it belongs to (a background sweep's table)."""
    from ..view.origin import Origin

    return Origin(shell)
_HOOKS: dict[int, tuple[Callable, Callable]] = {}


def install(shell: Any) -> None:
    def before(info: Any = None) -> None:
        RUNS.deliver_ended(f"back before In [{shell.execution_count}] ran")

    def after(result: Any = None) -> None:
        count = getattr(result, "execution_count", None)
        RUNS.deliver_ended(f"back after In [{count}]" if count else "back after a cell")

    uninstall(shell)
    shell.events.register("pre_run_cell", before)
    shell.events.register("post_run_cell", after)
    _HOOKS[id(shell)] = (before, after)


def uninstall(shell: Any) -> None:
    hooks = _HOOKS.pop(id(shell), None)
    if hooks is not None:
        shell.events.unregister("pre_run_cell", hooks[0])
        shell.events.unregister("post_run_cell", hooks[1])
