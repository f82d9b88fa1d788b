"""The checks ``check`` runs and ``run`` runs before it waits for a board: the profile, every
file it names (image, bmap, boot and recovery directories, boot.conf, key) and the
customisation values with sample board values filled in. Nothing touches a device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BootDirectoryError
from ..file_source import check_boot_directory, find_default_directory
from ..targets import ALL_TARGETS
from .eeprom_image import EepromBuild, build_recovery
from .errors import ProvisionError
from .profile import SAMPLES, Profile, ProfileError


class BootDirectoryProblem(ProvisionError):
    code = "boot_directory"


@dataclass
class Preflight:
    profile: Profile
    image: Any
    """provio's ImageInfo (format, size when known)."""
    bmap: Any = None
    eeprom: EepromBuild | None = None
    notes: list[str] = field(default_factory=list)

    def close(self) -> None:
        if self.eeprom is not None:
            self.eeprom.remove()

    def describe(self) -> list[str]:
        profile, image = self.profile, self.image
        size = getattr(image, "size", None)
        lines = [f"profile {profile.name} ({profile.path}), id {profile.profile_id[:16]}",
                 f"image {profile.os.image.name}: {getattr(image, 'format', '?')}"
                 + (f", {size} bytes decompressed" if size is not None else
                    ", size known only once decompressed")]
        if self.bmap is not None:
            lines.append(f"bmap {profile.os.bmap}: {len(self.bmap.ranges)} mapped ranges")
        if self.eeprom is not None:
            lines.append(f"eeprom: pieeprom.bin sha256 {self.eeprom.sha256[:16]}"
                         f"{' (signed config)' if self.eeprom.signed else ''}")
        if profile.customise:
            lines.append("customise: " + ", ".join(sorted(profile.customise)))
        return lines + self.notes


def preflight(profile: Profile, *, keep_eeprom: bool = False) -> Preflight:
    """Raises a ProvisionError (ProfileError, ImageError, BmapError...) on the first problem.

    The EEPROM image is built to check it; ``keep_eeprom`` keeps its recovery directory for
    the run (the caller calls :meth:`Preflight.close`), else it is removed at once and only
    its description (sha256) remains."""
    from .block_device import validate_storage
    from .bmap import load_bmap
    from .image_source import check_image
    validate_storage(profile.os.storage)
    notes = _check_boot_directories(profile)
    _check_templates(profile)
    image = check_image(profile.os.image)
    if profile.customise:
        _check_boot_partition_table(image)
    bmap = None
    if profile.os.bmap is not None:
        bmap = load_bmap(profile.os.bmap)
        bmap.check_image_size(getattr(image, "size", None))
    eeprom = build_recovery(profile.eeprom) if profile.eeprom is not None else None
    result = Preflight(profile, image, bmap, eeprom, notes)
    if not keep_eeprom:
        result.close()
    return result


def _check_boot_partition_table(image: Any) -> None:
    """[customise] writes into the image's FAT boot partition: an image whose first sector is
    no partition table (or FAT volume) has none, and would fail every board after its write."""
    from .customise import _looks_like_fat
    from .first_boot_settings import CustomiseError
    from .image_source import ImageSource
    from .partitions import MBR_FAT_TYPES, SECTOR, _mbr_entries
    stream = ImageSource(image, 1 << 16).chunks()
    try:
        first = next(stream, b"")[:SECTOR]
    finally:
        stream.close()
    name = image.path.name
    if len(first) < SECTOR or first[510:512] != b"\x55\xaa":
        raise CustomiseError(f"[customise]: {name} starts with no partition table and no FAT "
                             "volume, so it has no boot partition for the first-boot settings",
                             "customise_invalid")
    kinds = [kind for kind, _first, count in _mbr_entries(first) if kind and count]
    if _looks_like_fat(first) or 0xEE in kinds or any(k in MBR_FAT_TYPES for k in kinds):
        return
    shown = ", ".join(f"0x{kind:02x}" for kind in kinds) or "none"
    raise CustomiseError(f"[customise]: {name} has no FAT boot partition (MBR partition types: "
                         f"{shown})", "customise_invalid")


def _check_boot_directories(profile: Profile) -> list[str]:
    notes = []
    for key, directory in (("[boot] directory", profile.boot_directory),
                           ("[eeprom] recovery",
                            profile.eeprom.recovery if profile.eeprom else None)):
        if directory is None:
            continue
        try:
            check_boot_directory(directory)
        except BootDirectoryError as error:
            raise BootDirectoryProblem(f"{key}: {error}") from None
    if profile.boot_directory is None:
        found = []
        for target in ALL_TARGETS:
            try:
                found.append(f"{target.name}: {find_default_directory(target)}")
            except BootDirectoryError:
                continue
        if not found:
            raise BootDirectoryProblem(
                "no [boot] directory in the profile and no installed mass-storage gadget "
                "found (usbboot's mass-storage-gadget64 / msd): run 'rpiboot "
                "--fetch-boot-files', or set [boot] directory")
        notes.append("boot: default gadget directories (" + "; ".join(found) + ")")
    return notes


def _check_templates(profile: Profile) -> None:
    fields = profile.template_fields
    if "mac" in fields and profile.eeprom is None:
        raise ProfileError("{mac} is known only from the OTP metadata the recovery firmware "
                           "reports: the profile needs an [eeprom] section to use it")
    if not profile.customise:
        return
    from . import customise
    sample = dict(SAMPLES, **{name: "x" for name in fields if name.startswith("pool.")})
    try:
        settings = customise.Settings(**profile.settings_values(sample))
    except TypeError as error:
        raise ProfileError(f"[customise]: {error}") from None
    validate = getattr(customise, "validate_settings", None)
    if validate is not None:
        validate(settings)


def ledger_target_text(target: str | Path | None) -> str:
    """The ledger as printed and in the start event: never with its password."""
    from .ledger import is_url
    from .ledger.postgres import redact
    if target is None:
        return "default"
    return redact(str(target)) if is_url(target) else str(target)
