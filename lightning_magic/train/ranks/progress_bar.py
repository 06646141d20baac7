"""Lightning's progress bar (``--progress bar``) in a notebook: one line, updated in place.

Lightning's ``TQDMProgressBar`` draws its validation bar one line below the training bar: each
update moves the cursor down a line (``\\n``), draws, and moves back up (``\\x1b[A``). A terminal
shows two bars; a notebook's output keeps ``\\r`` (back to the start of the line) but cannot move
up, so every update of the validation bar became a line of its own. Here the validation bar of a
fit draws on the training bar's line while it runs and clears that line when it ends; the
training bar then draws itself again, with the validation metrics, as in a terminal. Where
Lightning draws widgets instead (``tqdm.notebook``, with ipywidgets installed) its bar is kept.
"""

from __future__ import annotations

import sys
from importlib import import_module
from types import ModuleType
from typing import Any, Optional

_CLASSES: dict[str, type] = {}


def one_line_bar(space: ModuleType) -> Optional[Any]:
    """A ``TQDMProgressBar`` of ``space`` whose fit draws one line, or None where Lightning's
    bar is not text (widgets need no help)."""
    module = import_module(f"{space.__name__}.callbacks.progress.tqdm_progress")
    if any(cls.__module__.startswith("tqdm.notebook") for cls in module.Tqdm.__mro__):
        return None
    if space.__name__ not in _CLASSES:
        _CLASSES[space.__name__] = type(
            "TQDMProgressBar", (space.callbacks.TQDMProgressBar,),
            {"init_validation_tqdm": _validation_bar(module.Tqdm), "__module__": __name__,
             "__doc__": "Lightning's TQDMProgressBar, its validation bar on the training bar's "
                        "line (see lightning_magic.train.progress_bar)."})
    return _CLASSES[space.__name__]()


def _validation_bar(tqdm_class: type) -> Any:
    def init_validation_tqdm(self: Any) -> Any:
        alone = self.trainer.state.fn == "validate"  # trainer.validate: no training bar
        return tqdm_class(desc=self.validation_description, position=2 * self.process_position,
                          disable=self.is_disabled, leave=alone, dynamic_ncols=True,
                          file=sys.stdout, bar_format=self.BAR_FORMAT)

    return init_validation_tqdm
