"""Mistakes in how the LightningModule is put together: missing, misspelled or removed hooks; precision."""

from __future__ import annotations

import difflib

from .clues import PRECISION_FLAG, Clues
from .report import DOING, Report

HOOKS = (
    "training_step", "validation_step", "test_step", "predict_step", "configure_optimizers",
    "train_dataloader", "val_dataloader", "test_dataloader", "predict_dataloader", "forward",
    "setup", "teardown", "prepare_data", "configure_model", "configure_callbacks", "configure_gradient_clipping",
    "on_fit_start", "on_fit_end", "on_train_start", "on_train_end", "on_train_epoch_start", "on_train_epoch_end",
    "on_train_batch_start", "on_train_batch_end", "on_validation_start", "on_validation_end",
    "on_validation_epoch_start", "on_validation_epoch_end", "on_validation_batch_start", "on_validation_batch_end",
    "on_test_epoch_start", "on_test_epoch_end", "on_before_backward", "on_after_backward",
    "on_before_optimizer_step", "on_before_zero_grad", "on_save_checkpoint", "on_load_checkpoint",
    "lr_scheduler_step", "optimizer_step", "optimizer_zero_grad", "transfer_batch_to_device",
    "on_before_batch_transfer", "on_after_batch_transfer",
)

_TEMPLATES = {
    "training_step": "Add `def training_step(self, batch, batch_idx):` to the class; it returns the loss tensor.",
    "configure_optimizers": (
        "Add `def configure_optimizers(self): return torch.optim.AdamW(self.parameters(), lr=1e-3)` to the class."
    ),
    "train_dataloader": (
        "Add `def train_dataloader(self): return DataLoader(dataset, batch_size=..., shuffle=True)` to the "
        "class, or train with a LightningDataModule that defines it."
    ),
    "validation_step": "Add `def validation_step(self, batch, batch_idx):` to the class.",
    "test_step": "Add `def test_step(self, batch, batch_idx):` to the class.",
}
# what each Trainer call needs of the module
_NEEDS = {
    "fit": "`Trainer.fit` needs at least `training_step()`, `configure_optimizers()` and training "
           "data (`train_dataloader()` or a DataModule).",
    "validate": "`Trainer.validate` needs `validation_step()` and validation data "
                "(`val_dataloader()`, a DataModule, or `dataloaders=`).",
    "test": "`Trainer.test` needs `test_step()` and test data (`test_dataloader()`, a DataModule, "
            "or `dataloaders=`).",
    "predict": "`Trainer.predict` needs `predict_step()` (by default it calls `forward()`) and "
               "data (`predict_dataloader()`, a DataModule, or `dataloaders=`).",
}
_PRECISIONS = "`32` (the default), `16-mixed`, `bf16-mixed`, `16-true`, `bf16-true`, `64`"


def _misspelling(c: Clues, hook: str) -> str | None:
    methods = c.value("module_methods")
    if not isinstance(methods, (list, tuple, set, frozenset)):
        return None
    candidates = [m for m in methods if isinstance(m, str) and m not in HOOKS and not m.startswith("__")]
    close = difflib.get_close_matches(hook, candidates, n=1, cutoff=0.75)
    return close[0] if close else None


def missing_hook(c: Clues) -> Report | None:
    found = (c.search(r"No `(\w+)\(\)` method defined")
             or c.search(r"`(\w+)` must be implemented to be used with the Lightning Trainer")
             or c.search(r"`Trainer\.predict` requires `(forward)` method"))
    if not found:
        return None
    hook = found.group(1)
    typo = _misspelling(c, hook)
    module = c.value("module_class")
    owner = f"`{module}`" if module else "your LightningModule"
    stage = c.value("stage") if c.value("stage") in _NEEDS else "fit"
    doing = DOING[stage].lower()
    what = f"{c.who} stopped before {doing}: Lightning found no `{hook}()` on {owner}."
    if typo:
        what += f" It defines `{typo}`, which looks like a misspelling of `{hook}`."
    what += f"\n{_NEEDS[stage]}\n{c.raised()}"
    if typo:
        steps = [f"Rename `{typo}` to `{hook}`."]
        title = f"`{typo}` looks like a misspelled `{hook}`"
    else:
        steps = [_TEMPLATES.get(hook, f"Define `{hook}()` on {owner}.")]
        title = f"Missing `{hook}()` in your LightningModule"
    steps.append("Check that it is indented inside the `class ...(LightningModule):` block: a `def` at the "
                 "cell's top level is a plain function, not a method.")
    return Report("missing_hook", title, what, steps, c.failure.traceback)


_REPLACEMENTS = {
    "training_epoch_end": ("on_train_epoch_end", "training_step"),
    "validation_epoch_end": ("on_validation_epoch_end", "validation_step"),
    "test_epoch_end": ("on_test_epoch_end", "test_step"),
}
_ALIASES = {
    "fp16": "16-mixed", "float16": "16-mixed", "half": "16-mixed", "amp": "16-mixed", "mixed": "16-mixed",
    "bfloat16": "bf16-mixed", "bf16mixed": "bf16-mixed", "fp32": "32", "float32": "32",
    "full": "32", "fp64": "64", "float64": "64", "double": "64",
}


def bad_step_output(c: Clues) -> Report | None:
    if not c.has("the 'loss' key needs to be present", "`training_step` must return a Tensor, a dict, or None"):
        return None
    what = (c.raised() + "\nLightning needs the loss from `training_step` to run the backward pass and the "
            "optimizer step.")
    steps = [
        "End `training_step` with `return loss` (a tensor), or `return {\"loss\": loss, ...}` to pass other "
        "values along; `return None` skips the batch.",
        "Log other values with `self.log(\"name\", value)` instead of returning them.",
    ]
    if c.place:
        steps.insert(0, f"Look at the `return` of `training_step` (the run failed at {c.place}).")
    return Report("bad_step_output", f"`training_step` did not return a loss{c.on_rank}", what, steps,
                  c.failure.traceback)


def removed_hook(c: Clues) -> Report | None:
    found = c.search(r"Support for `(\w+)` has been removed in v2\.0\.0")
    if not found:
        return None
    old = found.group(1)
    new, step = _REPLACEMENTS.get(old, (f"on_{old}", "the step"))
    what = (f"{c.who} stopped: your LightningModule defines `{old}`, a hook that Lightning 2 no longer calls.\n"
            f"{c.raised()}")
    steps = [
        f"Rename `{old}` to `{new}`; it takes no `outputs` argument.",
        f"Collect what you need yourself: append to a list such as `self.step_outputs` in `{step}`, use it "
        f"in `{new}`, then clear it.",
    ]
    return Report("removed_hook", f"`{old}` was removed in Lightning 2", what, steps, c.failure.traceback)


def precision(c: Clues) -> Report | None:
    invalid = c.search(r"Precision '?([^'\s]+?)'? is invalid")
    unsupported = c.search(r"precision=['\"]?([\w-]+)['\"]?\)?`? (?:but .* )?is not supported")
    no_bf16 = c.search(r"bf16[^\n]*not supported|does not support bf16|bfloat16[^\n]*not supported")
    if not (invalid or unsupported or no_bf16):
        return None
    found = invalid or unsupported
    value = found.group(1) if found else c.precision
    what = c.raised() + "\n" + (f"The precision `{value}` cannot be used here." if value else
                                 "This precision cannot be used here.")
    on_cpu = str(c.value("accelerator") or "").lower() == "cpu" or c.has("not supported on CPU")
    steps = []
    if invalid and value:
        alias = _ALIASES.get(value.lower())
        if alias == "16-mixed" and on_cpu:
            steps.append(f"`{value}` is not a precision name Lightning knows. On CPU, 16-bit mixed precision "
                         f"is bfloat16: use `{PRECISION_FLAG} bf16-mixed`.")
        elif alias:
            steps.append(f"`{value}` is not a precision name Lightning knows; you probably mean "
                         f"`{PRECISION_FLAG} {alias}`.")
    elif on_cpu:
        steps.append(f"On CPU use `{PRECISION_FLAG} bf16-mixed` or `{PRECISION_FLAG} 32`.")
    elif no_bf16:
        steps.append(f"This GPU does not support bfloat16 (it needs Ampere or newer): use `{PRECISION_FLAG} 16-mixed`.")
    steps.append(f"Pass one of {_PRECISIONS} with `{PRECISION_FLAG}`.")
    title = f"Unsupported precision {value!r}" if value else "Unsupported precision"
    return Report("precision", title, what, steps, c.failure.traceback)


RULES = (missing_hook, bad_step_output, removed_hook, precision)
