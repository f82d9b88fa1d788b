"""End-to-end wall time through real libusb: virtual Pis behind umockdev (``rpiboot-virtual``).

    python3 benchmarks/bench_real_libusb.py [--rounds 3] [--compare PATH_TO_OTHER_RPIBOOT]

Scenarios: one BCM2711 two-stage boot from a bootfiles.bin directory (ROM, then config.txt,
three archive members, a 3 MB boot.img, a missing file and a metadata message), and four boards
(2711, 2712, 2835, 2837) at once. ``--compare`` runs another rpiboot binary (for example an
upstream C build you made yourself) on the same scenarios and checks that every board received
the same bytes. Needs umockdev (see the README); prints median wall times.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ONE = ["2711:1-3,files=config.txt+mcb.bin+memsys00.bin+bootmain+boot.img+missing.txt,"
       "meta.MAC_ADDR=d8:3a:dd:05:ee:78"]
FOUR = ["2711:1-1,files=config.txt+bootmain+boot.img", "2712:1-2,files=config.txt+bootmain+boot.img",
        "2835:1-3,files=start.elf+boot.img", "2837:1-4,files=start.elf+boot.img"]


class ToolFailed(Exception):
    pass


def make_boot_dir(root: Path) -> Path:
    directory = root / "boot"
    directory.mkdir()
    members = {f"{chip}/{name}": os.urandom(size) for chip in ("2711", "2712")
               for name, size in (("mcb.bin", 11696), ("memsys00.bin", 20492),
                                  ("bootmain", 265712))}
    members["2711/bootcode4.bin"] = os.urandom(73120)
    members["2712/bootcode5.bin"] = os.urandom(78332)
    with tarfile.open(directory / "bootfiles.bin", "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    (directory / "config.txt").write_text("[all]\narm_64bit=1\n")
    (directory / "boot.img").write_bytes(os.urandom(3_000_000))
    (directory / "bootcode.bin").write_bytes(os.urandom(52624))
    (directory / "start.elf").write_bytes(os.urandom(536536))
    return directory


def run(pis: list[str], command: list[str], workdir: Path, report: Path) -> float:
    arguments = [sys.executable, "-m", "rpiboot.simulator.umockdev_cli", "-q", "--report",
                 str(report)]
    for pi in pis:
        arguments += ["--pi", pi]
    began = time.perf_counter()
    finished = subprocess.run(arguments + ["--"] + command, cwd=workdir, capture_output=True,
                              text=True, timeout=120)
    elapsed = time.perf_counter() - began
    if finished.returncode not in (0, 124):  # 124: `timeout` stopped a looping tool
        last = (finished.stdout + finished.stderr).strip().splitlines()[-1:]
        raise ToolFailed(f"exit {finished.returncode}: {' '.join(last)}")
    return elapsed


def received(report: Path) -> list[object]:
    data = json.loads(report.read_text())
    return [[{k: v for k, v in item.items() if k != "time"} for item in pi["received"]]
            for pi in sorted(data["pis"], key=lambda pi: pi["port"])]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--compare", metavar="RPIBOOT", help="another rpiboot to compare with")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        root = Path(temporary)
        make_boot_dir(root)
        for title, pis in (("one BCM2711, two stages", ONE), ("four boards at once", FOUR)):
            reference = None
            for name, command in tools(args.compare, several=len(pis) > 1).items():
                walls, lasts, failures = [], [], []
                for round_number in range(args.rounds):
                    report = root / f"report-{round_number}.json"
                    try:
                        walls.append(run(pis, command, root, report))
                        lasts.append(last_board_finished(report))
                    except ToolFailed as failure:
                        failures.append(str(failure))
                        continue
                    got = received(report)
                    reference = reference or got
                    if got != reference:
                        print(f"  {name}: boards received different bytes than the first tool")
                if failures:
                    print(f"{title:26} {name:16} failed {len(failures)} of {args.rounds} "
                          f"rounds: {failures[0]}")
                if not lasts:
                    continue
                print(f"{title:26} {name:16} last board done after "
                      f"{statistics.median(lasts):5.2f} s, command wall "
                      f"{statistics.median(walls):5.2f} s (median of {args.rounds})")
    return 0


def tools(compare: str | None, several: bool) -> dict[str, list[str]]:
    found = {"rpiboot (Python)": [sys.executable, "-m", "rpiboot", "-d", "boot", "--plain",
                                  "--libusb", "system"]}
    if compare:
        # Upstream leaves after the first board unless looping, and then never leaves.
        found["compared"] = (["timeout", "15", compare, "-d", "boot", "-l"] if several
                             else [compare, "-d", "boot"])
    return found


def last_board_finished(report: Path) -> float:
    data = json.loads(report.read_text())
    finished = [pi["finished_monotonic"] for pi in data["pis"]]
    if None in finished:
        raise ToolFailed("a board did not finish")
    return max(finished) - data["started_monotonic"]


if __name__ == "__main__":
    sys.exit(main())
