"""What ``%gpu_status`` shows: one reading of the machine as an HTML table (notebooks) or as
text (terminals). Rendering only; the reading comes from ``readings.snapshot()``, which never
touches torch or CUDA. A field a device does not report is shown as "n/a", never as 0.

Where the reading says so, it also shows where this kernel runs (``environment``) and which GPUs
it can use: each GPU's ``cuda_index`` is the number CUDA gives it here (``cuda:0``), or None when
``CUDA_VISIBLE_DEVICES`` hides it from this process. Readings without those keys show as before."""

from __future__ import annotations

from html import escape
from typing import Any

NA = "n/a"
_GIB = 1024**3
_TEXT_BAR = 10


def _gib(value: int | None) -> str:
    return NA if value is None else f"{value / _GIB:.1f}"


def _used_of(used: int | None, total: int | None) -> str:
    if used is None and total is None:
        return NA
    return f"{_gib(used)} / {_gib(total)} GiB"


def _share(used: int | None, total: int | None) -> float | None:
    if used is None or not total:
        return None
    return max(0.0, min(100.0, 100.0 * used / total))


def _value(value: Any, unit: str = "") -> str:
    if value is None:
        return NA
    if isinstance(value, float):
        value = f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value}{unit}"


def _pair(first: Any, second: Any, unit: str) -> str:
    if first is None and second is None:
        return NA
    return f"{_value(first)} / {_value(second)}{unit}"


def _ecc(errors: dict) -> str:
    if errors["corrected"] is None and errors["uncorrected"] is None:
        return NA
    return f"{_value(errors['corrected'])} corr., {_value(errors['uncorrected'])} uncorr."


def cuda_label(gpu: dict) -> str | None:
    """"cuda:0" for a GPU this kernel can use, "hidden" for one CUDA_VISIBLE_DEVICES hides, None
    when the reading does not say."""
    if "cuda_index" not in gpu:
        return None
    index = gpu["cuda_index"]
    return f"cuda:{index}" if isinstance(index, int) else "hidden"


def _environment_line(reading: dict) -> str | None:
    environment = reading.get("environment")
    if not isinstance(environment, dict) or not environment.get("label"):
        return None
    visible = (environment.get("details") or {}).get("cuda_visible_devices")
    if environment.get("kind") == "local" and visible is None:
        return None  # a plain machine with every GPU usable: nothing to say
    line = f"Running on {environment['label']}"
    if visible is not None:
        line += f" · CUDA_VISIBLE_DEVICES={visible!r}"
    return line


def describe_process(process: dict) -> str:
    """Who a GPU process is: its notebook or kernel, its rank, else its command."""
    parts = []
    if process.get("notebook_path"):
        parts.append(process["notebook_path"])
    elif process.get("kernel_id"):
        parts.append(f"kernel {process['kernel_id'][:8]}")
    if process.get("rank") is not None:
        parts.append(f"rank {process['rank']}")
    elif process.get("role") == "kernel-child":
        parts.append("forked from the kernel")
    if not parts:
        parts.append(process.get("name") or (f"user {process['user']}" if process.get("user")
                                             else "another user's or container's process"))
    return ", ".join(parts)


class GpuStatusReport:
    """One reading of the machine, rendered for a notebook or a terminal."""

    def __init__(self, reading: dict):
        self.reading = reading

    # -- text ----------------------------------------------------------------------------------

    def __repr__(self) -> str:
        return "\n".join(self._text_lines())

    def _repr_pretty_(self, printer, cycle: bool) -> None:
        printer.text(repr(self))

    def _text_lines(self) -> list[str]:
        reading = self.reading
        nvml, gpus = reading["nvml"], reading["gpus"]
        lines = []
        if not nvml["available"]:
            lines.append(f"NVML unavailable: {nvml['reason']}")
        elif not gpus:
            lines.append(f"NVIDIA driver {_value(nvml['driver_version'])}: no GPU found.")
        else:
            lines.append(f"NVIDIA driver {_value(nvml['driver_version'])}, {len(gpus)} GPU(s)")
        lines += [line for line in [_environment_line(reading)] if line]
        for gpu in gpus:
            memory = gpu["memory"]
            cuda = cuda_label(gpu)
            usable = "" if cuda is None else (
                f"  ({cuda} in this kernel)" if cuda != "hidden"
                else "  (hidden from this kernel by CUDA_VISIBLE_DEVICES)")
            lines.append(
                f"GPU {gpu['index']}  {gpu['name'] or NA}{usable}\n"
                f"  utilization {_text_bar(gpu['utilization']['gpu'])}"
                f"  memory {_text_bar(_share(memory['used'], memory['total']))}"
                f" {_used_of(memory['used'], memory['total'])}\n"
                f"  temperature {_value(gpu['temperature'], ' C')}"
                f"  power {_pair(gpu['power']['draw'], gpu['power']['limit'], ' W')}"
                f"  clocks SM/memory {_pair(gpu['clocks']['sm'], gpu['clocks']['memory'], ' MHz')}"
                f"  fan {_value(gpu['fan'], ' %')}  {gpu['performance_state'] or NA}"
                f"  ECC {_ecc(gpu['ecc_errors'])}"
            )
            if gpu["error"]:
                lines.append(f"  ! {gpu['error']}")
            for instance in gpu["mig"]["instances"]:
                lines.append(f"  MIG {instance['index']} {instance['uuid'] or ''}: "
                             f"{_used_of(instance['memory']['used'], instance['memory']['total'])}")
            for process in gpu["processes"]:
                lines.append(f"  pid {process['pid']:>7}  {_gib(process['memory_used']):>6} GiB"
                             f"  {describe_process(process)}")
        cpu, memory, disk = reading["cpu"], reading["memory"], reading["disk"]
        cores = " ".join(f"{share:.0f}" for share in cpu["per_core"])
        lines.append(f"CPU     {_text_bar(cpu['percent'])} of {cpu['count']} cores"
                     f" (per core %: {cores})")
        lines.append(f"Memory  {_text_bar(memory['percent'])} "
                     f"{_used_of(memory['used'], memory['total'])}")
        if disk is not None:
            lines.append(f"Disk    {_text_bar(disk['percent'])} "
                         f"{_used_of(disk['used'], disk['total'])} at {disk['path']}")
        return lines

    # -- HTML ----------------------------------------------------------------------------------

    def _repr_html_(self) -> str:
        reading = self.reading
        nvml, gpus = reading["nvml"], reading["gpus"]
        parts = [_STYLE, '<div class="lm-gpu-status">']
        environment = _environment_line(reading)
        if not nvml["available"]:
            parts.append('<div class="lm-unavailable" role="status"><strong>NVML unavailable:'
                         f"</strong> {escape(nvml['reason'] or 'unknown reason')}</div>")
        elif not gpus:
            parts.append(f"<div>NVIDIA driver {escape(_value(nvml['driver_version']))}: "
                         "no GPU found.</div>")
        else:
            parts.append(f"<div>NVIDIA driver {escape(_value(nvml['driver_version']))}, "
                         f"{len(gpus)} GPU(s)</div>")
        if environment:
            parts.append(f'<div class="lm-environment">{escape(environment)}</div>')
        if gpus:
            parts.append(_gpu_table(gpus))
        parts.append(_system_table(reading))
        parts.append("</div>")
        return "".join(parts)


def _text_bar(percent: float | None) -> str:
    if percent is None:
        return f"[{' ' * _TEXT_BAR}] {NA:>5}"
    filled = round(percent / 100 * _TEXT_BAR)
    return f"[{'#' * filled}{'.' * (_TEXT_BAR - filled)}] {percent:4.0f}%"


def _html_bar(percent: float | None, label: str, caption: str) -> str:
    if percent is None:
        return f'<span class="lm-na" aria-label="{escape(label)}: not available">{NA}</span>'
    return (
        f'<div class="lm-bar" role="progressbar" aria-label="{escape(label)}" '
        f'aria-valuemin="0" aria-valuemax="100" aria-valuenow="{percent:.0f}">'
        f'<div class="lm-fill" style="width:{percent:.1f}%"></div></div>'
        f'<span class="lm-caption">{escape(caption)}</span>'
    )


def _gpu_table(gpus: list[dict]) -> str:
    rows = []
    with_cuda = any("cuda_index" in gpu for gpu in gpus)
    for gpu in gpus:
        util, memory = gpu["utilization"]["gpu"], gpu["memory"]
        share = _share(memory["used"], memory["total"])
        name = f"GPU {gpu['index']}"
        cells = [
            f"<th scope=\"row\">{gpu['index']}</th><td>{escape(gpu['name'] or NA)}</td>",
            _cuda_cell(gpu) if with_cuda else "",
            f"<td>{_html_bar(util, f'{name} utilization', _value(util, ' %'))}</td>",
            f"<td>{_html_bar(share, f'{name} memory', _used_of(memory['used'], memory['total']))}"
            "</td>",
            f"<td>{escape(_value(gpu['temperature'], ' °C'))}</td>",
            f"<td>{escape(_pair(gpu['power']['draw'], gpu['power']['limit'], ' W'))}</td>",
            f"<td>{escape(_pair(gpu['clocks']['sm'], gpu['clocks']['memory'], ' MHz'))}</td>",
            f"<td>{escape(_value(gpu['fan'], ' %'))}</td>",
            f"<td>{escape(gpu['performance_state'] or NA)}</td>",
            f"<td>{escape(_ecc(gpu['ecc_errors']))}</td>",
        ]
        hidden = ' class="lm-hidden"' if cuda_label(gpu) == "hidden" else ""
        rows.append(f"<tr{hidden}>{''.join(cells)}</tr>")
        details = []
        if gpu["error"]:
            details.append(f'<div class="lm-error" role="alert">{escape(gpu["error"])}</div>')
        for instance in gpu["mig"]["instances"]:
            used = _used_of(instance["memory"]["used"], instance["memory"]["total"])
            details.append(f"<div>MIG {instance['index']} "
                           f"<code>{escape(instance['uuid'] or NA)}</code>: {escape(used)}</div>")
        for process in gpu["processes"]:
            command = process.get("command")
            title = f' title="{escape(command)}"' if command else ""
            details.append(
                f"<div{title}>pid {process['pid']} · {escape(_gib(process['memory_used']))} GiB"
                f" · {escape(process.get('user') or NA)} · {escape(describe_process(process))}"
                "</div>")
        if details:
            rows.append('<tr class="lm-details"><td></td>'
                        f'<td colspan="{10 if with_cuda else 9}">{"".join(details)}</td></tr>')
    head = "".join(f'<th scope="col">{h}</th>' for h in (
        "GPU", "Name", *(["In this kernel"] if with_cuda else []), "Utilization", "Memory",
        "Temp.", "Power draw / limit", "Clocks SM / memory", "Fan", "Perf.", "ECC errors"))
    return (f'<table class="lm-table"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _cuda_cell(gpu: dict) -> str:
    label = cuda_label(gpu)
    if label is None:
        return f'<td class="lm-na">{NA}</td>'
    if label == "hidden":
        return ('<td class="lm-na" title="CUDA_VISIBLE_DEVICES hides this GPU from this kernel">'
                "hidden</td>")
    return f'<td title="torch and Lightning call this GPU {label} here"><b>{label}</b></td>'


def _system_table(reading: dict) -> str:
    cpu, memory, disk = reading["cpu"], reading["memory"], reading["disk"]
    cores = "".join(
        f'<div class="lm-core" role="img" aria-label="core {i}: {share:.0f} %" '
        f'title="core {i}: {share:.0f} %"><div style="height:{share:.0f}%"></div></div>'
        for i, share in enumerate(cpu["per_core"]))
    cpu_caption = f"{cpu['percent']:.0f} % of {cpu['count']} cores"
    rows = [
        _system_row("CPU", _html_bar(cpu["percent"], "CPU", cpu_caption),
                    f'<div class="lm-cores">{cores}</div>'),
        _system_row("Memory", _html_bar(memory["percent"], "Memory",
                                        _used_of(memory["used"], memory["total"])), ""),
    ]
    if disk is not None:
        rows.append(_system_row("Disk", _html_bar(disk["percent"], "Disk",
                                                  _used_of(disk["used"], disk["total"])),
                                f"<code>{escape(disk['path'])}</code>"))
    return f'<table class="lm-table lm-system"><tbody>{"".join(rows)}</tbody></table>'


def _system_row(title: str, bar: str, extra: str) -> str:
    return f'<tr><th scope="row">{title}</th><td>{bar}</td><td>{extra}</td></tr>'


_STYLE = """<style>
.lm-gpu-status { font-size: var(--jp-ui-font-size1, 13px); color: var(--jp-ui-font-color1, inherit); }
.lm-gpu-status .lm-table { border-collapse: collapse; margin: 4px 0; }
.lm-gpu-status .lm-table th, .lm-gpu-status .lm-table td {
  padding: 2px 8px; text-align: left; vertical-align: middle; white-space: nowrap; }
.lm-gpu-status .lm-details td { white-space: normal; font-size: 90%;
  color: var(--jp-ui-font-color2, #616161); }
.lm-gpu-status .lm-bar { display: inline-block; width: 80px; height: 8px; margin-right: 6px;
  vertical-align: middle; background: var(--jp-layout-color3, #e0e0e0); border-radius: 2px; }
.lm-gpu-status .lm-fill { height: 100%; background: var(--jp-brand-color1, #1976d2);
  border-radius: 2px; }
.lm-gpu-status .lm-caption { font-variant-numeric: tabular-nums; }
.lm-gpu-status .lm-na { color: var(--jp-ui-font-color2, #616161); }
.lm-gpu-status .lm-cores { display: inline-flex; gap: 1px; height: 16px; align-items: flex-end; }
.lm-gpu-status .lm-core { width: 5px; height: 16px; display: flex; align-items: flex-end;
  background: var(--jp-layout-color3, #e0e0e0); }
.lm-gpu-status .lm-core > div { width: 100%; background: var(--jp-brand-color1, #1976d2); }
.lm-gpu-status .lm-unavailable { padding: 4px 8px; border-left: 3px solid
  var(--jp-warn-color1, #f57c00); color: var(--jp-ui-font-color1, #212121);
  background: var(--jp-layout-color2, #eeeeee);
  background: color-mix(in srgb, var(--jp-warn-color1, #f57c00) 14%,
                        var(--jp-layout-color1, #ffffff)); }
.lm-gpu-status .lm-environment { color: var(--jp-ui-font-color1, #212121); margin-bottom: 2px; }
.lm-gpu-status .lm-hidden th, .lm-gpu-status .lm-hidden td {
  color: var(--jp-ui-font-color2, #616161); }
.lm-gpu-status .lm-error { color: var(--jp-ui-font-color1, #212121);
  border-left: 3px solid var(--jp-error-color1, #d32f2f); padding-left: 6px; }
</style>"""
