"""The operator's views: plain lines and the live per-port table, fed by a real run's events,
with a board whose serial number is hostile (terminal escapes, a newline)."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from rpiboot.events import Event
from rpiboot.provision.report import LiveView, PlainReporter

from provision_support import board, make_boot_dirs, os_image, run_virtual, write_profile

HOSTILE = "ev\x1b[2Jil\nserial"


@pytest.fixture(scope="module")
def events(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    make_boot_dirs(tmp)
    os_image(tmp / "os.img", 1 << 20)
    profile = write_profile(tmp / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\n'
                                            'image = "os.img"\n')
    pis = [board("2711", 1, HOSTILE, tmp / "a.img", 4 << 20),
           board("2711", 2, "small", tmp / "b.img", 512 << 10)]
    run = run_virtual(tmp, profile, pis)
    assert run.schema_problems() == []
    return [Event(e["event"], e.get("port"), {k: v for k, v in e.items()
                                              if k not in ("event", "time", "port")}, e["time"])
            for e in run.events]


def test_plain_lines_in_a_pipe(events):
    out, err = io.StringIO(), io.StringIO()
    reporter = PlainReporter(out, err)
    for item in events:
        reporter(item)
    text, errors = out.getvalue(), err.getvalue()
    assert "1-1: BCM2711 board arrived" in text and "1-1: write done in" in text
    assert "Summary:" in text and "image_too_large" in text
    assert "1-2: board small failed at write (image_too_large)" in errors
    assert "\x1b" not in text + errors
    assert "ev\\x1b[2Jil\\nserial" in text  # the hostile serial, escaped, on one line


def test_live_table_shows_every_port_and_the_summary(events):
    console = Console(file=io.StringIO(), width=160, force_terminal=True, color_system=None)
    view = LiveView(console, auto_refresh=False)
    for item in events[:-1]:
        view(item)
    table = io.StringIO()
    Console(file=table, width=160, color_system=None).print(view.board_table())
    rendered = table.getvalue()
    assert "1-1" in rendered and "1-2" in rendered
    assert "ok" in rendered and "failed: image_too_large" in rendered
    assert "1 provisioned, 1 failed, 0 skipped, 0 in progress" in rendered
    assert "\x1b[2J" not in rendered and "ev\\x1b[2Jil\\nserial" in rendered
    view(events[-1])  # summary: the live display stops, the summary table is printed
    printed = console.file.getvalue()
    assert "Summary" in printed and "image_too_large at write" in printed


def test_a_large_boot_file_shows_as_boot_progress(tmp_path, monkeypatch):
    import rpiboot.link
    monkeypatch.setattr(rpiboot.link, "PROGRESS_INTERVAL", 0.0)  # every chunk, however fast
    make_boot_dirs(tmp_path)
    (tmp_path / "gadget" / "boot.img").write_bytes(bytes(8 << 20))
    os_image(tmp_path / "os.img", 1 << 20)
    profile = write_profile(tmp_path / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\n'
                                                 'image = "os.img"\n')
    run = run_virtual(tmp_path, profile, [board("2711", 1, "b001", tmp_path / "d.img",
                                                4 << 20)])
    assert run.schema_problems() == [] and run.outcome.exit_code == 0
    boot = [e for e in run.kinds("step_progress") if e["step"] == "boot"]
    assert all(0 < e["bytes"] <= e["total"] for e in boot)
    assert [e["bytes"] for e in boot if e["total"] == 8 << 20][-1] > 4 << 20  # boot.img


def _render(renderable, width):
    out = io.StringIO()
    Console(file=out, width=width, color_system=None).print(renderable)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("width", [60, 80, 120])
def test_live_table_fits_the_terminal_and_never_cuts_ports_chips_or_results(width):
    from rpiboot.events import event
    view = LiveView(Console(file=io.StringIO(), width=width), auto_refresh=False)
    for item in (event("board_arrived", "1-1.3.4", chip="BCM2711"),
                 event("step_started", "1-1.3.4", step="write", serial="10000000deadbeef"),
                 event("step_progress", "1-1.3.4", step="write", bytes=123_456_789,
                       total=2_000_000_000, rate=31.2e6, eta=65.0),
                 event("board_arrived", "1-2", chip="BCM2712"),
                 event("board_failed", "1-2", serial="c0ffee", step="write",
                       code="image_too_large", message="too big", exit_code=5)):
        view(item)
    first = _render(view.board_table(), width)
    view(event("step_progress", "1-1.3.4", step="write", bytes=1_999_000_000,
               total=2_000_000_000, rate=9.9e6, eta=0.1))
    second = _render(view.board_table(), width)
    assert all(len(line) <= width for line in first + second), first
    assert max(map(len, first)) == max(map(len, second))  # the frame keeps its width
    words = " ".join(first).split()
    for text in ("1-1.3.4", "BCM2711", "BCM2712", "write", "6%"):
        assert text in words, (text, first)
    assert "image_too_large" in " ".join(first)
    assert ("10000000deadbeef" in words) == (width >= 80)
    assert ("31.2 MB/s" in " ".join(first)) == (width >= 120)
