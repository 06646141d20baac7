"""A data module's ``setup``/``teardown`` history, replayed in a later launch's ranks.

In one process, ``trainer.fit(model, dm)`` leaves ``dm`` set up: what ``dm.setup("fit")`` made
(``dm.mnist_val``, say) is still there when a later cell calls ``trainer.validate(model, dm)``,
whose own ``setup("validate")`` may make nothing. Under the magic those hooks ran in the ranks,
and each launch forks from the kernel's ``dm``, which never saw them. So the kernel records the
stages each finished launch ran on each data module, and a later launch's ranks call
``setup(stage)`` and ``teardown(stage)`` for those stages, in order, before Lightning calls its
own: the object is then as one process would have left it. Each replayed ``setup`` starts from
the random state that rank 0's ``setup`` started from (a ``random_split`` makes the same split),
and the rank's own random state is put back after the replay.
"""

from __future__ import annotations

import weakref
from typing import Any

from .. import namespaces

_DONE: "weakref.WeakKeyDictionary[Any, list[tuple[str, Any]]]" = weakref.WeakKeyDictionary()
_CAPTURED: dict[int, Any] = {}  # in a rank: datamodule position -> random state at its setup


def datamodules(args: tuple, kwargs: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    for value in (*args, *kwargs.values()):
        if namespaces.is_datamodule(value) and all(value is not f for f in found):
            found.append(value)
    return found


def record(given: list[Any], stage: str, captured: Any) -> None:
    """In the kernel, after a launch of ``stage`` whose ranks finished (or were stopped):
    ``given`` are the call's data modules (``datamodules``), ``captured`` rank 0's random state
    at each one's setup."""
    captured = captured if isinstance(captured, dict) else {}
    for position, datamodule in enumerate(given):
        if position not in captured:
            continue  # its setup never ran (a stop before it): nothing to replay
        try:
            _DONE.setdefault(datamodule, []).append((stage, captured[position]))
        except TypeError:  # an object that cannot be weakly referenced: nothing is replayed
            pass


def history(datamodule: Any) -> list[tuple[str, Any]]:
    try:
        return list(_DONE.get(datamodule, []))
    except TypeError:
        return []


def prepare(args: tuple, kwargs: dict[str, Any]) -> None:
    """In a rank, before Lightning runs: the earlier launches' setup/teardown calls replayed,
    then this launch's setup watched for its random state."""
    from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states

    given = datamodules(args, kwargs)
    todo = [(dm, history(dm)) for dm in given if history(dm)]
    if todo:
        own = _collect_rng_states(include_cuda=False)
        try:
            for datamodule, done in todo:
                for stage, states in done:
                    _set_rng_states(states)
                    datamodule.setup(stage=stage)
                    datamodule.teardown(stage=stage)
        finally:
            _set_rng_states(own)
    _CAPTURED.clear()
    for position, datamodule in enumerate(given):
        _watch(datamodule, position)


def _watch(datamodule: Any, position: int) -> None:
    from lightning.fabric.utilities.seed import _collect_rng_states

    original = datamodule.setup

    def setup(*args: Any, **kwargs: Any) -> Any:
        vars(datamodule).pop("setup", None)  # once: later calls are the class's own
        _CAPTURED[position] = _collect_rng_states(include_cuda=False)
        return original(*args, **kwargs)

    try:
        datamodule.setup = setup
    except (AttributeError, TypeError):  # a class that refuses attributes: nothing is replayed
        pass


def captured() -> dict[int, Any]:
    """In rank 0, for the kernel: the random state at each data module's setup."""
    return dict(_CAPTURED)
