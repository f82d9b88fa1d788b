"""Helpers for the rpiboot-provision tests: boot directories, virtual boards that go ROM ->
(recovery -> ROM ->) mass-storage gadget with disks, OS images, profiles, and an in-process run
on a VirtualBus whose gadget disks appear in a private sysfs / dev tree."""

from __future__ import annotations

import bz2
import gzip
import hashlib
import json
import lzma
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from rpiboot.events import Event
from rpiboot.provision.api import provision
from rpiboot.provision.event_schema import validate
from rpiboot.provision.pipeline import RunOptions, RunOutcome
from rpiboot.simulator import FinalStage, RomStage, ServerStage, VirtualDisk, VirtualPi
from rpiboot.simulator.in_process import VirtualBus
from rpiboot.simulator.script import done, load, metadata

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eeprom"))
from eeprom_helpers import build_image  # noqa: E402

SECOND_STAGE = {"2835": "bootcode.bin", "2837": "bootcode.bin", "2711": "bootcode4.bin",
                "2712": "bootcode5.bin"}
GADGET_FILES = ("config.txt", "boot.img")
RECOVERY_FILES = ("config.txt", "pieeprom.sig", "pieeprom.bin")
MAC = "d8:3a:dd:10:20:30"


def make_boot_dirs(root: Path) -> tuple[Path, Path]:
    """(gadget directory, recovery directory) with distinct file contents."""
    gadget, recovery = root / "gadget", root / "recovery"
    for directory, label in ((gadget, "gadget"), (recovery, "recovery")):
        directory.mkdir(parents=True, exist_ok=True)
        for name in set(SECOND_STAGE.values()):
            (directory / name).write_bytes(f"{label} {name} ".encode() * 50)
    for name in GADGET_FILES:
        (gadget / name).write_bytes(f"gadget {name} ".encode() * 100)
    (recovery / "pieeprom.original.bin").write_bytes(build_image())
    (recovery / "config.txt").write_bytes(b"uart_2ndstage=1\n")
    (root / "boot.conf").write_bytes(b"[all]\nBOOT_UART=1\nBOOT_ORDER=0xf25641\n")
    return gadget, recovery


def board(chip: str, port: int, serial: str, disk: Path, disk_size: int, *,
          eeprom: bool = False, meta: dict[str, str] | None = None,
          disks: Sequence[VirtualDisk] | None = None, **options: Any) -> VirtualPi:
    """A board that (with ``eeprom``) takes the recovery firmware, comes back to the ROM at the
    same port, then boots the mass-storage gadget and shows its disk(s)."""
    rom_index = 3 if chip == "2711" else 0
    stages: list[Any] = [RomStage(serial_index=rom_index)]
    if eeprom:
        requests = [r for name in RECOVERY_FILES for r in load(name)]
        requests += [metadata(k, v) for k, v in (meta or {"MAC_ADDR": MAC}).items()]
        stages += [ServerStage(requests + [done()], serial=serial),
                   RomStage(serial_index=rom_index)]
    gadget_requests = [r for name in GADGET_FILES for r in load(name)] + [done()]
    stages.append(ServerStage(gadget_requests, serial=serial))
    stages.append(FinalStage(serial=serial,
                             disks=list(disks) if disks is not None
                             else [VirtualDisk(disk, disk_size)]))
    return VirtualPi(chip, (port,), stages=stages, **options)


def os_image(path: Path, size: int, *, seed: str = "os") -> bytes:
    """Deterministic, not very compressible image bytes (so a wrong byte shows)."""
    out = bytearray()
    block = hashlib.sha256(seed.encode()).digest()
    while len(out) < size:
        block = hashlib.sha256(block).digest()
        out += block * 8 + bytes(256)
    data = bytes(out[:size])
    path.write_bytes(data)
    return data


def compress(path: Path, kind: str) -> Path:
    data = path.read_bytes()
    packed = {"xz": lambda d: lzma.compress(d, preset=0), "gz": gzip.compress,
              "bz2": bz2.compress}[kind](data)
    out = path.with_name(path.name + "." + kind)
    out.write_bytes(packed)
    return out


def write_profile(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@dataclass
class Run:
    outcome: RunOutcome | None
    events: list[dict[str, Any]] = field(default_factory=list)
    error: Exception | None = None

    def kinds(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in self.events if item["event"] == kind]

    def schema_problems(self) -> list[str]:
        return [problem for item in self.events for problem in validate(item)]


def run_virtual(tmp: Path, profile: Path, pis: Sequence[VirtualPi], *,
                ledger: Path | str | None = None,
                later: Sequence[tuple[float, Any]] = (), bus_class: type = VirtualBus,
                **options: Any) -> Run:
    """Provision ``pis`` in-process; events are checked against the schema by the caller.
    ``later``: (seconds, board) plugged in that long after the start, or (seconds, action)
    with ``action(bus)`` run then."""
    sysfs, dev = tmp / "sys", tmp / "dev"
    sysfs.mkdir(exist_ok=True)
    dev.mkdir(exist_ok=True)
    mountinfo = tmp / "mountinfo"
    if not mountinfo.exists():
        mountinfo.write_text("")
    swaps = tmp / "swaps"
    if not swaps.exists():
        swaps.write_text("Filename Type Size Used Priority\n")
    bus = bus_class(pis, sysfs_root=sysfs, dev_root=dev)
    for delay, what in later:
        action = bus.plug_in if isinstance(what, VirtualPi) else what
        timer = threading.Timer(delay, action, (what if isinstance(what, VirtualPi) else bus,))
        timer.daemon = True
        timer.start()
    settings = dict(count=len(pis) + sum(isinstance(w, VirtualPi) for _, w in later), timeout=20.0, gather=1.0, follow_seconds=10.0,
                    reentry_timeout=10.0, sysfs_root=sysfs, dev_root=dev, mountinfo=mountinfo,
                    swaps=swaps, disk_settle=0.05,
                    poll_interval=0.01)
    settings.update(options)
    events: list[dict[str, Any]] = []
    lock = threading.Lock()

    def collect(item: Event) -> None:
        as_json = json.loads(json.dumps(item.to_dict()))
        with lock:
            events.append(as_json)

    try:
        outcome = provision(profile, RunOptions(**settings), on_event=collect, transport=bus,
                            ledger=str(ledger if ledger is not None else tmp / "ledger.sqlite"))
    except Exception as error:  # noqa: BLE001 - the test looks at it
        return Run(None, events, error)
    return Run(outcome, events)


def make_bmap(image: Path) -> bytes:
    """A bmap (bmaptool's format 2.0) of ``image``: by bmaptool when installed, else written
    here with every 4 KiB block mapped and the file checksum computed as bmaptool does (sha256
    of the file with that checksum's digits set to zeros)."""
    import shutil
    import subprocess
    if shutil.which("bmaptool"):
        return subprocess.run(["bmaptool", "create", str(image)], capture_output=True,
                              check=True).stdout
    data = image.read_bytes()
    blocks = (len(data) + 4095) // 4096
    text = (f'<?xml version="1.0" ?>\n<bmap version="2.0">\n<ImageSize> {len(data)} </ImageSize>'
            f'\n<BlockSize> 4096 </BlockSize>\n<BlocksCount> {blocks} </BlocksCount>\n'
            f'<MappedBlocksCount> {blocks} </MappedBlocksCount>\n<ChecksumType> sha256 '
            f'</ChecksumType>\n<BmapFileChecksum> {"0" * 64} </BmapFileChecksum>\n<BlockMap>\n'
            f'<Range chksum="{hashlib.sha256(data).hexdigest()}"> 0-{blocks - 1} </Range>\n'
            f'</BlockMap>\n</bmap>\n')
    return text.replace("0" * 64, hashlib.sha256(text.encode()).hexdigest(), 1).encode()
