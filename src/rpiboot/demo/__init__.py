"""``rpiboot --demo``: boot virtual Raspberry Pis end to end, no hardware needed.

Three virtual boards (BCM2711, BCM2712 and BCM2835) on three ports are booted at once through the
same engine that serves real devices; the demo then checks that every byte each board received
matches the demo boot directory and reports the verdict as a ``demo_result`` event. It runs
in-process: the host's libusb and USB permissions are not exercised, and it says so.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from ..api import boot
from ..errors import ExitCode
from ..events import Event, EventSink, event
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
    pis = [typical_pi(chip, ports, serial=serial, files=files,
                      meta=DEMO_METADATA if chip != "2835" else None)
           for chip, ports, serial, files in DEMO_BOARDS]
    for pi, (chip, _ports, serial, _files) in zip(pis, DEMO_BOARDS):
        if chip == "2711":  # the BCM2711 ROM reports the board's serial (what -i selects by)
            pi.stages[0].serial = serial  # type: ignore[union-attr]
    return pis


IN_PROCESS_NOTE = (
    "This exercised the boot engine in-process against built-in virtual boards: it did not "
    "use this machine's libusb, USB ports or USB permissions ('rpiboot --list' with a real "
    "board in USB boot mode checks those).")


def run_demo(options: BootOptions, reporter: EventSink) -> ExitCode:
    """Boot the demo boards, check what each received, and report the verdict as a
    ``demo_result`` event before the summary, whose exit status is the verdict's."""
    held = _HoldSummary(reporter)
    with resources.as_file(resources.files(__package__) / "boot") as directory:
        pis = demo_pis()
        boot_dir = options.directory or directory
        demo_options = dataclasses.replace(options, directory=boot_dir)
        result = boot(demo_options, on_event=held, transport=VirtualBus(pis))
        problems = _check(pis, boot_dir)
    exit_code = result.exit_code
    if problems and exit_code is ExitCode.OK:
        exit_code = ExitCode.TRANSFER
    ok = not problems and exit_code is ExitCode.OK
    verdict = ("demo: every virtual Raspberry Pi received exactly the files in the demo boot "
               "directory" if ok else f"demo: FAILED (exit status {int(exit_code)})")
    reporter(event("demo_result", ok=ok, problems=problems, exit_code=int(exit_code),
                   message=f"{verdict}. {IN_PROCESS_NOTE}"))
    held.release(exit_code)
    return exit_code


class _HoldSummary:
    """Passes events on, except the summary, which waits for the demo's verdict."""

    def __init__(self, reporter: EventSink):
        self.reporter = reporter
        self.summary: Event | None = None

    def __call__(self, item: Event) -> None:
        if item.kind == "summary":
            self.summary = item
        else:
            self.reporter(item)

    def release(self, exit_code: ExitCode) -> None:
        if self.summary is not None:
            data = {**self.summary.data, "exit_code": int(exit_code)}
            self.reporter(Event("summary", None, data, self.summary.time))


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
