"""The names Lightning's Trainer gives accelerators and precisions, one spelling each: a flag and
a cell's own Trainer argument mean the same thing when they name the same hardware."""

from __future__ import annotations

PRECISION_ALIASES = {"32": "32-true", "64": "64-true", "16": "16-mixed", "bf16": "bf16-mixed"}


def canonical_precision(value: object) -> str:
    """Lightning's full name of a precision ('16' is '16-mixed')."""
    return PRECISION_ALIASES.get(str(value), str(value))


def canonical_accelerator(value: object) -> str:
    """'cuda' is 'gpu'."""
    text = str(value).strip().lower()
    return "gpu" if text == "cuda" else text
