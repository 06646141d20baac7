"""What a rank sends the kernel travels as bytes (``torch.save``): a tensor pickled by
``multiprocessing`` is shared through a file descriptor that its sender must keep open until the
receiver takes it, and a rank exits as soon as it has sent its results."""

from __future__ import annotations

import io
from typing import Any


def pack(obj: Any) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def unpack(data: bytes) -> Any:
    import torch

    # written by this run's own ranks, from the kernel's own objects: full pickle, as fork shares
    return torch.load(io.BytesIO(data), weights_only=False)
