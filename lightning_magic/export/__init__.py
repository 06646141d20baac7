"""A ``%%lightning_train`` cell, and the cells it depends on, as a standalone script and a SLURM
batch file.

The rule of this folder: it reads code, it never runs it. The cell is not executed; which object
is the model and which the data is read from its code (``roles``; a class the cell imports from
its module's source, ``imported``), which earlier cells it needs
from the names they bind and use (``lightning_magic.source.names``, ``sources``; the
rules in ``lightning_magic.source.choosing``), and the files are written from
``templates``. ``job.export_cell`` is the entry point. Nothing here imports torch or Lightning.
"""

from .job import ExportedJob, export_cell

__all__ = ["ExportedJob", "export_cell"]
