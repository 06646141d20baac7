"""What a rank reports of an exception its code raised: the class, the message, the traceback and
the user's frame, made in the rank, where the frame's names still exist."""

from __future__ import annotations

import traceback as tb_module
from typing import Any, Optional


def _user_frame(exc: BaseException) -> Optional[tuple[str, int, str]]:
    from ...suggestions import user_frame_from_traceback

    try:
        return user_frame_from_traceback(exc.__traceback__)
    except Exception:  # noqa: BLE001 - a report without a location is still a report
        return None


def error_record(rank: int, exc: BaseException) -> dict[str, Any]:
    from ...suggestions.names import note_did_you_mean

    note_did_you_mean(exc)  # in the rank, where the frame's names are
    return {"rank": rank, "exc_type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc),
            "traceback": "".join(tb_module.format_exception(type(exc), exc, exc.__traceback__)),
            "user_frame": _user_frame(exc)}
