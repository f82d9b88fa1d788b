"""Tests for rpiboot.eeprom.fat_image: pure-Python reader, fsck.fat and mtools."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rpiboot.eeprom.fat_image import (
    FatParameterError,
    ImageTooSmallError,
    SourceError,
    build_fat_image,
    plan_fat_image,
    read_fat_image,
)

from eeprom_helpers import require_tool



def fsck_ok(image: Path) -> str:
    result = subprocess.run([require_tool("fsck.fat"), "-n", "-v", str(image)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def mtools_env() -> dict[str, str]:
    return {**os.environ, "MTOOLS_SKIP_CHECK": "0", "LC_ALL": "C.UTF-8"}


def mtools_read(image: Path, rel: str) -> bytes:
    result = subprocess.run([require_tool("mcopy"), "-n", "-i", str(image), f"::/{rel}", "-"],
                            capture_output=True, env=mtools_env())
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout


def mtools_listing(image: Path) -> str:
    result = subprocess.run([require_tool("mdir"), "-/", "-i", str(image), "::/"],
                            capture_output=True, env=mtools_env())
    assert result.returncode == 0, result.stderr.decode(errors="replace")
    return result.stdout.decode("utf-8", errors="replace")


def materialize(root: Path, tree: dict) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, value in tree.items():
        if isinstance(value, dict):
            materialize(root / name, value)
        else:
            (root / name).write_bytes(value)


def flatten(tree: dict, prefix: str = "") -> tuple[dict[str, bytes], set[str]]:
    files: dict[str, bytes] = {}
    dirs: set[str] = set()
    for name, value in tree.items():
        path = f"{prefix}{name}"
        if isinstance(value, dict):
            dirs.add(path)
            sub_files, sub_dirs = flatten(value, path + "/")
            files.update(sub_files)
            dirs |= sub_dirs
        else:
            files[path] = value
    return files, dirs


SAMPLE = {
    "config.txt": b"arm_64bit=1\n",
    "CMDLINE.TXT": b"console=serial0\n",
    "start4.elf": bytes(range(256)) * 50,
    "A very long file name.txt": b"lfn",
    "Mixed.Case": b"mixed",
    "empty.bin": b"",
    "overlays": {
        "longfilename1.dtbo": b"1" * 600,
        "longfilename2.dtbo": b"2" * 1024,
        "LONGFI~1.DTB": b"plain short name that collides with an alias",
        "nested": {"deep": {"ünïcödé Ω.txt": b"bmp unicode"}},
        "emptydir": {},
    },
    ".hidden": b"dot file",
    "name with+plus,comma;semi=eq[1].dat": b"lossy",
}


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    materialize(src, SAMPLE)
    return src


@pytest.mark.parametrize("fat_type", [None, 12, 16, 32])
def test_sample_roundtrip_pure_reader(sample: Path, tmp_path: Path, fat_type: int | None) -> None:
    image = tmp_path / "boot.img"
    plan = build_fat_image(sample, image, fat_type=fat_type)
    contents = read_fat_image(image)
    files, dirs = flatten(SAMPLE)
    assert contents.files == files
    assert contents.dirs == dirs
    assert contents.label == "BOOT"
    assert contents.fat_type == plan.fat_type == (fat_type or 12)
    assert image.stat().st_size == plan.size_bytes


@pytest.mark.parametrize("fat_type", [12, 16, 32])
def test_sample_accepted_by_fsck_and_mtools(sample: Path, tmp_path: Path, fat_type: int) -> None:
    image = tmp_path / "boot.img"
    build_fat_image(sample, image, fat_type=fat_type)
    report = fsck_ok(image)
    assert f"{fat_type} bit entries" in report
    listing = mtools_listing(image)
    for name in ("A very long file name.txt", "longfilename2.dtbo", "ünïcödé Ω.txt", "emptydir"):
        assert name in listing
    files, _ = flatten(SAMPLE)
    shorts = read_fat_image(image).short_names
    for rel, data in files.items():
        assert mtools_read(image, mtools_path(rel, shorts)) == data, rel


def mtools_path(rel: str, shorts: dict[str, str]) -> str:
    """mtools treats [ ] * ? as wildcards: address such components by 8.3 alias."""
    parts = rel.split("/")
    out = []
    for i, part in enumerate(parts):
        glob = any(c in part for c in "[]*?")
        out.append(shorts["/".join(parts[:i + 1])] if glob else part)
    return "/".join(out)


def test_short_names_and_aliases(sample: Path, tmp_path: Path) -> None:
    image = tmp_path / "boot.img"
    build_fat_image(sample, image)
    shorts = read_fat_image(image).short_names
    assert shorts["config.txt"] == "CONFIG.TXT"
    assert shorts["overlays/LONGFI~1.DTB"] == "LONGFI~1.DTB"
    # The plain name keeps ~1, so the aliases must skip it.
    assert shorts["overlays/longfilename1.dtbo"] == "LONGFI~2.DTB"
    assert shorts["overlays/longfilename2.dtbo"] == "LONGFI~3.DTB"
    assert shorts["Mixed.Case"] == "MIXED~1.CAS"
    assert shorts[".hidden"] == "HIDDEN~1"


def test_reproducible_with_source_date_epoch(sample: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    build_fat_image(sample, first)
    os.utime(sample / "config.txt", (1, 1))
    build_fat_image(sample, second)
    assert first.read_bytes() == second.read_bytes()
    assert read_fat_image(first).volume_id == 1700000000


def test_reproducible_without_epoch(sample: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    first, second = tmp_path / "a.img", tmp_path / "b.img"
    build_fat_image(sample, first)
    build_fat_image(sample, second)
    assert first.read_bytes() == second.read_bytes()


def test_auto_size_has_upstream_style_slack(sample: Path) -> None:
    plan = plan_fat_image(sample)
    free = (plan.layout.clusters - plan.used_clusters) * plan.layout.cluster_bytes
    assert 12 * 1024 <= free <= 20 * 1024
    assert plan.size_bytes % 1024 == 0


def test_fat16_and_fat32_chosen_by_cluster_count(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    big = src / "big.bin"
    with open(big, "wb") as f:
        f.truncate(3 * 1024 * 1024)
    assert plan_fat_image(src).fat_type == 16
    with open(big, "wb") as f:
        f.truncate(40 * 1024 * 1024)
    plan = plan_fat_image(src)
    assert plan.fat_type == 32
    assert plan.layout.clusters >= 65525


def test_fixed_size_exact_and_too_small(sample: Path, tmp_path: Path) -> None:
    image = tmp_path / "boot.img"
    build_fat_image(sample, image, size_bytes=1024 * 1024)
    assert image.stat().st_size == 1024 * 1024
    assert read_fat_image(image).files["start4.elf"] == SAMPLE["start4.elf"]
    image.write_bytes(b"previous")
    with pytest.raises(ImageTooSmallError):
        build_fat_image(sample, image, size_bytes=20 * 1024)
    assert image.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["boot.img", "src"]


def test_fat32_forced_on_too_small_fixed_size(sample: Path, tmp_path: Path) -> None:
    with pytest.raises(ImageTooSmallError):
        plan_fat_image(sample, size_bytes=4 * 1024 * 1024, fat_type=32)


@pytest.mark.parametrize("names", [("a.txt", "A.TXT"), ("Readme", "README")])
def test_case_collision_rejected(tmp_path: Path, names: tuple[str, str]) -> None:
    for name in names:
        (tmp_path / name).write_text(name)
    with pytest.raises(SourceError, match="differ only in case"):
        plan_fat_image(tmp_path)


@pytest.mark.parametrize("name", ["a:b", "what?", "trailing.", "trailing ", "x\\y"])
def test_unrepresentable_names_rejected(tmp_path: Path, name: str) -> None:
    (tmp_path / name).write_text("x")
    with pytest.raises(SourceError):
        plan_fat_image(tmp_path)


def test_missing_source_and_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(SourceError):
        plan_fat_image(tmp_path / "missing")
    with pytest.raises(FatParameterError):
        plan_fat_image(tmp_path, label="way too long label")
    with pytest.raises(FatParameterError):
        plan_fat_image(tmp_path, sector_size=700)


def test_larger_sectors_and_clusters(sample: Path, tmp_path: Path) -> None:
    image = tmp_path / "boot.img"
    build_fat_image(sample, image, sector_size=4096, sectors_per_cluster=2, num_fats=2)
    files, dirs = flatten(SAMPLE)
    contents = read_fat_image(image)
    assert contents.files == files and contents.dirs == dirs
    fsck_ok(image)


def test_many_root_entries_grow_root_directory(tmp_path: Path) -> None:
    src = tmp_path / "src"
    tree = {f"a rather long file name number {i}.txt": str(i).encode() for i in range(120)}
    materialize(src, tree)
    image = tmp_path / "boot.img"
    plan = build_fat_image(src, image)
    assert plan.layout.root_entries > 256
    assert read_fat_image(image).files == tree
    fsck_ok(image)


def test_empty_source(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    image = tmp_path / "boot.img"
    build_fat_image(src, image, label="")
    contents = read_fat_image(image)
    assert contents.files == {} and contents.dirs == set() and contents.label is None
    fsck_ok(image)


# -- property tests ---------------------------------------------------------

_ALPHABET = "aAbBzZ09 .-_~+,;=[]!#$%&'()@^`{}éΩ😀"
_COLLIDING = ["longfilename1.txt", "longfilename2.txt", "LONGFI~1.TXT", "longfi~1.txt",
              "x.tar.gz", "X.TAR", ".config", "config", "Kernel8.img", "kernel8.img"]


def _valid(name: str) -> bool:
    return name not in (".", "..") and not name.endswith((".", " "))


names = st.one_of(st.sampled_from(_COLLIDING),
                  st.text(alphabet=_ALPHABET, min_size=1, max_size=30)).filter(_valid)
contents = st.one_of(st.binary(max_size=1500),
                     st.tuples(st.binary(min_size=1, max_size=8), st.integers(1, 900))
                     .map(lambda t: t[0] * t[1]))


def _dedupe(entries: dict) -> dict:
    seen: dict[str, str] = {}
    out = {}
    for name, value in entries.items():
        key = "".join(u if len(u := c.upper()) == 1 else c for c in name)
        if key not in seen:
            seen[key] = name
            out[name] = value
    return out


trees = st.recursive(
    contents,
    lambda children: st.dictionaries(names, children, max_size=8).map(_dedupe),
    max_leaves=25,
).filter(lambda t: isinstance(t, dict))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees, fat_type=st.sampled_from([None, 12, 16, 32]))
def test_property_random_trees_roundtrip(tree: dict, fat_type: int | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, image = Path(tmp) / "src", Path(tmp) / "boot.img"
        materialize(src, tree)
        build_fat_image(src, image, fat_type=fat_type)
        got = read_fat_image(image)
        files, dirs = flatten(tree)
        assert got.files == files
        assert got.dirs == dirs
        shorts = list(got.short_names.items())
        by_dir: dict[str, set[str]] = {}
        for path, short in shorts:
            parent = path.rpartition("/")[0]
            assert short not in by_dir.setdefault(parent, set())
            by_dir[parent].add(short)
            base, _, ext = short.partition(".")
            assert 1 <= len(base) <= 8 and len(ext) <= 3


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=trees)
def test_property_random_trees_fsck(tree: dict) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src, image = Path(tmp) / "src", Path(tmp) / "boot.img"
        materialize(src, tree)
        build_fat_image(src, image)
        fsck_ok(image)
