"""Where a run's checkpoints go, and which checkpoint ``--resume`` continues from.

Each Trainer made under the magic gets a folder of its own under the checkpoint root (or
``--ckpt-dir``, or the Trainer's own ``default_root_dir``), with a ``run.json`` naming the model
class it trained, so that ``--resume last`` continues only a run of the same model.
"""

from __future__ import annotations

import json
import os
import zipfile
from datetime import datetime
from typing import Any, Optional

from IPython.core.error import UsageError

from ...options.flags import TrainFlags
from .placement import RUN_INFO, earlier_folders, lightning_root

LIGHTNING_PLACED = ("default_root_dir", "logger")  # words of a cell placed as in Lightning
DISTRIBUTED_METADATA = (".metadata", "meta.pt")  # torch.distributed.checkpoint's, Lightning's


def runs_root(cwd: str) -> str:
    """The folder that holds one folder per run (the server reports this same folder's disk)."""
    from ...readings.environment import checkpoint_root

    return str(checkpoint_root(cwd))


def _named_checkpoint(flags: TrainFlags) -> Optional[str]:
    """The checkpoint ``--resume`` names without a search: its PATH, or ``last.ckpt`` of
    ``--ckpt-dir``; None for ``--resume last`` alone (the newest run of the model's class)."""
    if flags.resume != "last":
        return os.path.abspath(os.path.expanduser(flags.resume))
    if flags.ckpt_dir is not None:
        return os.path.join(os.path.abspath(os.path.expanduser(flags.ckpt_dir)), "last.ckpt")
    return None


def check_resume(flags: TrainFlags, cwd: str, cell: str = "") -> None:
    """Before the cell runs: a UsageError when ``--resume`` can point at nothing at all. A cell
    that gives its Trainer a logger or a ``default_root_dir`` keeps its checkpoints where
    Lightning puts them: those are looked for at its fit."""
    if flags.resume is None:
        return
    path = _named_checkpoint(flags)
    if flags.resume != "last":
        if not os.path.exists(path):  # a file, or a distributed checkpoint's folder
            raise UsageError(f"--resume {flags.resume}: no such checkpoint file. Give 'last' or "
                             "the path of a .ckpt file.")
        return
    if path is not None:
        if not os.path.exists(path):
            raise UsageError(f"--resume last: {flags.ckpt_dir} has no last.ckpt yet. Train once "
                             f"with --ckpt-dir {flags.ckpt_dir} first, or drop --resume.")
        return
    if not _runs(runs_root(cwd)) and not any(word in cell for word in LIGHTNING_PLACED):
        raise UsageError(f"--resume last: no run under {runs_root(cwd)} has a last.ckpt. Train "
                         "once first, or give --resume PATH.")


def resume_path(flags: TrainFlags, cwd: str, model: Any, trainer: Any = None) -> str:
    """At ``fit``: the checkpoint to continue from, checked to be whole. ``--resume last`` alone
    takes the newest ``last.ckpt`` of a run of the same model class: under the checkpoint root,
    and, for a Trainer placed as in Lightning, beside its earlier versions' checkpoints."""
    path = _named_checkpoint(flags)
    if path is None:
        wanted = model_key(model)
        runs = _runs(runs_root(cwd))
        places = [runs_root(cwd)]
        session = getattr(trainer, "_lightning_magic", None)
        if session is not None and session.placement == "lightning":
            runs += [run for folder in earlier_folders(trainer) for run in _run_in(folder)]
            places.append(lightning_root(trainer))
        same = [(stamp, path) for stamp, path, key in runs if key == wanted]
        if not same:
            others = sorted({key.rsplit(".", 1)[-1] for _, _, key in runs if key})
            trained = f" (runs there trained {', '.join(others)})" if others else ""
            raise UsageError(f"--resume last: no run under {' or '.join(places)} trained a "
                             f"{type(model).__name__}{trained}. Give --resume PATH or "
                             "--ckpt-dir DIR of the run to continue.")
        path = max(same)[1]
    check_whole(path, flags.resume)
    return path


def resumed_run_dir(flags: TrainFlags, prepared: Any) -> Optional[str]:
    """For ``--resume last`` alone, made while the cell runs: the folder of the run it continues,
    when the cell has already bound the one model it trains (the resumed run goes on in its own
    folder, and its ModelCheckpoint finds the checkpoints it kept there)."""
    if flags.resume != "last" or flags.ckpt_dir is not None:
        return None
    from .. import namespaces

    keys = {model_key(namespaces.unwrap_compiled(value))
            for name, value in prepared.shell.user_ns.items()
            if not name.startswith("_") and prepared.before.get(name) != id(value)
            and namespaces.is_module(namespaces.unwrap_compiled(value))}
    if flags.model is not None and flags.model in prepared.shell.user_ns:
        keys = {model_key(namespaces.unwrap_compiled(prepared.shell.user_ns[flags.model]))}
    if len(keys) != 1:
        return None
    same = [(stamp, path) for stamp, path, key in _runs(runs_root(prepared.cwd)) if key in keys]
    return os.path.dirname(max(same)[1]) if same else None


def check_whole(path: str, given: str, asked: str = "--resume", call: str = "fit") -> None:
    """A checkpoint written by torch.save is a zip archive; a truncated one is not. A distributed
    checkpoint (a sharded strategy's) is a folder with torch's ``.metadata`` and Lightning's
    ``meta.pt``, both written last. ``asked`` is how the user named it: ``--resume`` or
    ``ckpt_path`` (a Trainer call's argument)."""
    def naming(value: str) -> str:
        return f"--resume {value}" if asked == "--resume" else f"ckpt_path={value!r}"

    if os.path.isdir(path):
        lacking = [name for name in DISTRIBUTED_METADATA
                   if not os.path.isfile(os.path.join(path, name))]
        if lacking:
            raise UsageError(f"{naming(given)}: the folder {path} is not a whole distributed "
                             f"checkpoint (it has no {' and no '.join(lacking)}; a save was cut "
                             f"short?). Give {naming('PATH')} of another checkpoint of the run.")
        return
    size = os.path.getsize(path) if os.path.isfile(path) else -1
    if size <= 0 or not zipfile.is_zipfile(path):
        state = "is empty" if size == 0 else "does not exist" if size < 0 else \
            "is damaged (not a complete torch.save archive; a save was cut short?)"
        other = _whole_neighbour(path)
        verb, doing = ("Continue from", "train") if call == "fit" else ("Use", call)
        offer = f"{verb} the newest whole one with {naming(other)}" if other else \
            f"Give {naming('PATH')} of another checkpoint of the run"
        without = "without --resume" if asked == "--resume" else "without ckpt_path"
        raise UsageError(f"{naming(given)}: the checkpoint {path} {state}. {offer}, or {doing} "
                         f"{without}.")


def check_epochs(path: str, given: str, max_epochs: Any, asked: str = "--resume") -> None:
    """Before the fork: a checkpoint past the fit's ``max_epochs`` is Lightning's
    MisconfigurationException in every rank; here it is one line that says where the checkpoint
    is, the limit, and what to give."""
    if not isinstance(max_epochs, int) or max_epochs < 0:
        return
    progress = _epoch_progress(path)
    if progress is None or progress[0] <= max_epochs:  # Lightning's own test: completed > max
        return
    completed, processed = progress
    naming = f"--resume {given}" if asked == "--resume" else f"ckpt_path={given!r}"
    raise UsageError(f"{naming}: the checkpoint {path} is at epoch {completed} "
                     f"({processed} epoch{'s' if processed != 1 else ''} trained), past this "
                     f"fit's max_epochs={max_epochs}, so Lightning cannot continue it. Give "
                     f"--max-epochs {processed + 1} or more (Trainer max_epochs) to train on "
                     f"from it, or {'drop --resume' if asked == '--resume' else 'drop ckpt_path'}"
                     " to start over.")


def _epoch_progress(path: str) -> Optional[tuple[int, int]]:
    """(epochs completed, epochs processed) of a checkpoint's fit loop, read on the CPU without
    loading its tensors; None when it cannot be read (the ranks then say what Lightning says)."""
    import torch

    try:
        if os.path.isdir(path):
            state = torch.load(os.path.join(path, DISTRIBUTED_METADATA[1]), map_location="cpu",
                               weights_only=False)
        else:
            state = torch.load(path, map_location="cpu", mmap=True, weights_only=False)
        current = state["loops"]["fit_loop"]["epoch_progress"]["current"]
        return int(current["completed"]), int(current["processed"])
    except Exception:  # noqa: BLE001 - an older or foreign checkpoint: Lightning decides
        return None


def _whole_neighbour(path: str) -> Optional[str]:
    """The newest other whole .ckpt file beside ``path`` (the run's best ones), if any."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        names = [n for n in os.listdir(folder) if n.endswith(".ckpt")]
    except OSError:
        return None
    candidates = [os.path.join(folder, n) for n in names]
    whole = [c for c in candidates if os.path.abspath(c) != os.path.abspath(path)
             and os.path.isfile(c) and not os.path.islink(c) and zipfile.is_zipfile(c)]
    return max(whole, key=os.path.getmtime) if whole else None


def _runs(root: str) -> list[tuple[float, str, Optional[str]]]:
    """(time, last.ckpt, model key) of each run folder under ``root`` with a last.ckpt."""
    if not os.path.isdir(root):
        return []
    return [run for name in os.listdir(root) for run in _run_in(os.path.join(root, name))]


def _run_in(folder: str) -> list[tuple[float, str, Optional[str]]]:
    path = os.path.join(folder, "last.ckpt")
    if os.path.exists(path) and not os.path.islink(path):  # a file, or a sharded folder
        return [(os.path.getmtime(path), path, read_model_key(folder))]
    return []


def model_key(model: Any) -> str:
    cls = type(model)
    return f"{cls.__module__}.{cls.__qualname__}"


def read_model_key(folder: str) -> Optional[str]:
    try:
        with open(os.path.join(folder, RUN_INFO)) as handle:
            key = json.load(handle).get("model")
    except (OSError, ValueError, AttributeError):
        return None
    return key if isinstance(key, str) else None


def write_run_info(folder: str, model: Any) -> list[str]:
    """Write ``run.json`` in ``folder``; the folders that had to be made for it, deepest first
    (``placement.drop_run_info`` takes them away again when no checkpoint joins it)."""
    made, parent = [], os.path.abspath(folder)
    while not os.path.lexists(parent):
        made.append(parent)
        parent = os.path.dirname(parent)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, RUN_INFO), "w") as handle:
        json.dump({"model": model_key(model)}, handle)
    return made


_CHOSEN: set[str] = set()  # the folders this kernel chose, made or not yet


def new_run_dir(cwd: str, name: str, create: bool = True) -> str:
    """A new folder under the checkpoint root: ``<date>-<time>-<name>``, with a number added when
    that exists (or this kernel chose it already); two runs started in the same second never
    share one. With ``create=False`` it is made later, at the first fit."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(runs_root(cwd), f"{stamp}-{name}")
    path, n = base, 1
    while True:
        try:
            if path in _CHOSEN or os.path.lexists(path):
                raise FileExistsError(path)
            if create:
                os.makedirs(path, exist_ok=False)
            _CHOSEN.add(path)
            return path
        except FileExistsError:
            n += 1
            path = f"{base}-{n}"
