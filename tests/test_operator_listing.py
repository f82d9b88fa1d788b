"""rpiboot --list: Raspberry Pis in USB boot mode, listed without booting them."""

from __future__ import annotations

import json

from rpiboot import cli
from rpiboot.listing import format_table, list_devices
from rpiboot.simulator import FinalStage, RomStage, ServerStage, VirtualPi
from rpiboot.simulator.in_process import VirtualBus
from rpiboot.simulator.script import done, load


def _bus() -> tuple[VirtualBus, list[VirtualPi]]:
    pis = [
        VirtualPi("2711", (2,), stages=[RomStage(serial_index=3)]),
        VirtualPi("2712", (1, 4), stages=[ServerStage(load("config.txt") + [done()],
                                                      serial="2712abcd")]),
        VirtualPi("2837", (3,), stages=[ServerStage([done()], serial="secret")],
                  open_error="access"),
        VirtualPi("2835", (5,), stages=[FinalStage()]),  # not in boot mode: not listed
    ]
    return VirtualBus(pis), pis


def test_list_devices_reports_chip_stage_port_serial_speed() -> None:
    bus, pis = _bus()
    devices = list_devices(bus)
    assert [(d.port, d.chip, d.stage, d.serial, d.serial_problem, d.speed) for d in devices] == [
        ("1-1.4", "BCM2712", "server", "2712abcd", None, "high"),
        ("1-2", "BCM2711", "rom", None, None, "high"),
        ("1-3", "BCM2837", "server", None, "permission", "high"),
    ]
    # nothing was booted: no protocol traffic reached any board
    assert all(pi.received == [] and pi.violations == [] for pi in pis)
    assert all(pi.stage_index == 0 for pi in pis)


def test_list_text(capsys) -> None:
    bus, _ = _bus()
    assert cli.main(["--list"], transport=bus) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["PORT", "CHIP", "STAGE", "USB", "ID", "SPEED", "SERIAL"]
    assert out[1].split() == ["1-1.4", "BCM2712", "server", "0a5c:2712", "high", "2712abcd"]
    assert out[2].split() == ["1-2", "BCM2711", "rom", "0a5c:2711", "high", "-"]
    assert out[3].split() == ["1-3", "BCM2837", "server", "0a5c:2764", "high", "(permission)"]
    assert "rpiboot --udev-rule" in out[4]


def test_list_json(capsys) -> None:
    bus, _ = _bus()
    assert cli.main(["--list", "--json"], transport=bus) == 0
    items = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [item["event"] for item in items] == ["device_listed"] * 3
    assert items[0] == {**items[0], "port": "1-1.4", "chip": "BCM2712", "stage": "server",
                        "vendor_id": 0x0A5C, "product_id": 0x2712, "serial": "2712abcd",
                        "speed": "high", "serial_problem": None}


def test_list_nothing(capsys) -> None:
    assert cli.main(["--list"], transport=VirtualBus([])) == 0
    assert capsys.readouterr().out == "No Raspberry Pi in USB boot mode found.\n"
    assert cli.main(["--list", "--json"], transport=VirtualBus([])) == 0
    assert capsys.readouterr().out == ""
    assert format_table([]) == ["No Raspberry Pi in USB boot mode found."]


def test_list_without_reading_serials() -> None:
    bus, _ = _bus()
    assert all(device.serial is None for device in list_devices(bus, read_serials=False))
