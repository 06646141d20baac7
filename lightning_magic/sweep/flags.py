"""The flags of ``%%lightning_sweep``: its own (``SweepFlags``), declared with IPython's
``magic_arguments`` so ``%%lightning_sweep?`` prints them, and the ``%%lightning_train`` flags
every trial runs with, passed through and checked by ``%%lightning_train``'s own parser. A bad
value is a one-line ``UsageError`` before anything runs."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from typing import Any, Callable, Optional

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from ..options import flags as train_flags
from ..options import values as check

DIRECTIONS = ("minimize", "maximize")
SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("median", "none")
# %%lightning_train flags the sweep sets itself, for every trial.
OWNED = {"devices": "--devices-per-trial D", "no_wait": "nothing", "out": "nothing (the sweep is bound to "
         "lightning_sweep)", "export": "%%lightning_train --export", "progress": "nothing (the "
         "sweep shows one table)", "check": "%%lightning_train --check"}
NAME = "%%lightning_sweep"


@dataclass(frozen=True)
class SweepFlags:
    trials: Optional[int]
    metric: str
    direction: str = "minimize"
    devices_per_trial: int = 1
    sampler: str = "tpe"
    pruner: str = "none"
    storage: Optional[str] = None
    resume: bool = False           # continue the study --storage already holds
    background: bool = False       # the cell returns at once; lightning_sweep is the handle
    timeout: Optional[float] = None
    train_words: tuple[str, ...] = ()  # the %%lightning_train flags every trial runs with
    accelerator: Optional[str] = None  # theirs: cpu, gpu, or None (GPUs where there are any)

    def train_line(self, accelerator: str, devices: str) -> str:
        """The ``%%lightning_train`` line of one trial on ``devices``."""
        return shlex.join([*self.train_words, "--background", "--progress", "none",
                           "--accelerator", accelerator, "--devices", devices])


def declare(func: Callable) -> Callable:
    decorators = [
        magic_arguments(),
        argument("--trials", metavar="N", help="How many trials to run (Optuna's n_trials); "
                 "without it, trials start until --timeout."),
        argument("--metric", metavar="NAME", help="The logged metric each trial is scored by "
                 "(its value at the end of the trial's fit), for example val_loss."),
        argument("--direction", default="minimize", metavar="{minimize,maximize}",
                 help="Whether a lower (minimize, the default) or higher metric is better."),
        argument("--devices-per-trial", default="1", metavar="D",
                 help="Devices of each trial: D GPUs, or D CPU processes on a machine without "
                      "GPUs (or with --accelerator cpu). As many trials run at once as the "
                      "devices allow: GPUs // D, or CPU cores // D, at least one."),
        argument("--sampler", default="tpe", metavar="{tpe,random,grid}",
                 help="Optuna's sampler: TPESampler, RandomSampler, or 'grid' "
                      "(BruteForceSampler: every combination of the cell's suggest_categorical "
                      "and stepped suggest_int calls, then the sweep ends)."),
        argument("--pruner", default="none", metavar="{median,none}",
                 help="'median' (MedianPruner): a trial whose metric at an epoch end is worse "
                      "than the median of the earlier trials at that epoch is stopped there."),
        argument("--storage", metavar="FILE",
                 help="Keep the study in Optuna's journal file FILE. A FILE that already holds "
                      "the study is refused unless --resume is given."),
        argument("--resume", action="store_true",
                 help="With --storage FILE: continue the study FILE holds (Optuna's "
                      "load_if_exists=True). --trials N then runs N more trials, as "
                      "study.optimize(n_trials=N) does: the earlier ones are in "
                      "lightning_sweep.study, .trials holds this sweep's."),
        argument("--background", action="store_true",
                 help="Return at once: lightning_sweep is the sweep's handle (wait(), done(), "
                      "stop(), status, and .trials, .study, .dataframe() so far); the table "
                      "keeps updating here while other cells run, and the best trial's names "
                      "are bound between cells or at wait()."),
        argument("--timeout", metavar="SECONDS",
                 help="Start no new trial after this long (the running ones finish)."),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func


def parse(line: str, magic_func: Callable, train_func: Callable) -> SweepFlags:
    """The sweep's flags of ``line``; the other words are ``%%lightning_train`` flags, checked
    here by its parser (``train_func``, the ``%%lightning_train`` magic)."""
    try:
        parser = magic_func.parser
        parser.allow_abbrev = False
        words = check.split_line(line)
        _check_resume_takes_no_value(words)
        try:
            args, rest = parser.parse_known_args(words)
        except UsageError as exc:
            raise UsageError(_reworded(check.no_value_given(str(exc)))) from None
        # the words it does not know first: a misspelt --trials is named as such
        given = train_flags.parse(shlex.join(rest), train_func, also=[
            o for a in parser._actions for o in a.option_strings if o.startswith("--")])
        flags = _validated(vars(args), tuple(rest))
        _check_not_owned(given)
        return replace(flags, accelerator=None if given.accelerator == "auto"
                       else given.accelerator)
    except UsageError as exc:
        raise UsageError(check.one_line(_reworded(exc))) from None


def _validated(raw: dict[str, Any], rest: tuple[str, ...]) -> SweepFlags:
    trials = check.integer("--trials", raw["trials"], minimum=1)
    timeout = check.real("--timeout", raw["timeout"], minimum=0.0, exclusive=True,
                         maximum=check.MAX_DURATION_S)
    if trials is None and timeout is None:
        raise UsageError(f"{NAME} needs --trials N or --timeout SECONDS (or both), for example "
                         "--trials 20.")
    if raw["metric"] is None or not str(raw["metric"]).strip():
        raise UsageError(f"{NAME} needs --metric NAME, the logged metric that scores a trial, "
                         "for example --metric val_loss.")
    storage = raw["storage"]
    if raw["resume"] and storage is None:
        raise UsageError(f"{NAME} --resume continues the study kept in a journal file: give "
                         "--storage FILE too, for example --resume --storage study.journal.")
    return SweepFlags(
        trials=trials, metric=str(raw["metric"]).strip(),
        direction=check.choice("--direction", raw["direction"], DIRECTIONS),
        devices_per_trial=check.integer("--devices-per-trial", raw["devices_per_trial"],
                                        minimum=1),
        sampler=check.choice("--sampler", raw["sampler"], SAMPLERS),
        pruner=check.choice("--pruner", raw["pruner"], PRUNERS),
        storage=None if storage is None else check.output_file("--storage", storage),
        resume=bool(raw["resume"]), background=bool(raw["background"]), timeout=timeout,
        train_words=rest)


def _check_resume_takes_no_value(words: list[str]) -> None:
    """``--resume`` is the study's; ``%%lightning_train --resume last|PATH`` has no place in a
    sweep (each trial trains from the start, in a folder of its own)."""
    for word, after in zip(words, words[1:]):
        if word == "--resume" and not after.startswith("-"):
            raise UsageError(f"{NAME} --resume takes no value (got --resume {after!r}): it "
                             "continues the study in --storage FILE; a trial cannot resume "
                             "a checkpoint (%%lightning_train --resume): leave the value out.")


def _check_not_owned(given: Any) -> None:
    defaults = train_flags.TrainFlags()
    for name, instead in OWNED.items():
        if getattr(given, name) != getattr(defaults, name):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{NAME} sets {flag} itself for every trial; use {instead}.")


def _reworded(message: object) -> str:
    """A ``%%lightning_train`` parser's message (an error, or its text), as the sweep's."""
    text = str(message).replace("%%lightning_train?", f"{NAME}?").replace("%%lightning_train:", "")
    text = text.strip()
    return text if text.startswith(NAME) else f"{NAME}: {text}"
