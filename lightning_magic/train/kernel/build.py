"""The arguments of a Trainer made under the magic: the user's, with the hardware resolved
(flags, else the cell's own arguments, else auto), the notebook strategy, the magic's callbacks
and the run's folder. Each override of what the cell said is a note the run shows."""

from __future__ import annotations

import os
from types import ModuleType
from typing import Any, Optional

from IPython.core.error import UsageError

HARDWARE = ("accelerator", "devices", "strategy", "precision")


def trainer_arguments(space: ModuleType, user: dict[str, Any],
                      prepared: Any) -> tuple[dict[str, Any], Any]:
    """(the kwargs for Lightning's ``Trainer.__init__``, the Trainer's ``Session``)."""
    from ...options import hardware
    from ..launch.session import Session

    flags, notes = prepared.flags, []
    _check_cell_arguments(user)
    given, ddp_kwargs = _hardware_from_cell(space, user)
    chosen = {}
    from_flags = flags.hardware_given()  # a flag left out leaves the choice to the cell
    for name in HARDWARE:
        flag = from_flags.get(name)
        if flag is not None and name in given and str(given[name]) != str(flag):
            shown = user[name] if isinstance(user.get(name), (str, int, list, tuple)) \
                else type(user.get(name)).__name__
            notes.append(f"--{name} {flag} replaces the cell's Trainer({name}={shown!r}).")
        chosen[name] = flag if flag is not None else given.get(name)
    try:
        resolved = hardware.resolve(chosen["devices"], chosen["accelerator"], chosen["strategy"],
                                    chosen["precision"], prepared.gpus, prepared.no_gpu_reason)
    except UsageError as error:  # a value the cell's Trainer gave is named as the cell wrote it
        raise UsageError(_as_the_cell_wrote(str(error), user, chosen, from_flags)) from None
    if resolved.accelerator == "gpu":
        hardware.check_torch_can_use_gpus()
    if resolved.strategy in ("fsdp", "model_parallel"):
        from ..ranks.sharded import check_hardware

        check_hardware(resolved)
    kwargs = dict(user)
    for name, value in flags.trainer_kwargs().items():
        if name in user and user[name] != value:
            notes.append(f"--{name.replace('_', '-')} {value} replaces the cell's "
                         f"Trainer({name}={user[name]!r}).")
        kwargs[name] = value
    ckpt_dir, fresh, placement = _run_folder(flags, user, prepared, notes)
    session = Session(flags=flags, resolved=resolved, ckpt_dir=ckpt_dir,
                      kernel_id=prepared.kernel_id, fresh_dir=fresh, notes=notes,
                      cwd=prepared.cwd, prepared=prepared, placement=placement,
                      runner=getattr(prepared, "runner", None),
                      claim=getattr(prepared, "claim", None))
    from ..launch.strategies import make_strategy

    kwargs.update(accelerator=resolved.accelerator, devices=resolved.trainer_devices(),
                  precision=resolved.precision,
                  strategy=make_strategy(space, session, ddp_kwargs))
    if placement == "run":  # else the cell's own default_root_dir, or Lightning's (the cwd)
        kwargs["default_root_dir"] = ckpt_dir
    quick = kwargs.get("fast_dev_run") not in (None, False, 0)  # Lightning saves nothing then
    kwargs["callbacks"] = _callbacks(space, user, session, notes, quick)
    kwargs["logger"] = _logger(space, user, session, notes)
    _progress_bar(space, kwargs, user, flags, notes)
    # the ranks' logs are quiet: the kernel shows Lightning's model summary table itself
    session.show_summary = user.get("enable_model_summary", True) is not False
    kwargs.setdefault("enable_model_summary", False)
    if flags.check:
        kwargs.update(fast_dev_run=1, enable_checkpointing=False, logger=False)
    return kwargs, session


def _as_the_cell_wrote(message: str, user: dict[str, Any], chosen: dict[str, Any],
                       from_flags: dict[str, Any]) -> str:
    """``message`` with ``--devices 1`` written ``Trainer(devices=1)`` where the cell gave it."""
    for name in HARDWARE:
        if from_flags.get(name) is None and name in user and chosen.get(name) is not None:
            message = message.replace(f"--{name} {chosen[name]} ",
                                      f"Trainer({name}={user[name]!r}) ")
    return message


def _check_cell_arguments(user: dict[str, Any]) -> None:
    nodes = user.get("num_nodes", 1)
    if nodes not in (1, None):
        raise UsageError(f"Trainer(num_nodes={nodes!r}): a notebook cell trains on this machine "
                         "only. Drop num_nodes, or write a job for several machines with "
                         f"%%lightning_train --export train.py --num-nodes {nodes}.")
    if user.get("plugins"):
        raise UsageError(f"Trainer(plugins={user['plugins']!r}) is not supported from a notebook "
                         "cell: drop plugins, or use --export PATH to write a script.")


def _hardware_from_cell(space: ModuleType, user: dict[str, Any]) -> tuple[dict[str, Any],
                                                                           dict[str, Any]]:
    """The cell's accelerator/devices/strategy/precision as flag values, and the DDP arguments
    of a DDPStrategy object it gave."""
    from ...options.names import canonical_accelerator, canonical_precision

    given, ddp_kwargs = {}, {}
    accelerator = user.get("accelerator")
    if accelerator is not None:
        if isinstance(accelerator, str):
            given["accelerator"] = canonical_accelerator(accelerator)
        else:
            name = type(accelerator).__name__
            kinds = {"CPUAccelerator": "cpu", "CUDAAccelerator": "gpu"}
            if name not in kinds:
                raise UsageError(f"Trainer(accelerator={name}()): only CPU and CUDA accelerators "
                                 "run from a notebook cell. Pass accelerator='cpu' or 'gpu'.")
            given["accelerator"] = kinds[name]
    devices = user.get("devices")
    if devices is not None:
        given["devices"] = ",".join(map(str, devices)) if isinstance(devices, (list, tuple)) \
            else str(devices)
    precision = user.get("precision")
    if precision is not None:
        given["precision"] = canonical_precision(precision)
    strategy = user.get("strategy")
    if isinstance(strategy, str):
        given["strategy"] = strategy
    elif strategy is not None:
        from ..ranks.sharded import cell_strategy

        sharded = cell_strategy(space, strategy)
        if sharded is not None:  # kept whole: every argument the cell gave it
            given["strategy"] = sharded
            return given, {"cell_strategy": strategy}
        if type(strategy).__name__ != "DDPStrategy" or \
                not isinstance(strategy, space.strategies.DDPStrategy):
            raise UsageError(
                f"Trainer(strategy={type(strategy).__name__}(...)) cannot run from a notebook "
                "cell: it needs a script launch. Give strategy='ddp' (or a DDPStrategy, "
                "FSDPStrategy or ModelParallelStrategy), or write a script with "
                "%%lightning_train --export train.py.")
        given["strategy"] = "ddp"
        ddp_kwargs = dict(strategy._ddp_kwargs)
        ddp_kwargs.update(process_group_backend=strategy._process_group_backend,
                          timeout=strategy._timeout)
    return given, ddp_kwargs


def _run_folder(flags: Any, user: dict[str, Any], prepared: Any,
                notes: list[str]) -> tuple[str, bool, str]:
    """(the folder, whether the magic chose it, the placement: see ``placement``). A folder the
    magic chooses is made at the first fit, not here: a cell that fails before training leaves
    none behind."""
    from ..launch.checkpoints import new_run_dir, resumed_run_dir

    root = user.get("default_root_dir")
    if flags.ckpt_dir is not None:
        path = os.path.abspath(os.path.expanduser(flags.ckpt_dir))
        if root and os.path.abspath(os.path.expanduser(str(root))) != path:
            notes.append(f"--ckpt-dir {flags.ckpt_dir} replaces the cell's "
                         f"Trainer(default_root_dir={str(root)!r}).")
        return path, not os.path.isdir(path) or not os.listdir(path), "run"
    own_logger = flags.logger in (None, "auto") and user.get("logger") not in (None, True, False)
    if root or own_logger:  # Lightning's placement, under the cell's logger or default_root_dir
        path = os.path.abspath(os.path.expanduser(str(root))) if root else prepared.cwd
        return path, False, "lightning"
    resumed = resumed_run_dir(flags, prepared)
    if resumed is not None:  # --resume last goes on in the folder of the run it continues
        return resumed, False, "run"
    return new_run_dir(prepared.cwd, prepared.run_name(), create=False), True, "run"


def _callbacks(space: ModuleType, user: dict[str, Any], session: Any,
               notes: list[str], quick: bool = False) -> list[Any]:
    from ..ranks import callbacks

    given = user.get("callbacks") or []
    own = list(given) if isinstance(given, (list, tuple)) else [given]
    flags = session.flags
    if quick and not flags.check:
        session.keep_last = False
        notes.append("fast_dev_run: a quick run of the loops that writes no checkpoint, as in "
                     "Lightning.")
    elif user.get("enable_checkpointing") is False:  # the cell asked for no checkpoint at all
        session.keep_last = False
        notes.append("Trainer(enable_checkpointing=False): no checkpoint is written, so "
                     "--resume last and the stop button's checkpoint have none to use.")
    monitor, mode = flags.monitor, flags.mode or "min"
    magic = [callbacks.run_callbacks(session, check=flags.check)]
    has_checkpoint = any(isinstance(cb, space.callbacks.Checkpoint) for cb in own)
    if has_checkpoint and monitor is not None:
        notes.append(f"--monitor {monitor} is for the magic's default checkpoint; the cell's "
                     "ModelCheckpoint keeps its own monitor.")
    if not has_checkpoint and user.get("enable_checkpointing") is not False and not flags.check \
            and not quick:
        magic.append(space.callbacks.ModelCheckpoint(  # no dirpath: Lightning's own placement
            dirpath=session.ckpt_dir if session.placement == "run" else None,
            monitor=monitor, mode=mode))
    if session.last_checkpoint() is not None:  # behind every ModelCheckpoint: see LastCheckpoint
        magic.append(callbacks.last_checkpoint(space, session))
    return own + magic


def _logger(space: ModuleType, user: dict[str, Any], session: Any, notes: list[str]) -> Any:
    choice, ckpt_dir = session.flags.logger, session.ckpt_dir
    if choice in (None, "auto"):
        return user.get("logger", True)  # Lightning's own default: TensorBoard if installed
    if "logger" in user:
        notes.append(f"--logger {choice} replaces the cell's Trainer(logger=...).")
    if choice == "none":
        return False
    if choice == "csv":
        return space.loggers.CSVLogger(ckpt_dir)
    return space.loggers.TensorBoardLogger(ckpt_dir)


def _progress_bar(space: ModuleType, kwargs: dict[str, Any], user: dict[str, Any], flags: Any,
                  notes: list[str]) -> None:
    """The live view, or Lightning's bar (``--progress bar``, or a bar the cell gave); in a
    notebook Lightning's default bar draws on one line (``progress_bar``)."""
    has_bar = any(type(cb).__name__.endswith("ProgressBar") for cb in kwargs["callbacks"])
    if flags.progress == "bar" or has_bar:
        kwargs["enable_progress_bar"] = True
        from ...view.live import frontend

        if not has_bar and frontend() == "html":
            from ..ranks.progress_bar import one_line_bar

            bar = one_line_bar(space)
            if bar is not None:
                kwargs["callbacks"] = list(kwargs["callbacks"]) + [bar]
        return
    if user.get("enable_progress_bar"):
        notes.append("The live view replaces Lightning's progress bar (--progress bar keeps it).")
    kwargs["enable_progress_bar"] = False


def run_name(namespace: dict[str, Any], before: dict[str, int]) -> Optional[str]:
    """The class name of the one LightningModule the cell has bound so far, if there is one."""
    from .. import namespaces

    made = {type(namespaces.unwrap_compiled(v)).__name__ for k, v in namespace.items()
            if not k.startswith("_") and before.get(k) != id(v)
            and namespaces.is_module(namespaces.unwrap_compiled(v))}
    return made.pop() if len(made) == 1 else None
