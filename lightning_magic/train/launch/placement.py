"""Where a Trainer's checkpoints go, as plain Lightning would put them.

Two placements (``Session.placement``):

- ``"run"``: the magic's own run folder (``--ckpt-dir``, else a new folder under the checkpoint
  root): the checkpoints, ``last.ckpt`` and ``run.json`` in it, the default logger's
  ``lightning_logs/`` beside them. The Trainer's ``default_root_dir`` is that folder.
- ``"lightning"``: the cell gave a logger or a ``default_root_dir``: the default ModelCheckpoint
  resolves its folder as in plain Lightning (``<save_dir>/<name>/version_N/checkpoints`` of the
  first logger, ``<default_root_dir>/checkpoints`` without one), and ``last.ckpt`` and
  ``run.json`` (what ``--resume last`` needs) go beside those checkpoints.

The logger's version is fixed in the kernel before each launch (``fix_versions``), so the kernel,
every rank and the folder named before the fork agree, even when the run fails.
"""

from __future__ import annotations

import glob
import os
from typing import Any, Optional

RUN_INFO = "run.json"  # beside a run's last.ckpt: the model class it trained (checkpoints.py)


def versioned(logger: Any) -> bool:
    """Whether the kernel can know the logger's version without starting the logger: already
    fixed, or computed from the folders on disk (Lightning's CSV and TensorBoard loggers)."""
    return getattr(logger, "_version", None) is not None or \
        callable(getattr(logger, "_get_next_version", None))


def fix_versions(trainer: Any) -> None:
    """Ask each logger that can answer in the kernel for its version (Lightning computes it once
    and keeps it): the ranks, forked from here, then write that version, and after a failed run
    the kernel's ``trainer.logger.log_dir`` still names it."""
    for logger in trainer.loggers:
        if versioned(logger):
            logger.version  # noqa: B018 - the property computes and keeps the version


def lightning_folder(trainer: Any) -> Optional[str]:
    """The folder Lightning's ModelCheckpoint (no ``dirpath``) resolves for ``trainer``, as its
    ``__resolve_ckpt_dir`` does; None when the first logger's version is not known here."""
    if not trainer.loggers:
        return os.path.join(os.path.abspath(trainer.default_root_dir), "checkpoints")
    logger = trainer.loggers[0]
    if not versioned(logger):
        return None
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    version = logger.version
    version = version if isinstance(version, str) else f"version_{version}"
    return os.path.join(os.path.abspath(save_dir), str(logger.name), version, "checkpoints")


def lightning_root(trainer: Any) -> str:
    """The folder that holds the versions of the first logger (``<save_dir>/<name>``), or the
    ``default_root_dir`` without a logger."""
    if not trainer.loggers:
        return os.path.abspath(trainer.default_root_dir)
    logger = trainer.loggers[0]
    save_dir = logger.save_dir if logger.save_dir is not None else trainer.default_root_dir
    return os.path.join(os.path.abspath(save_dir), str(logger.name))


def earlier_folders(trainer: Any) -> list[str]:
    """The folders where Lightning's placement put this Trainer's earlier runs' checkpoints
    (every version of its first logger), for ``--resume last``."""
    if not trainer.loggers:
        return [os.path.join(lightning_root(trainer), "checkpoints")]
    return sorted(glob.glob(os.path.join(glob.escape(lightning_root(trainer)), "*",
                                         "checkpoints")))


def before_launch(session: Any, trainer: Any, stage: str) -> None:
    """In the kernel, before the fork: the loggers' versions fixed, the magic's run folder made
    (it is the Trainer's ``default_root_dir``) and, for a fit placed as in Lightning, the folder
    of its checkpoints (the session's ``ckpt_dir``)."""
    fix_versions(trainer)
    if session.placement == "run" and not session.flags.check and not trainer.fast_dev_run:
        os.makedirs(session.ckpt_dir, exist_ok=True)  # the Trainer's default_root_dir, log_dir
    if stage == "fit" and session.placement == "lightning":
        folder = lightning_folder(trainer)
        if folder is not None:
            session.ckpt_dir = folder


def remove_if_unused(folder: str) -> bool:
    """Remove a run folder the magic made when nothing but its ``run.json`` (and empty folders)
    was written there: a cell that failed before training leaves no empty run behind."""
    if not os.path.isdir(folder) or os.path.islink(folder):
        return False
    for root, _, files in os.walk(folder):
        if [name for name in files if not (root == folder and name == RUN_INFO)]:
            return False
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return not os.path.exists(folder)


def drop_run_info(folder: str, made: list[str], trainer: Any) -> None:
    """After a launch: a ``run.json`` with no checkpoint beside it (a fit that trained nothing,
    or failed before its first save) is removed, with the empty folders made for it, so a
    folder is left only where plain Lightning leaves one. The folders of a logger's version
    (``checkpoints`` is below them) are the logger's: plain Lightning's logger makes them too."""
    try:
        names = os.listdir(folder)
    except OSError:
        return
    if RUN_INFO not in names or any(name.endswith(".ckpt") for name in names):
        return
    ours = [path for path in made if not trainer.loggers or path == os.path.abspath(folder)]
    try:
        os.remove(os.path.join(folder, RUN_INFO))
        for path in ours:  # deepest first; one that something else wrote in stays
            os.rmdir(path)
    except OSError:
        pass


def own_folder_warnings(session: Any) -> tuple[str, ...]:
    """Lightning's warnings about a non-empty folder that only the magic filled: the checkpoint
    folder it made for ``run.json`` (or its own fresh run folder), and the logger's version
    folder that holds nothing but that checkpoint folder. Plain Lightning gives neither. Each
    is given with the folder as Lightning may write it: absolute, or relative to the cwd."""
    folder = os.path.abspath(session.ckpt_dir)
    parent = os.path.dirname(folder)
    said = []
    if session.fresh_dir or folder in session.made_for_run:
        said += [f"Checkpoint directory {path} exists and is not empty."
                 for path in (folder, os.path.relpath(folder))]
    try:
        alone = os.listdir(parent) == [os.path.basename(folder)]
    except OSError:
        alone = False
    if folder in session.made_for_run and alone:
        said += [f"Experiment logs directory {path} exists and is not empty. Previous log files "
                 "in this directory will be deleted when the new ones are saved!"
                 for path in (parent, os.path.relpath(parent))]
    return tuple(said)
