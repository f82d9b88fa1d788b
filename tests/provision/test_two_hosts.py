"""Issue 10: two hosts (two processes, each with its own virtual boards) provisioning at the same
time against one PostgreSQL ledger."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from rpiboot.provision.ledger import open_ledger

from provision_support import make_boot_dirs, write_profile

RUNNER = Path(__file__).resolve().parent / "host_runner.py"


def test_two_hosts_share_one_postgresql_ledger(tmp_path, postgres_url):
    from customise_support import pi_disk
    make_boot_dirs(tmp_path)
    pi_disk(tmp_path, name="os.img")
    write_profile(tmp_path / "p.toml", '[boot]\ndirectory = "gadget"\n[os]\nimage = "os.img"\n'
                                       '[customise]\nhostname = "line1-{unit:04d}"\n'
                                       'init = "cloud-init"\n')
    hosts = {"host-a": ["a0000001", "a0000002", "a0000003", "5a5e0001"],
             "host-b": ["b0000001", "b0000002", "b0000003", "5a5e0001"]}
    processes = {}
    for station, serials in hosts.items():
        work = tmp_path / station
        work.mkdir()
        processes[station] = subprocess.Popen(
            [sys.executable, str(RUNNER), str(work), postgres_url, station, *serials],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = {}
    for station, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        results[station] = json.loads(out.strip().splitlines()[-1])
        assert "error" not in results[station], results[station]
        assert results[station]["schema_problems"] == []
    ledger = open_ledger(postgres_url)
    try:
        records = ledger.export()
    finally:
        ledger.close()
    assert len(records) == 8  # every board recorded once, on the host that served it
    by_serial: dict[str, list[dict]] = {}
    for record in records:
        by_serial.setdefault(record["serial"], []).append(record)
    for serial in ("a0000001", "a0000002", "a0000003"):
        assert [(r["result"], r["station"]) for r in by_serial[serial]] == [("ok", "host-a")]
    shared = sorted(r["result"] for r in by_serial["5a5e0001"])
    assert shared.count("ok") == 1 and set(shared) - {"ok"} <= {"claimed_elsewhere", "skipped"}
    units = sorted(r["unit"] for r in records if r["unit"] is not None)
    ok = [r for r in records if r["result"] == "ok"]
    assert all(r["unit"] is not None for r in ok)
    assert units == list(range(1, len(units) + 1))  # distinct and gap-free
    assert len(ok) == 7
