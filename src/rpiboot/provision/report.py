"""What the operator sees: a live per-port table on a terminal, plain lines in a pipe
(``--plain``), or JSON events (``--json``, :mod:`.event_schema`). All three are event sinks.

Strings from devices (serials, metadata) are made printable before they reach a terminal.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

from ..events import Event
from ..live_view import human_bytes
from ..output import _Writer, for_display


def _rate(rate: float | None) -> str:
    return f"{rate / 1e6:.1f} MB/s" if rate else ""


def _eta(eta: float | None) -> str:
    if eta is None:
        return ""
    minutes, seconds = divmod(int(eta), 60)
    return f"{minutes}:{seconds:02d}"


def board_line(board: dict[str, Any]) -> str:
    """One board of the summary, as plain text."""
    result = board["result"]
    if result not in ("ok", "skipped"):
        result = f"FAILED {result} at {board['step']}: {board['message']}"
    unit = f" unit {board['unit']}" if board.get("unit") is not None else ""
    verified = "verified" if board["verified"] else " " * 8
    return (f"  {board['port']:<10} {board['chip'] or '?':<5} serial {board['serial'] or '-':<12}"
            f"{unit} {human_bytes(board['bytes_written']):>10} {verified} "
            f"{board['seconds']:7.1f} s  {result}")


class PlainReporter:
    """One line per step, board and problem: for logs and pipes."""

    def __init__(self, stream: TextIO | None = None, errors: TextIO | None = None,
                 verbose: int = 0):
        self.stream = stream or sys.stdout
        self.errors = errors or sys.stderr
        self.verbose = verbose
        self._writer = _Writer()

    def __call__(self, item: Event) -> None:
        item = for_display(item)
        data, port = item.data, item.port
        lines: list[str] = []
        errors: list[str] = []
        if item.kind == "start":
            lines = [f"rpiboot-provision {data['version']}: profile {data['profile']} "
                     f"(station {data['station']}, ledger {data['ledger']})"]
        elif item.kind == "waiting":
            lines = [data["message"]]
        elif item.kind == "board_arrived":
            lines = [f"{port}: {data['chip']} board arrived"]
        elif item.kind == "step_done":
            lines = [f"{port}: {data['step']} done in {data['seconds']:.1f} s"
                     + _details_text(data["step"], data["details"])]
        elif item.kind == "step_progress" and self.verbose:
            lines = [f"{port}: {data['step']} {human_bytes(data['bytes'])} {_rate(data['rate'])}"]
        elif item.kind == "board_skipped":
            lines = [f"{port}: skipped board {data['serial']}: {data['reason']}"]
        elif item.kind == "board_done":
            model = data.get("board") or {}
            what = f" ({model['model']})" if isinstance(model, dict) and model.get("model") else ""
            lines = [f"{port}: board {data['serial']}{what} provisioned in "
                     f"{data['seconds']:.1f} s"]
        elif item.kind == "board_failed":
            errors = [f"rpiboot-provision: {port}: board {data['serial'] or '?'} failed at "
                      f"{data['step']} ({data['code']}): {data['message']}"]
        elif item.kind == "notice":
            lines = [f"{port}: {data['message']}" if port else data["message"]]
        elif item.kind == "error":
            errors = [f"rpiboot-provision: error: {data['message']}"]
        elif item.kind == "summary" and data["boards"]:
            lines = ["", "Summary:"] + [board_line(board) for board in data["boards"]]
        self._writer.write_lines(self.stream, lines)
        self._writer.write_lines(self.errors, errors)


def _details_text(step: str, details: dict[str, Any]) -> str:
    if step == "storage":
        return f": {details.get('disk')} ({human_bytes(details.get('size', 0))})"
    if step == "write":
        return f": {human_bytes(details.get('bytes_written', 0))}"
    if step == "customise":
        return f": {details.get('init')}"
    return ""


@dataclass
class _Row:
    port: str
    chip: str = "?"
    serial: str | None = None
    step: str = "arrived"
    done: int = 0
    total: int | None = None
    rate: float | None = None
    eta: float | None = None
    disk: str = ""
    result: str = "working"
    style: str = ""


class LiveView:
    """A rich table with one row per USB port, redrawn in place."""

    def __init__(self, console: Console | None = None, *, auto_refresh: bool = True):
        self.console = console or Console()
        self._rows: dict[str, _Row] = {}
        self._lock = threading.RLock()
        self._status = "Waiting for boards..."
        self._summary: list[dict[str, Any]] | None = None
        self._live = Live(self, console=self.console, refresh_per_second=4,
                          auto_refresh=auto_refresh, transient=False)
        self._running = False
        self._closed = False

    def __call__(self, item: Event) -> None:
        with self._lock:
            if self._closed:
                return
            if not self._running and item.kind != "summary":
                self._live.start()
                self._running = True
            message = self._apply(for_display(item))
        if message:
            self.console.print(message, markup=False, highlight=False, soft_wrap=True)
        if item.kind == "summary":
            self.close()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._running:
                self._live.stop()
            summary = self._summary
        if summary:
            self.console.print(self.summary_table(summary))

    def _apply(self, item: Event) -> str | None:
        data = item.data
        if item.kind == "waiting":
            self._status = data["message"]
        elif item.kind == "summary":
            self._summary = list(data["boards"])
        elif item.kind == "error":
            return f"error: {data['message']}"
        elif item.kind == "notice":
            return data["message"] if item.port is None else f"{item.port}: {data['message']}"
        elif item.port is not None:
            return self._board_event(item)
        return None

    def _board_event(self, item: Event) -> str | None:
        data, port = item.data, item.port
        assert port is not None
        handler: Callable[[_Row, dict[str, Any]], str | None] | None = self._HANDLERS.get(item.kind)
        if item.kind == "board_arrived":
            self._rows[port] = _Row(port, chip=data["chip"])
            return None
        row = self._rows.setdefault(port, _Row(port))
        return handler(row, data) if handler else None

    @staticmethod
    def _step_started(row: _Row, data: dict[str, Any]) -> None:
        row.step, row.done, row.total, row.rate, row.eta = data["step"], 0, None, None, None
        row.serial = data.get("serial") or row.serial

    @staticmethod
    def _step_progress(row: _Row, data: dict[str, Any]) -> None:
        row.done, row.total, row.rate, row.eta = (data["bytes"], data["total"], data["rate"],
                                                  data["eta"])

    @staticmethod
    def _step_done(row: _Row, data: dict[str, Any]) -> None:
        if data["step"] == "storage":
            row.disk = str(data["details"].get("disk", ""))

    @staticmethod
    def _board_done(row: _Row, data: dict[str, Any]) -> None:
        row.step, row.result, row.style = "done", "ok", "green"
        row.serial = data.get("serial") or row.serial

    @staticmethod
    def _board_skipped(row: _Row, data: dict[str, Any]) -> None:
        row.step, row.result, row.style = "skipped", "already provisioned", "yellow"

    @staticmethod
    def _board_failed(row: _Row, data: dict[str, Any]) -> str:
        row.result, row.style = f"failed: {data['code']}", "bold red"
        return f"{row.port}: failed at {data['step']}: {data['message']}"

    _HANDLERS: dict[str, Any] = {
        "step_started": _step_started, "step_progress": _step_progress,
        "step_done": _step_done, "board_done": _board_done, "board_skipped": _board_skipped,
        "board_failed": _board_failed,
    }

    def __rich__(self) -> RenderableType:
        return self.board_table()

    def board_table(self) -> RenderableType:
        with self._lock:
            if not self._rows:
                return Text(self._status)
            table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                          caption=self._totals(), caption_justify="left")
            for column in ("Port", "Chip", "Serial", "Step", "Disk", "Progress", "Rate", "ETA",
                           "Result"):
                table.add_column(column, no_wrap=True, justify="right"
                                 if column in ("Progress", "Rate", "ETA") else "left")
            for row in self._rows.values():
                progress = (f"{100 * row.done // row.total}% of {human_bytes(row.total)}"
                            if row.total else (human_bytes(row.done) if row.done else ""))
                table.add_row(*map(Text, (row.port, row.chip, row.serial or "", row.step,
                                          row.disk, progress, _rate(row.rate), _eta(row.eta))),
                              Text(row.result, style=row.style))
            return table

    def _totals(self) -> str:
        results = [row.result for row in self._rows.values()]
        ok = sum(result == "ok" for result in results)
        failed = sum(result.startswith("failed") for result in results)
        skipped = sum(result == "already provisioned" for result in results)
        return (f"{ok} provisioned, {failed} failed, {skipped} skipped, "
                f"{len(results) - ok - failed - skipped} in progress")

    @staticmethod
    def summary_table(boards: list[dict[str, Any]]) -> RenderableType:
        table = Table(title="Summary", box=box.SIMPLE_HEAD, show_edge=False, title_justify="left")
        for column in ("Port", "Serial", "Chip", "Unit", "Written", "Verified", "Time", "Result"):
            table.add_column(column, no_wrap=True)
        for board in boards:
            ok = board["result"] in ("ok", "skipped")
            result = board["result"] if ok else \
                f"{board['result']} at {board['step']}: {board['message']}"
            table.add_row(*map(Text, (board["port"], board["serial"] or "-", board["chip"] or "?",
                                      "" if board["unit"] is None else str(board["unit"]),
                                      human_bytes(board["bytes_written"]),
                                      "yes" if board["verified"] else "no",
                                      f"{board['seconds']:.1f} s")),
                          Text(result, style="green" if ok else "bold red"))
        return Group(Text(""), table)
