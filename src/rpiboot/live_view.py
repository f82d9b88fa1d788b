"""The live per-device view for people at a terminal (``rich``): one row per USB port with chip,
stage, current file, bytes and rate, and result; a summary table at the end.

It is an :data:`~rpiboot.events.EventSink` like the other reporters, so the CLI picks it when
stdout is a terminal and ``--json`` is not given (``--plain`` keeps upstream's lines).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, Callable

from rich.console import Console, Group, RenderableType
from rich.text import Text

from .events import Event
from .live_table import (Column, Fitted, LiveDisplay, clock, fit, human_bytes,
                         summary_frame, table)
from .manager import WAITING_LINE
from .output import (banner, block_device_paths, board_line, demo_lines, failure_line,
                     ignored_line, metadata_json_text, metadata_line, notice_lines, retry_line)


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
    started: float | None = None
    """Event time of the first arrival; ``ended`` when the board finished or failed."""
    ended: float | None = None

    def begin(self, file: str, size: int | None = None) -> None:
        """A new current file: nothing of it sent yet."""
        self.file, self.sent, self.size, self.rate = file, 0, size, None

    def progress(self, file: str, sent: int, size: int, seconds: float) -> None:
        self.file, self.sent, self.size = file, sent, size
        self.rate = sent / seconds if seconds > 0 else None

    def eta(self) -> float | None:
        if self.ended is None and self.size and self.rate and self.sent < self.size:
            return (self.size - self.sent) / self.rate
        return None

    def elapsed(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended if self.ended is not None else now) - self.started

    def progress_text(self) -> str:
        if self.size:
            return f"{100 * self.sent // self.size}% {human_bytes(self.size)}"
        return human_bytes(self.sent) if self.sent else ""

    def cells(self, now: float) -> dict[str, Text]:
        eta = self.eta()
        return {"Port": Text(self.port), "Chip": Text(self.chip), "Stage": Text(self.stage),
                "File": Text(self.file), "Progress": Text(self.progress_text()),
                "Rate": Text(f"{human_bytes(self.rate)}/s" if self.rate else ""),
                "ETA": Text(clock(eta) if eta is not None else ""),
                "Time": Text(clock(self.elapsed(now))), "Files": Text(str(self.files)),
                "Result": Text(f"{self.result}: {self.stage}" if self.result == "working"
                               else self.result, style=self.style)}


DEVICE_COLUMNS = (
    Column("Port", 4, keep=100), Column("Chip", 7, keep=99), Column("Stage", 6, keep=45),
    Column("File", 12, keep=65, flexible=True), Column("Progress", 14, keep=90, right=True),
    Column("Rate", 11, keep=40, right=True), Column("ETA", 5, keep=60, right=True),
    Column("Time", 5, keep=70, right=True), Column("Files", 5, keep=30, right=True),
    Column("Result", 16, keep=98, wraps=True))
"""The live table. Dropped first when narrow: Files, Rate, Stage (at 80 columns with ports of up
to 5 characters), then ETA, File and Time (at 60)."""



class LiveView(LiveDisplay):
    """Renders engine events as a live table on a rich console."""

    def __init__(self, verbose: int = 0, console: Console | None = None, *,
                 refresh_per_second: float = 8, auto_refresh: bool = True,
                 redirect: bool = True, loop: bool = False):
        self.verbose = verbose
        self.loop = loop
        """-l: show that the run is still listening (boards done, failed, idle time)."""
        self._last_event = time.time()
        self._rows: dict[str, _Row] = {}
        self._status = WAITING_LINE
        super().__init__(console, refresh_per_second=refresh_per_second,
                         auto_refresh=auto_refresh, redirect=redirect)

    def _take(self, item: Event, shown: Event) -> list[str]:
        # idle: since a board's last event (notices and the run's end are not activity)
        if item.port is not None:
            self._last_event = item.time
        return self._apply(shown)

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

    def _start(self, item: Event) -> list[str]:
        return [banner(item.data["version"])]

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

    def _demo_result(self, item: Event) -> list[str]:
        return demo_lines(item.data)

    _RUN_HANDLERS: dict[str, Callable[[LiveView, Event], list[str]]] = {
        "start": _start, "waiting": _waiting, "summary": _summary_event,
        "metadata_json": _metadata_json, "metadata_written": _metadata_written, "notice": _notice,
        "device_ignored": _device_ignored, "demo_result": _demo_result,
    }

    # events about one device: they update its row

    def _device_arrived(self, row: _Row, item: Event) -> list[str]:
        data = item.data
        row.chip, row.stage = data["chip"], data["stage"]
        row.result, row.style = "working", ""
        if row.started is None or row.ended is not None:
            row.started, row.ended = item.time, None
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
        row.result, row.style, row.ended = "ok", "green", item.time
        row.serial = item.data.get("serial") or row.serial
        row.stage = "done"
        return board_line(item.port, item.data.get("board"))

    def _device_failed(self, row: _Row, item: Event) -> list[str]:
        row.result, row.style = f"failed: {item.data['code']}", "bold red"
        row.ended = item.time
        return [failure_line(item.port, item.data["message"])]

    def _device_retrying(self, row: _Row, item: Event) -> list[str]:
        row.result = f"retry {item.data['attempt']}/{item.data['attempts']}"
        row.style = "yellow"
        return [retry_line(item.port, item.data)]

    def _device_followed(self, row: _Row, item: Event) -> list[str]:
        blocks = ", ".join(block_device_paths(item.data["block_devices"]))
        row.stage = "final"
        row.result = f"ok {item.data['usb_id']}" + (f" ({blocks})" if blocks else "")
        row.style, row.ended = "green", item.time
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
        return self.device_table()

    def device_table(self) -> RenderableType:
        """The frame: one row per port, fitted to the width it is drawn at."""
        with self._lock:
            if not self._rows:
                return Text(self._listening_line(time.time()) or self._status)
        return Fitted(self._frame)

    def _frame(self, width: int) -> RenderableType:
        with self._lock:
            now = time.time()
            listening = self._listening_line(now)
            if not self._rows:
                return Text(listening or self._status)
            rows = [row.cells(now) for row in self._rows.values()]
            port_width = max(DEVICE_COLUMNS[0].width, *(len(port) for port in self._rows))
        columns = [dataclasses.replace(DEVICE_COLUMNS[0], width=port_width),
                   *DEVICE_COLUMNS[1:]]
        grid = table(fit(columns, width), rows)
        return Group(grid, Text(listening)) if listening else grid

    def _listening_line(self, now: float) -> str:
        if not self.loop:
            return ""
        results = [row.result for row in self._rows.values()]
        done = sum(result.startswith("ok") for result in results)
        failed = sum(result.startswith("failed") for result in results)
        busy = len(results) - done - failed
        return (f"Listening for boards (-l): {done} done, {failed} failed, {busy} in progress; "
                f"idle {clock(now - self._last_event)}")

    @staticmethod
    def summary_table(devices: list[dict[str, Any]]) -> RenderableType:
        return Fitted(lambda width: summary_frame(devices, width))
