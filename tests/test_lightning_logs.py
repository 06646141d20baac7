"""The kernel's Lightning loggers are as they were after the magic builds a Trainer: a later plain
Lightning cell prints its info lines ("GPU available", "`Trainer.fit` stopped") as before."""

from __future__ import annotations

import logging

from lightning_magic.train.ranks.rank import quiet_lightning_logs, restore_logs


def test_every_lightning_logger_gets_its_own_level_back():
    import lightning.pytorch  # noqa: F401 - sets its loggers' levels, as a notebook's import does

    names = ["lightning.pytorch", "lightning.fabric", "lightning.pytorch.utilities.rank_zero"]
    before = {name: logging.getLogger(name).level for name in names}
    assert logging.getLogger("lightning.pytorch").level == logging.INFO  # Lightning's own
    previous = quiet_lightning_logs()
    assert logging.getLogger("lightning.pytorch").getEffectiveLevel() == logging.WARNING
    restore_logs(previous)
    assert {name: logging.getLogger(name).level for name in names} == before
