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

RUN_INFO = "run.json"
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


def check_resume(flags: TrainFlags, cwd: str) -> None:
    """Before the cell runs: a UsageError when ``--resume`` can point at nothing at all."""
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
    if not _runs(runs_root(cwd)):
        raise UsageError(f"--resume last: no run under {runs_root(cwd)} has a last.ckpt. Train "
                         "once first, or give --resume PATH.")


def resume_path(flags: TrainFlags, cwd: str, model: Any) -> str:
    """At ``fit``: the checkpoint to continue from, checked to be whole."""
    path = _named_checkpoint(flags)
    if path is None:
        wanted = model_key(model)
        runs = _runs(runs_root(cwd))
        same = [(stamp, path) for stamp, path, key in runs if key == wanted]
        if not same:
            others = sorted({key.rsplit(".", 1)[-1] for _, _, key in runs if key})
            trained = f" (runs there trained {', '.join(others)})" if others else ""
            raise UsageError(f"--resume last: no run under {runs_root(cwd)} trained a "
                             f"{type(model).__name__}{trained}. Give --resume PATH or "
                             "--ckpt-dir DIR of the run to continue.")
        path = max(same)[1]
    check_whole(path, flags.resume)
    return path


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
    found = []
    if not os.path.isdir(root):
        return found
    for name in os.listdir(root):
        folder = os.path.join(root, name)
        path = os.path.join(folder, "last.ckpt")
        if os.path.exists(path) and not os.path.islink(path):  # a file, or a sharded folder
            found.append((os.path.getmtime(path), path, read_model_key(folder)))
    return found


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


def write_run_info(folder: str, model: Any) -> None:
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, RUN_INFO), "w") as handle:
        json.dump({"model": model_key(model)}, handle)


def new_run_dir(cwd: str, name: str, create: bool = True) -> str:
    """A new folder under the checkpoint root: ``<date>-<time>-<name>``, with a number added when
    that exists; made at once, so two runs started in the same second never share one."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = os.path.join(runs_root(cwd), f"{stamp}-{name}")
    path, n = base, 1
    while True:
        try:
            if create:
                os.makedirs(path, exist_ok=False)
            elif os.path.exists(path):
                raise FileExistsError(path)
            return path
        except FileExistsError:
            n += 1
            path = f"{base}-{n}"
