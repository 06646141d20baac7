"""Sharded training from a cell: Lightning's ``ModelParallelStrategy`` (FSDP2 ``fully_shard`` and
tensor parallel in the module's ``configure_model``) and ``FSDPStrategy``, under the fork launcher.

What they add to the notebook strategies: the checks before the fork, the notes that say what is
sharded, and the full, unsharded state gathered to rank 0 on the CPU for the kernel's model, after
a check that the host has the memory for it (otherwise the run says where its sharded checkpoint
is and how to load it). ``materialize`` makes, in the kernel, the layers a module creates in
``configure_model``, on the meta device, so that the trained weights have a place to go.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from IPython.core.error import UsageError

SHARDED = ("fsdp", "model_parallel")
# what Lightning's ModelParallelStrategy accepts (its connector refuses the rest)
MODEL_PARALLEL_PRECISIONS = ("32-true", "bf16-mixed", "bf16-true", "16-true")
GATHER_FACTOR = 2  # rank 0's gathered copy while it is written, and the kernel's loaded copy
CONSOLIDATE = "python -m lightning.pytorch.utilities.consolidate_checkpoint"


def check_hardware(resolved: Any) -> None:
    """Before a Trainer is made: what Lightning would refuse in every rank, or in the kernel with
    a message about Fabric."""
    precision = str(resolved.precision)
    if resolved.strategy == "model_parallel" and precision not in MODEL_PARALLEL_PRECISIONS:
        raise UsageError(f"--precision {precision} with --strategy model_parallel: Lightning's "
                         "ModelParallelStrategy supports "
                         f"{', '.join(MODEL_PARALLEL_PRECISIONS)}. Use --precision bf16-mixed "
                         "(or set the dtypes in fully_shard's mp_policy in configure_model).")


def cell_strategy(space: Any, strategy: Any) -> Optional[str]:
    """'fsdp' or 'model_parallel' when ``strategy`` (the object a cell gave the Trainer) is one of
    Lightning's sharded strategies of ``space``; else None."""
    strategies = space.strategies
    if isinstance(strategy, strategies.ModelParallelStrategy):
        return "model_parallel"
    if isinstance(strategy, strategies.FSDPStrategy):
        return "fsdp"
    return None


def tensor_bytes(tensors: Any) -> tuple[int, int]:
    """(elements, bytes) of the unsharded tensors: a DTensor counts its global shape, an FSDP
    flat parameter its unsharded size."""
    elements = size = 0
    for tensor in tensors:
        shape = getattr(tensor, "_unpadded_unsharded_size", None)
        count = int(shape.numel()) if shape is not None else int(tensor.numel())
        elements += count
        size += count * tensor.element_size()
    return elements, size


def mesh_shape(strategy: Any, world: int) -> tuple[int, int]:
    """(data_parallel, tensor_parallel) of a run of ``world`` processes on one machine, as
    Lightning resolves them: a ModelParallelStrategy's "auto" sizes are 1 x ``world``; every
    other strategy is ``world`` data-parallel replicas. Global rank ``r`` is data-parallel rank
    ``r // tensor_parallel`` and tensor-parallel rank ``r % tensor_parallel``."""
    if _is_fsdp(strategy) or not hasattr(strategy, "_tensor_parallel_size"):
        return world, 1
    dp, tp = strategy._data_parallel_size, strategy._tensor_parallel_size
    return (1 if dp == "auto" else int(dp)), (world if tp == "auto" else int(tp))


def model_bytes(module: Any) -> tuple[int, int]:
    return tensor_bytes(list(module.parameters()) + list(module.buffers()))


def gib(size: float) -> str:
    if size >= 2**27:
        return f"{size / 2**30:.2f} GiB"
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 else f"{size / 2**10:.1f} KiB"


def sharding_notes(strategy: Any, model: Any, world: int, precision: str) -> list[str]:
    """What is sharded, said before training: the parameters, each rank's share, the precision."""
    count, size = model_bytes(model)
    if count:
        meta = any(p.is_meta for p in model.parameters())
        made = " (on the meta device in the kernel: only the ranks materialize their shards)" \
            if meta else ""
        params = (f"{count:,} parameters, {gib(size)} unsharded{made}; sharded over {world} "
                  f"ranks, about {gib(size / world)} each")
    else:
        params = "its layers are made in configure_model, in each rank, so the kernel cannot " \
                 "count them"
    if _is_fsdp(strategy):
        how = f"Lightning's FSDPStrategy (sharding {getattr(strategy, 'sharding_strategy', None)})"
        if world == 1:
            how += "; with one rank nothing is split"
    else:
        dp, tp = mesh_shape(strategy, world)
        how = (f"Lightning's ModelParallelStrategy, device mesh data_parallel {dp} x "
               f"tensor_parallel {tp}: configure_model decides what is sharded (fully_shard over "
               "self.device_mesh['data_parallel'], parallelize_module over "
               "self.device_mesh['tensor_parallel'])")
        chosen = strategy._data_parallel_size != "auto" or strategy._tensor_parallel_size != "auto"
        if dp == 1 and world > 1 and not chosen:  # Lightning's default mesh, not the cell's
            how += (f"; for FSDP2 over all {world} ranks, give Trainer(strategy="
                    f"ModelParallelStrategy(data_parallel_size={world}, tensor_parallel_size=1))")
    mixed = {"bf16-mixed": "bf16-mixed: parameters and optimizer state stay float32 (sharded), "
                           "computation in bfloat16",
             "16-mixed": "16-mixed: parameters stay float32 (sharded), computation in float16",
             "bf16-true": "bf16-true: parameters, gradients and computation in bfloat16",
             "16-true": "16-true: parameters, gradients and computation in float16"}
    own = "configure_model's fully_shard(mp_policy=...)" if not _is_fsdp(strategy) else \
        "FSDPStrategy(mixed_precision=...)"
    precision_note = mixed.get(precision, f"{precision}: the Trainer adds no mixed precision; "
                                          f"a policy given to {own} applies as it is")
    return [f"Sharded: {how}. Model: {params}. Trainer precision {precision_note}."]


class ShardedNotebook:
    """Mixed into a notebook strategy over ``ModelParallelStrategy`` or ``FSDPStrategy``."""

    _magic_gather: Optional[dict[str, Any]] = None
    _magic_noted = False

    def check_before_fork(self, model: Any) -> None:
        """In the kernel, before ``fit`` forks: the module has what the strategy needs; the first
        time, the notes say what is sharded."""
        from .. import namespaces

        kind = "fsdp" if _is_fsdp(self) else "model_parallel"
        if kind == "model_parallel" and not namespaces.overrides(model, "configure_model"):
            raise UsageError(
                f"--strategy model_parallel: {type(model).__name__} has no configure_model(). "
                "Lightning's ModelParallelStrategy needs it to shard the model: apply "
                "fully_shard(layer, mesh=self.device_mesh['data_parallel']) (or "
                "parallelize_module) to its layers there, or use --strategy ddp_notebook.")
        self.check_mesh()
        session = self._magic_session
        if session is not None and not self._magic_noted and not session.records:
            self._magic_noted = True
            session.notes.extend(sharding_notes(self, model, self.num_processes,
                                                str(session.resolved.precision)))

    def check_mesh(self) -> None:
        """Before any call forks: a mesh whose sizes multiply to the process count."""
        dp, tp = mesh_shape(self, self.num_processes)
        if dp * tp != self.num_processes:
            given = ", ".join(f"{name}_parallel_size={getattr(self, f'_{name}_parallel_size')!r}"
                              for name in ("data", "tensor"))
            raise UsageError(
                f"ModelParallelStrategy({given}) is a mesh of {dp} x {tp} = {dp * tp} processes, "
                f"and this run has {self.num_processes}. Give sizes whose product is "
                f"{self.num_processes}, or --devices {dp * tp}.")

    def predict_step(self, *args: Any, **kwargs: Any) -> Any:
        """Lightning's, with the output complete while it is still on the ranks' devices (a
        DTensor gathered over its mesh before Lightning moves it to the CPU)."""
        from .predictions import completed

        return completed(super().predict_step(*args, **kwargs))  # type: ignore[misc]

    def predict_share(self) -> tuple[int, int, bool]:
        """Predict's batches go to data-parallel groups (a tensor-parallel group shares its
        input), as many to each: every forward of a sharded model is a collective."""
        _, tp = mesh_shape(self, self.world_size)
        return self.global_rank // tp, self.world_size // tp, True

    def full_state_dict(self) -> dict[str, Any]:
        """On every rank: the full state on rank 0 (CPU), empty elsewhere; empty everywhere when
        the call is not a fit, is a dry run, or the host lacks the memory (then
        ``_magic_gather`` says so, with the numbers)."""
        trainer = self.lightning_module.trainer
        session = self._magic_session
        self._magic_gather = None
        if trainer.state.fn.value != "fit" or (session is not None and session.flags.check):
            return {}
        _, size = model_bytes(self.model)
        decision = _gather_decision(size) if self.global_rank == 0 else None
        decision = self.broadcast(decision)
        self._magic_gather = decision
        if not decision["gathered"]:
            return {}
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(
            self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def whole_local(tensor: Any) -> Any:
    """A plain tensor as it is; a DTensor replicated on every rank as its local tensor (its whole
    value, with no communication); None for any other DTensor."""
    placements = getattr(tensor, "placements", None)
    if placements is None:
        return tensor
    return tensor.to_local() if all(p.is_replicate() for p in placements) else None


def settle_metrics(trainer: Any) -> None:
    """On every rank, before rank 0 sends its results: the logged metrics as plain tensors (a
    metric computed under tensor parallel is a DTensor, whose device mesh means nothing in the
    kernel). One that is not replicated is gathered whole, which assumes that every rank logged
    it (as Lightning's own logging of a DTensor does: it reduces over the ranks); a replicated
    one costs no communication."""
    from .predictions import completed

    connector = trainer._logger_connector
    for name in ("_callback_metrics", "_logged_metrics", "_progress_bar_metrics"):
        metrics = getattr(connector, name, None)
        if not isinstance(metrics, dict):
            continue
        for key in sorted(metrics, key=str):
            metrics[key] = completed(metrics[key])


def _is_fsdp(strategy: Any) -> bool:
    return any(c.__name__ == "FSDPStrategy" for c in type(strategy).__mro__)


def _gather_decision(size: int) -> dict[str, Any]:
    import psutil

    available = int(psutil.virtual_memory().available)
    return {"gathered": size * GATHER_FACTOR < available * 0.9, "bytes": size,
            "available": available}


def gather_extra(trainer: Any) -> dict[str, Any]:
    """In rank 0, for the kernel: whether the full state came back, and a note when it did not."""
    decision = getattr(trainer.strategy, "_magic_gather", None)
    if not decision:
        return {}
    ckpt_dir = trainer.strategy._magic_session.ckpt_dir
    extra: dict[str, Any] = {"sharded_gather": dict(decision)}
    if not decision["gathered"]:
        last = os.path.join(ckpt_dir, "last.ckpt")
        extra["notes"] = [
            f"The trained weights stay sharded: the full model is {gib(decision['bytes'])}, and "
            f"gathering it into the kernel needs about {gib(decision['bytes'] * GATHER_FACTOR)} "
            f"of host memory, with {gib(decision['available'])} available. The kernel's model "
            f"was left as it was. The sharded checkpoint is {last}: continue with --resume last, "
            f"or make one file of it with `{CONSOLIDATE} {last}` and load that file's "
            "state_dict where there is the memory."]
    return extra


def materialize(module: Any) -> Optional[str]:
    """Make, in the kernel, the layers ``module`` creates in ``configure_model``: the hook runs on
    the meta device (no memory is taken; the trained weights are then assigned). A hook that
    cannot run outside the ranks (it needs their device mesh) leaves the module as it was; the
    returned text then says why nothing can be loaded and where the trained weights are."""
    import torch

    saved = {name: dict(value) if isinstance(value, dict) else value
             for name, value in vars(module).items()}
    try:
        with torch.device("meta"):
            module.configure_model()
    except Exception as exc:  # noqa: BLE001 - the user's hook; the module is put back
        vars(module).clear()
        vars(module).update(saved)
        return (f"Nothing was loaded into the kernel's {type(module).__name__}: its layers are "
                "made in configure_model(), which cannot run in the kernel "
                f"({type(exc).__name__}: {str(exc)[:80]}). `{CONSOLIDATE} CKPT` makes one file "
                "of a sharded checkpoint of the run. For the weights to come back, make the "
                "layers in __init__ (under `with torch.device('meta'):` to keep the kernel's "
                "memory free) and only shard them in configure_model.")
    return None
