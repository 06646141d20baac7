"""``trainer.predict`` on several ranks returns every rank's predictions, in dataset order.

Lightning's own predict under DDP shards the samples (rank r takes samples r, r+W, ...) and
returns rank 0's share only. Here each rank takes whole batches of the loader as one process
would make them (rank r takes batches r, r+W, ...), so every batch is the same batch a single
process predicts, no sample is padded or repeated, and the kernel interleaves the ranks' lists
back into the single-process order.
"""

from __future__ import annotations

from typing import Any, Iterator

from torch.utils.data import DataLoader, Sampler


class RankShare(Sampler):
    """The batches of ``batch_sampler`` that fall to ``rank`` of ``world_size``."""

    def __init__(self, batch_sampler: Any, rank: int, world_size: int) -> None:
        self.batch_sampler, self.rank, self.world_size = batch_sampler, rank, world_size
        self.batch_size = getattr(batch_sampler, "batch_size", None)
        self.drop_last = getattr(batch_sampler, "drop_last", False)
        self.sampler = getattr(batch_sampler, "sampler", None)

    def __iter__(self) -> Iterator[list[int]]:
        for position, batch in enumerate(self.batch_sampler):
            if position % self.world_size == self.rank:
                yield batch

    def __len__(self) -> int:
        total = len(self.batch_sampler)
        return max(0, (total - self.rank + self.world_size - 1) // self.world_size)


def share_loader(loader: Any, rank: int, world_size: int) -> Any:
    """``loader`` remade so that it yields only this rank's batches (unchanged when it cannot be
    shared that way: an iterable dataset, or not a DataLoader)."""
    from lightning.pytorch.overrides.distributed import _IndexBatchSamplerWrapper

    batch_sampler = getattr(loader, "batch_sampler", None)
    if not isinstance(loader, DataLoader) or batch_sampler is None:
        return loader
    inner = getattr(batch_sampler, "_batch_sampler", batch_sampler)
    shared: Any = RankShare(inner, rank, world_size)
    if isinstance(batch_sampler, _IndexBatchSamplerWrapper):
        shared = _IndexBatchSamplerWrapper(shared)
    extra = {} if loader.num_workers == 0 else {
        "prefetch_factor": loader.prefetch_factor, "persistent_workers": loader.persistent_workers}
    return DataLoader(loader.dataset, batch_sampler=shared, num_workers=loader.num_workers,
                      collate_fn=loader.collate_fn, pin_memory=loader.pin_memory,
                      timeout=loader.timeout, worker_init_fn=loader.worker_init_fn,
                      multiprocessing_context=loader.multiprocessing_context,
                      generator=loader.generator, **extra)


def merge(shares: list[Any], loaders: int = 1) -> Any:
    """Rank r's list holds batches r, r+W, ...: interleave them back. With several predict
    loaders each rank returned one list per loader."""
    if any(share is None for share in shares):
        return shares[0]
    if loaders > 1:
        return [_interleave([share[i] for share in shares]) for i in range(loaders)]
    return _interleave(shares)


def _interleave(shares: list[list[Any]]) -> list[Any]:
    world = len(shares)
    total = sum(len(share) for share in shares)
    return [shares[position % world][position // world] for position in range(total)]
