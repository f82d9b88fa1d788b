"""File resolution without USB: refusal rules, lookup order, bootfiles.bin and directory checks."""

from __future__ import annotations

import os
import string
from pathlib import Path

import pytest
from hypothesis import assume, given, strategies as st

from rpiboot.errors import BootDirectoryError
from rpiboot.file_source import (BootFiles, check_boot_directory, default_directory_candidates,
                                 refusal_reason)
from rpiboot.targets import BCM2711, BCM2712, BCM2835, BCM2837

from engine_support import content, tar_bytes, write

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


# A boot directory (no symlinks) inside a root that also holds files outside it, so that a name
# that escaped the directory would find something.
_INSIDE = ("config.txt", "2711/start4.elf", "2712/config.txt", "sub/deeper/x.txt",
           "1-1/cmdline.txt")
_OUTSIDE = ("outside.txt", "2711/outside.txt", "sub/outside.txt")
_FILES = [(target, overlay) for target in (BCM2711, BCM2712, BCM2835) for overlay in (None, "1-1")]
"""Resolvers to try: chips with different prefixes, with and without an overlay directory."""


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """ROOT/boot is the boot directory; the rest of ROOT is outside it."""
    root = Path(os.path.realpath(tmp_path_factory.mktemp("tree")))
    for name in _INSIDE:
        write(root / "boot" / name, b"in " + name.encode())
    for name in _OUTSIDE:
        write(root / name, b"out " + name.encode())
    return root


def _path_name(parts: tuple[str, str, int, str]) -> str:
    prefix, start, ups, leaf = parts
    return prefix + "/".join(filter(None, [start] + [".."] * ups + [leaf]))


# Anything, and paths over the tree's names that often lead out of the boot directory
# (ROOT stands for the tree's absolute path).
_DEVICE_NAMES = st.one_of(
    st.text(max_size=60),
    st.tuples(
        st.sampled_from(["", "", "/", "//", "\\", "ROOT/"]),
        st.sampled_from(["", "2711", "sub", "sub/deeper", "1-1", "nothere", "./sub"]),
        st.sampled_from([0, 0, 1, 2, 3]),
        st.sampled_from(["outside.txt", "config.txt", "2711/outside.txt", "sub/outside.txt",
                         "boot/config.txt", "start4.elf", "deeper/x.txt", "cmdline.txt", "",
                         ".", "..", "a\\b", "x\ny"]),
    ).map(_path_name),
)


def _inside(path: str, directory: Path) -> bool:
    return os.path.commonpath([os.path.realpath(path), str(directory)]) == str(directory)


@given(_DEVICE_NAMES, st.sampled_from(_FILES))
def test_resolved_files_are_inside_the_boot_directory(tree: Path, name: str,
                                                      files: tuple) -> None:
    target, overlay = files
    name = name.replace("ROOT", str(tree))
    found = BootFiles(tree / "boot", target, overlay_path=overlay).resolve(name)
    if found is not None:
        assert found.kind == "file" and _inside(found.origin, tree / "boot"), (name, found)
        assert found.read() == Path(found.origin).read_bytes()


def test_the_tree_lets_names_resolve(tree: Path) -> None:
    # The property above is only worth something if names do resolve, inside and (unchecked)
    # outside.
    files = BootFiles(tree / "boot", BCM2711, overlay_path="1-1")
    assert files.resolve("start4.elf") is not None and files.resolve("cmdline.txt") is not None
    assert (tree / "boot" / "../outside.txt").is_file()


_UPS = st.integers(1, 4)


@given(st.sampled_from(["", "2711", "sub", "sub/deeper", "1-1"]), _UPS,
       st.sampled_from(["outside.txt", "config.txt", "2711/outside.txt", "sub/outside.txt",
                        "boot/config.txt"]))
def test_dotdot_names_resolve_to_nothing_even_when_the_target_exists(
        tree: Path, start: str, ups: int, leaf: str) -> None:
    name = "/".join(filter(None, [start] + [".."] * ups + [leaf]))
    assume((tree / "boot" / name).is_file())
    for target, overlay in _FILES:
        assert BootFiles(tree / "boot", target, overlay_path=overlay).resolve(name) is None, name


@given(st.sampled_from(_OUTSIDE + tuple("boot/" + name for name in _INSIDE)),
       st.integers(1, 3))
def test_absolute_names_resolve_to_nothing_even_when_the_file_exists(
        tree: Path, relative: str, slashes: int) -> None:
    name = "/" * slashes + str(tree / relative).lstrip("/")
    assert Path(name).is_file()
    for target, overlay in _FILES:
        assert BootFiles(tree / "boot", target, overlay_path=overlay).resolve(name) is None, name


_SAFE_TEXT = st.text(alphabet=SAFE_CHARS + ".", max_size=8)
_UNSAFE_MARKS = st.one_of(st.just(".."), st.just("\\"),
                          st.characters(min_codepoint=1, max_codepoint=0x1F), st.just("\x7f"))


@pytest.mark.skipif(os.name == "nt", reason="names with backslashes or control characters")
@given(_SAFE_TEXT, _UNSAFE_MARKS, _SAFE_TEXT)
def test_unsafe_names_resolve_to_nothing_even_when_the_file_exists(
        tree: Path, before: str, mark: str, after: str) -> None:
    name = before + mark + after
    assume(name not in (".", ".."))
    for directory in ("", "2711", "1-1"):
        write(tree / "boot" / directory / name, b"unsafe")  # a file named exactly that
    try:
        for target, overlay in _FILES:
            assert BootFiles(tree / "boot", target, overlay_path=overlay).resolve(name) is None
    finally:
        for directory in ("", "2711", "1-1"):
            (tree / "boot" / directory / name).unlink()


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




def test_archive_members_are_streamed_exactly(tmp_path: Path) -> None:
    data = content("member", 700_001)
    write(tmp_path / "bootfiles.bin", tar_bytes({"2712/BOOTMAIN": data, "2712/x": b"x"}))
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
    write(tmp_path / "2710" / "bootsig.bin", b"x")  # upstream's check looks in 2710/ too
    check_boot_directory(tmp_path, signed=True)
    (tmp_path / "2710" / "bootsig.bin").unlink()
    write(tmp_path / "bootsig.bin", b"x")
    check_boot_directory(tmp_path, signed=True)
    with pytest.raises(BootDirectoryError, match="not a directory"):
        check_boot_directory(tmp_path / "bootsig.bin")


def test_default_directory_candidates() -> None:
    assert default_directory_candidates(BCM2711)[-1] == Path("mass-storage-gadget64")
    assert default_directory_candidates(BCM2835)[-1] == Path("msd")
    from rpiboot.boot_files import user_data_dir
    candidates = default_directory_candidates(BCM2712)
    assert candidates[0] == user_data_dir() / "mass-storage-gadget64"  # rpiboot --fetch-boot-files
    assert all(path.parts[-3:-1] == ("share", "rpiboot") for path in candidates[1:-1])


def test_file_shrinking_while_served_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path / "f", b"x" * 1000)
    found = BootFiles(tmp_path, BCM2711).resolve("f")
    assert found is not None
    with found.open() as opened:
        assert opened.size == 1000
        path.write_bytes(b"x" * 10)
        with pytest.raises(OSError, match="shorter"):
            b"".join(opened.chunks())
