"""The live view for terminals (rich), progress events and the plain reporter's detail levels."""

from __future__ import annotations

import io
import re
import sys

import pytest
from rich.console import Console

from rpiboot import cli
from rpiboot.demo import demo_pis
from rpiboot.events import event
from rpiboot.live_view import LiveView, human_bytes
from rpiboot.output import JsonReporter, PlainReporter
from rpiboot.simulator import typical_pi
from rpiboot.simulator.in_process import VirtualBus

from operator_support import DEMO_DIR, fast_options, run

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def _console() -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=120, color_system="standard"), buffer


def _text(buffer: io.StringIO) -> str:
    return ANSI.sub("", buffer.getvalue())


def test_live_view_of_a_demo_run_shows_ports_chips_files_results() -> None:
    console, buffer = _console()
    view = LiveView(console=console, auto_refresh=False, redirect=False)
    from rpiboot.api import boot
    result = boot(fast_options(), on_event=view, transport=VirtualBus(demo_pis()))
    view.close()
    assert result.exit_code == 0
    text = _text(buffer)
    for port, chip, last_file in (("1-1", "BCM2711", "kernel8.img"),
                                  ("1-2", "BCM2712", "kernel_2712.img"),
                                  ("1-3.1", "BCM2835", "start.elf")):
        row = next(line for line in text.splitlines()
                   if line.startswith(port + " ") and chip in line and "rom+server" not in line)
        assert last_file in row and row.rstrip().endswith("ok")
    assert "Summary" in text
    assert "10000000d3adb33f" in text  # serial in the summary
    assert "rom+server" in text


def test_live_view_shows_progress_rate_and_failures() -> None:
    console, buffer = _console()
    view = LiveView(console=console, auto_refresh=False, redirect=False)
    view(event("device_arrived", "1-4", chip="BCM2711", stage="server", serial_index=4, bus=1,
               address=9, speed="high", interfaces=1))
    view(event("file_progress", "1-4", name="kernel8.img", sent=3 * 1024 * 1024,
               size=12 * 1024 * 1024, seconds=0.5))
    frame = Console(file=io.StringIO(), width=120)
    frame.print(view.device_table())
    rendered = frame.file.getvalue()
    assert "kernel8.img" in rendered and "25% 12.0 MiB" in rendered
    assert "6.0 MiB/s" in rendered
    view(event("device_failed", "1-4", code="stalled", message="device sent no request for 1 s",
               exit_code=5))
    view(event("summary", devices=[{"port": "1-4", "chip": "BCM2711", "serial": None,
                                    "stages": ["server"], "files": 0, "bytes": 0,
                                    "seconds": 1.0, "result": "failed", "error": "stalled",
                                    "final": None}], exit_code=5))
    text = _text(buffer)
    assert "rpiboot: error: 1-4: device sent no request for 1 s" in text
    assert "failed: stalled" in text
    assert "failed (stalled)" in text  # summary


def test_live_view_ignores_events_after_close() -> None:
    console, buffer = _console()
    view = LiveView(console=console, auto_refresh=False, redirect=False)
    view.close()
    view(event("waiting", message="Waiting"))
    assert buffer.getvalue() == ""


def test_file_progress_events_are_rate_limited(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr("rpiboot.link.time.monotonic", lambda: clock[0])
    from rpiboot.link import progress_reporter

    emitted = []
    report = progress_reporter(emitted.append, "1-1", "big.img", 1000, began=100.0)
    for sent in range(100, 1001, 100):
        clock[0] += 0.03  # a chunk every 30 ms
        report(sent)
    assert [item.data["sent"] for item in emitted] == [400, 800]
    assert all(item.kind == "file_progress" and item.data["size"] == 1000 for item in emitted)


def test_progress_is_emitted_during_a_real_transfer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("rpiboot.link.PROGRESS_INTERVAL", 0.0)
    result, events = run([typical_pi("2711", (1,), files=("start4.elf",))], chunk_size=16)
    progress = [item.data for item in events.of("file_progress")
                if item.data["name"] == "start4.elf"]
    size = (DEMO_DIR / "start4.elf").stat().st_size
    assert [p["sent"] for p in progress] == list(range(16, size, 16)) + [size]
    assert all(p["size"] == size for p in progress)


def test_cli_picks_the_reporter(monkeypatch: pytest.MonkeyPatch) -> None:
    args, _ = cli.parse_options(["--json"])
    assert isinstance(cli.make_reporter(args), JsonReporter)
    args, _ = cli.parse_options([])
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert isinstance(cli.make_reporter(args), PlainReporter)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(sys, "stdout", Terminal())
    view = cli.make_reporter(args)
    assert isinstance(view, LiveView)
    view.close()
    args, _ = cli.parse_options(["--plain"])
    assert isinstance(cli.make_reporter(args), PlainReporter)


def test_plain_output_keeps_upstream_lines_and_verbose_adds_detail(capsys) -> None:
    pi = typical_pi("2711", (1,), files=("config.txt",))
    assert cli.main(["--plain", "-d", str(DEMO_DIR), "--timeout", "2"],
                    transport=VirtualBus([pi])) == 0
    quiet = capsys.readouterr().out.splitlines()
    assert quiet[0].startswith("RPIBOOT: pkg-version ")  # upstream's first line is its version
    assert quiet[2] == "Waiting for BCM2835/6/7/2711/2712..."
    for line in ("Sending bootcode.bin", "Second stage boot server", "File read: config.txt",
                 "Second stage boot server done"):
        assert line in quiet
    assert not any(line.startswith("1-1") for line in quiet)
    pi = typical_pi("2711", (1,), files=("config.txt",))
    assert cli.main(["--plain", "-vv", "-d", str(DEMO_DIR), "--timeout", "2"],
                    transport=VirtualBus([pi])) == 0
    verbose = capsys.readouterr().out.splitlines()
    assert set(quiet) <= set(verbose)
    assert any(line.startswith("Found BCM2711 at 1-1") for line in verbose)
    assert any(line.startswith("1-1: sent ") for line in verbose)
    assert "Summary:" in verbose


def test_human_bytes() -> None:
    assert human_bytes(10) == "10 B"
    assert human_bytes(2048) == "2.0 KiB"
    assert human_bytes(5 * 1024 ** 3) == "5.0 GiB"


@pytest.mark.parametrize("verbose", [0, 1])
def test_live_view_and_plain_lines_agree_on_shared_messages(verbose: int) -> None:
    shared = [event("notice", message="run notice"), event("notice", "1-1", message="port notice"),
              event("device_ignored", "1-9", reason="not -p 1-1"),
              event("metadata", "1-1", key="MAC_ADDR", value="d8:3a"),
              event("metadata_json", "1-1", json='{\n  "MAC_ADDR": "d8:3a"\n}\n')]
    plain_out = io.StringIO()
    plain = PlainReporter(verbose=verbose, stream=plain_out, errors=io.StringIO())
    console, buffer = _console()
    view = LiveView(verbose=verbose, console=console, auto_refresh=False, redirect=False)
    assert view.device_table().plain == "Waiting for BCM2835/6/7/2711/2712..."  # before any event
    for item in shared:
        plain(item)
        view(item)
    view.close()
    lines = plain_out.getvalue().splitlines()
    assert ("1-1: port notice" in lines) == ("1-1: metadata MAC_ADDR = d8:3a" in lines) == bool(
        verbose)
    assert {"run notice", "1-9: ignored (not -p 1-1)", '  "MAC_ADDR": "d8:3a"'} <= set(lines)
    for line in lines:
        assert line in _text(buffer)
