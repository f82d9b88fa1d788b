"""The live per-device view for people at a terminal (``rich``): one row per USB port with chip,
stage, current file, bytes and rate, and result; a summary table at the end.

It is an :data:`~rpiboot.events.EventSink` like the other reporters, so the CLI picks it when
stdout is a terminal and ``--json`` is not given (``--plain`` keeps upstream's lines).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .events import Event
from .output import for_display


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


@dataclass
class _Row:
    port: str
    chip: str = "?"
    stage: str = "-"
    serial: str | None = None
    file: str = ""
    sent: int = 0
    size: int | None = None
    rate: float | None = None
    files: int = 0
    bytes: int = 0
    result: str = "working"
    style: str = ""


class LiveView:
    """Renders engine events as a live table on a rich console."""

    def __init__(self, verbose: int = 0, console: Console | None = None, *,
                 refresh_per_second: float = 8, auto_refresh: bool = True,
                 redirect: bool = True):
        self.verbose = verbose
        self.console = console or Console()
        self._rows: dict[str, _Row] = {}
        self._lock = threading.RLock()
        self._status = "Waiting for BCM2835/6/7/2711/2712..."
        self._summary: list[dict[str, Any]] | None = None
        self._live = Live(self, console=self.console, refresh_per_second=refresh_per_second,
                          auto_refresh=auto_refresh, transient=False,
                          redirect_stdout=redirect, redirect_stderr=redirect)
        self._running = False
        self._closed = False

    # --- EventSink ----------------------------------------------------------------------------

    def __call__(self, item: Event) -> None:
        with self._lock:
            if self._closed:
                return
            if not self._running and item.kind != "summary":
                self._live.start()
                self._running = True
            messages = self._apply(for_display(item))
        for message in messages:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)
        if item.kind == "summary":
            self.close()

    def close(self) -> None:
        """Stop the live display (leaving its last frame) and print the summary, once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._running:
                self._live.stop()
                self._running = False
            summary = self._summary
        if summary:
            self.console.print(self.summary_table(summary))

    # --- state --------------------------------------------------------------------------------

    def _row(self, port: str) -> _Row:
        row = self._rows.get(port)
        if row is None:
            row = self._rows[port] = _Row(port)
        return row

    def _apply(self, item: Event) -> list[str]:
        data, kind = item.data, item.kind
        port = item.port
        if kind == "waiting":
            self._status = data["message"]
            return []
        if kind == "summary":
            self._summary = list(data["devices"])
            return []
        if kind == "metadata_json":
            return [data["json"].rstrip("\n")]
        if kind == "metadata_written":
            return [f"{port}: created metadata file {data['path']}"]
        if kind == "notice":
            return ([f"{port}: {data['message']}" if port else data["message"]]
                    if self.verbose or not port else [])
        if kind == "device_ignored":
            return [f"{port}: ignored ({data['reason']})"]
        if port is None:
            return []
        row = self._row(port)
        messages: list[str] = []
        if kind == "device_arrived":
            row.chip, row.stage = data["chip"], data["stage"]
            row.result, row.style = "working", ""
            if self.verbose:
                messages.append(f"{port}: found {data['chip']} ({data['stage']} stage, "
                                f"{data['speed']} speed, address {data['address']})")
        elif kind == "stage_started":
            row.stage = data["stage"]
            row.serial = data.get("serial") or row.serial
            if data.get("file"):
                row.file, row.sent, row.size, row.rate = data["file"], 0, None, None
        elif kind == "file_loaded":
            row.file, row.sent, row.size, row.rate = data["name"], 0, data["size"], None
            if self.verbose >= 2:
                messages.append(f"{port}: loading {data['origin']}")
        elif kind == "file_requested":
            if row.file != data["name"]:
                row.file, row.sent, row.size, row.rate = data["name"], 0, None, None
            if self.verbose >= 2:
                messages.append(f"{port}: {data['command']} {data['name']}")
        elif kind == "file_progress":
            row.file, row.sent, row.size = data["name"], data["sent"], data["size"]
            row.rate = data["sent"] / data["seconds"] if data["seconds"] > 0 else None
        elif kind in ("file_served", "second_stage_sent"):
            row.file, row.sent, row.size = data["name"], data["size"], data["size"]
            row.rate = data["size"] / data["seconds"] if data["seconds"] > 0 else None
            row.bytes += data["size"]
            if kind == "file_served":
                row.files += 1
            elif data["return_code"] == 0:
                row.stage = "reboot"
            if self.verbose:
                messages.append(f"{port}: sent {data['name']} ({human_bytes(data['size'])} in "
                                f"{data['seconds']:.3f} s)")
        elif kind == "file_missing":
            row.file, row.sent, row.size, row.rate = f"{data['name']} (missing)", 0, None, None
            if self.verbose:
                messages.append(f"{port}: no such file {data['name']}")
        elif kind == "file_refused":
            messages.append(f"{port}: refused request for {data['name']!r}: {data['reason']}")
        elif kind == "metadata" and self.verbose:
            messages.append(f"{port}: metadata {data['key']} = {data['value']}")
        elif kind == "device_done":
            row.result, row.style = "ok", "green"
            row.serial = data.get("serial") or row.serial
            row.stage = "done"
        elif kind == "device_failed":
            row.result, row.style = f"failed: {data['code']}", "bold red"
            messages.append(f"rpiboot: error: {port}: {data['message']}")
        elif kind == "device_followed":
            blocks = ", ".join(f"/dev/{name}" for name in data["block_devices"])
            row.stage = f"final {data['usb_id']}"
            row.result, row.style = "ok" + (f" ({blocks})" if blocks else ""), "green"
        return messages

    # --- rendering ----------------------------------------------------------------------------

    def __rich__(self) -> RenderableType:
        with self._lock:
            return self.device_table()

    def device_table(self) -> RenderableType:
        with self._lock:
            if not self._rows:
                return Text(self._status)
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                          collapse_padding=True)
            for column in ("Port", "Chip", "Stage", "File", "Progress", "Rate", "Files",
                           "Result"):
                table.add_column(column, no_wrap=True,
                                 overflow="ellipsis" if column == "File" else "fold",
                                 justify="right" if column in ("Progress", "Rate", "Files")
                                 else "left")
            for row in self._rows.values():
                if row.size:
                    progress = f"{100 * row.sent // row.size}% of {human_bytes(row.size)}"
                else:
                    progress = human_bytes(row.sent) if row.sent else ""
                rate = f"{human_bytes(row.rate)}/s" if row.rate else ""
                table.add_row(*map(Text, (row.port, row.chip, row.stage, row.file, progress,
                                          rate, str(row.files))),
                              Text(row.result, style=row.style))
            return table

    @staticmethod
    def summary_table(devices: list[dict[str, Any]]) -> RenderableType:
        table = Table(title="Summary", box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      collapse_padding=True,
                      title_justify="left")
        for column in ("Port", "Serial", "Chip", "Stages", "Files", "Bytes", "Time", "Result"):
            table.add_column(column, justify="right" if column in ("Files", "Bytes", "Time")
                             else "left", no_wrap=True)
        for device in devices:
            ok = device["result"] == "ok"
            result = device["result"] + (f" ({device['error']})" if device.get("error") else "")
            final = device.get("final")
            if final:
                result += f" → {final['usb_id']}" + "".join(
                    f" /dev/{name}" for name in final.get("block_devices", []))
            cells = (device["port"], device["serial"] or "-", device["chip"],
                     "+".join(device["stages"]), str(device["files"]),
                     human_bytes(device["bytes"]), f"{device['seconds']:.2f} s")
            table.add_row(*map(Text, cells), Text(result, style="green" if ok else "bold red"))
        return Group(Text(""), table)
