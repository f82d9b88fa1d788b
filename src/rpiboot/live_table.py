"""Tables that fit the terminal: columns of fixed widths, dropped in a fixed priority when the
terminal is narrow, so a frame never truncates a chip or a port and keeps its width while the
numbers in it change. Designed for 80 columns; 60 keeps the essentials, 120 shows everything.
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.table import Table
from rich.text import Text

from .events import Event
from .output import board_line, final_text, for_display

GAP = 2
"""Characters between two columns (rich: one of padding, one of the box's blank divider)."""


@dataclass(frozen=True)
class Column:
    name: str
    width: int
    """Fixed width; the flexible column takes what is left, at least this much."""
    keep: int
    """Priority: when the row does not fit, the lowest ``keep`` goes first."""
    right: bool = False
    flexible: bool = False
    """Grows into the spare width (shared evenly between flexible columns); without ``wraps``
    it shortens its text with an ellipsis (file names)."""
    wraps: bool = False
    """Long text folds onto further lines instead of being cut (results and errors)."""


def fit(columns: Sequence[Column], width: int) -> list[tuple[Column, int]]:
    """The columns that fit in ``width``, in their order, each with its width."""
    kept = list(columns)
    while len(kept) > 1 and _needed(kept) > width:
        kept.remove(min(kept, key=lambda column: column.keep))
    spare = max(0, width - _needed(kept))
    flexible = [column for column in kept if column.flexible]
    share, remainder = divmod(spare, len(flexible)) if flexible else (0, 0)
    result = []
    for column in kept:
        extra = 0
        if column.flexible:
            extra = share + (remainder if column is flexible[0] else 0)
        result.append((column, column.width + extra))
    return result


def _needed(columns: Sequence[Column]) -> int:
    return sum(column.width for column in columns) + GAP * (len(columns) - 1)


def table(columns: Sequence[tuple[Column, int]], rows: Sequence[dict[str, Text]], *,
          title: str | None = None) -> Table:
    """A rich table of exactly these column widths; each row maps column names to cells."""
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                 expand=False, title=title, title_justify="left")
    for column, width in columns:
        grid.add_column(column.name, width=width, min_width=width, max_width=width,
                        no_wrap=not column.wraps, justify="right" if column.right else "left",
                        overflow="fold" if column.wraps else "ellipsis")
    for row in rows:
        grid.add_row(*(row.get(column.name, Text("")) for column, _width in columns))
    return grid


def clock(seconds: float | None) -> str:
    """m:ss (h:mm:ss from an hour on); empty when unknown."""
    if seconds is None or seconds < 0:
        return ""
    whole = int(seconds + 0.5)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


SUMMARY_COLUMNS = (
    Column("Port", 4, keep=100), Column("Serial", 16, keep=80, wraps=True), Column("Chip", 7, keep=99),
    Column("Stages", 10, keep=40), Column("Files", 5, keep=50, right=True),
    Column("Bytes", 10, keep=60, right=True), Column("Time", 8, keep=70, right=True),
    Column("Result", 16, keep=98, wraps=True))


def summary_frame(devices: list[dict[str, Any]], width: int) -> RenderableType:
    rows = []
    for device in devices:
        ok = device["result"] == "ok"
        result = device["result"] + (f" ({device['error']})" if device.get("error") else "")
        result += f" ({device['warning']})" if device.get("warning") else ""
        result += final_text(device.get("final"), arrow="→")
        rows.append({"Port": Text(device["port"]), "Serial": Text(device["serial"] or "-"),
                     "Chip": Text(device["chip"]),
                     "Stages": Text("+".join(device["stages"])),
                     "Files": Text(str(device["files"])),
                     "Bytes": Text(human_bytes(device["bytes"])),
                     "Time": Text(f"{device['seconds']:.2f} s"),
                     "Result": Text(result, style=("yellow" if device.get("warning") else "green")
                                   if ok else "bold red")})
    port_width = max(SUMMARY_COLUMNS[0].width, *(len(d["port"]) for d in devices))
    serial_width = max(1, *(len(d["serial"] or "-") for d in devices))
    columns = [dataclasses.replace(SUMMARY_COLUMNS[0], width=port_width),
               dataclasses.replace(SUMMARY_COLUMNS[1], width=min(serial_width, 32)),
               *SUMMARY_COLUMNS[2:]]
    boards = [Text(line) for device in devices
              for line in board_line(device["port"], device.get("board"))]
    return Group(Text(""), table(fit(columns, width), rows, title="Summary"), *boards)


class Fitted:
    """A renderable that lays itself out for the width it is given."""

    def __init__(self, build: Callable[[int], RenderableType]):
        self._build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self._build(options.max_width)


class LiveDisplay:
    """What the live views (rpiboot's and rpiboot-provision's) share: a ``rich`` Live display
    that the first event starts, lines printed above it, and the summary printed once when the
    run ends. A view says what an event changes (:meth:`_take`, returning the lines to print),
    how its frame looks (``__rich__``) and how its summary looks (:meth:`summary_table`)."""

    def __init__(self, console: Console | None = None, *, refresh_per_second: float = 8,
                 auto_refresh: bool = True, redirect: bool = True):
        self.console = console or Console()
        self._lock = threading.RLock()
        self._summary: list[dict[str, Any]] | None = None
        self._live = Live(self, console=self.console, refresh_per_second=refresh_per_second,
                          auto_refresh=auto_refresh, transient=False,
                          redirect_stdout=redirect, redirect_stderr=redirect)
        self._running = False
        self._closed = False

    def __call__(self, item: Event) -> None:
        with self._lock:
            if self._closed:
                return
            if not self._running and item.kind != "summary":
                self._live.start()
                self._running = True
            messages = self._take(item, for_display(item))
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

    def __rich__(self) -> RenderableType:
        """The frame the display redraws."""
        raise NotImplementedError

    def _take(self, item: Event, shown: Event) -> list[str]:
        """Take in one event (``shown``: the same, its device strings made printable); the
        lines to print above the table. Called with the lock held."""
        raise NotImplementedError

    @staticmethod
    def summary_table(summary: list[dict[str, Any]]) -> RenderableType:
        raise NotImplementedError
