"""Issue 12, "say why nothing happened": filtered-out boards explained at default verbosity, the
BCM2711 ROM's serial in --list, the start banner and the jumper hint."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rpiboot import cli
from rpiboot.simulator import RomStage, ServerStage, VirtualPi, typical_pi
from rpiboot.simulator.in_process import VirtualBus
from rpiboot.simulator.script import done, load

from engine_support import fast_options, run_boot, run_cli

FAST = ["--timeout", "0.5", "--run-timeout", "10", "--stall-timeout", "0.3"]


def test_every_board_filtered_out_is_explained_at_default_verbosity(
        boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    pis = [typical_pi("2711", (1,)), typical_pi("2712", (2,))]
    code, out, err = run_cli(monkeypatch, capsys, pis,
                             ["--plain", "-d", str(boot_dir), "-p", "1-7"] + FAST)
    assert code == 4
    assert "1-1: ignored (path 1-1 is not 1-7)" in out
    assert "1-2: ignored (path 1-2 is not 1-7)" in out
    assert "every Raspberry Pi seen was filtered out" in err
    assert "1-1 (BCM2711): path 1-1 is not 1-7" in err and "1-2 (BCM2712)" in err
    assert len(err.strip().splitlines()) == 1


def test_filtered_out_boards_are_in_the_json_summary(boot_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    pi = VirtualPi("2711", stages=[RomStage(serial_index=3, serial="10000000aaaa0001"),
                                   ServerStage(load("config.txt") + [done()])])
    code, out, err = run_cli(monkeypatch, capsys, [pi],
                             ["--json", "-d", str(boot_dir), "-i", "10000000bbbb0002"] + FAST)
    assert code == 4
    events = [json.loads(line) for line in out.splitlines()]
    [ignored] = [e for e in events if e["event"] == "device_ignored"]
    assert ignored["chip"] == "BCM2711" and "10000000aaaa0001" in ignored["reason"]
    [summary] = [e for e in events if e["event"] == "summary"]
    assert summary["ignored"] == [{"port": "1-1", "chip": "BCM2711",
                                   "reason": ignored["reason"]}]
    assert "filtered out" in err


def test_list_shows_the_bcm2711_rom_serial(capsys: pytest.CaptureFixture[str]) -> None:
    pis = [VirtualPi("2711", (1,), stages=[RomStage(serial_index=3, serial="10000000c0ffee11")]),
           VirtualPi("2712", (2,), stages=[RomStage(serial_index=0)])]
    assert cli.main(["--list"], transport=VirtualBus(pis)) == 0
    lines = capsys.readouterr().out.splitlines()
    rom_2711 = next(line for line in lines if line.startswith("1-1"))
    assert "rom" in rom_2711 and rom_2711.endswith("10000000c0ffee11")
    assert next(line for line in lines if line.startswith("1-2")).endswith("-")
    assert cli.main(["--list", "--json"], transport=VirtualBus(pis)) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [item["serial"] for item in listed] == ["10000000c0ffee11", None]


def test_the_rom_serial_listed_is_the_one_i_selects(boot_dir: Path) -> None:
    pis = [VirtualPi("2711", (1,), stages=[RomStage(serial_index=3, serial="10000000c0ffee11"),
                                           ServerStage(load("config.txt") + [done()])]),
           VirtualPi("2711", (2,), stages=[RomStage(serial_index=3, serial="10000000c0ffee22"),
                                           ServerStage(load("config.txt") + [done()])])]
    run = run_boot(pis, fast_options(boot_dir, serial="10000000c0ffee22"))
    assert run.exit_code == 0
    assert [s.port for s in run.result.sessions] == ["1-2"]


def test_banner_first_and_jumper_hint_when_nothing_arrives(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import rpiboot.manager
    monkeypatch.setattr(rpiboot.manager, "HINT_AFTER", 0.2)
    assert cli.main(["--plain", "--timeout", "0.6"], transport=VirtualBus([])) == 4
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("RPIBOOT: pkg-version ")
    hint = next(line for line in out if "nRPIBOOT / EMMC-DISABLE" in line)
    assert "power button" in hint and "https://" in hint


def test_no_hint_when_a_board_arrives_quickly(boot_dir: Path) -> None:
    run = run_boot([typical_pi("2711")], fast_options(boot_dir, hint_after=0.0))
    assert run.exit_code == 0
    assert not [e for e in run.events.of("notice") if "nRPIBOOT" in e.data["message"]]
