"""Failures of the GPU itself: CUDA initialized before fork, out of memory, devices, device asserts."""

from __future__ import annotations

from .clues import (
    ACCELERATOR_FLAG,
    ACCUMULATE_FLAG,
    DEVICES_FLAG,
    HALF_PRECISIONS,
    PRECISION_FLAG,
    Clues,
)
from .report import Report

_CULPRITS = (
    "`.cuda()` or `.to(\"cuda\")` on a tensor or model, a `torch.cuda.*` call such as "
    "`torch.cuda.get_device_name()`, or importing a GPU library such as bitsandbytes"
)
_RESTART = ("Restart the kernel (Kernel → Restart Kernel; in a terminal, quit IPython and start it again): "
            "a running kernel cannot undo CUDA's initialization.")
_NVML = "To look at the GPUs without initializing CUDA, use `%gpu_status` (it reads NVML)."


def _culprit(c: Clues) -> tuple[object, str | None]:
    culprit = c.value("cuda_culprit")
    if not isinstance(culprit, dict):
        return None, None
    reason = culprit.get("reason")
    return culprit.get("cell"), str(reason) if reason else None


def _culprit_steps(cell: object, reason: str | None) -> list[str]:
    place = f"cell In [{cell}]" if cell is not None else "the cell that initialized CUDA"
    steps = [
        f"Change {place} so it leaves CUDA alone: Lightning moves the model and every batch to each rank's "
        f"GPU, so {_CULPRITS} is not needed in the notebook."
    ]
    if reason and "import" in reason.lower():
        steps.append(
            f"Because the culprit is an import ({reason}), import it inside your LightningModule's methods "
            "(for example in `configure_model` or `training_step`), which run in the ranks."
        )
    return steps


def cuda_initialized(c: Clues) -> Report | None:
    if c.failure.kind != "cuda_initialized":
        return None
    cell, reason = _culprit(c)
    by = f"cell In [{cell}]" if cell is not None else "an earlier cell"
    what = (
        f"CUDA was initialized in this notebook's kernel by {by}"
        + (f" ({reason})" if reason else "")
        + ". Training ranks are forked from the kernel, and a forked process cannot use CUDA once its parent "
        "has initialized it, so no rank was started."
    )
    if cell is None:
        what += f" Likely culprits: {_CULPRITS}."
    steps = [_RESTART, *_culprit_steps(cell, reason), "Then run the cells again from the top.", _NVML]
    return Report(
        "cuda_initialized", "CUDA was initialized in the kernel: restart the kernel", what, steps,
        c.failure.traceback, restart_kernel=True,
    )


def bad_fork(c: Clues) -> Report | None:
    if not c.has("Cannot re-initialize CUDA in forked subprocess"):
        return None
    if c.has("DataLoader worker"):
        what = (
            f"{c.raised()}\nA DataLoader worker tried to use CUDA. Workers are forked from the rank after it "
            "has initialized CUDA, so they cannot."
        )
        steps = [
            "Return CPU tensors from your Dataset and `collate_fn`: remove `.cuda()` / `.to(device)` there. "
            "Lightning moves each batch to the rank's GPU for you.",
            "To check, set `num_workers=0` on the DataLoader: the data is then loaded in the rank itself.",
        ]
        return Report("bad_fork", f"CUDA used in a DataLoader worker{c.on_rank}", what, steps, c.failure.traceback)
    cell, reason = _culprit(c)
    what = (
        f"{c.raised()}\nCUDA had been initialized in the notebook's kernel before the ranks were forked"
        + (f" (by cell In [{cell}]" + (f": {reason})" if reason else ")") if cell is not None else "")
        + ", and a forked process cannot use CUDA after that."
    )
    if cell is None:
        what += f" Likely culprits: {_CULPRITS}."
    steps = [_RESTART, *_culprit_steps(cell, reason), _NVML]
    return Report(
        "bad_fork", "CUDA was initialized before the ranks were forked: restart the kernel", what, steps,
        c.failure.traceback, restart_kernel=True,
    )


def cuda_oom(c: Clues) -> Report | None:
    if not (c.is_exception("OutOfMemoryError") or c.has("CUDA out of memory", "CUDA error: out of memory")):
        return None
    what = c.raised()
    steps = []
    sharded = c.value("strategy") in ("fsdp", "model_parallel")
    total = c.number("model_bytes")
    if sharded and total:
        world = c.world_size
        what += (f"\nEach rank held about {_size(total / world)} of the {_size(total)} model "
                 f"({world} ranks), before activations and optimizer state.")
    if sharded:
        steps.append("Shard over more ranks (`--devices N`), or train the weights in half "
                     f"precision: `{PRECISION_FLAG} bf16-true`.")
        steps.append("Offload to the CPU: `FSDPStrategy(cpu_offload=True)`, or "
                     "`fully_shard(..., offload_policy=CPUOffloadPolicy())` in `configure_model`; "
                     "checkpoint activations: `FSDPStrategy(activation_checkpointing_policy={Block})` "
                     "or `torch.utils.checkpoint` in `configure_model`.")
    batch, accumulate = c.number("batch_size"), c.number("accumulate_grad_batches") or 1
    if batch and batch > 1:
        half = batch // 2
        steps.append(f"Lower the batch size: the train DataLoader uses `batch_size={batch}`; try `batch_size={half}`.")
        steps.append(
            f"Keep the effective batch of {batch * accumulate} by accumulating gradients: "
            f"`{ACCUMULATE_FLAG} {accumulate * 2}` with `batch_size={half}`."
        )
    elif batch == 1:
        steps.append("The batch size is already 1: shorten the inputs (sequence length, image size) or "
                     "shrink the model.")
    else:
        steps.append(f"Lower the train DataLoader's batch size, and use `{ACCUMULATE_FLAG}` to keep the "
                     "effective batch.")
    precision = c.precision
    if precision not in HALF_PRECISIONS:
        current = f" (now `precision={precision!r}`)" if precision else ""
        steps.append(
            f"Train in mixed precision{current}: `{PRECISION_FLAG} bf16-mixed` on Ampere or newer GPUs, "
            f"`{PRECISION_FLAG} 16-mixed` on older ones."
        )
    steps.append(
        "Trade compute for memory with gradient checkpointing: wrap blocks in `torch.utils.checkpoint.checkpoint`, "
        "or call `gradient_checkpointing_enable()` on a Hugging Face model."
    )
    if c.has("expandable_segments", "reserved but unallocated"):
        steps.append(
            "Much memory was reserved but unallocated (fragmentation): run "
            "`%env PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True`, then run the cell again."
        )
    processes = {m.group(1) for m in c.finditer(r"Process (\d+) has [\d.]+ [KMGT]?i?B memory in use")}
    if len(processes) > 1:
        steps.append(
            f"{len(processes)} processes were using this GPU: check `%gpu_status`, free the GPU or choose others "
            f"with `{DEVICES_FLAG}`."
        )
    return Report(
        "cuda_oom", f"CUDA out of memory{c.on_rank}", what, steps, c.failure.traceback, facts=c.gpu_facts()
    )


def _size(size: float) -> str:
    return f"{size / 2**30:.2f} GiB" if size >= 2**27 else f"{size / 2**20:.1f} MiB"


def device_mismatch(c: Clues) -> Report | None:
    same = c.search(r"Expected all tensors to be on the same device.*?found at least two devices, (\S+) and (\S+?)!")
    expected = c.search(r"Tensor on device (\S+) is not on the expected device (\S+?)!")
    types = c.search(r"Input type \((.+?)\) and weight type \((.+?)\) should be the same")
    if types and ("cuda" in types.group(1)) == ("cuda" in types.group(2)):
        types = None  # a dtype mismatch, not a device mismatch
    if not (same or expected or types or c.has("Expected all tensors to be on the same device")):
        return None
    pair = same or expected or types
    what = c.raised()
    if pair:
        what += f"\nOne operation got tensors on two devices ({pair.group(1)} and {pair.group(2)})."
    steps = [
        "Remove `.cuda()`, `.to(device)` and `device=\"cuda\"` from your LightningModule and Dataset: Lightning "
        "already puts the model and each batch on the rank's device.",
        "Create new tensors on the module's device: `torch.zeros(n, device=self.device)`, or `x.new_zeros(n)`.",
        "Keep constant tensors on the module with `self.register_buffer(\"name\", tensor)` so they move with it.",
        "Match another tensor's device and dtype with `t.type_as(x)`.",
    ]
    if c.place:
        steps.insert(0, f"Look at {c.place}: one of its tensors is on the wrong device.")
    return Report("device_mismatch", f"Tensors on different devices{c.on_rank}", what, steps, c.failure.traceback)


def device_assert(c: Clues) -> Report | None:
    if not c.has("device-side assert triggered"):
        return None
    what = (
        c.raised() + "\nA CUDA kernel hit an assertion; this is almost always an index out of range, and the "
        "reported line may be later than the real one because CUDA reports errors asynchronously."
    )
    steps = [
        "Check class labels: `cross_entropy`/`nll_loss` need labels in 0 … num_classes-1 (look at `y.min()`, "
        "`y.max()` against the output size). Check embedding indices against `num_embeddings`.",
        f"Get a readable error: run with `{ACCELERATOR_FLAG} cpu` (CPU raises an IndexError at the real line), "
        "or run `%env CUDA_LAUNCH_BLOCKING=1` before the cell.",
    ]
    return Report("device_assert", f"CUDA device-side assert{c.on_rank}", what, steps, c.failure.traceback)


def bad_device(c: Clues) -> Report | None:
    if not c.has("invalid device ordinal", "no kernel image is available"):
        return None
    if c.has("no kernel image is available"):
        what = c.raised() + "\nThe installed PyTorch build has no code for this GPU's architecture."
        steps = [
            "Install a PyTorch build that supports this GPU (see the CUDA versions at pytorch.org), "
            "then restart the kernel so it is loaded."
        ]
        return Report("cuda_arch", f"PyTorch does not support this GPU{c.on_rank}", what, steps, c.failure.traceback)
    devices = c.value("devices")
    what = c.raised() + "\nA rank asked for a GPU index that does not exist on this machine"
    what += f" (you asked for devices={devices!r})." if devices is not None else "."
    steps = [
        f"List the GPUs with `%gpu_status` and pass existing ones with `{DEVICES_FLAG}`.",
        "If `CUDA_VISIBLE_DEVICES` is set, GPU indices count only the visible GPUs, from 0.",
    ]
    return Report("bad_device", f"GPU does not exist{c.on_rank}", what, steps, c.failure.traceback)


RULES = (cuda_initialized, bad_fork, cuda_oom, device_mismatch, device_assert, bad_device)
