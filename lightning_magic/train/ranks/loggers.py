"""Loggers across the launches of one Trainer. In one process, a Trainer's CSVLogger keeps one
writer for fit, validate and test; each launch here starts in fresh ranks, and a fresh writer
would delete the metrics file of the launches before. ``continue_logs`` (in rank 0, before a
later launch) makes the writer continue that file instead."""

from __future__ import annotations

import csv
import os
from typing import Any


def continue_logs(trainer: Any) -> list[str]:
    """Resume each CSV logger's metrics file; return the warnings this causes (not the user's)."""
    caused = []
    for logger in trainer.loggers:
        if type(logger).__name__ != "CSVLogger" or getattr(logger, "_experiment", None):
            continue
        path = os.path.join(logger.log_dir, "metrics.csv")
        if not os.path.isfile(path):
            continue
        kept = f"{path}.kept"
        os.replace(path, kept)
        try:
            writer = logger.experiment  # a new writer finds no metrics file to delete
        finally:
            os.replace(kept, path)
        with open(path, newline="") as handle:
            writer.metrics_keys = next(csv.reader(handle), [])
        caused.append(f"Experiment logs directory {logger.log_dir} exists and is not empty. "
                      "Previous log files in this directory will be deleted when the new ones "
                      "are saved!")
    return caused
