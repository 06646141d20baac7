"""What the launcher knows about a failed run (``Failure``) and what the user is shown (``Report``)."""

from __future__ import annotations

import html
import re
import traceback as traceback_module
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

KINDS = ("exception", "signal", "exit", "timeout", "interrupt", "cuda_initialized")
# each Trainer call, as the notes and reports name it: what it is doing, and the thing that stops
DOING = {"fit": "Training", "validate": "Validating", "test": "Testing", "predict": "Predicting"}
STOPPED = {"fit": "Training", "validate": "Validation", "test": "Testing", "predict": "Prediction"}

_CODE_SPAN = re.compile(r"`([^`\n]+)`")


@dataclass(frozen=True)
class Failure:
    """A failed run, as the launcher saw it.

    ``context`` carries what the launcher knew at the time; every key is optional:
    ``batch_size``, ``precision``, ``devices``, ``accelerator``, ``accumulate_grad_batches``,
    ``num_workers``, ``ckpt_dir``, ``ckpt_path`` (the checkpoint written on interrupt),
    ``gpu_memory`` (list of ``{index, name, used, total}`` in bytes), ``host_memory``
    (``{total, used, available, percent}``), ``shm`` (``{total, free}`` of /dev/shm),
    ``cuda_culprit`` (``{cell, reason}``), ``module_methods`` (method names defined on the
    user's LightningModule class, to spot misspelled hooks), ``learning_rate``, ``master_port``
    and ``stderr`` (the last lines a rank wrote to stderr, for ranks that died without a traceback).
    """

    kind: str
    rank: int | None = None
    world_size: int | None = None
    ranks: tuple[int, ...] | None = None  # every rank that raised the same exception
    exc_type: str | None = None
    message: str | None = None
    traceback: str | None = None
    user_frame: tuple[str, int, str] | None = None
    signal: int | None = None
    exitcode: int | None = None
    timeout: float | None = None
    context: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_exception(
        cls,
        exc: BaseException,
        *,
        rank: int | None = None,
        world_size: int | None = None,
        context: Mapping[str, Any] | None = None,
    ) -> Failure:
        """The failure of a rank that raised ``exc``: its type, message, traceback and the user's frame."""
        from .frames import user_frame_from_traceback

        kind = type(exc)
        module = kind.__module__
        return cls(
            kind="interrupt" if isinstance(exc, KeyboardInterrupt) else "exception",
            rank=rank,
            world_size=world_size,
            exc_type=kind.__qualname__ if module == "builtins" else f"{module}.{kind.__qualname__}",
            message=_message(exc),
            traceback="".join(traceback_module.format_exception(kind, exc, exc.__traceback__)),
            user_frame=user_frame_from_traceback(exc.__traceback__),
            context=dict(context or {}),
        )

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Failure kind {self.kind!r} is not one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class Report:
    """A failure explained: a title, what happened, and what to do next.

    ``facts`` are readings taken when the run failed (label, value), such as GPU or host memory.
    ``restart_kernel`` is true only when the notebook's kernel must be restarted before the next run.
    ``tone`` is "error", or "notice" for what the user chose (a stop), shown in calmer colours;
    ``traceback_label`` names the folded traceback ("Stacks of every rank" for a hang).
    """

    key: str
    title: str
    what_happened: str
    what_to_do: list[str]
    traceback: str | None = None
    facts: tuple[tuple[str, str], ...] = ()
    restart_kernel: bool = False
    tone: str = "error"
    traceback_label: str = "Full traceback"

    def text(self, *, traceback: bool = False) -> str:
        """Plain text for a terminal; the rank's traceback is appended only when asked for."""
        lines = [self.title, "", self.what_happened]
        if self.facts:
            lines.append("")
            lines.extend(f"  {label}: {value}" for label, value in self.facts)
        if self.what_to_do:
            lines += ["", "What to do:"]
            for number, step in enumerate(self.what_to_do, 1):
                lines.append(f"  {number}. {step}")
        if traceback and self.traceback:
            lines += ["", self.traceback.rstrip()]
        return "\n".join(lines)

    def html(self) -> str:
        """A compact HTML block for a notebook output; the traceback is collapsed in ``<details>``."""
        accent = ("var(--jp-brand-color1, #1976d2)" if self.tone == "notice"
                  else "var(--jp-error-color1, #d32f2f)")
        # A tint of the accent over the page's own background: light in light themes, dark in
        # dark ones, so the theme's text colour stays readable on it.
        parts = [
            f'<div class="lightning-magic-report" data-key="{_escape(self.key)}" '
            f'data-tone="{_escape(self.tone)}" style="'
            f"border-left:4px solid {accent};padding:6px 12px;margin:4px 0;"
            "background:var(--jp-layout-color2, #f5f5f5);"
            f"background:color-mix(in srgb, {accent} 10%, var(--jp-layout-color1, #ffffff));"
            'color:var(--jp-ui-font-color1, #212121)">',
            f'<div style="font-weight:bold;font-size:110%">{_inline(self.title)}</div>',
            f'<p style="margin:6px 0">{_inline(self.what_happened)}</p>',
        ]
        if self.facts:
            rows = "".join(
                f'<tr><td style="padding:0 12px 0 0;text-align:left;white-space:nowrap">{_escape(label)}</td>'
                f'<td style="text-align:left">{_escape(value)}</td></tr>'
                for label, value in self.facts
            )
            parts.append(f'<table style="margin:4px 0;font-size:95%">{rows}</table>')
        if self.what_to_do:
            steps = "".join(f"<li>{_inline(step)}</li>" for step in self.what_to_do)
            parts.append(
                '<div style="font-weight:600;margin-top:6px">What to do</div>'
                f'<ol style="margin:2px 0 4px 0;padding-left:1.6em">{steps}</ol>'
            )
        if self.traceback:
            parts.append(
                f'<details style="margin-top:4px"><summary style="cursor:pointer">{_escape(self.traceback_label)}</summary>'
                '<pre style="white-space:pre-wrap;font-size:85%;margin:4px 0;max-height:30em;overflow:auto">'
                f"{_escape(self.traceback.rstrip())}</pre></details>"
            )
        parts.append("</div>")
        return "".join(parts)

    def _repr_html_(self) -> str:
        return self.html()

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(self.text())

    def __str__(self) -> str:
        return self.text()


def _message(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails still deserves a report
        return f"<{type(exc).__name__} with an unprintable message>"


def _escape(text: str) -> str:
    return html.escape(str(text), quote=True)


def _inline(text: str) -> str:
    """Escape, then show `code spans` as <code> and keep line breaks."""
    escaped = _CODE_SPAN.sub(r"<code>\1</code>", _escape(text))
    return escaped.replace("\n", "<br>")
