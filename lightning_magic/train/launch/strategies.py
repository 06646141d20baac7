"""The strategies a Trainer gets under ``%%lightning_train``: Lightning's own, in the Trainer's
namespace, with the notebook-safe launcher, so that fit, validate, test and predict all run in
forked ranks. One process is Lightning's single-device strategy (still forked, still watched);
several are DDP with ``start_method="fork"``; ``fsdp`` and ``model_parallel`` are Lightning's
``FSDPStrategy`` and ``ModelParallelStrategy`` with the same launcher (see ``sharded``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

from .launcher import launcher_class
from ..ranks.sharded import ShardedNotebook

_CLASSES: dict[tuple[str, str, type], type] = {}


class _Notebook:
    """Mixed into a Lightning strategy: the launcher, and predict's batch sharing."""

    _magic_session: Any = None

    _magic_space: Any = None

    def _configure_launcher(self) -> None:
        self._launcher = launcher_class(self._magic_space)(self, self._magic_session)

    def _predicting(self) -> bool:
        trainer = getattr(self.lightning_module, "_trainer", None)
        return bool(trainer is not None and trainer.predicting)

    @property
    def distributed_sampler_kwargs(self) -> dict[str, Any]:
        if self._predicting():  # every rank sees every batch; process_dataloader picks its own
            return {"num_replicas": 1, "rank": 0}
        return super().distributed_sampler_kwargs  # type: ignore[misc]

    def predict_share(self) -> tuple[int, int, bool]:
        """(this rank's share, shares, whether every share must be as long): DDP ranks each
        take their own batches."""
        return self.global_rank, getattr(self, "world_size", 1), False

    def process_dataloader(self, dataloader: Any) -> Any:
        from ..ranks.predictions import share_loader

        dataloader = super().process_dataloader(dataloader)  # type: ignore[misc]
        if self._predicting() and getattr(self, "world_size", 1) > 1:
            return share_loader(dataloader, *self.predict_share())
        return dataloader


class _SingleDevice(_Notebook):
    @property
    def num_processes(self) -> int:
        return 1


class _Sharded(ShardedNotebook, _Notebook):
    pass


def strategy_class(space: ModuleType, kind: str, base: Any = None) -> type:
    """The notebook strategy ``kind`` ('single_device', 'ddp', 'fsdp' or 'model_parallel') over
    ``space``'s classes (over ``base``, a subclass of that class, when given)."""
    strategies = space.strategies
    default, mixin = {"single_device": (strategies.SingleDeviceStrategy, _SingleDevice),
                      "ddp": (strategies.DDPStrategy, _Notebook),
                      "fsdp": (strategies.FSDPStrategy, _Sharded),
                      "model_parallel": (strategies.ModelParallelStrategy, _Sharded)}[kind]
    base = base or default
    key = (space.__name__, kind, base)
    if key not in _CLASSES:
        _CLASSES[key] = type(f"Notebook{base.__name__}", (mixin, base),
                             {"_magic_space": space, "__module__": __name__})
    return _CLASSES[key]


def _sharded(space: ModuleType, kind: str, cell_strategy: Any) -> Any:
    """The cell's own FSDPStrategy/ModelParallelStrategy object (a copy, every argument as the
    cell gave it) with the notebook launcher, or Lightning's defaults when it gave none."""
    if cell_strategy is None:
        return strategy_class(space, kind)()
    cls = strategy_class(space, kind, type(cell_strategy))
    strategy = cls.__new__(cls)
    vars(strategy).update(vars(cell_strategy))
    return strategy


def make_strategy(space: ModuleType, session: Any, ddp_kwargs: dict[str, Any]) -> Any:
    """The strategy for ``session.resolved`` in ``space``; ``ddp_kwargs`` come from a DDPStrategy
    object the cell gave (its DDP arguments are kept), or hold under ``cell_strategy`` the cell's
    FSDPStrategy/ModelParallelStrategy object."""
    import torch

    resolved = session.resolved
    if resolved.strategy in ("fsdp", "model_parallel"):
        given = ddp_kwargs.get("cell_strategy")
        from ..ranks.sharded import cell_strategy

        if given is not None and cell_strategy(space, given) != resolved.strategy:
            given = None  # a flag chose another strategy (the note says so)
        strategy = _sharded(space, resolved.strategy, given)
    elif resolved.strategy == "single_device":
        device = torch.device("cpu") if resolved.accelerator == "cpu" \
            else torch.device("cuda", resolved.trainer_devices()[0])
        strategy = strategy_class(space, "single_device")(device=device)
    else:
        kwargs = {k: v for k, v in ddp_kwargs.items() if k != "cell_strategy"}
        if resolved.strategy.endswith("_find_unused_parameters_true"):
            kwargs["find_unused_parameters"] = True
        strategy = strategy_class(space, "ddp")(start_method="fork", **kwargs)
    strategy._magic_session = session
    return strategy
