"""Notice the cell in which CUDA got initialized in the kernel, and what probably did it.

Forked ranks cannot use CUDA once the kernel initialized it, and the only fix is a kernel
restart; pointing at the cell that did it saves the user from bisecting their notebook.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any, Optional

# Imports known to initialize CUDA as a side effect.
CUDA_IMPORTS = ("bitsandbytes", "flash_attn", "xformers", "apex", "deepspeed", "vllm", "cupy",
                "pynvml_utils", "tensorflow", "jax")
CUDA_CALLS = [
    (re.compile(r"\.cuda\s*\("), "a .cuda() call"),
    (re.compile(r"torch\.cuda\.(?!is_initialized)\w+"), "a torch.cuda.* call"),
    (re.compile(r"""\.to\(\s*['"]cuda"""), "a .to('cuda') call"),
    (re.compile(r"""device\s*=\s*['"]cuda"""), "a tensor created with device='cuda'"),
    (re.compile(r"""torch\.device\(\s*['"]cuda"""), "torch.device('cuda')"),
]


def cuda_initialized() -> bool:
    """Whether this process initialized CUDA (never initializes it; no torch import of its own)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:  # noqa: BLE001 - a broken torch import is not a CUDA context
        return False


@dataclass(frozen=True)
class Culprit:
    cell: Optional[int]       # execution count of the cell
    reason: str               # what in that cell most likely did it
    source_line: Optional[str] = None


class CudaWatch:
    """pre_run_cell / post_run_cell hooks that record the first cell that initialized CUDA."""

    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.culprit: Optional[Culprit] = None
        self._modules_before: set[str] = set()
        self._initialized_before = False
        self._source = ""

    def register(self) -> None:
        # the cell running %load_ext: what was there before it is not that cell's doing
        self._modules_before = set(sys.modules)
        self._initialized_before = cuda_initialized()
        if self._initialized_before:
            self.culprit = Culprit(None, "code that ran before %load_ext lightning_magic "
                                         "(the cell that did it is not known)")
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)

    def unregister(self) -> None:
        for event, callback in (("pre_run_cell", self.pre_run_cell),
                                ("post_run_cell", self.post_run_cell)):
            try:
                self.shell.events.unregister(event, callback)
            except ValueError:
                pass

    def pre_run_cell(self, info: Any) -> None:
        self._modules_before = set(sys.modules)
        self._initialized_before = cuda_initialized()
        self._source = getattr(info, "raw_cell", "") or ""

    def initialized_by_current_cell(self) -> bool:
        """Whether CUDA got initialized while the cell now running ran (before its end)."""
        return not self._initialized_before and cuda_initialized()

    def post_run_cell(self, result: Any) -> None:
        if self.culprit is not None or self._initialized_before or not cuda_initialized():
            return
        new_modules = set(sys.modules) - self._modules_before
        cell = getattr(result, "execution_count", None)
        self.culprit = guess(self._source, new_modules, cell)


def guess(source: str, new_modules: set[str], cell: Optional[int]) -> Culprit:
    for line in source.splitlines():
        for pattern, reason in CUDA_CALLS:
            if pattern.search(line):
                return Culprit(cell, reason, line.strip())
    tops = sorted({m.split(".")[0] for m in new_modules} & set(CUDA_IMPORTS))
    if tops:
        return Culprit(cell, f"importing {', '.join(tops)}")
    return Culprit(cell, "code in that cell (or a library it called) used CUDA")
