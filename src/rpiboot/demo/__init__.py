"""``rpiboot --demo``: boot virtual Raspberry Pis end to end, no hardware needed.

Three virtual boards (BCM2711, BCM2712 and BCM2835) on three ports are booted at once through the
same engine that serves real devices; the demo then checks that every byte each board received
matches the demo boot directory.
"""

from __future__ import annotations

import dataclasses
import sys
from importlib import resources
from pathlib import Path

from ..api import boot
from ..errors import ExitCode
from ..events import EventSink
from ..options import BootOptions
from ..simulator import VirtualPi, typical_pi
from ..simulator.in_process import VirtualBus

DEMO_BOARDS = (
    ("2711", (1,), "10000000d3adb33f", ("config.txt", "start4.elf", "kernel8.img")),
    ("2712", (2,), "20000000c0ffee00", ("config.txt", "kernel_2712.img")),
    ("2835", (3, 1), "30000000facade00", ("start.elf",)),
)
DEMO_METADATA = {"MAC_ADDR": "d8:3a:dd:05:ee:78", "BOOT_ROM": "0000c8b0"}


def demo_pis() -> list[VirtualPi]:
    return [typical_pi(chip, ports, serial=serial, files=files,
                       meta=DEMO_METADATA if chip != "2835" else None)
            for chip, ports, serial, files in DEMO_BOARDS]


def run_demo(options: BootOptions, reporter: EventSink) -> ExitCode:
    with resources.as_file(resources.files(__package__) / "boot") as directory:
        pis = demo_pis()
        boot_dir = options.directory or directory
        demo_options = dataclasses.replace(options, directory=boot_dir)
        result = boot(demo_options, on_event=reporter, transport=VirtualBus(pis))
        problems = _check(pis, boot_dir)
    print("", file=sys.stderr)
    for line in problems or ["demo: every virtual Raspberry Pi received exactly the files in "
                             "the demo boot directory"]:
        print(line, file=sys.stderr)
    if problems and result.exit_code is ExitCode.OK:
        return ExitCode.TRANSFER
    return result.exit_code


def _check(pis: list[VirtualPi], directory: Path) -> list[str]:
    problems = []
    for pi in pis:
        problems += [f"demo: {pi.port_path}: {text}" for text in pi.violations]
        second_stage = {"2711": "bootcode4.bin", "2712": "bootcode5.bin"}.get(pi.chip,
                                                                              "bootcode.bin")
        sent = {second_stage: pi.second_stage(), **pi.files()}
        for name, data in sent.items():
            expected = _demo_file(directory, pi.chip, name)
            if data != expected:
                problems.append(f"demo: {pi.port_path}: {name} differs from the boot directory")
    return problems


def _demo_file(directory: Path, chip: str, name: str) -> bytes | None:
    prefix = {"2711": "2711", "2712": "2712"}.get(chip, "2710")
    for candidate in (directory / prefix / name, directory / name):
        if candidate.is_file():
            return candidate.read_bytes()
    return None
