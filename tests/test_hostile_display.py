"""Strings a device controls (file names, serial numbers, metadata) cannot forge output lines,
move the terminal cursor or inject rich markup, in any reporter."""

from __future__ import annotations

import io
import json
from pathlib import Path

from rich.console import Console

from rpiboot.api import boot
from rpiboot.live_view import LiveView
from rpiboot.output import JsonReporter, PlainReporter, printable
from rpiboot.simulator import ServerStage, RomStage, VirtualPi
from rpiboot.simulator.in_process import VirtualBus
from rpiboot.simulator.script import done, load, metadata

from engine_support import fast_options

FORGED = "x.txt\nSecond stage boot server done"
ESCAPE = "\x1b[2J\x1b[Hcleared"
MARKUP = "[/bold][link=http://evil]click[/link]"
SERIAL = "ser[/]ial\x1b[31m\u202e"


def hostile_pi() -> VirtualPi:
    # Names with control characters are refused by the file lookup; these ones are not, so the
    # reporters themselves must defuse them.
    requests = (load(MARKUP) + load("\u202egnp.exe") + [metadata("KEY", ESCAPE)]
                + load(FORGED) + [done()])
    return VirtualPi("2711", (1,), stages=[RomStage(serial_index=3),
                                           ServerStage(requests, serial=SERIAL)])


def run(reporter, boot_dir: Path) -> int:  # type: ignore[no-untyped-def]
    options = fast_options(boot_dir, metadata=True, verbose=2)
    return int(boot(options, on_event=reporter, transport=VirtualBus([hostile_pi()])).exit_code)


def test_printable_escapes_only_what_needs_it() -> None:
    assert printable("config.txt") == "config.txt"
    assert printable("a\nb") == "a\\nb"
    assert printable("\x1b[2J") == "\\x1b[2J"
    assert printable("\u202e") == "\\u202e"


def test_plain_reporter_lines_cannot_be_forged(boot_dir: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run(PlainReporter(verbose=2, stream=out, errors=err), boot_dir) == 0
    lines = out.getvalue().splitlines()
    assert lines.count("Second stage boot server done") == 1
    assert "\x1b" not in out.getvalue() + err.getvalue()
    assert "\u202e" not in out.getvalue()


def test_json_reporter_stays_valid(boot_dir: Path) -> None:
    out = io.StringIO()
    assert run(JsonReporter(stream=out), boot_dir) == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert any(e.get("value") == ESCAPE for e in events if e["event"] == "metadata")
    assert "\x1b" not in out.getvalue()


def test_live_view_survives_markup_and_escapes(boot_dir: Path) -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=200, color_system=None)
    view = LiveView(console=console, auto_refresh=False, redirect=False, verbose=2)
    assert run(view, boot_dir) == 0  # rich markup in a name would have raised MarkupError
    view.close()
    text = buffer.getvalue()
    assert "\x1b[2J" not in text
    assert "ser[/]ial" in text
