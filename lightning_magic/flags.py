"""The flags of ``%%lightning_train``: declarations and validation into one frozen dataclass.

The declarations use IPython's ``magic_arguments``, so ``%%lightning_train?`` prints their help.
Every value is checked here, before the cell body runs; a bad one is a one-line ``UsageError``
that names the flag, the value given and what is allowed.
"""

from __future__ import annotations

import keyword
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Union

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring

PRECISIONS = ("32", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "64-true")
PRECISION_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
PROGRESS_MODES = ("live", "bar", "none")

Number = Union[int, float]


@dataclass(frozen=True)
class TrainFlags:
    """Every setting of one ``%%lightning_train`` cell, validated, with Trainer names."""

    devices: str = "auto"
    accelerator: str = "auto"
    precision: str = "32-true"
    strategy: str = "auto"
    model: Optional[str] = None
    data: Optional[str] = None
    val_data: Optional[str] = None
    max_epochs: Optional[int] = None
    min_epochs: Optional[int] = None
    max_steps: int = -1
    max_time: Optional[str] = None  # Lightning's "DD:HH:MM:SS"
    min_steps: Optional[int] = None
    limit_train_batches: Optional[Number] = None
    limit_val_batches: Optional[Number] = None
    val_check_interval: Optional[Number] = None
    check_val_every_n_epoch: Optional[int] = 1
    num_sanity_val_steps: Optional[int] = None
    gradient_clip_val: Optional[float] = None
    accumulate_grad_batches: int = 1
    deterministic: bool = False
    benchmark: bool = False
    fast_dev_run: Union[bool, int] = False
    seed: Optional[int] = None
    ckpt_dir: Optional[str] = None
    resume: Optional[str] = None
    out: str = "lightning_run"
    timeout: Optional[float] = None
    check: bool = False
    progress: str = "live"
    export: Optional[str] = None
    num_nodes: int = 1

    def trainer_kwargs(self) -> dict[str, Any]:
        """The Trainer arguments these flags set (device, strategy and precision excluded)."""
        names = (
            "max_epochs", "min_epochs", "max_steps", "max_time", "min_steps",
            "limit_train_batches",
            "limit_val_batches", "val_check_interval", "check_val_every_n_epoch",
            "num_sanity_val_steps", "gradient_clip_val", "accumulate_grad_batches",
            "deterministic", "benchmark", "fast_dev_run",
        )
        defaults = TrainFlags()
        return {n: getattr(self, n) for n in names if getattr(self, n) != getattr(defaults, n)}


def declare(func: Callable) -> Callable:
    """Attach every ``%%lightning_train`` flag to ``func`` (IPython magic_arguments)."""
    decorators = [
        magic_arguments(),
        argument("--devices", default="auto", metavar="SPEC",
                 help="Which devices to train on: 'auto' (every GPU NVML sees, else one CPU "
                      "process), 'cpu', a count N, a list of GPU indices '0,1', or 'gpu:0,gpu:1'. "
                      "With --accelerator cpu, N is the number of CPU processes."),
        argument("--accelerator", default="auto", metavar="{auto,cpu,gpu}",
                 help="'auto' (GPU when one is selected, else CPU), 'cpu' or 'gpu'."),
        argument("--precision", default="32", metavar="{32,16-mixed,bf16-mixed,16-true,bf16-true,64}",
                 help="Trainer precision, checked against the hardware before anything runs."),
        argument("--strategy", default="auto",
                 metavar="{auto,ddp_notebook,ddp_notebook_find_unused_parameters_true}",
                 help="'auto' runs every training in forked processes (ddp_notebook for more than "
                      "one device). Strategies that need a script launch are refused."),
        argument("--model", metavar="NAME",
                 help="Name of the LightningModule to train, when the cell binds several."),
        argument("--data", metavar="NAME",
                 help="Name of the LightningDataModule or training DataLoader to use."),
        argument("--val-data", metavar="NAME", help="Name of the validation DataLoader."),
        argument("--max-epochs", metavar="N", help="Stop after N epochs (Trainer max_epochs)."),
        argument("--min-epochs", metavar="N", help="Train at least N epochs."),
        argument("--max-steps", metavar="N", help="Stop after N optimizer steps (-1: no limit)."),
        argument("--min-steps", metavar="N", help="Train at least N steps."),
        argument("--max-time", metavar="DD:HH:MM:SS",
                 help="Stop training (with a checkpoint) after this long: DD:HH:MM:SS, "
                      "HH:MM:SS, or seconds."),
        argument("--limit-train-batches", metavar="N|F",
                 help="Batches per epoch: a count (10) or a fraction (0.25)."),
        argument("--limit-val-batches", metavar="N|F",
                 help="Validation batches: a count (10) or a fraction (0.25)."),
        argument("--val-check-interval", metavar="N|F",
                 help="Validate every N training batches, or every fraction F of an epoch."),
        argument("--check-val-every-n-epoch", metavar="N", help="Validate every N epochs."),
        argument("--num-sanity-val-steps", metavar="N",
                 help="Validation batches to run before training (-1: all)."),
        argument("--gradient-clip-val", metavar="X", help="Clip gradients at this value."),
        argument("--accumulate-grad-batches", metavar="N",
                 help="Accumulate gradients over N batches per optimizer step."),
        argument("--deterministic", action="store_true",
                 help="Use deterministic algorithms (Trainer deterministic=True)."),
        argument("--benchmark", action="store_true", help="Enable cudnn.benchmark."),
        argument("--fast-dev-run", nargs="?", const="1", default=None, metavar="N",
                 help="Run N batches (default 1) of train and validation as a smoke test."),
        argument("--seed", metavar="N", help="seed_everything(N) in every rank."),
        argument("--ckpt-dir", metavar="DIR",
                 help="Where checkpoints go (default: a new folder under lightning_runs/ next "
                      "to the notebook)."),
        argument("--resume", metavar="{last,PATH}",
                 help="Continue from the last checkpoint of --ckpt-dir ('last') or from PATH, "
                      "optimizer state included."),
        argument("--out", default="lightning_run", metavar="NAME",
                 help="Variable that receives the TrainingRun (default: lightning_run)."),
        argument("--timeout", metavar="SECONDS",
                 help="End the run when a rank makes no progress for this long."),
        argument("--check", action="store_true",
                 help="Dry run: start the ranks, do one all-reduce and one forward/backward on one "
                      "batch, report whether the configuration works, without training."),
        argument("--progress", default="live", metavar="{live,bar,none}",
                 help="'live': one view updated in place; 'bar': Lightning's progress bar from "
                      "rank 0; 'none': only the summary."),
        argument("--export", metavar="PATH",
                 help="Instead of training, write a standalone script (and PATH.sbatch) for "
                      "torchrun or SLURM."),
        argument("--num-nodes", metavar="N", help="Number of machines, with --export."),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func


def parse(line: str, magic_func: Callable) -> TrainFlags:
    """Parse and validate the flags of a ``%%lightning_train`` line."""
    try:
        args = parse_argstring(magic_func, line)
    except UsageError as exc:
        raise UsageError(f"%%lightning_train: {exc}") from None
    except ValueError as exc:  # unbalanced quotes from shlex
        raise UsageError(f"%%lightning_train: cannot read the flags {line!r}: {exc}.") from None
    return from_namespace(vars(args))


def from_namespace(raw: dict[str, Any]) -> TrainFlags:
    precision = _choice("--precision", str(raw["precision"]), PRECISIONS + tuple(PRECISION_ALIASES))
    if precision in PRECISION_ALIASES:
        precision = PRECISION_ALIASES[precision]
    accelerator = _choice("--accelerator", raw["accelerator"], ACCELERATORS)
    if accelerator == "cuda":
        accelerator = "gpu"
    values: dict[str, Any] = dict(
        devices=_nonempty("--devices", raw["devices"]),
        accelerator=accelerator,
        precision=precision,
        strategy=_nonempty("--strategy", raw["strategy"]),
        model=_identifier("--model", raw["model"]),
        data=_identifier("--data", raw["data"]),
        val_data=_identifier("--val-data", raw["val_data"]),
        max_epochs=_integer("--max-epochs", raw["max_epochs"], minimum=-1),
        min_epochs=_integer("--min-epochs", raw["min_epochs"], minimum=0),
        max_steps=_integer("--max-steps", raw["max_steps"], minimum=-1, default=-1),
        min_steps=_integer("--min-steps", raw["min_steps"], minimum=0),
        max_time=_duration("--max-time", raw["max_time"]),
        limit_train_batches=_count_or_fraction("--limit-train-batches", raw["limit_train_batches"]),
        limit_val_batches=_count_or_fraction("--limit-val-batches", raw["limit_val_batches"]),
        val_check_interval=_count_or_fraction("--val-check-interval", raw["val_check_interval"],
                                              allow_zero=False),
        check_val_every_n_epoch=_integer("--check-val-every-n-epoch",
                                         raw["check_val_every_n_epoch"], minimum=1, default=1),
        num_sanity_val_steps=_integer("--num-sanity-val-steps", raw["num_sanity_val_steps"],
                                      minimum=-1),
        gradient_clip_val=_real("--gradient-clip-val", raw["gradient_clip_val"], minimum=0.0),
        accumulate_grad_batches=_integer("--accumulate-grad-batches",
                                         raw["accumulate_grad_batches"], minimum=1, default=1),
        deterministic=bool(raw["deterministic"]),
        benchmark=bool(raw["benchmark"]),
        fast_dev_run=_fast_dev_run(raw["fast_dev_run"]),
        seed=_integer("--seed", raw["seed"], minimum=0, maximum=2**32 - 1),
        ckpt_dir=_nonempty("--ckpt-dir", raw["ckpt_dir"]) if raw["ckpt_dir"] is not None else None,
        resume=_nonempty("--resume", raw["resume"]) if raw["resume"] is not None else None,
        out=_identifier("--out", raw["out"]) or "lightning_run",
        timeout=_real("--timeout", raw["timeout"], minimum=0.0, exclusive=True),
        check=bool(raw["check"]),
        progress=_choice("--progress", raw["progress"], PROGRESS_MODES),
        export=_nonempty("--export", raw["export"]) if raw["export"] is not None else None,
        num_nodes=_integer("--num-nodes", raw["num_nodes"], minimum=1, default=1),
    )
    if values["num_nodes"] != 1 and values["export"] is None:
        raise UsageError(
            f"--num-nodes {values['num_nodes']}: a notebook trains on this machine only; "
            "use it with --export PATH to write a torchrun/SLURM job for several machines."
        )
    if values["min_epochs"] is not None and values["max_epochs"] not in (None, -1) \
            and values["min_epochs"] > values["max_epochs"]:
        raise UsageError(
            f"--min-epochs {values['min_epochs']} is larger than --max-epochs "
            f"{values['max_epochs']}: lower --min-epochs or raise --max-epochs."
        )
    if values["check"] and values["export"]:
        raise UsageError("--check and --export do not go together: use one of them.")
    return TrainFlags(**values)


# -- validators: each names the flag, the value given, and what is allowed ----------------------

def _choice(flag: str, value: str, allowed: tuple[str, ...]) -> str:
    value = str(value).strip().lower()
    if value not in allowed:
        shown = ", ".join(a for a in allowed if a not in PRECISION_ALIASES or a in ("32", "64"))
        raise UsageError(f"{flag} {value!r} is not one of: {shown}.")
    return value


def _nonempty(flag: str, value: Optional[str]) -> str:
    if value is None or not str(value).strip():
        raise UsageError(f"{flag} needs a value, got an empty one.")
    return str(value).strip()


def _identifier(flag: str, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    if not str(value).isidentifier() or keyword.iskeyword(value):
        raise UsageError(f"{flag} {value!r} is not a Python variable name (for example: my_model).")
    return str(value)


def _integer(flag: str, value: Optional[str], *, minimum: Optional[int] = None,
             maximum: Optional[int] = None, default: Optional[int] = None) -> Optional[int]:
    if value is None:
        return default
    try:
        number = int(str(value).strip())
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a whole number.") from None
    if minimum is not None and number < minimum:
        raise UsageError(f"{flag} {number} is too small: the smallest allowed value is {minimum}.")
    if maximum is not None and number > maximum:
        raise UsageError(f"{flag} {number} is too large: the largest allowed value is {maximum}.")
    return number


def _real(flag: str, value: Optional[str], *, minimum: float = 0.0,
          exclusive: bool = False) -> Optional[float]:
    if value is None:
        return None
    try:
        number = float(str(value).strip())
    except ValueError:
        raise UsageError(f"{flag} {value!r} is not a number.") from None
    if not math.isfinite(number) or number < minimum or (exclusive and number == minimum):
        bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
        raise UsageError(f"{flag} {value!r} must be a finite number {bound}.")
    return number


def _count_or_fraction(flag: str, value: Optional[str], *, allow_zero: bool = True) -> Optional[Number]:
    """'10' -> 10 batches, '0.25' -> a quarter of an epoch (Lightning's int/float convention)."""
    if value is None:
        return None
    text = str(value).strip()
    try:
        if text.isdigit():
            number: Number = int(text)
            if number == 0 and not allow_zero:
                raise ValueError
            return number
        fraction = float(text)
    except ValueError:
        fraction = float("nan")
    if math.isfinite(fraction) and (0.0 < fraction <= 1.0 or (allow_zero and fraction == 0.0)):
        return fraction
    raise UsageError(
        f"{flag} {value!r} must be a whole number of batches (for example 10) "
        "or a fraction of the epoch between 0 and 1 (for example 0.25)."
    )


def _duration(flag: str, value: Optional[str]) -> Optional[str]:
    """'90' (seconds), '01:30:00' or '00:01:30:00' -> Lightning's 'DD:HH:MM:SS'."""
    if value is None:
        return None
    text = str(value).strip()
    parts = text.split(":")
    try:
        if len(parts) == 1:
            total = float(parts[0])
        elif len(parts) in (3, 4):
            numbers = [int(p) for p in parts]
            if any(n < 0 for n in numbers):
                raise ValueError
            days, hours, minutes, seconds = ([0] * (4 - len(numbers))) + numbers
            total = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
        else:
            raise ValueError
    except ValueError:
        total = float("nan")
    if not math.isfinite(total) or total <= 0:
        raise UsageError(f"{flag} {value!r} is not a duration: give seconds (3600), HH:MM:SS "
                         "(01:00:00) or DD:HH:MM:SS (00:01:00:00).")
    seconds = int(math.ceil(total))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}"


def _fast_dev_run(value: Optional[str]) -> Union[bool, int]:
    if value is None:
        return False
    number = _integer("--fast-dev-run", value, minimum=1)
    return True if number == 1 else number
