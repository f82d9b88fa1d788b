"""Issue 12, "The live view": designed for 80 columns, columns dropped in a fixed priority when
narrower, chips / ports / error codes never truncated, ETA and elapsed time, a width that stays
the same between frames, and in loop mode a line saying the run is still listening."""

from __future__ import annotations

import io
import re
import time

import pytest
from rich.console import Console

from rpiboot.events import Event, event
from rpiboot.live_view import LiveView

MIB = 1024 * 1024


def _arrive(port: str, chip: str) -> Event:
    return event("device_arrived", port, chip=chip, stage="server", serial_index=4, bus=1,
                 address=5, speed="high", interfaces=1)


def _view(loop: bool = False) -> LiveView:
    view = LiveView(console=Console(file=io.StringIO()), auto_refresh=False, redirect=False,
                    loop=loop)
    for port, chip in (("1-1", "BCM2711"), ("1-2", "BCM2712"), ("1-3.1", "BCM2835")):
        view(_arrive(port, chip))
    view(event("file_progress", "1-1", name="kernel8.img", sent=3 * MIB, size=12 * MIB,
               seconds=0.5))
    view(event("device_failed", "1-2", code="device_gone", message="gone", exit_code=5))
    view(event("device_done", "1-3.1", chip="BCM2835", serial="30000000facade00",
               stages=["rom", "server"], files=1, bytes=4000, seconds=0.2, result="ok",
               error=None, final=None, warning=None))
    return view


def _render(renderable: object, width: int) -> list[str]:
    console = Console(file=io.StringIO(), width=width, color_system=None)
    console.print(renderable)
    return console.file.getvalue().rstrip("\n").split("\n")  # type: ignore[attr-defined]


def _words(lines: list[str]) -> set[str]:
    return set(re.findall(r"[\w.:/-]+", " ".join(lines)))


@pytest.mark.parametrize("width", [60, 80, 120])
def test_frame_fits_and_never_truncates_chips_ports_or_codes(width: int) -> None:
    lines = _render(_view().device_table(), width)
    assert all(len(line) <= width for line in lines), lines
    words = _words(lines)
    assert {"BCM2711", "BCM2712", "BCM2835", "1-1", "1-2", "1-3.1", "device_gone",
            "Port", "Chip", "Result", "Progress"} <= words, lines
    assert "…" not in "".join(line for line in lines if "BCM" in line).split("kernel")[0]


def test_columns_are_dropped_in_a_fixed_priority() -> None:
    headers = {width: _render(_view().device_table(), width)[0].split()
               for width in (60, 80, 120)}
    assert headers[120] == ["Port", "Chip", "Stage", "File", "Progress", "Rate", "ETA", "Time",
                            "Files", "Result"]
    assert headers[80] == ["Port", "Chip", "File", "Progress", "ETA", "Time", "Result"]
    assert headers[60] == ["Port", "Chip", "Progress", "Time", "Result"]


def test_eta_and_elapsed_time_are_shown() -> None:
    lines = _render(_view().device_table(), 80)
    row = next(line for line in lines if line.startswith("1-1 "))
    assert "kernel8.img" in row and "25% 12.0 MiB" in row
    assert "0:02" in row  # 9 MiB left at 6 MiB/s: about 2 s (ETA)
    assert re.search(r"\b0:0\d\b.*\b0:0\d\b", row)  # ETA and elapsed


def test_table_width_is_stable_between_frames() -> None:
    view = _view()
    before = _render(view.device_table(), 80)
    view(event("file_progress", "1-1", name="a-much-longer-file-name-than-before.img",
               sent=999 * MIB, size=1000 * MIB, seconds=1.5))
    view(event("file_served", "1-1", name="x", size=1, seconds=0.1))
    after = _render(view.device_table(), 80)
    assert len(before[0]) == len(after[0])
    assert {len(line) for line in before} == {len(line) for line in after}


def test_loop_mode_shows_that_it_is_still_listening() -> None:
    lines = _render(_view(loop=True).device_table(), 80)
    status = lines[-1]
    assert status.startswith("Listening for boards (-l): 1 done, 1 failed, 1 in progress")
    assert "idle 0:00" in status
    assert all(len(line) <= 80 for line in lines)
    empty = LiveView(console=Console(file=io.StringIO()), auto_refresh=False, redirect=False,
                     loop=True)
    assert "Listening for boards (-l): 0 done" in empty.device_table().plain  # type: ignore


@pytest.mark.parametrize("width", [60, 80, 120])
def test_summary_table_fits(width: int) -> None:
    devices = [{"port": "1-1.3.2", "chip": "BCM2711", "serial": "10000000d3adb33f",
                "stages": ["rom", "server"], "files": 3, "bytes": 6 * MIB, "seconds": 1.25,
                "result": "failed", "error": "device_gone", "final": None, "warning": None}]
    lines = _render(LiveView.summary_table(devices), width)
    assert all(len(line) <= width for line in lines), lines
    assert {"1-1.3.2", "BCM2711", "device_gone"} <= _words(lines)
    if width >= 80:
        assert "10000000d3adb33f" in _words(lines)


def test_live_view_starts_with_the_version_banner() -> None:
    buffer = io.StringIO()
    view = LiveView(console=Console(file=buffer, width=80), auto_refresh=False, redirect=False)
    view(event("start", version="9.9.9", directory=None))
    view.close()
    assert buffer.getvalue().startswith("RPIBOOT: pkg-version 9.9.9")


def test_live_view_and_summary_show_the_board() -> None:
    from rpiboot.api import boot
    from rpiboot.simulator import typical_pi
    from rpiboot.simulator.in_process import VirtualBus

    from operator_support import fast_options

    buffer = io.StringIO()
    view = LiveView(console=Console(file=buffer, width=80, color_system=None),
                    auto_refresh=False, redirect=False)
    pi = typical_pi("2711", (1,), files=("config.txt",),
                    meta={"USER_BOARDREV": "0xb03141", "CUSTOMER_KEY_HASH": "0" * 64})
    result = boot(fast_options(), on_event=view, transport=VirtualBus([pi]))
    view.close()
    assert result.exit_code == 0
    text = buffer.getvalue()
    board_lines = [line for line in text.splitlines() if line.startswith("1-1: board ")]
    assert len(board_lines) == 2  # when the board finished, and under the summary
    assert all("Compute Module 4" in line and "BCM2711" in line for line in board_lines)
    assert all(len(line) <= 80 for line in text.splitlines())


def test_loop_idle_time_counts_from_the_last_board_event_not_the_run_end() -> None:
    view = LiveView(console=Console(file=io.StringIO()), auto_refresh=False, redirect=False,
                    loop=True)
    arrived = _arrive("1-1", "BCM2711")
    view(Event(arrived.kind, arrived.port, arrived.data, time.time() - 65))
    view(event("notice", message="still waiting"))
    view(event("summary", devices=[], ignored=[], exit_code=0))
    status = _render(view.device_table(), 80)[-1]
    assert "idle 1:0" in status, status
