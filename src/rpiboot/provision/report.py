"""What the operator sees: a live per-port table on a terminal, plain lines in a pipe
(``--plain``), or JSON events (``--json``, :mod:`.event_schema`). All three are event sinks.

Strings from devices (serials, metadata) are made printable before they reach a terminal.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from rich.console import Console, Group, RenderableType
from rich.text import Text

from ..events import Event
from ..live_table import Column, Fitted, LiveDisplay, clock, fit, human_bytes, table
from ..output import _Writer, for_display


def _rate(rate: float | None) -> str:
    return f"{rate / 1e6:.1f} MB/s" if rate else ""


def _eta(eta: float | None) -> str:
    return clock(eta)


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


class LiveView(LiveDisplay):
    """A rich table with one row per USB port, redrawn in place."""

    def __init__(self, console: Console | None = None, *, auto_refresh: bool = True):
        self._rows: dict[str, _Row] = {}
        self._status = "Waiting for boards..."
        super().__init__(console, refresh_per_second=4, auto_refresh=auto_refresh)

    def _take(self, item: Event, shown: Event) -> list[str]:
        message = self._apply(shown)
        return [message] if message else []

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
        row.step, row.serial = data["step"], data.get("serial") or row.serial
        return f"{row.port}: failed at {data['step']}: {data['message']}"

    _HANDLERS: dict[str, Any] = {
        "step_started": _step_started, "step_progress": _step_progress,
        "step_done": _step_done, "board_done": _board_done, "board_skipped": _board_skipped,
        "board_failed": _board_failed,
    }

    def __rich__(self) -> RenderableType:
        return self.board_table()

    def board_table(self) -> RenderableType:
        """The frame: one row per port, fitted to the terminal's width (columns dropped in a
        fixed priority, never a port, chip or result cut), and the run's totals."""
        return Fitted(self._frame)

    def _frame(self, width: int) -> RenderableType:
        with self._lock:
            if not self._rows:
                return Text(self._status)
            rows = [_cells(row) for row in self._rows.values()]
            totals = self._totals()
            port_width = max(BOARD_COLUMNS[0].width, *(len(port) for port in self._rows))
        columns = [dataclasses.replace(BOARD_COLUMNS[0], width=port_width), *BOARD_COLUMNS[1:]]
        return Group(table(fit(columns, width), rows), Text(totals))

    def _totals(self) -> str:
        results = [row.result for row in self._rows.values()]
        ok = sum(result == "ok" for result in results)
        failed = sum(result.startswith("failed") for result in results)
        skipped = sum(result == "already provisioned" for result in results)
        return (f"{ok} provisioned, {failed} failed, {skipped} skipped, "
                f"{len(results) - ok - failed - skipped} in progress")

    @staticmethod
    def summary_table(boards: list[dict[str, Any]]) -> RenderableType:
        return Fitted(lambda width: _summary_frame(boards, width))


def _cells(row: _Row) -> dict[str, Text]:
    progress = (f"{100 * row.done // row.total}% {human_bytes(row.total)}" if row.total
                else (human_bytes(row.done) if row.done else ""))
    return {"Port": Text(row.port), "Chip": Text(row.chip), "Serial": Text(row.serial or ""),
            "Step": Text(row.step), "Disk": Text(row.disk), "Progress": Text(progress),
            "Rate": Text(_rate(row.rate)), "ETA": Text(_eta(row.eta)),
            "Result": Text(row.result, style=row.style)}


BOARD_COLUMNS = (
    Column("Port", 4, keep=100), Column("Chip", 7, keep=99),
    Column("Serial", 16, keep=80, wraps=True, flexible=True), Column("Step", 9, keep=90),
    Column("Disk", 8, keep=30), Column("Progress", 13, keep=85, right=True),
    Column("Rate", 10, keep=50, right=True), Column("ETA", 5, keep=60, right=True),
    Column("Result", 16, keep=98, wraps=True, flexible=True))
"""The live table. Dropped first when narrow: Disk, Rate, ETA (80 columns keep port, chip,
serial, step, progress and result; 60 keep port, chip, step, progress and result)."""

SUMMARY_COLUMNS = (
    Column("Port", 4, keep=100), Column("Serial", 16, keep=80, wraps=True),
    Column("Chip", 7, keep=99), Column("Unit", 5, keep=40, right=True),
    Column("Written", 10, keep=60, right=True), Column("Verified", 8, keep=70),
    Column("Time", 7, keep=50, right=True),
    Column("Result", 16, keep=98, wraps=True, flexible=True))


def _summary_frame(boards: list[dict[str, Any]], width: int) -> RenderableType:
    rows = []
    for board in boards:
        ok = board["result"] in ("ok", "skipped")
        result = board["result"] if ok else \
            f"{board['result']} at {board['step']}: {board['message']}"
        rows.append({"Port": Text(board["port"]), "Serial": Text(board["serial"] or "-"),
                     "Chip": Text(board["chip"] or "?"),
                     "Unit": Text("" if board["unit"] is None else str(board["unit"])),
                     "Written": Text(human_bytes(board["bytes_written"])),
                     "Verified": Text("yes" if board["verified"] else "no"),
                     "Time": Text(f"{board['seconds']:.1f} s"),
                     "Result": Text(result, style="green" if ok else "bold red")})
    port_width = max(SUMMARY_COLUMNS[0].width, *(len(board["port"]) for board in boards))
    columns = [dataclasses.replace(SUMMARY_COLUMNS[0], width=port_width), *SUMMARY_COLUMNS[1:]]
    return Group(Text(""), table(fit(columns, width), rows, title="Summary"))
