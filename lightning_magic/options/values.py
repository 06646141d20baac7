"""The values of ``%%lightning_train`` flags: one check per kind of value (the line's words are
read in ``words``).

Each check takes the flag's name and the text given and returns the value, or raises a one-line
``UsageError`` that names the flag, repeats the value and says what is allowed. Paths are checked
against the file system (a writable directory, not a file, not under ``/proc``).
"""

from __future__ import annotations

import builtins
import keyword
import math
import os
import re
from typing import Optional, Union

from IPython.core.error import UsageError

# the line's words, read where its values are checked (``check.split_line`` and the rest)
from .words import NUMBER, no_value_given, one_line, split_line, unknown_words  # noqa: F401

LARGEST_INT = 2**63 - 1
MAX_DURATION_S = 365 * 86400
CPU_PROCESSES_PER_CORE = 4
PATH_ROOM = 128  # bytes a run writes below its checkpoint directory (lightning_logs/version_N/...)
SYSTEM_TREES = ("/proc", "/sys", "/dev")
STORAGE_UNDER_SYSTEM = ("/dev/shm",)
IPYTHON_NAMES = frozenset({"get_ipython", "In", "Out", "exit", "quit", "_", "__", "___",
                           "_i", "_ii", "_iii", "_ih", "_oh", "_dh"})
_INTEGER = re.compile(r"[+-]?[0-9]+")
_IPYTHON_HISTORY = re.compile(r"_i?[0-9]+")
_NEGATED = {"inference_mode": "--no-inference-mode",
            "use_distributed_sampler": "--no-distributed-sampler"}



def choice(flag: str, value: str, allowed: tuple[str, ...], shown: Optional[tuple] = None) -> str:
    text = str(value).strip().lower()
    if text not in allowed:
        raise UsageError(f"{flag} {value!r} is not one of: {', '.join(shown or allowed)}.")
    return text


def optional_choice(flag: str, value: Optional[str], allowed: tuple[str, ...]) -> Optional[str]:
    return None if value is None else choice(flag, value, allowed)


def fast_dev_run(value: Optional[str]) -> Optional[Union[bool, int]]:
    number = None if value is None else integer("--fast-dev-run", value, minimum=1)
    return True if number == 1 else number


def nonempty(flag: str, value: Optional[str]) -> str:
    if value is None or not str(value).strip():
        raise UsageError(f"{flag} needs a value, got an empty one ({value!r}).")
    return str(value).strip()


def identifier(flag: str, value: Optional[str]) -> Optional[str]:
    if value is None:
        return None
    if not str(value).isidentifier() or keyword.iskeyword(value):
        raise UsageError(f"{flag} {value!r} is not a Python variable name (for example: my_model).")
    return str(value)


def out_name(flag: str, value: str) -> str:
    """A variable the run may be bound to without breaking the notebook."""
    name = identifier(flag, value) or ""
    suggestion = f"{name.strip('_') or 'lightning'}_run"
    if name in IPYTHON_NAMES or _IPYTHON_HISTORY.fullmatch(name):
        why = "is one of IPython's own names (later cells and magics rely on it)"
    elif name.startswith("__") and name.endswith("__"):
        why = "is a special (dunder) name that Python itself uses"
    elif name in vars(builtins):
        why = f"would hide Python's built-in {name}"
    else:
        return name
    raise UsageError(f"{flag} {value!r} {why}; choose another name, for example "
                     f"{flag} {suggestion}.")


def integer(flag: str, value: Optional[str], *, minimum: Optional[int] = None,
            maximum: int = LARGEST_INT) -> Optional[int]:
    if value is None:
        return None
    text = str(value).strip()
    if not _INTEGER.fullmatch(text):
        raise UsageError(f"{flag} {value!r} is not a whole number (digits 0-9, for example 3).")
    number = int(text)
    if minimum is not None and number < minimum:
        raise UsageError(f"{flag} {number} is too small: the smallest allowed value is {minimum}.")
    if number > maximum:
        raise UsageError(f"{flag} {number} is too large: the largest allowed value is {maximum}.")
    return number


def real(flag: str, value: Optional[str], *, minimum: float = 0.0, exclusive: bool = False,
         maximum: float = math.inf) -> Optional[float]:
    if value is None:
        return None
    text = str(value).strip()
    number = float(text) if NUMBER.fullmatch(text) else math.nan
    if not math.isfinite(number) or number < minimum or (exclusive and number == minimum):
        bound = f"greater than {minimum:g}" if exclusive else f"at least {minimum:g}"
        raise UsageError(f"{flag} {value!r} must be a finite number {bound} (for example 1.5).")
    if number > maximum:
        raise UsageError(f"{flag} {value!r} is too large: the largest allowed value is "
                         f"{maximum:.12g}.")
    return number


def count_or_fraction(flag: str, value: Optional[str], *,
                      allow_zero: bool = True) -> Optional[Union[int, float]]:
    """'10' -> 10 batches, '0.25' -> a quarter of an epoch (Lightning's int/float convention)."""
    if value is None:
        return None
    text = str(value).strip()
    if re.fullmatch(r"[0-9]+", text) and int(text) <= LARGEST_INT and (allow_zero or int(text)):
        return int(text)
    fraction = float(text) if NUMBER.fullmatch(text) else math.nan
    if math.isfinite(fraction) and (0.0 < fraction <= 1.0 or (allow_zero and fraction == 0.0)):
        return fraction
    raise UsageError(
        f"{flag} {value!r} must be a whole number of batches (for example 10) "
        "or a fraction of the epoch between 0 and 1 (for example 0.25)."
    )


def duration(flag: str, value: Optional[str]) -> Optional[str]:
    """'90' (seconds), '01:30:00' or '00:01:30:00' -> Lightning's 'DD:HH:MM:SS'."""
    if value is None:
        return None
    text = str(value).strip()
    parts = text.split(":")
    total = math.nan
    if len(parts) == 1 and NUMBER.fullmatch(text):
        total = float(text)
    elif len(parts) in (3, 4) and all(re.fullmatch(r"[0-9]{1,12}", p) for p in parts):
        days, hours, minutes, seconds = [0] * (4 - len(parts)) + [int(p) for p in parts]
        total = float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)
    if not math.isfinite(total) or total <= 0:
        raise UsageError(f"{flag} {value!r} is not a duration: give seconds (3600), HH:MM:SS "
                         "(01:00:00) or DD:HH:MM:SS (00:01:00:00).")
    if total > MAX_DURATION_S:
        raise UsageError(f"{flag} {value!r} is longer than 365 days, the longest allowed; "
                         f"give at most {flag} 365:00:00:00, or leave it out for no time limit.")
    seconds = int(math.ceil(total))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days:02d}:{hours:02d}:{minutes:02d}:{seconds:02d}"


def usable_cores() -> int:
    affinity = getattr(os, "sched_getaffinity", None)
    return len(affinity(0)) if affinity else (os.cpu_count() or 1)


def devices(flag: str, value: Optional[str], accelerator: Optional[str]) -> Optional[str]:
    """The raw --devices text: ASCII only, and a count of CPU processes the cores can carry."""
    if value is None:
        return None
    text = nonempty(flag, value)
    if not text.isascii() or not text.isprintable():
        raise UsageError(f"{flag} {value!r} has characters other than ASCII letters, digits, ',' "
                         f"and ':'; write it with 0-9, for example {flag} 2 or {flag} 0,1.")
    if re.fullmatch(r"[0-9]+", text) and accelerator in (None, "auto", "cpu"):
        cores = usable_cores()
        cap = CPU_PROCESSES_PER_CORE * cores
        if int(text) > cap:
            raise UsageError(
                f"{flag} {text} is more CPU processes than this machine can run: it has {cores} "
                f"core{'s' if cores != 1 else ''}, and past {cap} ({CPU_PROCESSES_PER_CORE} per "
                f"core) processes only slow each other down and exhaust memory; give {flag} "
                f"{cores} (at most {cap}), or select GPUs with {flag} 0,1.")
    return text


def directory(flag: str, value: Optional[str]) -> Optional[str]:
    """A directory that exists or can be created, and that this process can write into."""
    if value is None:
        return None
    text = nonempty(flag, value)
    path = _absolute(flag, text)
    _check_length(flag, text, path, room=PATH_ROOM)
    _check_not_system(flag, text, path)
    if os.path.lexists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag} {text!r} is a file, not a directory; give a folder's name "
                         f"(it is created if missing), for example {flag} runs/experiment-1.")
    _check_can_create_under(flag, text, path)
    return text


def output_file(flag: str, value: Optional[str]) -> Optional[str]:
    """A file that can be written: its folder exists or can be created, and is writable."""
    if value is None:
        return None
    text = nonempty(flag, value)
    path = _absolute(flag, text)
    _check_length(flag, text, path, room=len(".sbatch"))
    _check_not_system(flag, text, path)
    if os.path.isdir(path):
        return text  # the export itself says that a directory is not a script's name
    if os.path.lexists(path) and not os.path.isfile(path):
        raise UsageError(f"{flag} {text!r} exists and is not a regular file; give a new file "
                         f"name, for example {flag} train.py.")
    _check_can_create_under(flag, text, os.path.dirname(path))
    return text


def _check_can_create_under(flag: str, text: str, path: str) -> None:
    """The nearest existing folder above ``path`` (or ``path`` itself) is a writable directory."""
    existing = _nearest_existing(path)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag} {text!r} is under {existing!r}, which is a file, so nothing "
                         "can be created there; choose a path below a directory.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag} {text!r} cannot be written: {existing!r} is read-only (a "
                         "read-only disk, or no permission); choose a folder you can write to.")


def _absolute(flag: str, text: str) -> str:
    if "\x00" in text:
        raise UsageError(f"{flag} {text!r} contains a NUL character, which no path can hold.")
    try:
        return os.path.abspath(os.path.expanduser(text))
    except (OSError, ValueError) as error:
        raise UsageError(f"{flag} {text!r} is not a usable path: {error}.") from None


def _nearest_existing(path: str) -> str:
    while not os.path.lexists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return path


def _check_not_system(flag: str, text: str, path: str) -> None:
    real_path = os.path.realpath(_nearest_existing(path))
    for resolved in (path, real_path):
        if any(resolved == s or resolved.startswith(s + "/") for s in STORAGE_UNDER_SYSTEM):
            continue
        tree = next((t for t in SYSTEM_TREES if resolved == t or resolved.startswith(t + "/")),
                    None)
        if tree is not None:
            raise UsageError(f"{flag} {text!r} is under {tree}, which holds the system's "
                             "devices and processes, not files; choose a path on a disk (in "
                             "your home or next to the notebook).")


def _check_length(flag: str, text: str, path: str, room: int) -> None:
    existing = _nearest_existing(path)
    anchor = existing if os.path.isdir(existing) else os.path.dirname(existing)
    name_max = _pathconf(anchor, "PC_NAME_MAX", 255)
    path_max = _pathconf(anchor, "PC_PATH_MAX", 4096)
    try:
        encoded = os.fsencode(path)
    except UnicodeError as error:
        raise UsageError(f"{flag} {text!r} cannot be written as a file name: {error}.") from None
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > name_max:
        raise UsageError(f"{flag} {_short(text)} has a name of {len(longest)} bytes, longer "
                         f"than the {name_max} this file system allows; shorten it.")
    if len(encoded) + room > path_max:
        raise UsageError(f"{flag} {_short(text)} is {len(encoded)} bytes as an absolute path, too "
                         f"long for the files written inside it (the limit is {path_max}); "
                         "choose a shorter path.")


def _short(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:50]) + "..." + repr(text[-20:])


def _pathconf(path: str, name: str, default: int) -> int:
    try:
        return max(os.pathconf(path, name), 0) or default
    except (OSError, ValueError):
        return default


def refuse_empty(raw: dict) -> None:
    """Any flag given an empty value ('' or spaces) is refused, naming the flag."""
    for dest, value in raw.items():
        if isinstance(value, str) and not value.strip():
            nonempty(_NEGATED.get(dest, "--" + dest.replace("_", "-")), value)
