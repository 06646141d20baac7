"""Running the ``%%lightning_train`` cell itself, in the notebook's namespace, and finding what it
made (``discovery`` holds the rules)."""

from __future__ import annotations

from typing import Any

from ..cells import compile_cell
from ..flags import TrainFlags
from .discovery import Found, bound_by_cell, discover, namespace_snapshot


def run_cell_and_discover(shell: Any, cell: str, flags: TrainFlags) -> Found:
    namespace = shell.user_ns
    if flags.seed is not None:  # the model the cell builds starts from the same weights too
        from lightning.fabric.utilities.seed import seed_everything

        seed_everything(flags.seed, verbose=False)
    before = namespace_snapshot(namespace)
    code = compile_cell(shell, cell)
    exec(code, shell.user_global_ns, namespace)  # noqa: S102 - the user's own cell
    return discover(namespace, bound_by_cell(before, namespace, cell),
                    model=flags.model, data=flags.data, val_data=flags.val_data)
