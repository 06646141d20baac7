"""The words of a flag line: read as a POSIX shell reads them, and named in an error when no
parser took them (with the nearest declared flag) or when a flag that takes no value got one."""

from __future__ import annotations

import difflib
import re
import shlex
from typing import Iterable, Optional

from IPython.core.error import UsageError

NUMBER = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def one_line(message: str) -> str:
    """``message`` with every character that could start a new line written as an escape."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in message)


def split_line(line: str) -> list[str]:
    """The words of the flag line, quotes and escapes read as a POSIX shell reads them."""
    lexer = shlex.shlex(line, posix=True)
    lexer.whitespace_split, lexer.commenters = True, ""
    words: list[str] = []
    try:
        words.extend(lexer)
    except ValueError as error:
        flag = next((w for w in reversed(words) if w.startswith("--")), None)
        where = f"the value of {flag}" if flag else "the flag line"
        raise UsageError(
            f"%%lightning_train: cannot read {where} in {line.strip()!r}: {error}. Close the "
            "quote, or escape it with a backslash; for example --ckpt-dir \"my runs\"."
        ) from None
    return words


_NO_VALUE = re.compile(r"argument (--[\w-]+): ignored explicit argument (.*)$")


def no_value_given(message: str) -> str:
    """argparse's words for a value given to a flag that takes none (``--background=yes``),
    said as what to write instead."""
    found = _NO_VALUE.search(message)
    if found is None:
        return message
    flag = found.group(1)
    return (message[:found.start()] + f"{flag} takes no value (it was given "
            f"{found.group(2)}): write {flag} alone.")


def unknown_words(extras: list[str], declared: Iterable[str]) -> UsageError:
    """The error for words the parser did not take, with the nearest declared flag."""
    declared = list(declared)
    shown = " ".join(repr(w) if not w or not w.isprintable() or " " in w else w for w in extras)
    flags_given = [w.split("=", 1)[0] for w in extras if w.startswith("-") and len(w) > 1
                   and not NUMBER.fullmatch(w)]
    for given in flags_given:
        near = _nearest(given, declared)
        if near:
            return UsageError(f"%%lightning_train: unrecognized arguments: {shown}; did you mean "
                              f"{near}? (%%lightning_train? lists every flag)")
    hint = ("%%lightning_train? lists every flag (for example --max-epochs N)" if flags_given
            else "the line takes only flags and their values (for example --max-epochs 3); "
                 "the code goes in the cell below it")
    return UsageError(f"%%lightning_train: unrecognized arguments: {shown}; {hint}.")


def _nearest(given: str, declared: list[str]) -> Optional[str]:
    score, _, name = max((difflib.SequenceMatcher(None, given, n).ratio(), -i, n)
                         for i, n in enumerate(declared))
    return name if score >= 0.6 else None
