"""Finding the user's own code in a traceback, and naming it the way a notebook user knows it."""

from __future__ import annotations

import os
import re
import sys
import sysconfig
import traceback
import types
from collections.abc import Iterable

# Code compiled from notebook cells: IPython names it '<ipython-input-3-9f1c...>', ipykernel
# writes it to '/tmp/ipykernel_123/456.py'.
_IPYTHON_INPUT = re.compile(r"^<ipython-input-(\d+)-[0-9a-f]+>$")
_IPYKERNEL_FILE = re.compile(r"[/\\]ipykernel_\d+[/\\][^/\\]+\.py$")
_FRAME_LINE = re.compile(r'^\s*File "(?P<file>.+)", line (?P<line>\d+)(?:, in (?P<name>.+))?$')
_LIBRARY_PACKAGES = ("torch", "lightning", "pytorch_lightning", "lightning_fabric", "lightning_utilities")
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # the lightning_magic package


def is_cell_filename(filename: str) -> bool:
    """Whether ``filename`` is code from a notebook cell."""
    return bool(_IPYTHON_INPUT.match(filename) or _IPYKERNEL_FILE.search(filename)) or (
        _execution_count(filename) is not None
    )


def _execution_count(filename: str) -> int | None:
    match = _IPYTHON_INPUT.match(filename)
    if match:
        return int(match.group(1))
    ipython = sys.modules.get("IPython")  # only look when IPython is already loaded
    shell = ipython.get_ipython() if ipython is not None else None
    filename_map = getattr(getattr(shell, "compile", None), "_filename_map", None)
    if isinstance(filename_map, dict):
        count = filename_map.get(filename)
        if isinstance(count, int):
            return count
    return None


def _library_dirs() -> tuple[str, ...]:
    dirs = {_OWN_DIR}
    for name in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(name)
        if path:
            dirs.add(os.path.realpath(path))
    for package in _LIBRARY_PACKAGES:
        module = sys.modules.get(package)
        location = getattr(module, "__file__", None)
        if location:
            dirs.add(os.path.dirname(os.path.realpath(location)))
    return tuple(sorted(dirs))


def is_library_filename(filename: str) -> bool:
    """Whether ``filename`` belongs to Python, an installed package, torch, Lightning or this package."""
    if is_cell_filename(filename):
        return False
    if filename.startswith("<"):
        return filename.startswith("<frozen")
    parts = re.split(r"[/\\]", filename)
    if "site-packages" in parts or "dist-packages" in parts:
        return True
    path = os.path.realpath(filename)
    return any(path == d or path.startswith(d + os.sep) for d in _library_dirs())


def user_frame_from_traceback(
    tb: types.TracebackType | Iterable[traceback.FrameSummary] | None,
) -> tuple[str, int, str] | None:
    """The deepest frame in the user's code: a notebook cell, or a file outside the libraries.

    Returns ``(filename, lineno, source line)``, or None when every frame is library code.
    """
    if tb is None:
        return None
    frames = traceback.extract_tb(tb) if isinstance(tb, types.TracebackType) else list(tb)
    for frame in reversed(frames):
        if not is_library_filename(frame.filename):
            return (frame.filename, frame.lineno or 0, (frame.line or "").strip())
    return None


def user_frame_from_text(text: str | None) -> tuple[str, int, str] | None:
    """Like ``user_frame_from_traceback``, for a traceback that is only available as text."""
    frames = user_frames_from_text(text)
    return frames[-1] if frames else None


def user_frames_from_text(text: str | None) -> list[tuple[str, int, str]]:
    """Every frame of the user's own code in a traceback's text, outermost first (the last one
    is where it raised; the one before it, the code that called it)."""
    if not text:
        return []
    lines = text.splitlines()
    found = []
    for index, line in enumerate(lines):
        match = _FRAME_LINE.match(line)
        if not match or is_library_filename(match.group("file")):
            continue
        source = ""
        if index + 1 < len(lines) and not _FRAME_LINE.match(lines[index + 1]):
            source = lines[index + 1].strip()
            if source.startswith(("Traceback (", "^")) or set(source) <= {"^", "~", " "}:
                source = ""
        found.append((match.group("file"), int(match.group("line")), source))
    return found


def calling_frames(text: str | None) -> list[tuple[str, int, str]]:
    """The user's frames of the exception that was raised last (a chained traceback's earlier
    exceptions left out), outermost first."""
    marker = "Traceback (most recent call last):"
    return user_frames_from_text(text[text.rindex(marker):] if text and marker in text else text)


def describe_frame(frame: tuple[str, int, str] | None, *, source: bool = True) -> str | None:
    """'cell In [4], line 12: `x = self.net(x)`', or the file and line for code outside a notebook."""
    if not frame:
        return None
    try:
        filename, lineno, line = frame
    except (TypeError, ValueError):
        return None
    count = _execution_count(str(filename))
    if count is not None:
        place = f"cell In [{count}], line {lineno}"
    elif is_cell_filename(str(filename)):
        place = f"your notebook cell, line {lineno}"
    else:
        place = f"{filename}, line {lineno}"
    line = str(line or "").strip() if source else ""
    if line and "`" not in line:
        return f"{place}: `{line}`"
    return f"{place}: {line}" if line else place


# faulthandler's dump: 'File "/tmp/ipykernel_1/2.py", line 3 in training_step'
_DUMP_LINE = re.compile(r'^(?P<indent>\s*)File "(?P<file>.+)", line (?P<line>\d+)(?: in (?P<name>.+))?$')


def rank_stack(stacks: str | None, rank: int | None) -> str | None:
    """One rank's part of the stacks text the launcher gathers (``--- rank N ---`` sections)."""
    if not stacks or rank is None:
        return None
    match = re.search(rf"^--- rank {rank} ---\n(.*?)(?=^--- rank \d+ ---$|\Z)", stacks, re.S | re.M)
    return match.group(1).strip() if match else None


def innermost_user_frame(stack: str | None) -> tuple[str, int, str, str] | None:
    """The innermost frame of the user's own code in a faulthandler dump (innermost first):
    ``(filename, lineno, source line, function)``, or None when every frame is library code."""
    import linecache

    for line in (stack or "").splitlines():
        match = _DUMP_LINE.match(line)
        if match and not is_library_filename(match.group("file")):
            filename, lineno = match.group("file"), int(match.group("line"))
            return filename, lineno, linecache.getline(filename, lineno).strip(), \
                match.group("name") or ""
    return None


def name_cells(stacks: str) -> str:
    """Stacks with each notebook cell's file named as the user knows it: 'cell In [7]'."""
    def rename(match: re.Match) -> str:
        count = _execution_count(match.group("file"))
        if count is None:
            return match.group(0)
        where = f'{match.group("indent")}cell In [{count}], line {match.group("line")}'
        return where + (f' in {match.group("name")}' if match.group("name") else "")

    return "\n".join(_DUMP_LINE.sub(rename, line) for line in stacks.splitlines())
