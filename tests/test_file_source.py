"""File resolution without USB: refusal rules, lookup order, bootfiles.bin and directory checks."""

from __future__ import annotations

import io
import os
import string
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from rpiboot.errors import BootDirectoryError
from rpiboot.file_source import (BootFiles, check_boot_directory, default_directory_candidates,
                                 refusal_reason)
from rpiboot.targets import BCM2711, BCM2712, BCM2835, BCM2837

from engine_support import content, write

SAFE_CHARS = string.ascii_letters + string.digits + "_-+=,"


@given(st.text(), st.text())
def test_dotdot_anywhere_is_refused(before: str, after: str) -> None:
    assert refusal_reason(before + ".." + after) is not None


@given(st.text())
def test_absolute_names_are_refused(rest: str) -> None:
    assert refusal_reason("/" + rest) is not None


@given(st.text(), st.text())
def test_backslash_is_refused(before: str, after: str) -> None:
    assert refusal_reason(before + "\\" + after) is not None


@given(st.text(), st.characters(max_codepoint=0x1F), st.text())
def test_control_characters_are_refused(before: str, control: str, after: str) -> None:
    assert refusal_reason(before + control + after) is not None


_SEGMENT = st.text(alphabet=SAFE_CHARS + ".", min_size=1, max_size=12).filter(
    lambda s: ".." not in s)


@given(st.lists(_SEGMENT, min_size=1, max_size=4))
def test_relative_names_are_accepted_and_stay_inside(segments: list[str]) -> None:
    name = "/".join(segments)
    if ".." in name:
        return
    assert refusal_reason(name) is None
    root = Path("/boot-dir")
    resolved = Path(os.path.normpath(root / name))
    assert resolved == root or root in resolved.parents


@given(st.text(max_size=300))
def test_accepted_names_never_leave_the_directory(name: str) -> None:
    if refusal_reason(name) is not None:
        return
    root = "/boot-dir"
    resolved = os.path.normpath(os.path.join(root, name))
    assert resolved == root or resolved.startswith(root + "/")


@pytest.mark.parametrize("name", ["../x", "a/../../x", "/etc/passwd", "a\\b", "x\ny", ".."])
def test_refused_names_resolve_to_nothing(tmp_path: Path, name: str) -> None:
    write(tmp_path / "x", b"x")
    files = BootFiles(tmp_path / "sub", BCM2711)
    (tmp_path / "sub").mkdir()
    assert files.resolve(name) is None


def test_lookup_order_and_prefixes(boot_dir: Path) -> None:
    assert BootFiles(boot_dir, BCM2711).resolve("config.txt").origin == str(  # type: ignore[union-attr]
        boot_dir / "2711" / "config.txt")
    assert BootFiles(boot_dir, BCM2712).resolve("config.txt").origin == str(  # type: ignore[union-attr]
        boot_dir / "config.txt")
    for target in (BCM2835, BCM2837):
        found = BootFiles(boot_dir, target).resolve("start.elf")
        assert found is not None and found.origin == str(boot_dir / "2710" / "start.elf")
    assert BootFiles(boot_dir, BCM2711).resolve("nope") is None
    assert BootFiles(boot_dir, BCM2711).resolve("2711") is None  # a directory is not a file


def test_overlay_never_applies_to_second_stages(boot_dir: Path) -> None:
    for name in ("bootcode.bin", "bootcode4.bin", "bootcode5.bin", "config.txt"):
        write(boot_dir / "1-2" / name, b"overlay " + name.encode())
    files = BootFiles(boot_dir, BCM2711, overlay_path="1-2")
    assert files.resolve("config.txt").read() == b"overlay config.txt"  # type: ignore[union-attr]
    for name in ("bootcode.bin", "bootcode4.bin"):
        assert files.resolve(name).read() != b"overlay " + name.encode()  # type: ignore[union-attr]
    assert BootFiles(boot_dir, BCM2712, overlay_path="1-2").resolve(  # type: ignore[union-attr]
        "bootcode5.bin").read() == (boot_dir / "2712" / "bootcode5.bin").read_bytes()


def _tar(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def test_archive_members_are_streamed_exactly(tmp_path: Path) -> None:
    data = content("member", 700_001)
    write(tmp_path / "bootfiles.bin", _tar({"2712/BOOTMAIN": data, "2712/x": b"x"}))
    found = BootFiles(tmp_path, BCM2712).resolve("bootmain")
    assert found is not None and found.kind == "archive" and found.size == len(data)
    assert b"".join(found.chunks(65536)) == data
    assert BootFiles(tmp_path, BCM2711).resolve("bootmain") is None


def test_broken_archive_is_a_boot_directory_error(tmp_path: Path) -> None:
    write(tmp_path / "bootfiles.bin", b"this is not a tar archive" * 40)
    with pytest.raises(BootDirectoryError):
        check_boot_directory(tmp_path)


def test_check_boot_directory(tmp_path: Path) -> None:
    with pytest.raises(BootDirectoryError, match="does not exist"):
        check_boot_directory(tmp_path / "missing")
    with pytest.raises(BootDirectoryError, match="bootcode"):
        check_boot_directory(tmp_path)
    write(tmp_path / "2712" / "bootcode5.bin", b"x")
    check_boot_directory(tmp_path)
    with pytest.raises(BootDirectoryError, match="bootsig.bin"):
        check_boot_directory(tmp_path, signed=True)
    write(tmp_path / "bootsig.bin", b"x")
    check_boot_directory(tmp_path, signed=True)
    with pytest.raises(BootDirectoryError, match="not a directory"):
        check_boot_directory(tmp_path / "bootsig.bin")


def test_default_directory_candidates() -> None:
    assert default_directory_candidates(BCM2711)[-1] == Path("mass-storage-gadget64")
    assert default_directory_candidates(BCM2835)[-1] == Path("msd")
    assert all(path.parts[-3:-1] == ("share", "rpiboot")
               for path in default_directory_candidates(BCM2712)[:-1])


def test_file_shrinking_while_served_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "f", b"x" * 1000)
    found = BootFiles(tmp_path, BCM2711).resolve("f")
    assert found is not None
    path.write_bytes(b"x" * 10)
    with pytest.raises(OSError):
        found.read()
