"""Checks between ``%%lightning_train`` flags: each value was valid alone, the pair is not. Each
refusal is a one-line ``UsageError`` that names both flags and says which to change."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError


def check_together(values: dict[str, Any]) -> None:
    """Refuse flags that are each valid but do not go together, naming both."""
    if values["num_nodes"] != 1 and values["export"] is None:
        raise UsageError(f"--num-nodes {values['num_nodes']}: a notebook trains on this machine "
                         "only; use it with --export PATH to write a torchrun/SLURM job for "
                         "several machines.")
    if values["min_epochs"] is not None and values["max_epochs"] not in (None, -1) \
            and values["min_epochs"] > values["max_epochs"]:
        raise UsageError(f"--min-epochs {values['min_epochs']} is larger than --max-epochs "
                         f"{values['max_epochs']}: lower --min-epochs or raise --max-epochs.")
    if values["mode"] is not None and values["monitor"] is None:
        raise UsageError(f"--mode {values['mode']} needs --monitor METRIC: it says whether lower "
                         "or higher values of that metric are better, e.g. "
                         f"--monitor val_loss --mode {values['mode']}.")
    for flag, other in (("check", "export"), ("background", "export")):
        if values[flag] and values[other]:
            raise UsageError(f"--{flag} and --{other} do not go together: use one of them.")
    if values["no_wait"] and not values["background"]:
        raise UsageError("--no-wait is for --background runs: add --background or drop it.")
    if values["detach"] and not values["background"]:
        raise UsageError("--detach is for --background runs: add --background or drop it.")
