"""Checkpoints a rank could not read: ``torch.load(weights_only=True)`` (Lightning's default for
``ckpt_path`` since torch 2.6) refusing an object in the file that is not a tensor or a plain
type, such as the NumPy number a learning-rate scheduler computed with ``np.cos``."""

from __future__ import annotations

from .clues import Clues
from .report import Report

# torch names the object it refused: "Unsupported global: GLOBAL numpy._core.multiarray.scalar
# was not an allowed global by default", or "Unsupported operand 149" for what is no global.
_GLOBAL = r"Unsupported global: GLOBAL ([\w.]+)"
_UNPICKLER = r"WeightsUnpickler error: ([^\n]+)"


def weights_only_refused(c: Clues) -> Report | None:
    if not c.has("Weights only load failed"):
        return None
    named = c.search(_GLOBAL)
    what = (f"{c.who} could not read a checkpoint: `torch.load(weights_only=True)`, which "
            "Lightning uses for `ckpt_path`, raised UnpicklingError (Weights only load failed)."
            + (f"\nRaised at {c.where}." if c.where else ""))
    if named:
        what += (f"\nThe checkpoint holds a `{named.group(1)}`, which is neither a tensor nor a "
                 "plain Python value, so torch does not load it without being told the file is "
                 "trusted.")
        if named.group(1).startswith("numpy"):
            what += (" A NumPy number is usually a value computed with NumPy and stored in the "
                     "optimizer, a scheduler or a callback (a learning rate from `np.cos`).")
    else:
        detail = c.search(_UNPICKLER)
        what += f"\ntorch says: {detail.group(1).strip()}" if detail else ""
    steps = ["If you trust the file (this notebook wrote it), load it as Lightning allows: pass "
             "`weights_only=False` to the call that reads it, e.g. `trainer.fit(model, ..., "
             "ckpt_path=..., weights_only=False)` (with `--resume last` too)."]
    if named:
        module = named.group(1).split(".")[0]
        steps.append(f"Or allow only that type, in the cell before the call, as torch's message "
                     f"says: `import {module}, torch; torch.serialization.add_safe_globals("
                     f"[{named.group(1)}])` (torch may then name another type to allow).")
        steps.append("Or keep it out of later checkpoints: store a Python `float(...)` where the "
                     "value is computed.")
    return Report("weights_only", f"Checkpoint not loaded{c.on_rank}", what, steps,
                  c.failure.traceback)


RULES = (weights_only_refused,)
