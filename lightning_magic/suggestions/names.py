"""A name that is not defined: "Did you mean: 'model'?", as Python 3.12 says it.

Python 3.10 and 3.11 print the hint only from their own excepthook, which neither IPython nor a
rank's report goes through; from 3.12 the ``traceback`` module gives it too. ``note_did_you_mean``
adds it to the exception as a note (PEP 678: IPython and ``traceback`` show notes) where the
exception's own formatting does not have it already. ``name_error`` is the rule for a rank's
report.
"""

from __future__ import annotations

import re
import traceback
from typing import Optional

from .clues import Clues
from .report import Report

_HINT = re.compile(r"Did you mean: '([^']+)'\?")
_MOST_CANDIDATES = 5000  # a namespace this large is not worth scanning on the error path
_LONGEST_NAME = 40
_CASE_COST, _EDIT_COST = 1, 2  # a change of case only is half a typo


def _distance(wrong: str, name: str, most: int) -> int:
    """Edit distance from ``wrong`` to ``name`` (a change of case costs less than other edits);
    anything over ``most`` is reported as ``most + 1``."""
    previous = [i * _EDIT_COST for i in range(len(name) + 1)]
    for i, letter in enumerate(wrong, 1):
        current = [i * _EDIT_COST]
        for j, other in enumerate(name, 1):
            change = 0 if letter == other else (
                _CASE_COST if letter.lower() == other.lower() else _EDIT_COST)
            current.append(min(previous[j] + _EDIT_COST, current[j - 1] + _EDIT_COST,
                               previous[j - 1] + change))
        if min(current) > most:
            return most + 1
        previous = current
    return previous[-1]


def closest_name(wrong: str, names: list[str]) -> Optional[str]:
    """The name in ``names`` that ``wrong`` most likely misspells, or None where none is close:
    at most about a third of the two names' letters may differ."""
    if len(wrong) > _LONGEST_NAME or len(names) > _MOST_CANDIDATES:
        return None
    best, best_distance = None, None
    for name in dict.fromkeys(names):
        if name == wrong or not isinstance(name, str):
            continue
        most = (len(name) + len(wrong) + 3) * _EDIT_COST // 6
        if best_distance is not None:
            most = min(most, best_distance - 1)
        distance = _distance(wrong, name, most)
        if distance <= most:
            best, best_distance = name, distance
    return best


def did_you_mean(error: BaseException) -> Optional[str]:
    """"Did you mean: 'model'?" for a ``NameError``, from the names its innermost frame sees."""
    wrong = getattr(error, "name", None)
    tb = error.__traceback__
    if not isinstance(error, NameError) or not isinstance(wrong, str) or tb is None:
        return None
    while tb.tb_next is not None:
        tb = tb.tb_next
    frame = tb.tb_frame
    names = [*frame.f_locals, *frame.f_globals, *frame.f_builtins]
    close = closest_name(wrong, names)
    return f"Did you mean: {close!r}?" if close else None


def note_did_you_mean(error: BaseException) -> None:
    """Add the hint to ``error`` as a note, where the formatted exception lacks it."""
    try:
        hint = did_you_mean(error)
        if hint is None or any(hint in str(note) for note in getattr(error, "__notes__", ())):
            return
        if hint in "".join(traceback.format_exception_only(type(error), error)):
            return  # Python 3.12 and later say it themselves
        error.add_note(hint)
    except Exception:  # noqa: BLE001 - the error itself matters more than the hint
        return


def name_error(c: Clues) -> Report | None:
    """A NameError in a rank: the name, the line, and the name it most likely misspells."""
    if not c.is_exception("NameError"):
        return None
    hint = _HINT.search(c.failure.traceback or "")
    wrong = re.search(r"name '([^']+)' is not defined", c.failure.message or "")
    headline = c.headline + (f". {hint.group(0)}" if hint else "")
    steps = []
    at = f" at {c.place}" if c.place else ""
    if hint and wrong:
        steps.append(f"Write `{hint.group(1)}` instead of `{wrong.group(1)}`{at}.")
    elif wrong:
        steps.append(f"Define `{wrong.group(1)}` before it is used{at} (run the cell that "
                     "defines it first), or check its spelling.")
    steps.append(f"The full traceback of the rank is in `{c.result_name}.traceback`.")
    return Report("name_error", f"NameError{c.on_rank}", c.raised(headline), steps,
                  c.failure.traceback)
