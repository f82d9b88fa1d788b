"""Boot files on demand (issue 11 §4): the pinned list, downloads from a local HTTP server on
127.0.0.1 (resumed, verified, atomic), ``rpiboot --fetch-boot-files`` and plain ``rpiboot``
finding what it fetched, and the start-up refusal when nothing is installed."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import pytest

import rpiboot.boot_files as boot_files
from rpiboot import cli
from rpiboot.download import PinnedFile, digest_of, fetch, read_manifest
from rpiboot.errors import DownloadError
from rpiboot.simulator import typical_pi
from rpiboot.simulator.in_process import VirtualBus

from engine_support import FIXTURES, content, run_cli
from http_support import ServerState

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def serve(state: ServerState, path: str, data: bytes, *, repository: str = "rpi/usbboot",
          file: str | None = None, size: bool = True) -> PinnedFile:
    target = state.root / repository / COMMIT / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return PinnedFile(file=file or path, repository=repository, commit=COMMIT, path=path,
                      size=len(data) if size else None,
                      sha256=hashlib.sha256(data).hexdigest())


# --- the list kept in the package ---------------------------------------------------------------

def test_package_list_pins_every_file_of_the_fetched_directories() -> None:
    files = boot_files.pinned_files()
    by_name = {pinned.file: pinned for pinned in files}
    for directory, second_stage in (("mass-storage-gadget64", "bootfiles.bin"),
                                    ("msd", "bootcode.bin"), ("msd", "bootcode4.bin"),
                                    ("recovery", "bootcode4.bin"), ("recovery5", "bootcode5.bin")):
        assert f"{directory}/{second_stage}" in by_name
    for pinned in files:
        assert re.fullmatch(r"[0-9a-f]{40}", pinned.commit), pinned
        assert pinned.repository in ("raspberrypi/usbboot", "raspberrypi/rpi-eeprom")
        assert (pinned.sha256 and re.fullmatch(r"[0-9a-f]{64}", pinned.sha256)) or (
            re.fullmatch(r"[0-9a-f]{40}", pinned.git_blob_sha1 or "")), pinned
        assert pinned.file.split("/")[0] in boot_files.DIRECTORIES


def test_package_list_agrees_with_the_upstream_fixtures() -> None:
    manifest = FIXTURES / "upstream" / "MANIFEST.tsv"
    if not manifest.is_file():
        pytest.skip(f"no upstream fixtures at {manifest} (scripts/fetch_fixtures.py)")
    known = {(p.repository, p.commit, p.path): p.sha256 for p in read_manifest(manifest)}
    matched = [p for p in boot_files.pinned_files()
               if (p.repository, p.commit, p.path) in known]
    assert len(matched) >= 5
    for pinned in matched:
        assert known[(pinned.repository, pinned.commit, pinned.path)] == pinned.sha256


# --- one download -----------------------------------------------------------------------------

def test_download_verifies_and_puts_in_place(http_files, tmp_path: Path) -> None:
    base, state = http_files
    pinned = serve(state, "msd/start.elf", content("start", 300_000))
    seen: list[int] = []
    target = tmp_path / "out" / "start.elf"
    assert fetch(pinned, target, base=base, progress=lambda _p, have, _t: seen.append(have))
    assert target.read_bytes() == content("start", 300_000)
    assert seen[-1] == 300_000 and seen == sorted(seen)
    assert not fetch(pinned, target, base=base)  # already there: nothing downloaded
    assert len(state.requests) == 1


def test_interrupted_download_resumes_with_a_range_request(http_files, tmp_path: Path) -> None:
    base, state = http_files
    data = content("boot.img", 200_000)
    pinned = serve(state, "mass-storage-gadget64/boot.img", data)
    url_path = f"/rpi/usbboot/{COMMIT}/mass-storage-gadget64/boot.img"
    state.cut_after[url_path] = 70_000
    target = tmp_path / "boot.img"
    with pytest.raises(DownloadError, match="run it again to resume"):
        fetch(pinned, target, base=base, timeout=5)
    assert not target.exists()  # nothing half-written in place
    assert (tmp_path / ".boot.img.part").stat().st_size == 70_000
    assert fetch(pinned, target, base=base)
    assert target.read_bytes() == data
    assert state.requests[-1] == (url_path, "bytes=70000-")
    assert not (tmp_path / ".boot.img.part").exists()


def test_server_ignoring_range_restarts_the_file(http_files, tmp_path: Path) -> None:
    base, state = http_files
    data = content("bootfiles", 100_000)
    pinned = serve(state, "firmware/bootfiles.bin", data)
    (tmp_path / ".bootfiles.bin.part").write_bytes(data[:1000])
    state.honour_ranges = False
    assert fetch(pinned, tmp_path / "bootfiles.bin", base=base)
    assert (tmp_path / "bootfiles.bin").read_bytes() == data


def test_checksum_mismatch_installs_nothing(http_files, tmp_path: Path) -> None:
    base, state = http_files
    pinned = serve(state, "msd/bootcode.bin", b"genuine")
    (state.root / "rpi/usbboot" / COMMIT / "msd/bootcode.bin").write_bytes(b"tampered")
    target = tmp_path / "out" / "bootcode.bin"
    with pytest.raises(DownloadError, match="checksum mismatch") as caught:
        fetch(pinned, target, base=base)
    assert "\n" not in str(caught.value)
    assert list(target.parent.iterdir()) == []


def test_git_blob_id_when_no_sha256_is_pinned(http_files, tmp_path: Path) -> None:
    base, state = http_files
    data = b"kernel and initramfs"
    serve(state, "mass-storage-gadget64/boot.img", data)
    blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
    pinned = PinnedFile("boot.img", "rpi/usbboot", COMMIT, "mass-storage-gadget64/boot.img",
                        None, None, blob)
    assert fetch(pinned, tmp_path / "boot.img", base=base)
    assert digest_of(tmp_path / "boot.img", pinned) == f"git-blob-sha1:{blob}"
    wrong = PinnedFile("boot.img", "rpi/usbboot", COMMIT, "mass-storage-gadget64/boot.img",
                       None, None, "0" * 40)
    with pytest.raises(DownloadError, match="checksum mismatch"):
        fetch(wrong, tmp_path / "other.img", base=base)


@pytest.mark.parametrize("problem", ["missing", "refused"])
def test_network_failures_are_one_line(http_files, tmp_path: Path, problem: str) -> None:
    base, _state = http_files
    pinned = PinnedFile("msd/start.elf", "rpi/usbboot", COMMIT, "msd/start.elf", 10, "0" * 64)
    if problem == "refused":
        base = "http://127.0.0.1:9"  # discard port: nothing listens
    with pytest.raises(DownloadError) as caught:
        fetch(pinned, tmp_path / "start.elf", base=base, timeout=5)
    assert "msd/start.elf" in str(caught.value) and "\n" not in str(caught.value)
    assert caught.value.exit_code == 3


# --- rpiboot --fetch-boot-files and plain rpiboot ---------------------------------------------

@pytest.fixture
def small_list(http_files, monkeypatch: pytest.MonkeyPatch) -> tuple[list[PinnedFile], ServerState]:
    """A pinned list of synthetic boot directories (the real list's files are firmware)."""
    base, state = http_files
    files = [
        serve(state, "firmware/2711/bootcode4.bin", content("bootcode4", 7000),
              file="mass-storage-gadget64/2711/bootcode4.bin"),
        serve(state, "mass-storage-gadget64/config.txt", content("gadget config", 200)),
        serve(state, "msd/bootcode.bin", content("msd bootcode", 5000)),
        serve(state, "msd/start.elf", content("msd start", 9000), size=False),
    ]
    monkeypatch.setattr(boot_files, "pinned_files", lambda: files)
    monkeypatch.setattr(boot_files, "EEPROM_DIRECTORIES", ())
    monkeypatch.setenv("RPIBOOT_DOWNLOAD_URL", base)
    return files, state


def test_fetch_boot_files_then_plain_rpiboot_boots_from_them(
        small_list, no_default_dirs: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = no_default_dirs / "data"
    assert cli.main(["--fetch-boot-files"]) == 0
    out = capsys.readouterr().out
    assert f"{data / 'msd'}: downloaded" in out
    assert (data / "mass-storage-gadget64" / "2711" / "bootcode4.bin").read_bytes() == content(
        "bootcode4", 7000)
    assert not (data / boot_files.STAGING).exists()
    pi = typical_pi("2711", (1,), files=("config.txt",))
    code, out, _err = run_cli(monkeypatch, capsys, [pi], ["--plain", "--timeout", "5"])
    assert code == 0
    assert pi.second_stage() == content("bootcode4", 7000)
    assert pi.files() == {"config.txt": content("gadget config", 200)}
    assert cli.main(["--fetch-boot-files"]) == 0  # everything up to date: nothing requested
    assert "up to date" in capsys.readouterr().out
    assert len(small_list[1].requests) == 4


def test_failed_fetch_leaves_no_partial_directory(
        small_list, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files, state = small_list
    (state.root / files[3].repository / COMMIT / files[3].path).write_bytes(b"tampered")
    destination = tmp_path / "boot-files"
    assert cli.main(["--fetch-boot-files", str(destination)]) == 3
    err = capsys.readouterr().err.splitlines()
    assert [line for line in err if "error" in line] == err[-1:]
    assert "checksum mismatch" in err[-1] and "msd/start.elf" in err[-1]
    assert not (destination / "msd").exists()
    assert not (destination / "mass-storage-gadget64").exists()


def test_plain_rpiboot_without_any_directory_fails_at_start(
        no_default_dirs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bus = VirtualBus([typical_pi("2711", (1,), files=())])
    assert cli.main(["--plain", "--timeout", "5"], transport=bus) == 3
    err = capsys.readouterr().err
    assert "rpiboot --fetch-boot-files" in err and err.count("\n") == 1
    assert bus.pis[0].received == []


def test_real_recovery_directory_gets_its_pieeprom(tmp_path: Path, monkeypatch) -> None:
    """recovery: pieeprom.bin/.sig are made from the fetched pieeprom.original.bin + boot.conf."""
    image = FIXTURES / "upstream" / "rpi-eeprom" / "firmware-2711" / "pieeprom-2026-08-04.bin"
    conf = FIXTURES / "upstream" / "usbboot" / "recovery" / "boot.conf"
    if not (image.is_file() and conf.is_file()):
        pytest.skip(f"no upstream fixtures at {FIXTURES}")
    recovery = tmp_path / "recovery"
    recovery.mkdir()
    (recovery / "pieeprom.original.bin").write_bytes(image.read_bytes())
    (recovery / "boot.conf").write_bytes(conf.read_bytes())
    said: list[str] = []
    boot_files._make_pieeprom(recovery, said.append)
    assert said == []
    assert (recovery / "pieeprom.bin").stat().st_size == image.stat().st_size
    assert (recovery / "pieeprom.sig").read_text().splitlines()[0] == hashlib.sha256(
        (recovery / "pieeprom.bin").read_bytes()).hexdigest()


def test_destination_that_is_a_file_is_one_error_line(
        small_list, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "occupied").write_text("not a directory")
    assert cli.main(["--fetch-boot-files", str(tmp_path / "occupied")]) == 3
    err = capsys.readouterr().err.splitlines()
    assert len([line for line in err if "error" in line]) == 1 and "Traceback" not in "".join(err)


def test_sudo_also_looks_in_the_invoking_users_data_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RPIBOOT_DATA_DIR", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "root"))
    monkeypatch.setenv("SUDO_USER", "pi")
    monkeypatch.setattr(boot_files.os, "geteuid", lambda: 0)
    real = os.path.expanduser
    monkeypatch.setattr(boot_files.os.path, "expanduser",
                        lambda text: str(tmp_path / "home" / "pi") if text == "~pi" else real(text))
    places = boot_files.user_data_dirs()
    assert places[0] == boot_files.user_data_dir()
    assert places[1:] == [tmp_path / "home" / "pi" / places[0].relative_to(tmp_path / "root")]
    monkeypatch.setattr(boot_files.os, "geteuid", lambda: 1000)
    assert boot_files.user_data_dirs() == places[:1]
