"""``trainer.predict`` on several ranks returns every rank's predictions, in dataset order.

Lightning's own predict under DDP shards the samples (rank r takes samples r, r+W, ...) and
returns rank 0's share only. Here each rank takes whole batches of the loader as one process
would make them (rank r takes batches r, r+W, ...), so every batch is the same batch a single
process predicts, no sample is padded or repeated, and the kernel interleaves the ranks' lists
back into the single-process order.

Sharded models share by data-parallel group instead: the ranks of one tensor-parallel group
predict the same batches (their collectives need the same input), and the kernel keeps the
group's first rank's list. Every forward of a sharded model is a collective of all the ranks, so
there each group takes the same number of batches: a group with one batch fewer repeats its last
one, and that repeated output is dropped before the list leaves the rank (a prediction writer
callback in that rank still sees the batch twice).
"""

from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import DataLoader, Sampler


class RankShare(Sampler):
    """The batches of ``batch_sampler`` that fall to ``rank`` of ``world_size``; with ``even``,
    as many for every rank, the last one repeated where the share is one short."""

    def __init__(self, batch_sampler: Any, rank: int, world_size: int,
                 even: bool = False) -> None:
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size
        self.even = even
        self.batch_size = getattr(batch_sampler, "batch_size", None)
        self.drop_last = getattr(batch_sampler, "drop_last", False)
        self.sampler = getattr(batch_sampler, "sampler", None)

    @property
    def real(self) -> int:
        """How many of this rank's batches are its own (the rest repeat the last)."""
        total = len(self.batch_sampler)
        return max(0, (total - self.rank + self.world_size - 1) // self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        first = own = None
        for position, batch in enumerate(self.batch_sampler):
            first = batch if first is None else first
            if position % self.world_size == self.rank:
                own = batch
                yield batch
        repeated = own if own is not None else first  # a rank with no batch of its own
        if repeated is not None:
            for _ in range(len(self) - self.real):
                yield repeated

    def __len__(self) -> int:
        if self.even:
            return -(-len(self.batch_sampler) // self.world_size)
        return self.real


def share_loader(loader: Any, rank: int, world_size: int, even: bool = False) -> Any:
    """``loader`` remade so that it yields only this rank's batches (unchanged when it cannot be
    shared that way: an iterable dataset, or not a DataLoader)."""
    from lightning.pytorch.overrides.distributed import _IndexBatchSamplerWrapper

    batch_sampler = getattr(loader, "batch_sampler", None)
    if not isinstance(loader, DataLoader) or batch_sampler is None:
        return loader
    inner = getattr(batch_sampler, "_batch_sampler", batch_sampler)
    shared: Any = RankShare(inner, rank, world_size, even)
    if isinstance(batch_sampler, _IndexBatchSamplerWrapper):
        shared = _IndexBatchSamplerWrapper(shared)
    extra = {} if loader.num_workers == 0 else {
        "prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers}
    return DataLoader(loader.dataset, batch_sampler=shared, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context,
                      generator=loader.generator, **extra)


def trim(output: Any, trainer: Any) -> Any:
    """In a rank, after predict: each loader's list without the outputs of repeated batches (the
    outputs are whole already: a sharded strategy completes them in its predict_step)."""
    combined = getattr(trainer.predict_loop, "_combined_loader", None)
    loaders = list(combined.flattened) if combined is not None else []  # a dict's too, in order
    if not loaders:
        return output
    single = len(loaders) == 1  # as Lightning's predictions: one loader, one flat list
    lists = [output] if single else list(output or [])
    cut = []
    for loader, outputs in zip(loaders, lists):
        share = getattr(getattr(loader, "batch_sampler", None), "_batch_sampler",
                        getattr(loader, "batch_sampler", None))
        real = share.real if isinstance(share, RankShare) else None
        cut.append(outputs[:real] if real is not None and isinstance(outputs, list) else outputs)
    return cut[0] if single else cut


def merge(shares: list[Any], loaders: int = 1, group: int = 1) -> Any:
    """Rank r's list holds batches r, r+W, ...: interleave them back. With several predict
    loaders each rank returned one list per loader. With tensor-parallel groups of ``group``
    ranks, each group's first rank speaks for it."""
    if any(share is None for share in shares):
        return shares[0]
    shares = shares[::group]
    if loaders > 1:
        return [_interleave([share[i] for share in shares]) for i in range(loaders)]
    return _interleave(shares)


def _interleave(shares: list[list[Any]]) -> list[Any]:
    world = len(shares)
    total = sum(len(share) for share in shares)
    return [shares[position % world][position // world] for position in range(total)]


def completed(output: Any) -> Any:
    """Every tensor of ``output`` complete: an in-flight collective waited for, a DTensor
    gathered whole (a collective of its mesh: every rank calls this in the same order)."""
    import torch
    from lightning.fabric.utilities.apply_func import apply_to_collection

    def whole(tensor: Any) -> Any:
        wait = getattr(tensor, "wait", None)  # torch's AsyncCollectiveTensor
        tensor = wait() if callable(wait) else tensor
        full = getattr(tensor, "full_tensor", None)  # a DTensor
        return full() if callable(full) else tensor

    return apply_to_collection(output, torch.Tensor, whole)
