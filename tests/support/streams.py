"""A cell's stream output as the user sees it: in JupyterLab, and in a terminal.

``jupyterlab_lines`` follows JupyterLab 4's output model (``OutputAreaModel``: consecutive
outputs of one stream are joined, and ``processText`` keeps ``\\r`` and ``\\b`` in place while
``\\n`` always starts a line at the end; the renderer then drops escape sequences it does not
colour with, such as tqdm's cursor-up ``\\x1b[A``). ``terminal_lines`` is a terminal: ``\\n`` moves
down a row, ``\\x1b[A`` up one, ``\\r`` to the row's start, and text overwrites what is there.
Both give the lines left on screen that are not blank.
"""

from __future__ import annotations

import re

ESCAPE = re.compile(r"\x1b\[[0-9;?]*[@-~]")
CONTROL = re.compile(r"[\n\b\r]")


def process_text(index: int, text: str, previous: str = "") -> tuple[str, int]:
    """JupyterLab's ``processText``: ``previous`` with ``text`` written at ``index``."""
    position, start = index, 0
    while True:
        found = CONTROL.search(text, start)
        end = found.start() if found else len(text)
        chunk = text[start:end]
        previous = previous[:position] + chunk + previous[position + len(chunk):]
        position += len(chunk)
        if found is None:
            return previous, position
        start = end + 1
        char = text[end]
        if char == "\b":
            if position > 0 and previous[position - 1] != "\n":
                previous = previous[:position - 1] + previous[position + 1:]
                position -= 1
        elif char == "\r":
            while position > 0 and previous[position - 1] != "\n":
                position -= 1
        else:
            previous += "\n"
            position = len(previous)


def jupyterlab_lines(outputs: list[dict], name: str = "stdout") -> list[str]:
    """The visible lines of the ``name`` stream outputs among ``outputs`` (nbformat dicts)."""
    shown: list[str] = []
    current: str | None = None  # the stream output being extended
    index = 0
    for output in outputs:
        if output.get("output_type") == "stream" and output.get("name") == name:
            if current is None:
                current, index = process_text(0, output["text"])
            else:
                current, index = process_text(index, output["text"], current)
            continue
        if current is not None:  # any other output ends the stream output being joined
            shown.append(current)
            current = None
    if current is not None:
        shown.append(current)
    return [line for text in shown for line in ESCAPE.sub("", text).split("\n") if line.strip()]


def terminal_lines(text: str) -> list[str]:
    """The visible lines a terminal is left with after ``text``."""
    rows: list[str] = [""]
    row = column = 0
    for token in re.split(r"(\x1b\[[0-9;?]*[@-~]|[\n\r])", text):
        if not token:
            continue
        if token == "\n":
            row, column = row + 1, 0
            while len(rows) <= row:
                rows.append("")
        elif token == "\r":
            column = 0
        elif token == "\x1b[A":
            row = max(0, row - 1)
        elif token.startswith("\x1b["):
            continue
        else:
            line = rows[row].ljust(column)
            rows[row] = line[:column] + token + line[column + len(token):]
            column += len(token)
    return [line for line in rows if line.strip()]
