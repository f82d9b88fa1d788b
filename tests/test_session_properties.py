"""The hostile-board campaign of issue 12 as a property of the session: hypothesis chooses 1-4
boards on distinct ports, each with a fault (unplugged, a glitch during a transfer, a file server
that leaves before asking, a stall, a refusal, a short return code) or none, hostile file names
and serials, and -j DIR. Whatever it picks:

- the run returns (no exception, no internal error) and every event validates;
- the exit status is the worst board's, and the summary (the last event) says the same;
- exit 0 only when every board was actually served, with exactly the directory's bytes;
- a board whose fault is recoverable (a glitch, an early leave) is served, and a fault-free
  board is never harmed by its neighbours;
- metadata files stay in DIR, one per served board that reported some.

Bounded: derandomized, a fixed number of examples, millisecond timeouts.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st

from rpiboot.event_schema import ERROR_CODES, validate
from rpiboot.errors import worst
from rpiboot.simulator import RomStage, ServerStage, VirtualPi
from rpiboot.simulator.script import done, load, metadata

from engine_support import content, expected_file, fast_options, run_boot, write

PRESENT = ("config.txt", "start4.elf", "kernel8.img", "start.elf")
HOSTILE_NAMES = ("missing.bin", "config.txt/", "start4.elf/.", "../etc/passwd", "/etc/shadow",
                 "a\\b", "ctl\x01name", "2711/../config.txt", "*", "")
RECOVERABLE = ("glitch", "early_leave")
FAULTS = ("none", "none", "glitch", "early_leave", "unplug", "stall", "refuse", "short_code")

boards = st.lists(
    st.fixed_dictionaries({
        "chip": st.sampled_from(["2711", "2712", "2835"]),
        "fault": st.sampled_from(FAULTS),
        "at": st.integers(0, 6000),
        "names": st.lists(st.sampled_from(PRESENT + HOSTILE_NAMES), max_size=4),
        "serial": st.sampled_from(["10000000d3adb33f", "-rf", "CON", "../../x", "a b", "é",
                                   "0123abcd", "ffffffff"]),
        "meta": st.booleans(),
    }),
    min_size=1, max_size=4, unique_by=lambda board: board["serial"])


def _boot_dir(root: Path) -> Path:
    directory = root / "boot"
    write(directory / "bootcode.bin", content("bootcode.bin", 5000))
    write(directory / "2711" / "bootcode4.bin", content("bootcode4.bin", 7000))
    write(directory / "2712" / "bootcode5.bin", content("bootcode5.bin", 9000))
    for name in PRESENT:
        write(directory / name, content(name, 3000))
    return directory


def _board(spec: dict[str, Any], port: int) -> VirtualPi:
    fault, at = spec["fault"], spec["at"]
    requests = [request for name in spec["names"] if name for request in load(name)]
    if spec["meta"]:
        requests.append(metadata("MAC_ADDR", f"d8:3a:dd:00:00:{port:02x}"))
    requests.append(done())
    rom = RomStage(serial_index=3 if spec["chip"] == "2711" else 0,
                   return_code=1 if fault == "refuse" else 0,
                   return_code_size=2 if fault == "short_code" else 4)
    stages: list[Any] = [rom]
    if fault == "early_leave":
        stages.append(ServerStage([], serial=spec["serial"], leave_at_request=0))
    stages.append(ServerStage(requests, serial=spec["serial"],
                              stall_at_request=at % 4 if fault == "stall" else None))
    return VirtualPi(spec["chip"], (port,), stages=stages,
                     unplug_after_bytes=at if fault == "unplug" else None,
                     glitch_after_bytes=at if fault == "glitch" else None)


def _served_exactly(pi: VirtualPi, spec: dict[str, Any], directory: Path) -> bool:
    wanted = {name for name in spec["names"] if name in PRESENT}
    files = pi.files()
    return (pi.violations == [] and set(files) == wanted
            and all(files[name] == expected_file(directory, pi.chip, name) for name in files))


@settings(max_examples=25, derandomize=True, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(boards)
def test_campaign_shapes(specs: list[dict[str, Any]]) -> None:
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        directory = _boot_dir(root)
        pis = [_board(spec, port) for port, spec in enumerate(specs, start=1)]
        options = fast_options(directory, retries=2, reenumerate_timeout=0.5,
                               stall_timeout=0.1, read_timeout=0.05, timeout=3.0,
                               metadata=True, metadata_dir=root / "meta")
        run = run_boot(pis, options)

        items = [item.to_dict() for item in run.events.items]
        assert [problem for item in items for problem in validate(item)] == []
        assert items[-1]["event"] == "summary" and items[-1]["exit_code"] == run.exit_code
        sessions = {s.port: s for s in run.result.sessions}
        assert all(s.error is None or s.error.code in ERROR_CODES for s in sessions.values())
        assert not any(s.error is not None and s.error.code == "error"
                       for s in sessions.values()), [str(s.error) for s in sessions.values()]
        assert run.exit_code == worst([s.exit_code for s in sessions.values()])

        for spec, pi in zip(specs, pis):
            session = sessions[pi.port_path]
            if spec["fault"] in ("none", *RECOVERABLE):
                assert session.summary()["result"] == "ok", (spec, str(session.error))
                assert _served_exactly(pi, spec, directory), (spec, pi.files().keys())
        if run.exit_code == 0:
            assert all(_served_exactly(pi, spec, directory) for spec, pi in zip(specs, pis))
            assert all(s.summary()["result"] == "ok" for s in sessions.values())

        meta = root / "meta"
        written = sorted(meta.iterdir()) if meta.exists() else []
        assert all(path.parent == meta and not path.name.startswith(("-", "."))
                   for path in written)
        reported = [spec for spec, pi in zip(specs, pis)
                    if spec["meta"] and spec["chip"] != "2835"  # BCM2835 sends no metadata
                    and sessions[pi.port_path].summary()["result"] == "ok"]
        assert len(written) == len(reported)
