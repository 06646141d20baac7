"""How runs and readings look: the live view of a run, its summary and charts, ``%gpu_status``.

The rule of this folder: it renders what it is given. Nothing here reads the machine (NVML,
psutil, run files), starts a process or imports torch; the callers hand it the events, the
``TrainingRun`` or the reading to show.

- ``live``: the view a run updates in place while it trains (HTML in a notebook, a line in a
  terminal); ``progress``: what its events said so far, and the points its live chart draws.
- ``origin``: the cell a view's outputs belong to, whichever thread or cell sends them.
- ``render``: the run's summary (the run's own rows) and the text forms.
- ``charts``: a run's metrics as SVG, one fixed-size chart per metric; ``ticks``: round axis
  numbers and their labels.
- ``gpu_status``: one reading of the machine, for ``%gpu_status``.
"""
