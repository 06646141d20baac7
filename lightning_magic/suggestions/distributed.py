"""Failures between ranks: the rendezvous port, NCCL / gloo process groups, DDP's gradient reduction."""

from __future__ import annotations

from .clues import ACCELERATOR_FLAG, TIMEOUT_FLAG, Clues
from .report import Report

_DIST_ERRORS = ("DistError", "DistBackendError", "DistNetworkError", "DistStoreError", "DistQueueEmptyError")
_SAME_STEPS = (
    "Make every rank run the same collectives: no `self.log(..., sync_dist=True)`, `self.all_gather` or "
    "`barrier()` inside `if self.global_rank == 0:`, and the same number of batches on every rank."
)


def address_in_use(c: Clues) -> Report | None:
    if not c.has("Address already in use", "EADDRINUSE"):
        return None
    port = c.value("master_port")
    if port is None:
        found = c.search(r"port[:= ]+(\d{2,5})")
        port = found.group(1) if found else None
    what = (
        c.raised() + "\nThe port the ranks use to find each other"
        + (f" (MASTER_PORT={port})" if port else "")
        + " was taken by another process, even after a retry on a fresh port."
    )
    steps = [
        "Run the cell again: each run picks a free port, so this is usually a race with another program.",
        "Ranks of another run (another notebook or script) may still hold it: "
        + (f"find them with `ss -ltnp | grep {port}`." if port else "find them with `ss -ltnp`."),
    ]
    return Report("address_in_use", "Address already in use", what, steps, c.failure.traceback)


def process_group(c: Clues) -> Report | None:
    nccl, gloo = c.has("NCCL"), c.has("gloo")
    if not (nccl or gloo or c.is_exception(*_DIST_ERRORS)
            or c.has("ProcessGroup", "collective operation timeout", "waiting for clients")):
        return None
    gloo = gloo or (c.on_cpu and not nccl)  # on CPU the ranks talk through gloo
    steps = []
    joined = c.search(r"(\d+)/(\d+) clients joined")
    collective_timeout = c.has("collective operation timeout", "Watchdog caught", "timed out", "timeout")
    what = c.raised()
    if joined:
        what += (f"\nOnly {joined.group(1)} of {joined.group(2)} ranks reached the rendezvous: another rank "
                 "failed or hung before joining the process group.")
        steps.append("Another rank probably failed first: its own error, if it reported one, is the real cause.")
    elif c.has("Connection reset by peer", "Connection closed by peer", "Broken pipe"):
        what += "\nA rank lost its connection to another one, usually because the other rank died first."
        steps.append("Another rank probably failed first: its own error, if it reported one, is the real cause.")
    elif collective_timeout:
        what += "\nA collective operation (all-reduce, broadcast, barrier) waited too long for the other ranks."
        steps.append(_SAME_STEPS)
        steps.append(f"If one rank legitimately takes longer (for example rank 0 evaluating or saving alone), "
                     f"raise the timeout with `{TIMEOUT_FLAG}`.")
    else:
        what += "\nThe process group that connects the ranks failed."
    if not collective_timeout or joined:
        steps.append(f"If it came after the ranks waited on each other for a long time, allow more with "
                     f"`{TIMEOUT_FLAG} SECONDS`.")
    if nccl or not gloo:
        steps += [
            "See what NCCL is doing: run `%env NCCL_DEBUG=INFO` in a cell, then run the training cell again "
            "(the ranks inherit the kernel's environment).",
            "On one machine with consumer GPUs or no NVLink, turn off peer-to-peer transfers: "
            "`%env NCCL_P2P_DISABLE=1`.",
            "Without InfiniBand (most single machines), `%env NCCL_IB_DISABLE=1` stops NCCL from probing for it.",
            f"To tell NCCL problems from problems in your code, try `{ACCELERATOR_FLAG} cpu`, which uses gloo.",
        ]
    else:
        steps.append("Check that nothing (a firewall, a VPN interface) blocks connections between local "
                     "processes; `%env GLOO_SOCKET_IFNAME=lo` keeps gloo on the loopback interface.")
    backend = "NCCL" if nccl else "gloo" if gloo else "Process group"
    return Report("nccl", f"{backend} error{c.on_rank}", what, steps, c.failure.traceback, facts=c.gpu_facts())


def unused_parameters(c: Clues) -> Report | None:
    if not c.has("Expected to have finished reduction in the prior iteration",
                 "parameters that were not used in producing the loss"):
        return None
    what = (c.raised() + "\nDistributed training found parameters of your LightningModule that did not get "
            "a gradient in a step.")
    steps = [
        "Remove or freeze (`requires_grad_(False)`) parameters that are never used: layers created in "
        "`__init__` but not called in `forward`/`training_step` cause this.",
        "Find them: after `loss.backward()`, the parameters whose `.grad` is `None` are the unused ones "
        "(`[n for n, p in self.named_parameters() if p.grad is None]`, for example in `on_after_backward`).",
        "If some parameters are skipped on purpose (conditional branches), DDP must look for unused parameters "
        "in every step: Lightning's strategy `ddp_notebook_find_unused_parameters_true` does that (slower).",
    ]
    return Report("unused_parameters", f"Parameters without gradients{c.on_rank}", what, steps, c.failure.traceback)


RULES = (address_in_use, unused_parameters, process_group)
