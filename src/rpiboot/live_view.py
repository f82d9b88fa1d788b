"""The live per-device view for people at a terminal (``rich``): one row per USB port with chip,
stage, current file, bytes and rate, and result; a summary table at the end.

It is an :data:`~rpiboot.events.EventSink` like the other reporters, so the CLI picks it when
stdout is a terminal and ``--json`` is not given (``--plain`` keeps upstream's lines).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Callable

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .board_info import describe
from .events import Event
from .manager import WAITING_LINE
from .output import (block_device_paths, board_line, failure_line, final_text, for_display,
                     ignored_line, metadata_json_text, metadata_line, notice_lines, retry_line)


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

    def begin(self, file: str, size: int | None = None) -> None:
        """A new current file: nothing of it sent yet."""
        self.file, self.sent, self.size, self.rate = file, 0, size, None

    def progress(self, file: str, sent: int, size: int, seconds: float) -> None:
        self.file, self.sent, self.size = file, sent, size
        self.rate = sent / seconds if seconds > 0 else None


class LiveView:
    """Renders engine events as a live table on a rich console."""

    def __init__(self, verbose: int = 0, console: Console | None = None, *,
                 refresh_per_second: float = 8, auto_refresh: bool = True,
                 redirect: bool = True):
        self.verbose = verbose
        self.console = console or Console()
        self._rows: dict[str, _Row] = {}
        self._lock = threading.RLock()
        self._status = WAITING_LINE
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
        """Take in one event; the lines to print above the table."""
        run_handler = self._RUN_HANDLERS.get(item.kind)
        if run_handler is not None:
            return run_handler(self, item)
        if item.port is None:
            return []
        row = self._row(item.port)
        handler = self._DEVICE_HANDLERS.get(item.kind)
        return handler(self, row, item) if handler is not None else []

    # events about the run (or printed whole, without a row)

    def _waiting(self, item: Event) -> list[str]:
        self._status = item.data["message"]
        return []

    def _summary_event(self, item: Event) -> list[str]:
        self._summary = list(item.data["devices"])
        return []

    def _metadata_json(self, item: Event) -> list[str]:
        return [metadata_json_text(item.data["json"])]

    def _metadata_written(self, item: Event) -> list[str]:
        return [f"{item.port}: created metadata file {item.data['path']}"]

    def _notice(self, item: Event) -> list[str]:
        return notice_lines(item.port, item.data["message"], self.verbose)

    def _device_ignored(self, item: Event) -> list[str]:
        return [ignored_line(item.port, item.data["reason"])]

    _RUN_HANDLERS: dict[str, Callable[[LiveView, Event], list[str]]] = {
        "waiting": _waiting, "summary": _summary_event, "metadata_json": _metadata_json,
        "metadata_written": _metadata_written, "notice": _notice,
        "device_ignored": _device_ignored,
    }

    # events about one device: they update its row

    def _device_arrived(self, row: _Row, item: Event) -> list[str]:
        data = item.data
        row.chip, row.stage = data["chip"], data["stage"]
        row.result, row.style = "working", ""
        if not self.verbose:
            return []
        return [f"{item.port}: found {data['chip']} ({data['stage']} stage, "
                f"{data['speed']} speed, address {data['address']})"]

    def _stage_started(self, row: _Row, item: Event) -> list[str]:
        row.stage = item.data["stage"]
        row.serial = item.data.get("serial") or row.serial
        if item.data.get("file"):
            row.begin(item.data["file"])
        return []

    def _file_loaded(self, row: _Row, item: Event) -> list[str]:
        row.begin(item.data["name"], item.data["size"])
        return [f"{item.port}: loading {item.data['origin']}"] if self.verbose >= 2 else []

    def _file_requested(self, row: _Row, item: Event) -> list[str]:
        if row.file != item.data["name"]:
            row.begin(item.data["name"])
        return ([f"{item.port}: {item.data['command']} {item.data['name']}"]
                if self.verbose >= 2 else [])

    def _file_progress(self, row: _Row, item: Event) -> list[str]:
        data = item.data
        row.progress(data["name"], data["sent"], data["size"], data["seconds"])
        return []

    def _file_sent(self, row: _Row, item: Event) -> list[str]:
        """``file_served`` and ``second_stage_sent``: a whole file went out."""
        data = item.data
        row.progress(data["name"], data["size"], data["size"], data["seconds"])
        row.bytes += data["size"]
        if item.kind == "file_served":
            row.files += 1
        elif data["return_code"] == 0:
            row.stage = "reboot"
        if not self.verbose:
            return []
        return [f"{item.port}: sent {data['name']} ({human_bytes(data['size'])} in "
                f"{data['seconds']:.3f} s)"]

    def _file_missing(self, row: _Row, item: Event) -> list[str]:
        row.begin(f"{item.data['name']} (missing)")
        return [f"{item.port}: no such file {item.data['name']}"] if self.verbose else []

    def _file_refused(self, row: _Row, item: Event) -> list[str]:
        return [f"{item.port}: refused request for {item.data['name']!r}: "
                f"{item.data['reason']}"]

    def _metadata(self, row: _Row, item: Event) -> list[str]:
        return ([metadata_line(item.port, item.data["key"], item.data["value"])]
                if self.verbose else [])

    def _device_done(self, row: _Row, item: Event) -> list[str]:
        row.result, row.style = "ok", "green"
        row.serial = item.data.get("serial") or row.serial
        row.stage = "done"
        return board_line(item.port, item.data.get("board")) if self.verbose else []

    def _device_failed(self, row: _Row, item: Event) -> list[str]:
        row.result, row.style = f"failed: {item.data['code']}", "bold red"
        return [failure_line(item.port, item.data["message"])]

    def _device_retrying(self, row: _Row, item: Event) -> list[str]:
        row.result = f"retry {item.data['attempt']}/{item.data['attempts']}"
        row.style = "yellow"
        return [retry_line(item.port, item.data)]

    def _device_followed(self, row: _Row, item: Event) -> list[str]:
        blocks = ", ".join(block_device_paths(item.data["block_devices"]))
        row.stage = f"final {item.data['usb_id']}"
        row.result, row.style = "ok" + (f" ({blocks})" if blocks else ""), "green"
        return []

    _DEVICE_HANDLERS: dict[str, Callable[[LiveView, _Row, Event], list[str]]] = {
        "device_arrived": _device_arrived, "stage_started": _stage_started,
        "file_loaded": _file_loaded, "file_requested": _file_requested,
        "file_progress": _file_progress, "file_served": _file_sent,
        "second_stage_sent": _file_sent, "file_missing": _file_missing,
        "file_refused": _file_refused, "metadata": _metadata, "device_done": _device_done,
        "device_failed": _device_failed, "device_followed": _device_followed,
        "device_retrying": _device_retrying,
    }

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
            result += final_text(device.get("final"), arrow="→")
            result += f" [{describe(device['board'])}]" if device.get("board") else ""
            cells = (device["port"], device["serial"] or "-", device["chip"],
                     "+".join(device["stages"]), str(device["files"]),
                     human_bytes(device["bytes"]), f"{device['seconds']:.2f} s")
            table.add_row(*map(Text, cells), Text(result, style="green" if ok else "bold red"))
        return Group(Text(""), table)
