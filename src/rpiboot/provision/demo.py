"""``rpiboot-provision demo``: provision virtual boards end to end, no hardware needed.

Builds, in a temporary directory, a small Raspberry Pi OS-like image (an MBR with a FAT32 boot
partition holding cmdline.txt and config.txt, then a root partition of data), compresses it with
xz, writes a profile (hostname ``demo-{unit:03d}``, a user, an SSH key) and runs the real
pipeline on virtual boards whose mass-storage gadget disks are files shown in a private sysfs /
dev tree. Every step that runs for a real board runs here: boot, claim in the ledger, one
decompression for the boards written together, write, verify, customise, record.
"""

from __future__ import annotations

import hashlib
import lzma
import struct
import tempfile
from importlib import resources
from pathlib import Path
from typing import Callable, Sequence

from ..eeprom.fat_image import build_fat_image
from ..events import EventSink
from ..simulator import FinalStage, RomStage, ServerStage, VirtualDisk, VirtualPi
from ..simulator.in_process import VirtualBus
from ..simulator.script import done, load
from ..simulator.virtual_pi import Stage
from .api import provision
from .password_hash import hash_password
from .pipeline import Pipeline, RunOptions, RunOutcome

SECTOR = 512
BOOT_START = 8192            # the boot partition at 4 MiB, as Raspberry Pi OS images have it
BOOT_SIZE = 40 << 20         # FAT32 needs at least ~33 MiB
ROOT_SIZE = 16 << 20
DISK_SIZE = 128 << 20
CHIPS = ("2711", "2712", "2711", "2712")
GADGET_FILES = {"2711": ("config.txt", "start4.elf"), "2712": ("config.txt",
                                                                "kernel_2712.img")}
PROFILE = """\
name = "demo"
[boot]
directory = "{boot}"
[os]
image = "demo-os.img.xz"
[customise]
hostname = "demo-{{unit:03d}}"
user = "operator"
password_hash = "{password_hash}"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDemoKeyOnlyForVirtualBoards demo@pi"]
init = "cloud-init"
"""


def build_image(directory: Path) -> Path:
    """The demo OS image, xz-compressed; returns its path."""
    files = directory / "boot-files"
    files.mkdir()
    (files / "cmdline.txt").write_text("console=serial0,115200 root=PARTUUID=d3m0d3m0-02 "
                                       "rootfstype=ext4 rootwait\n")
    (files / "config.txt").write_text("# demo image\narm_64bit=1\n")
    boot = directory / "boot.fat"
    build_fat_image(files, boot, size_bytes=BOOT_SIZE, fat_type=32, label="bootfs", timestamp=0)
    table = bytearray(SECTOR)
    struct.pack_into("<I", table, 440, 0xD3D0D3D0)
    for index, (kind, first, count) in enumerate(
            ((0x0C, BOOT_START, BOOT_SIZE // SECTOR),
             (0x83, BOOT_START + BOOT_SIZE // SECTOR, ROOT_SIZE // SECTOR))):
        struct.pack_into("<B3sB3sII", table, 446 + 16 * index, 0, b"\xfe\xff\xff", kind,
                         b"\xfe\xff\xff", first, count)
    table[510:512] = b"\x55\xaa"
    root = b"".join(hashlib.sha256(str(n).encode()).digest() * 128
                    for n in range(ROOT_SIZE // 4096))
    image = (bytes(table) + bytes(BOOT_START * SECTOR - SECTOR) + boot.read_bytes() + root)
    path = directory / "demo-os.img.xz"
    path.write_bytes(lzma.compress(image, preset=1))
    return path


def virtual_boards(directory: Path, count: int) -> list[VirtualPi]:
    boards = []
    for number in range(1, count + 1):
        chip = CHIPS[(number - 1) % len(CHIPS)]
        serial = f"d3m0{number:04x}"
        requests = [request for name in GADGET_FILES[chip] for request in load(name)] + [done()]
        stages: list[Stage] = [RomStage(serial_index=3 if chip == "2711" else 0),
                  ServerStage(requests, serial=serial),
                  FinalStage(serial=serial, disks=[VirtualDisk(directory / f"board{number}.img",
                                                               DISK_SIZE)])]
        boards.append(VirtualPi(chip, (number,), stages=stages))
    return boards


def run_demo(reporter: EventSink, *, boards: int = 4, keep: Path | None = None,
             on_ready: Callable[[Pipeline], None] | None = None
             ) -> tuple[RunOutcome, Path | None]:
    """Provision ``boards`` virtual boards; ``keep``: do it there and leave the files."""
    with tempfile.TemporaryDirectory(prefix="rpiboot-provision-demo-") as scratch:
        directory = keep or Path(scratch)
        directory.mkdir(parents=True, exist_ok=True)
        return _run(directory, reporter, boards, on_ready), keep


def _run(directory: Path, reporter: EventSink, count: int,
         on_ready: Callable[[Pipeline], None] | None) -> RunOutcome:
    build_image(directory)
    sysfs, dev = directory / "sys", directory / "dev"
    for path in (sysfs, dev):
        path.mkdir(exist_ok=True)
    (directory / "mountinfo").write_text("")
    (directory / "swaps").write_text("Filename Type Size Used Priority\n")
    with resources.as_file(resources.files("rpiboot.demo") / "boot") as boot:
        profile = directory / "demo.toml"
        # The demo user's password is "raspberry-demo"; real profiles carry only the hash.
        profile.write_text(PROFILE.format(boot=boot, password_hash=hash_password(
            "raspberry-demo", salt="rpibootdemo")))
        bus = VirtualBus(virtual_boards(directory, count), sysfs_root=sysfs, dev_root=dev)
        options = RunOptions(count=count, timeout=60.0, gather=1.0, sysfs_root=sysfs,
                             dev_root=dev, mountinfo=directory / "mountinfo",
                             swaps=directory / "swaps", station="demo", disk_settle=0.1)
        return provision(profile, options, on_event=reporter, transport=bus,
                         ledger=directory / "demo-ledger.sqlite", on_ready=on_ready)


def boards_text(outcome: RunOutcome) -> Sequence[str]:
    return [f"demo: {board.port} serial {board.serial}: {board.result}, "
            f"{board.bytes_written} bytes written, verified {board.verified}"
            for board in outcome.boards]
