"""Issue 10: two hosts (two processes, each with its own virtual boards) provisioning at the same
time through the pipeline against one PostgreSQL ledger: every board recorded once, the serial
offered on both provisioned once, unit numbers distinct and gap-free apart from a failed board."""

from __future__ import annotations

import multiprocessing
import re
import subprocess
from pathlib import Path

import pytest

from ledger_support import run_station
from rpiboot.provision.ledger import open_ledger

PROVISION_TESTS = Path(__file__).resolve().parents[1] / "provision"
SHARED = "5a5a0001"
STATIONS = {"station-a": ["a0000001", "a0000002", "a0000003", SHARED],
            "station-b": ["b0000001", "b0000002", "b0000003", SHARED]}
TOO_SMALL = "b0000002"          # its disk cannot hold the image: it fails after taking a unit


def disk_of(tmp: Path, station: str, serial: str) -> Path:
    """The backing file of the board's disk (run_station numbers the ports from 1)."""
    return tmp / station / f"disk{STATIONS[station].index(serial) + 1}.img"


@pytest.fixture
def line(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.syspath_prepend(str(PROVISION_TESTS))
    from customise_support import pi_disk
    from provision_support import make_boot_dirs, write_profile
    make_boot_dirs(tmp_path)
    disk = pi_disk(tmp_path, fat_type=16, name="os.img")
    profile = write_profile(tmp_path / "line.toml",
                            '[boot]\ndirectory = "gadget"\n[os]\nimage = "os.img"\n'
                            '[customise]\nhostname = "line-{unit:04d}"\ninit = "cloud-init"\n')
    return tmp_path, profile, disk


def test_two_stations_provision_each_board_once_with_distinct_units(line, postgres_url):
    tmp, profile, disk = line
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(len(STATIONS)), context.Queue()
    hosts = []
    for station, serials in STATIONS.items():
        (tmp / station).mkdir()
        hosts.append(context.Process(target=run_station, args=(
            tmp / station, profile, serials, postgres_url, station, barrier, results,
            (TOO_SMALL,))))
        hosts[-1].start()
    reports = {report["station"]: report for report in (results.get(timeout=240) for _ in hosts)}
    for host in hosts:
        host.join(timeout=30)
    assert all(report["error"] is None for report in reports.values()), reports

    ledger = open_ledger(postgres_url)
    records = ledger.export()
    ledger.close()
    # Every board recorded once; the shared serial provisioned by exactly one station.
    assert sorted((r["station"], r["serial"]) for r in records) == sorted(
        (station, serial) for station, serials in STATIONS.items() for serial in serials)
    ok = [r for r in records if r["result"] == "ok"]
    assert sorted(r["serial"] for r in ok) == sorted(
        {s for ss in STATIONS.values() for s in ss} - {TOO_SMALL})
    [small] = [r for r in records if r["serial"] == TOO_SMALL]
    assert small["result"] == "image_too_large" and small["unit"] is not None
    [loser] = [r for r in records if r["serial"] == SHARED and r["result"] != "ok"]
    assert loser["result"] in ("claimed_elsewhere", "skipped"), loser
    loser_disk = disk_of(tmp, loser["station"], SHARED)
    assert loser_disk.read_bytes().count(0) == loser_disk.stat().st_size      # never written

    # Unit numbers: distinct across both hosts, gap-free apart from the failed board's unit.
    units = sorted(r["unit"] for r in records if r["unit"] is not None)
    assert units == list(range(1, len(ok) + 2))
    assert small["unit"] not in {r["unit"] for r in ok}
    # And each unit reached its board's disk through the {unit} template.
    for record in ok:
        image = disk_of(tmp, record["station"], record["serial"])
        user_data = subprocess.run(["mtype", "-i", f"{image}@@{disk.offset}", "::user-data"],
                                   check=True, capture_output=True).stdout.decode()
        assert re.search(r'hostname: "line-(\d{4})"', user_data).group(1) == f"{record['unit']:04d}"
