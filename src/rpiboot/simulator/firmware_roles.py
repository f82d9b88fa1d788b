"""Firmware roles: virtual boards that act like the boot directory they are given.

A role is the firmware a board runs in one file-server stage. Its requests depend on what it
actually receives (config.txt options, whether a file exists, signatures), as real firmware does,
so a rehearsal fails where hardware would. Build a board with :func:`virtual_board`::

    pi = virtual_board("2711", (3,), ["recovery", "mass-storage-gadget"],
                       disks=[VirtualDisk(path, 64 << 20)])

gives ROM -> recovery.bin -> (reboot, nRPIBOOT still fitted) ROM -> bootloader + boot.img ->
the mass-storage gadget with its disks, all at the same port. The board's state (virtual OTP,
what its EEPROM holds, what its firmware did or refused) is ``pi.board`` (:class:`BoardState`),
shared by the roles so that e.g. ``program_pubkey=1`` during recovery secures later boots.

Roles (``ROLES``): ``recovery`` (BCM2711), ``recovery5`` (BCM2712), ``msd`` (BCM2835/2837/2711),
``mass-storage-gadget`` (BCM2711/2712) and ``secure-boot`` (BCM2711/2712); each class below says
what is known from upstream and what is assumed.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

from .script import GET_FILE_SIZE, READ_FILE, Request, done, metadata
from .signatures import (CUSTOMER_KEYNUM, bootcode_2712_keynum, bootcode_2712_trailer, parse_sig,
                         verify_sha256)
from .virtual_disk import VirtualDisk
from .virtual_pi import FinalStage, RomStage, ServerStage, Stage, VirtualPi

NO_KEY = "0" * 64
BOARD_REVISIONS = {"2835": "900061", "2837": "a02100", "2711": "c03141", "2712": "d04180"}


@dataclass
class VirtualOtp:
    customer_key_hash: str | None = None
    """SHA-256 (hex) of the customer's pubkey.bin once secure boot is enabled; write-once."""


@dataclass
class BoardState:
    """What persists across a board's boots: its OTP and SPI EEPROM, and what happened."""

    chip: str
    serial: str
    otp: VirtualOtp = field(default_factory=VirtualOtp)
    eeprom_sha256: str | None = None
    eeprom_pubkey: bytes | None = None
    """pubkey.bin embedded in the EEPROM image (the key the bootloader verifies boot.img with)."""
    eeprom_config_signed: bool | None = None
    """Whether the flashed image's bootconf.sig verifies with its own pubkey.bin."""
    events: list[str] = field(default_factory=list)
    refusals: list[str] = field(default_factory=list)

    def refuse(self, text: str) -> None:
        self.refusals.append(text)
        self.events.append(f"refused: {text}")


class StageView:
    """What a role sees of its stage: the host's answers so far."""

    def __init__(self, pi: VirtualPi, stage_index: int):
        self._pi, self._stage = pi, stage_index

    def size(self, name: str) -> int:
        return next((r.value for r in reversed(self._pi.received) if r.stage == self._stage
                     and r.kind == "size" and r.name == name), 0)

    def data(self, name: str) -> bytes | None:
        return next((r.data for r in reversed(self._pi.received) if r.stage == self._stage
                     and r.kind == "file" and r.name == name and r.value), None)


class Role:
    """Base: a firmware that asks for files in a file-server stage."""

    name = ""
    chips: tuple[str, ...] = ()
    expected: tuple[str, ...] = ()
    """Files this firmware may ask for (the report lists those never received)."""
    becomes_gadget = False

    def __init__(self, board: BoardState):
        self.board = board
        self.halts = False
        """Set when the firmware stops instead of handing over to the board's next stage."""

    def check_second_stage(self, data: bytes) -> int:
        """The ROM's return code for this second stage (0: accepted).

        Known (usbboot secure-boot-recovery5 and mass-storage-gadget64 READMEs): a BCM2712 with
        the customer key hash in OTP runs only a bootcode5.bin counter-signed with that key; one
        without a key refuses a counter-signed bootcode5.bin (its ROM checks against a zero key
        hash). Assumed: the refusal is a non-zero return code (1); a block with key number 16
        is what makes it counter-signed; BCM2711's bootcode4.bin is only checked against
        Raspberry Pi's key, which this model does not hold (accepted)."""
        if self.board.chip != "2712":
            return 0
        wanted = self.board.otp.customer_key_hash
        if wanted is None:
            if bootcode_2712_keynum(data) == CUSTOMER_KEYNUM:
                self.board.refuse("bootcode5.bin: counter-signed with a customer key, but this "
                                  "board has no key in OTP")
                return 1
            return 0
        trailer = bootcode_2712_trailer(data)
        if trailer is None or hashlib.sha256(trailer[2]).hexdigest() != wanted or \
                not verify_sha256(trailer[2], trailer[0], trailer[1]):
            self.board.refuse("bootcode5.bin: not counter-signed with the customer key")
            return 1
        return 0

    def requests(self, view: StageView) -> Iterator[Request]:
        raise NotImplementedError

    def fetch(self, view: StageView, name: str) -> Iterator[Request]:
        """GetFileSize, then ReadFile if the host has the file."""
        yield Request(GET_FILE_SIZE, name.encode())
        if view.size(name) > 0:
            yield Request(READ_FILE, name.encode())

    def halt(self, reason: str) -> Iterator[Request]:
        self.halts = True
        self.board.events.append(f"{self.name}: {reason}")
        yield done()


def config_options(data: bytes | None) -> dict[str, str]:
    """``key=value`` lines of a config.txt (comments dropped; conditional sections ignored)."""
    options: dict[str, str] = {}
    for line in (data or b"").decode("utf-8", errors="replace").splitlines():
        key, sep, value = line.split("#", 1)[0].partition("=")
        if sep and key.strip():
            options[key.strip()] = value.strip()
    return options


class Recovery(Role):
    """``recovery`` / ``recovery5``: usbboot's recovery directories, whose bootcode4.bin /
    bootcode5.bin is recovery.bin, the EEPROM flasher.

    Known (usbboot recovery*/ README and config.txt, its Readme's metadata section, rpiboot logs
    in usbboot issue 214, rpi-eeprom issue 735, Raspberry Pi's EEPROM documentation): it reads
    config.txt (``recovery_reboot=1`` reboots after flashing, otherwise it stops;
    ``recovery_metadata=0`` stops the metadata, which is on by default; ``program_pubkey=1``
    writes the customer key hash into OTP), then the ``.sig`` before the image: pieeprom.sig,
    then pieeprom.bin (older versions looked for pieeprom.upd). The ``.sig`` holds the image's
    SHA-256 (rpi-eeprom-digest; usbboot's update-pieeprom.sh writes it without an rsa2048 line,
    also for secure boot); a mismatch is a "bad signature" and nothing is flashed. A missing
    image still ends in the success indication (rpi-eeprom issue 735). Once the key is in OTP
    "the EEPROM configuration file must be signed with the customer private key", and
    ``program_pubkey=1`` verifies bootconf.sig with the image's key before it writes OTP (the
    UART log in usbboot's secure-boot-recovery README).

    The metadata of a run with ``program_pubkey=1`` carries SECURE_BOOT_PROVISION (the
    secure-boot-recovery README's example). Assumed: its value "failed" when the key could not
    be written, and its absence when the image was not flashed; on a board with the key in OTP
    recovery.bin itself refuses an image whose
    pubkey.bin is not that key or whose bootconf.sig does not verify with it (upstream only says
    such a configuration is not accepted, not which stage refuses it); the BCM2711 asks for
    vl805.sig first (seen in the 214 log); this model reads it
    and nothing else of the VL805 update (vl805.bin is not modelled); the metadata key set and the EEPROM_UPDATE values "success",
    "failed" and "skipped" (no image); a refused update still sends metadata and ends the stage.
    """

    name, chips = "recovery", ("2711",)
    expected = ("config.txt", "pieeprom.sig", "pieeprom.bin")
    image = "pieeprom.bin"
    provision: str | None = None
    """SECURE_BOOT_PROVISION for the metadata: set only when config.txt asks program_pubkey=1."""

    def requests(self, view: StageView) -> Iterator[Request]:
        yield from self.fetch(view, "config.txt")
        options = config_options(view.data("config.txt"))
        if self.board.chip == "2711":
            yield from self.fetch(view, "vl805.sig")
        yield from self.fetch(view, "pieeprom.sig")
        yield from self.fetch(view, self.image)
        outcome = self._flash(view.data("pieeprom.sig"), view.data(self.image), options)
        if options.get("recovery_metadata", "1") != "0":
            for key, value in self._metadata(outcome).items():
                yield metadata(key, value)
        self.halts = options.get("recovery_reboot") != "1"
        yield done()

    def _flash(self, sig: bytes | None, image: bytes | None, options: dict[str, str]) -> str:
        if image is None:
            self.board.events.append(f"{self.name}: no {self.image}; nothing flashed "
                                     "(the firmware still signals success)")
            return "skipped"
        problem = self._problem(sig, image)
        if problem:
            self.board.refuse(f"{self.image}: {problem}")
            return "failed"
        self.board.eeprom_sha256 = hashlib.sha256(image).hexdigest()
        self.board.eeprom_pubkey = _image_pubkey(image)
        self.board.eeprom_config_signed = (self.board.eeprom_pubkey is not None
                                           and _config_signed(image, self.board.eeprom_pubkey))
        self.board.events.append(f"{self.name}: flashed {self.image} "
                                 f"sha256 {self.board.eeprom_sha256}")
        if options.get("program_pubkey") == "1":
            self.provision = "success" if self._program_pubkey() else "failed"
        return "success"

    def _problem(self, sig: bytes | None, image: bytes) -> str | None:
        parsed = parse_sig(sig or b"")
        if parsed is None:
            return "bad signature (pieeprom.sig missing or not a SHA-256)"
        if parsed.sha256 != hashlib.sha256(image).hexdigest():
            return "bad signature (pieeprom.sig does not match the image's SHA-256)"
        wanted = self.board.otp.customer_key_hash
        if wanted is None:
            return None
        pubkey = _image_pubkey(image)
        if pubkey is None or hashlib.sha256(pubkey).hexdigest() != wanted:
            return "secure boot: the image's public key does not match the OTP key hash"
        if not _config_signed(image, pubkey):
            return "secure boot: bootconf.txt is not signed with the customer key (bootconf.sig)"
        return None

    def _program_pubkey(self) -> bool:
        """Write the image's key hash into OTP; False (and a refusal) when it cannot."""
        pubkey = self.board.eeprom_pubkey
        if pubkey is None:
            self.board.refuse("program_pubkey=1 but the EEPROM image holds no public key")
            return False
        if self.board.eeprom_config_signed is not True:
            self.board.refuse("program_pubkey=1 but bootconf.sig does not verify with the "
                              "image's public key; OTP not written")
            return False
        digest = hashlib.sha256(pubkey).hexdigest()
        if self.board.otp.customer_key_hash not in (None, digest):
            self.board.refuse("program_pubkey=1: OTP already holds a different key hash")
            return False
        self.board.otp.customer_key_hash = digest
        self.board.events.append(f"{self.name}: OTP customer key hash {digest}")
        return True

    def _metadata(self, outcome: str) -> dict[str, str]:
        serial = int(self.board.serial, 16) if _is_hex(self.board.serial) else 0
        return {"MAC_ADDR": "d8:3a:dd:" + ":".join(f"{b:02x}" for b in
                                                   (serial & 0xFFFFFF).to_bytes(3, "big")),
                "EEPROM_UPDATE": outcome,
                "EEPROM_HASH": self.board.eeprom_sha256 or NO_KEY,
                **({"SECURE_BOOT_PROVISION": self.provision} if self.provision else {}),
                "CUSTOMER_KEY_HASH": self.board.otp.customer_key_hash or NO_KEY,
                "BOOT_ROM": "0000c8b0", "BOARD_ATTR": "00000000",
                "USER_BOARDREV": BOARD_REVISIONS[self.board.chip], "JTAG_LOCKED": "0"}


class Recovery5(Recovery):
    __doc__ = Recovery.__doc__
    name, chips = "recovery5", ("2712",)


class MassStorageGadget(Role):
    """``mass-storage-gadget``: usbboot's mass-storage-gadget64 (bootloader from
    firmware/bootfiles.bin, then a Linux ramdisk that exports the board's storage).

    Known (mass-storage-gadget64/config.txt and README): ``boot_ramdisk=1`` makes the
    bootloader load boot.img (a FAT image with kernel and initramfs); in signed or secure boot
    the signature of the ramdisk is in boot.sig. Linux then enumerates as the gadget
    (:mod:`.virtual_disk`).

    Assumed: config.txt is read first; boot.sig is only asked for when the board enforces
    signatures (OTP key hash set); without ``boot_ramdisk=1`` the board asks for the regular
    firmware (start4.elf / kernel_2712.img here) and never becomes the gadget.
    """

    name, chips, becomes_gadget = "mass-storage-gadget", ("2711", "2712"), True
    expected = ("config.txt", "boot.img")

    def requests(self, view: StageView) -> Iterator[Request]:
        yield from self.fetch(view, "config.txt")
        if config_options(view.data("config.txt")).get("boot_ramdisk") != "1":
            regular = "start4.elf" if self.board.chip == "2711" else "kernel_2712.img"
            yield from self.fetch(view, regular)
            yield from self.halt("no boot_ramdisk=1 in config.txt: no ramdisk, no gadget")
            return
        yield from self.fetch(view, "boot.img")
        image = view.data("boot.img")
        if image is None:
            yield from self.halt("no boot.img: no gadget")
            return
        if self.board.otp.customer_key_hash is not None:
            yield from self.fetch(view, "boot.sig")
            problem = self._signature_problem(image, view.data("boot.sig"))
            if problem:
                self.board.refuse(f"boot.img: {problem}")
                yield from self.halt("boot.img refused")
                return
        yield done()

    def _signature_problem(self, image: bytes, sig: bytes | None) -> str | None:
        pubkey = self.board.eeprom_pubkey
        if pubkey is None or hashlib.sha256(pubkey).hexdigest() != \
                self.board.otp.customer_key_hash:
            return "the EEPROM's public key does not match the OTP key hash"
        parsed = parse_sig(sig or b"")
        if parsed is None or parsed.rsa2048 is None:
            return "unsigned (no boot.sig with an rsa2048 signature)"
        if parsed.sha256 != hashlib.sha256(image).hexdigest() or \
                not verify_sha256(pubkey, image, parsed.rsa2048):
            return "wrongly signed (boot.sig does not verify with the customer key)"
        return None


class SecureBoot(MassStorageGadget):
    """``secure-boot``: the mass-storage gadget on a board whose OTP holds a customer key hash.

    Known (usbboot secure-boot-recovery*/config.txt, mass-storage-gadget64 README): with the key
    hash in OTP the bootloader only runs a boot.img signed by that key (boot.sig, rsa2048); on
    BCM2712 the firmware (bootcode5.bin) must also be counter-signed with it.

    The ROM's check of bootcode5.bin is every role's (:meth:`Role.check_second_stage`). A
    board with an empty OTP behaves like ``mass-storage-gadget``.
    """

    name = "secure-boot"

    @property
    def expected(self) -> tuple[str, ...]:  # type: ignore[override]
        signed = self.board.otp.customer_key_hash is not None
        return ("config.txt", "boot.img", "boot.sig") if signed else ("config.txt", "boot.img")


class Msd(Role):
    """``msd``: usbboot's msd directory (BCM2835/2837; deprecated on CM4, not for BCM2712):
    bootcode.bin, then a start.elf that makes the board a USB mass-storage device itself.

    Known: the directory holds bootcode.bin, start.elf and (BCM2711) the regular bootcode4.bin.
    Assumed: the BCM2835/2837 stage asks for start.elf only; the BCM2711 one reads config.txt
    and start4.elf; the device then shows the same identity and disk layout as the
    mass-storage gadget (upstream does not document what it presents).
    """

    name, chips, becomes_gadget = "msd", ("2835", "2837", "2711"), True
    expected = ("start.elf",)

    def requests(self, view: StageView) -> Iterator[Request]:
        names = ["config.txt", "start4.elf"] if self.board.chip == "2711" else ["start.elf"]
        for name in names:
            yield from self.fetch(view, name)
        if view.data(names[-1]) is None:
            yield from self.halt(f"no {names[-1]}: no mass storage")
            return
        yield done()


ROLES: dict[str, type[Role]] = {role.name: role for role in
                                (Recovery, Recovery5, MassStorageGadget, SecureBoot, Msd)}


def virtual_board(chip: str, port_numbers: Sequence[int] = (1,), roles: Sequence[str] = (),
                  *, disks: Sequence[VirtualDisk] = (), serial: str = "0123abcd",
                  otp_key_hash: str | None = None, eeprom_pubkey: bytes | None = None,
                  bus_number: int = 1, **options: Any) -> VirtualPi:
    """A board that boots once per role at the same port (the ROM before each), ending as the
    mass-storage gadget with ``disks`` when the last role is one that becomes it. ``options``
    go to :class:`VirtualPi` (reenumerate_delay, ...)."""
    board = BoardState(chip, serial, VirtualOtp(otp_key_hash), eeprom_pubkey=eeprom_pubkey)
    stages: list[Stage] = []
    role_objects = [_role(name, board) for name in roles]
    for role in role_objects:
        stages.append(RomStage(serial_index=3 if chip == "2711" else 0,
                               check=role.check_second_stage))
        stages.append(ServerStage((), serial=serial, role=role))
    if role_objects and role_objects[-1].becomes_gadget:
        stages.append(FinalStage(serial=serial, serial_index=3, disks=list(disks)))
    pi = VirtualPi(chip, port_numbers, bus_number, stages, keep_data=True, **options)
    pi.board = board  # type: ignore[attr-defined]
    return pi


def _role(name: str, board: BoardState) -> Role:
    role = ROLES.get(name)
    if role is None:
        raise ValueError(f"unknown role {name!r}; choose from {', '.join(ROLES)}")
    if board.chip not in role.chips:
        raise ValueError(f"role {name} is for BCM{'/'.join(role.chips)}, not BCM{board.chip}")
    return role(board)


def role_report(pi: VirtualPi) -> dict[str, Any] | None:
    """The roles' view for the report: what each expected and never received, OTP, events."""
    board: BoardState | None = getattr(pi, "board", None)
    if board is None:
        return None
    stages = []
    for index, stage in enumerate(pi.stages):
        role = getattr(stage, "role", None)
        if role is None:
            continue
        received = {r.name for r in pi.received if r.stage == index and r.kind == "file"
                    and r.value}
        requested = {r.name for r in pi.received if r.stage == index
                     and r.kind == "request_read"}
        stages.append({"stage": index, "role": role.name, "reached": pi.stage_index >= index,
                       "halted": role.halts and pi.stage_index == index,
                       "never_requested": [n for n in role.expected if n not in requested],
                       "never_received": [n for n in role.expected if n not in received]})
    return {"stages": stages, "otp_customer_key_hash": board.otp.customer_key_hash,
            "eeprom_sha256": board.eeprom_sha256, "events": list(board.events),
            "refusals": list(board.refusals)}


def _image_pubkey(image: bytes) -> bytes | None:
    from ..eeprom.common import ToolError
    from ..eeprom.image import EepromImage

    try:
        parsed = EepromImage(image)
        data = parsed.get_file("pubkey.bin") if parsed.find_file("pubkey.bin") else None
    except (ToolError, ValueError, struct.error):
        return None
    return data[:264] if data and len(data) >= 264 else None


def _config_signed(image: bytes, pubkey: bytes) -> bool:
    """Whether the image's bootconf.sig holds the sha256 and a valid rsa2048 signature of its
    bootconf.txt made with ``pubkey``."""
    from ..eeprom.common import ToolError
    from ..eeprom.image import BOOTCONF_SIG, BOOTCONF_TXT, EepromImage

    try:
        parsed = EepromImage(image)
        if not (parsed.find_file(BOOTCONF_SIG) and parsed.find_file(BOOTCONF_TXT)):
            return False
        config, sig = parsed.get_file(BOOTCONF_TXT), parse_sig(parsed.get_file(BOOTCONF_SIG))
    except (ToolError, ValueError, struct.error):
        return False
    return (sig is not None and sig.rsa2048 is not None
            and sig.sha256 == hashlib.sha256(config).hexdigest()
            and verify_sha256(pubkey, config, sig.rsa2048))


def _is_hex(text: str) -> bool:
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)
