"""The flags of ``%%lightning_train``: declarations and validation into one frozen dataclass.

The declarations use IPython's ``magic_arguments``, so ``%%lightning_train?`` prints their help.
Every value is checked here, before the cell body runs; a bad one is a one-line ``UsageError``
that names the flag, the value given and what is allowed.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Callable, Optional, Sequence, Union

from IPython.core.error import UsageError
from IPython.core.magic_arguments import argument, magic_arguments

from . import values as check
from .combinations import check_together
from .names import canonical_accelerator, canonical_precision

PRECISIONS = ("32", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "64-true")
PRECISION_CHOICES = ("32", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64", "32-true",
                     "64-true", "16", "bf16")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
PROGRESS_MODES = ("live", "bar", "none")
LOGGERS = ("auto", "csv", "tensorboard", "none")
MODES = ("min", "max")
PROFILERS = ("simple", "advanced", "pytorch")
CLIP_ALGORITHMS = ("norm", "value")
HARDWARE = ("accelerator", "devices", "strategy", "precision")
# The Trainer arguments the flags set, under the Trainer's names (hardware apart: HARDWARE).
TRAINER_ARGUMENTS = (
    "max_epochs", "min_epochs", "max_steps", "min_steps", "max_time", "limit_train_batches",
    "limit_val_batches", "limit_test_batches", "limit_predict_batches", "overfit_batches",
    "val_check_interval", "check_val_every_n_epoch", "num_sanity_val_steps", "log_every_n_steps",
    "gradient_clip_val", "gradient_clip_algorithm", "accumulate_grad_batches", "deterministic",
    "benchmark", "inference_mode", "use_distributed_sampler", "profiler", "detect_anomaly",
    "barebones", "sync_batchnorm", "reload_dataloaders_every_n_epochs", "fast_dev_run",
)

Number = Union[int, float]


@dataclass(frozen=True)
class TrainFlags:
    """Every setting of one ``%%lightning_train`` cell, validated, with Trainer names.

    A field named after a Trainer argument is None when its flag was not given, so the cell's
    own Trainer (or Lightning's default) decides it.
    """

    devices: Optional[str] = None
    accelerator: Optional[str] = None
    precision: Optional[str] = None
    strategy: Optional[str] = None
    model: Optional[str] = None
    data: Optional[str] = None
    val_data: Optional[str] = None
    max_epochs: Optional[int] = None
    min_epochs: Optional[int] = None
    max_steps: Optional[int] = None
    min_steps: Optional[int] = None
    max_time: Optional[str] = None  # Lightning's "DD:HH:MM:SS"
    limit_train_batches: Optional[Number] = None
    limit_val_batches: Optional[Number] = None
    limit_test_batches: Optional[Number] = None
    limit_predict_batches: Optional[Number] = None
    overfit_batches: Optional[Number] = None
    val_check_interval: Optional[Number] = None
    check_val_every_n_epoch: Optional[int] = None
    num_sanity_val_steps: Optional[int] = None
    log_every_n_steps: Optional[int] = None
    gradient_clip_val: Optional[float] = None
    gradient_clip_algorithm: Optional[str] = None
    accumulate_grad_batches: Optional[int] = None
    deterministic: Optional[bool] = None
    benchmark: Optional[bool] = None
    inference_mode: Optional[bool] = None
    use_distributed_sampler: Optional[bool] = None
    profiler: Optional[str] = None
    detect_anomaly: Optional[bool] = None
    barebones: Optional[bool] = None
    sync_batchnorm: Optional[bool] = None
    reload_dataloaders_every_n_epochs: Optional[int] = None
    fast_dev_run: Optional[Union[bool, int]] = None
    seed: Optional[int] = None
    ckpt_dir: Optional[str] = None
    resume: Optional[str] = None
    monitor: Optional[str] = None
    mode: Optional[str] = None  # with monitor; None means "min"
    logger: str = "auto"
    out: str = "lightning_run"
    timeout: Optional[float] = None
    check: bool = False
    progress: str = "live"
    export: Optional[str] = None
    num_nodes: int = 1
    background: bool = False
    no_wait: bool = False
    detach: bool = False

    def trainer_kwargs(self) -> dict[str, Any]:
        """Exactly the Trainer arguments the flags gave (the hardware: ``hardware_given``)."""
        return {n: getattr(self, n) for n in TRAINER_ARGUMENTS if getattr(self, n) is not None}

    def hardware_given(self) -> dict[str, str]:
        """The given ones of --accelerator, --devices, --strategy and --precision, normalized
        (accelerator 'cuda' is 'gpu', precision '32' is '32-true')."""
        return {n: getattr(self, n) for n in HARDWARE if getattr(self, n) is not None}


def declare(func: Callable) -> Callable:
    """Attach every ``%%lightning_train`` flag to ``func`` (IPython magic_arguments)."""
    decorators = [
        magic_arguments(),
        argument("--devices", metavar="SPEC",
                 help="Which devices to train on: 'auto' (every GPU NVML sees, else one CPU "
                      "process), 'cpu', a count N, a list of GPU indices '0,1', or 'gpu:0,gpu:1'. "
                      "With --accelerator cpu, N is the number of CPU processes (at most "
                      f"{check.CPU_PROCESSES_PER_CORE} per core)."),
        argument("--accelerator", metavar="{auto,cpu,gpu}",
                 help="'auto' (GPU when one is selected, else CPU), 'cpu' or 'gpu'."),
        argument("--precision", metavar="{32,16-mixed,bf16-mixed,16-true,bf16-true,64}",
                 help="Trainer precision, checked against the hardware before anything runs."),
        argument("--strategy",
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
                      "HH:MM:SS, or seconds; at most 365 days."),
        argument("--limit-train-batches", metavar="N|F",
                 help="Batches per epoch: a count (10) or a fraction (0.25)."),
        argument("--limit-val-batches", metavar="N|F",
                 help="Validation batches: a count (10) or a fraction (0.25)."),
        argument("--limit-test-batches", metavar="N|F",
                 help="Test batches: a count (10) or a fraction (0.25)."),
        argument("--limit-predict-batches", metavar="N|F",
                 help="Prediction batches: a count (10) or a fraction (0.25)."),
        argument("--overfit-batches", metavar="N|F",
                 help="Train and validate on the same N batches (or fraction F) to check that "
                      "the model can overfit them."),
        argument("--val-check-interval", metavar="N|F",
                 help="Validate every N training batches, or every fraction F of an epoch."),
        argument("--check-val-every-n-epoch", metavar="N", help="Validate every N epochs."),
        argument("--num-sanity-val-steps", metavar="N",
                 help="Validation batches to run before training (-1: all)."),
        argument("--log-every-n-steps", metavar="N", help="Log metrics every N training steps."),
        argument("--gradient-clip-val", metavar="X", help="Clip gradients at this value."),
        argument("--gradient-clip-algorithm", metavar="{norm,value}",
                 help="Clip the gradients' norm (default) or each value."),
        argument("--accumulate-grad-batches", metavar="N",
                 help="Accumulate gradients over N batches per optimizer step."),
        argument("--deterministic", action="store_true", default=None,
                 help="Use deterministic algorithms (Trainer deterministic=True)."),
        argument("--benchmark", action="store_true", default=None,
                 help="Enable cudnn.benchmark."),
        argument("--no-inference-mode", dest="inference_mode", action="store_false",
                 default=None, help="Validate and predict under torch.no_grad instead of "
                                    "torch.inference_mode (Trainer inference_mode=False)."),
        argument("--no-distributed-sampler", dest="use_distributed_sampler",
                 action="store_false", default=None,
                 help="Keep the DataLoaders' own samplers (use_distributed_sampler=False)."),
        argument("--profiler", metavar="{simple,advanced,pytorch}",
                 help="Profile the run with one of Lightning's profilers."),
        argument("--detect-anomaly", action="store_true", default=None,
                 help="Turn on torch.autograd's anomaly detection."),
        argument("--barebones", action="store_true", default=None,
                 help="Lightning's minimal-overhead mode (no logging, no Lightning checkpoints)."),
        argument("--sync-batchnorm", action="store_true", default=None,
                 help="Synchronize batch norm statistics across the processes."),
        argument("--reload-dataloaders-every-n-epochs", metavar="N",
                 help="Make the DataLoaders again every N epochs (0: never)."),
        argument("--fast-dev-run", nargs="?", const="1", default=None, metavar="N",
                 help="Run N batches (default 1) of train and validation as a smoke test."),
        argument("--seed", metavar="N", help="seed_everything(N) in every rank."),
        argument("--ckpt-dir", metavar="DIR",
                 help="The run's folder (the Trainer's default_root_dir): checkpoints, last.ckpt, "
                      "default logs. Default: Lightning's placement for a cell with a logger or "
                      "default_root_dir, else a new folder under lightning_runs/."),
        argument("--resume", metavar="{last,PATH}",
                 help="Continue from the last checkpoint of --ckpt-dir ('last') or from PATH, "
                      "optimizer state included."),
        argument("--monitor", metavar="METRIC",
                 help="The logged metric the default checkpoint watches (best_model_path)."),
        argument("--mode", metavar="{min,max}",
                 help="With --monitor: whether lower (min, the default) or higher is better."),
        argument("--logger", default="auto", metavar="{auto,csv,tensorboard,none}",
                 help="'auto': the cell's logger, else TensorBoard when installed, else CSV."),
        argument("--out", default="lightning_run", metavar="NAME",
                 help="Variable that receives the TrainingRun (default: lightning_run)."),
        argument("--timeout", metavar="SECONDS",
                 help="End the run when a rank makes no progress for this long; a --detach run "
                      "also once it has run this long in all (stopped as by the stop button, "
                      "its checkpoint saved). Trainer(max_time=...) is Lightning's own bound."),
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
        argument("--background", action="store_true", help="Return at once with a BackgroundRun "
                 "per Trainer call (wait, stop); results reach the model between cells."),
        argument("--no-wait", action="store_true", help="With --background: refuse, not wait, "
                 "when a running run holds the GPUs, Trainer or model this one needs."),
        argument("--detach", action="store_true", help="With --background: the run survives a "
                 "kernel restart; a new kernel finds it (%%lightning_runs), attaches, waits and "
                 "loads its weights (run.load_into(model))."),
    ]
    for decorate in reversed(decorators):
        func = decorate(func)
    return func


def parse(line: str, magic_func: Callable, also: Sequence[str] = ()) -> TrainFlags:
    """Parse and validate the flags of a ``%%lightning_train`` line (quotes as in a shell);
    ``also``: the flags of a magic that hands it the rest of its line, named in suggestions."""
    try:
        parser = magic_func.parser
        parser.allow_abbrev = False  # --max-epoch is a typo to name, not --max-epochs
        try:
            args, extras = parser.parse_known_args(check.split_line(line))
        except UsageError as exc:
            text = check.no_value_given(str(exc))
            raise UsageError(text if text.startswith("%%lightning_train")
                             else f"%%lightning_train: {text}") from None
        if extras:
            declared = [o for a in parser._actions for o in a.option_strings]
            raise check.unknown_words(extras, [*declared, *also])
        return from_namespace(vars(args))
    except UsageError as exc:
        raise UsageError(check.one_line(str(exc))) from None


def from_namespace(raw: dict[str, Any]) -> TrainFlags:
    raw = {name: raw.get(name, default) for name, default in _DEFAULTS.items()}
    check.refuse_empty(raw)
    precision, accelerator = raw["precision"], raw["accelerator"]
    if precision is not None:
        precision = check.choice("--precision", str(precision), PRECISION_CHOICES,
                                 shown=PRECISION_CHOICES[:-2])
        precision = canonical_precision(precision)
    if accelerator is not None:
        accelerator = canonical_accelerator(check.choice("--accelerator", accelerator,
                                                         ACCELERATORS))
    integer, fraction, real = check.integer, check.count_or_fraction, check.real

    def given(name: str) -> Optional[str]:  # empty values were refused above
        return None if raw[name] is None else str(raw[name]).strip()

    values: dict[str, Any] = dict(
        devices=check.devices("--devices", raw["devices"], accelerator),
        accelerator=accelerator, precision=precision,
        strategy=given("strategy"),
        model=check.identifier("--model", raw["model"]),
        data=check.identifier("--data", raw["data"]),
        val_data=check.identifier("--val-data", raw["val_data"]),
        max_epochs=integer("--max-epochs", raw["max_epochs"], minimum=-1),
        min_epochs=integer("--min-epochs", raw["min_epochs"], minimum=0),
        max_steps=integer("--max-steps", raw["max_steps"], minimum=-1),
        min_steps=integer("--min-steps", raw["min_steps"], minimum=0),
        max_time=check.duration("--max-time", raw["max_time"]),
        limit_train_batches=fraction("--limit-train-batches", raw["limit_train_batches"]),
        limit_val_batches=fraction("--limit-val-batches", raw["limit_val_batches"]),
        limit_test_batches=fraction("--limit-test-batches", raw["limit_test_batches"]),
        limit_predict_batches=fraction("--limit-predict-batches", raw["limit_predict_batches"]),
        overfit_batches=fraction("--overfit-batches", raw["overfit_batches"]),
        val_check_interval=fraction("--val-check-interval", raw["val_check_interval"],
                                    allow_zero=False),
        check_val_every_n_epoch=integer("--check-val-every-n-epoch",
                                        raw["check_val_every_n_epoch"], minimum=1),
        num_sanity_val_steps=integer("--num-sanity-val-steps", raw["num_sanity_val_steps"],
                                     minimum=-1),
        log_every_n_steps=integer("--log-every-n-steps", raw["log_every_n_steps"], minimum=1),
        gradient_clip_val=real("--gradient-clip-val", raw["gradient_clip_val"], minimum=0.0),
        gradient_clip_algorithm=check.optional_choice(
            "--gradient-clip-algorithm", raw["gradient_clip_algorithm"], CLIP_ALGORITHMS),
        accumulate_grad_batches=integer("--accumulate-grad-batches",
                                        raw["accumulate_grad_batches"], minimum=1),
        profiler=check.optional_choice("--profiler", raw["profiler"], PROFILERS),
        **{name: raw[name] for name in ("deterministic", "benchmark", "inference_mode",
                                        "use_distributed_sampler", "detect_anomaly",
                                        "barebones", "sync_batchnorm", "background", "no_wait",
                                        "detach")},
        reload_dataloaders_every_n_epochs=integer("--reload-dataloaders-every-n-epochs",
                                                  raw["reload_dataloaders_every_n_epochs"],
                                                  minimum=0),
        fast_dev_run=check.fast_dev_run(raw["fast_dev_run"]),
        seed=integer("--seed", raw["seed"], minimum=0, maximum=2**32 - 1),
        ckpt_dir=check.directory("--ckpt-dir", raw["ckpt_dir"]),
        resume=given("resume"),
        monitor=given("monitor"),
        mode=check.optional_choice("--mode", raw["mode"], MODES),
        logger=check.choice("--logger", raw["logger"], LOGGERS),
        out=check.out_name("--out", raw["out"]),
        timeout=real("--timeout", raw["timeout"], minimum=0.0, exclusive=True,
                     maximum=check.MAX_DURATION_S),
        check=bool(raw["check"]),
        progress=check.choice("--progress", raw["progress"], PROGRESS_MODES),
        export=check.output_file("--export", raw["export"]),
        num_nodes=integer("--num-nodes", raw["num_nodes"], minimum=1) or 1,
    )
    check_together(values)
    return TrainFlags(**values)


_DEFAULTS = {f.name: f.default for f in fields(TrainFlags)}
_DEFAULTS["num_nodes"] = None
