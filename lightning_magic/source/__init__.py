"""A cell's code as the notebook shows it and as Python reads it.

The rule of this folder: it reads source text, never runs it and imports neither torch nor
Lightning, so that training (which sees the objects a cell made) and ``--export`` (which sees
only its code) apply the same rules with the same messages.

- ``editor``: the cell's ``In [N]`` and line numbers as the editor shows them, and the cell
  compiled so that tracebacks point there.
- ``names``: what a cell reads from the namespace and what it binds there.
- ``choosing``: which model and which data a cell trains.
"""
