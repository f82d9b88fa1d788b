"""Request sequences where the exact upstream semantics matter, and selection edge cases."""

from __future__ import annotations

from pathlib import Path

from rpiboot.errors import ExitCode
from rpiboot.event_schema import validate
from rpiboot.simulator import RomStage, ServerStage, VirtualPi, typical_pi
from rpiboot.simulator.script import GET_FILE_SIZE, READ_FILE, Request, done, load

from engine_support import fast_options, run_boot


def server_pi(requests: list[Request], chip: str = "2711") -> VirtualPi:
    return VirtualPi(chip, (1,), stages=[RomStage(serial_index=3 if chip == "2711" else 0),
                                         ServerStage(requests + [done()])])


def test_rejected_get_file_size_drops_the_file_opened_before(boot_dir: Path) -> None:
    # Upstream's GetFileSize closes the previous file before failing on the new name, so the
    # ReadFile that follows gets the zero-length reply, not config.txt.
    for bad_name in (b"\xff\xfe", b"x" * 256):
        pi = server_pi([Request(GET_FILE_SIZE, b"config.txt"), Request(GET_FILE_SIZE, bad_name),
                        Request(READ_FILE, b"config.txt")])
        run = run_boot([pi], fast_options(boot_dir))
        assert run.exit_code == 0
        assert pi.sizes()["config.txt"] == 130  # 2711/config.txt of boot_dir, announced first
        reads = [r for r in pi.received if r.kind == "file"]
        assert [(r.name, r.value) for r in reads] == [("config.txt", 0)]


def test_metadata_without_a_value_is_acknowledged_but_not_reported(boot_dir: Path) -> None:
    pi = server_pi([Request(GET_FILE_SIZE, b"*LONELY"), Request(GET_FILE_SIZE, b"*"),
                    Request(GET_FILE_SIZE, b"*FACTORY_UUID*ffff"),
                    Request(GET_FILE_SIZE, b"*MAC_ADDR*d8:3a:dd:05:ee:78")])
    run = run_boot([pi], fast_options(boot_dir, metadata=True))
    assert [r.kind for r in pi.received if r.kind == "ack"] == ["ack"] * 5  # 4 + empty Done
    assert [(e.data["key"], e.data["value"]) for e in run.events.of("metadata")] == [
        ("MAC_ADDR", "d8:3a:dd:05:ee:78")]
    for item in run.events.items:
        assert validate(item.to_dict()) == [], item


def test_serial_filter_reports_permission_denied_instead_of_ignoring(boot_dir: Path) -> None:
    pi = typical_pi("2711", (1,), open_error="access")
    run = run_boot([pi], fast_options(boot_dir, serial="cafe", timeout=1.0))
    assert run.exit_code == ExitCode.PERMISSION
    [failed] = run.events.of("device_failed")
    assert failed.data["code"] == "permission"


def test_serial_filter_still_selects_by_serial(boot_dir: Path) -> None:
    wanted = VirtualPi("2711", (1,), stages=[RomStage(serial_index=3, serial="cafe"),
                                             ServerStage(load("config.txt") + [done()],
                                                         serial="cafe")])
    other = VirtualPi("2711", (2,), stages=[RomStage(serial_index=3, serial="beef"),
                                            ServerStage(load("config.txt") + [done()],
                                                        serial="beef")])
    run = run_boot([wanted, other], fast_options(boot_dir, serial="cafe"))
    assert run.exit_code == 0
    assert [s.port for s in run.result.sessions] == ["1-1"]
    assert other.received == []
