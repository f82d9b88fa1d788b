"""Whole boots against the virtual Raspberry Pi: every chip, every lookup rule, the request
semantics of the file server, and exactness of the bytes each board received."""

from __future__ import annotations

import hashlib
import os
import tarfile
import tracemalloc
from pathlib import Path

import pytest

from rpiboot.errors import BootDirectoryError
from rpiboot.simulator import RomStage, ServerStage, VirtualPi, typical_pi
from rpiboot.simulator.script import (READ_FILE, GET_FILE_SIZE, Request, done, done_command,
                                      empty_done, load)

from engine_support import (HandleProxy, WrappingBus, assert_received_exactly,
                      can_create_symlinks, content, expected_file, fast_options, ok_session,
                      run_boot, shared_path, tar_bytes, write)

CHIP_FILES = {
    "2835": ("config.txt", "start.elf"),
    "2837": ("config.txt", "start.elf"),
    "2711": ("config.txt", "start4.elf", "kernel8.img"),
    "2712": ("config.txt", "kernel_2712.img"),
}


def server_records(pi: VirtualPi) -> list[tuple[str, str, int]]:
    """(kind, name, value) of what the host sent in file-server stages (requests left out)."""
    return [(r.kind, r.name, r.value) for r in pi.received
            if r.stage >= 1 and r.kind != "request_read"]


# --- each chip's full flow ----------------------------------------------------------------------

@pytest.mark.parametrize("chip", ["2835", "2837", "2711", "2712"])
def test_full_flow_each_chip(chip: str, boot_dir: Path) -> None:
    pi = typical_pi(chip, (1,), files=CHIP_FILES[chip])
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert_received_exactly(pi, boot_dir, CHIP_FILES[chip])
    [session] = run.result.sessions
    assert session.stages == ["rom", "server"]
    assert session.summary()["result"] == "ok"
    assert session.serial == "0123abcd"
    assert session.files_served == len(CHIP_FILES[chip])
    # The ROM got the boot message announcing the second stage's length, and no signature.
    message = next(r.data for r in pi.received if r.kind == "boot_message")
    assert int.from_bytes(message[:4], "little") == len(pi.second_stage())
    assert message[4:] == bytes(20)
    served = [e.data["name"] for e in run.events.of("file_served")]
    assert served == list(CHIP_FILES[chip])


class ClaimRecorder(WrappingBus):
    def __init__(self, pis):  # type: ignore[no-untyped-def]
        self.calls: list[tuple[int, str, int]] = []  # (serial_index, call, argument)
        super().__init__(pis)

    def wrap_handle(self, info, handle):  # type: ignore[no-untyped-def]
        calls = self.calls

        class Recording(HandleProxy):
            def claim_interface(self, interface: int) -> None:
                calls.append((info.serial_index, "claim", interface))
                handle.claim_interface(interface)

            def bulk_out(self, endpoint, data, timeout):  # type: ignore[no-untyped-def]
                calls.append((info.serial_index, "bulk", endpoint))
                return handle.bulk_out(endpoint, data, timeout)

        return Recording(info, handle)


@pytest.mark.parametrize("two_interfaces, interface, endpoint", [(True, 1, 3), (False, 0, 1)])
def test_2837_rom_interface_and_endpoint(boot_dir: Path, two_interfaces: bool, interface: int,
                                         endpoint: int) -> None:
    pi = typical_pi("2837", (1,), files=("start.elf",), two_interfaces=two_interfaces)
    bus = ClaimRecorder([pi])
    run = run_boot([pi], fast_options(boot_dir), bus=bus)
    assert run.exit_code == 0
    assert_received_exactly(pi, boot_dir, ["start.elf"])
    rom_calls = {(call, arg) for index, call, arg in bus.calls if index == 0}
    assert rom_calls == {("claim", interface), ("bulk", endpoint)}
    # The file server has one interface again: interface 0, endpoint 1.
    server_calls = {(call, arg) for index, call, arg in bus.calls if index != 0}
    assert server_calls == {("claim", 0), ("bulk", 1)}


# --- lookup rules -------------------------------------------------------------------------------

def test_chip_subfolder_before_top_level(boot_dir: Path) -> None:
    pi11 = typical_pi("2711", (1,), files=("config.txt",))
    pi12 = typical_pi("2712", (2,), files=("config.txt",))
    pi35 = typical_pi("2835", (3,), files=("start.elf",))
    run = run_boot([pi11, pi12, pi35], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi11.files()["config.txt"] == (boot_dir / "2711" / "config.txt").read_bytes()
    assert pi12.files()["config.txt"] == (boot_dir / "config.txt").read_bytes()
    assert pi35.files()["start.elf"] == (boot_dir / "2710" / "start.elf").read_bytes()
    assert pi11.second_stage() == (boot_dir / "2711" / "bootcode4.bin").read_bytes()
    assert pi35.second_stage() == (boot_dir / "bootcode.bin").read_bytes()


@pytest.mark.parametrize("overlay", [True, False])
def test_overlay_by_usb_path_never_for_bootcode(boot_dir: Path, overlay: bool) -> None:
    write(boot_dir / "1-1.4" / "config.txt", content("overlay config", 77))
    write(boot_dir / "1-1.4" / "bootcode4.bin", content("overlay bootcode4 must not be used"))
    write(boot_dir / "1-1.4" / "start4.elf", content("overlay start4", 999))
    pi = typical_pi("2711", (1, 4), files=("config.txt", "start4.elf", "kernel8.img"))
    other = typical_pi("2711", (2,), files=("config.txt",))
    run = run_boot([pi, other], fast_options(boot_dir, overlay=overlay))
    assert run.exit_code == 0
    assert pi.second_stage() == (boot_dir / "2711" / "bootcode4.bin").read_bytes()
    if overlay:
        assert pi.files()["config.txt"] == content("overlay config", 77)
        assert pi.files()["start4.elf"] == content("overlay start4", 999)
        assert_received_exactly(pi, boot_dir, ["config.txt", "start4.elf", "kernel8.img"],
                                usb_path="1-1.4")
    else:
        assert_received_exactly(pi, boot_dir, ["config.txt", "start4.elf", "kernel8.img"])
    # A board on another path never sees the overlay.
    assert other.files()["config.txt"] == (boot_dir / "2711" / "config.txt").read_bytes()




def test_bootfiles_archive_rules(tmp_path: Path) -> None:
    directory = tmp_path / "boot"
    write(directory / "bootfiles.bin", tar_bytes({
        "2711/bootcode4.bin": content("tar bootcode4", 6000),
        "2711/Config.TXT": content("tar config 2711", 100),
        "2711/start4.elf": content("tar start4", 3000),
        "2712/bootcode5.bin": content("tar bootcode5", 6500),
        "2712/config.txt": content("tar config 2712", 110),
    }))
    # DIR/<chip>/NAME beside bootfiles.bin wins over the member.
    write(directory / "2712" / "config.txt", content("dir overrides tar", 50))
    # Top level is only a fallback for names the archive lacks.
    write(directory / "config.txt", content("top config must lose", 40))
    write(directory / "extra.txt", content("top extra", 60))
    pi11 = typical_pi("2711", (1,), files=("config.txt", "START4.ELF", "extra.txt"))
    pi12 = typical_pi("2712", (2,), files=("config.txt",))
    run = run_boot([pi11, pi12], fast_options(directory))
    assert run.exit_code == 0
    assert pi11.violations == [] and pi12.violations == []
    assert pi11.second_stage() == content("tar bootcode4", 6000)
    assert pi12.second_stage() == content("tar bootcode5", 6500)
    assert pi11.files() == {"config.txt": content("tar config 2711", 100),
                            "START4.ELF": content("tar start4", 3000),
                            "extra.txt": content("top extra", 60)}
    assert pi12.files() == {"config.txt": content("dir overrides tar", 50)}
    sources = {(e.port, e.data["name"]): e.data["source"] for e in run.events.of("file_loaded")}
    assert sources[("1-1", "config.txt")] == "archive"
    assert sources[("1-2", "config.txt")] == "archive_overlay"
    assert sources[("1-1", "extra.txt")] == "file"


def test_real_upstream_bootfiles_archive() -> None:
    firmware = shared_path("fixtures", "upstream", "usbboot", "firmware")
    archive = firmware / "bootfiles.bin"
    if not archive.is_file():
        pytest.skip(f"no upstream bootfiles.bin at {archive}")
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}  # type: ignore[union-attr]
    pi11 = typical_pi("2711", (1,), files=("bootmain", "MCB.bin"))
    pi12 = typical_pi("2712", (2,), files=("BOOTMAIN", "memsys00.bin", "not-there.txt"))
    run = run_boot([pi11, pi12], fast_options(firmware))
    assert run.exit_code == 0
    assert pi11.violations == [] and pi12.violations == []
    overlay = firmware / "2711" / "bootcode4.bin"
    expected4 = overlay.read_bytes() if overlay.is_file() else members["2711/bootcode4.bin"]
    assert pi11.second_stage() == expected4
    assert pi12.second_stage() == members["2712/bootcode5.bin"]
    assert pi11.files() == {"bootmain": members["2711/bootmain"],
                            "MCB.bin": members["2711/mcb.bin"]}
    assert pi12.files() == {"BOOTMAIN": members["2712/bootmain"],
                            "memsys00.bin": members["2712/memsys00.bin"]}
    assert pi12.sizes()["not-there.txt"] == 0


# --- default directories (no -d) -----------------------------------------------------------------

def test_default_directory_in_current_directory(no_default_dirs: Path) -> None:
    gadget = no_default_dirs / "cwd" / "mass-storage-gadget64"
    write(gadget / "2711" / "bootcode4.bin", content("cwd bootcode4"))
    write(gadget / "config.txt", content("cwd config"))
    msd = no_default_dirs / "cwd" / "msd"
    write(msd / "bootcode.bin", content("cwd msd bootcode"))
    write(msd / "start.elf", content("cwd msd start"))
    pi11 = typical_pi("2711", (1,), files=("config.txt",))
    pi35 = typical_pi("2835", (2,), files=("start.elf",))
    run = run_boot([pi11, pi35], fast_options(None))
    assert run.exit_code == 0
    assert pi11.second_stage() == content("cwd bootcode4")
    assert pi11.files() == {"config.txt": content("cwd config")}
    assert pi35.second_stage() == content("cwd msd bootcode")
    assert pi35.files() == {"start.elf": content("cwd msd start")}
    notices = [e.data["message"] for e in run.events.of("notice")]
    assert any("Directory not specified" in text and "mass-storage-gadget64" in text
               for text in notices)


def test_default_directory_install_prefix_before_current_directory(no_default_dirs: Path) -> None:
    installed = no_default_dirs / "prefix" / "share" / "rpiboot" / "mass-storage-gadget64"
    write(installed / "2712" / "bootcode5.bin", content("installed bootcode5"))
    write(no_default_dirs / "cwd" / "mass-storage-gadget64" / "2712" / "bootcode5.bin",
          content("cwd bootcode5"))
    pi = typical_pi("2712", (1,), files=())
    run = run_boot([pi], fast_options(None))
    assert run.exit_code == 0
    assert pi.second_stage() == content("installed bootcode5")


def test_no_default_directory_installed_fails_at_start(no_default_dirs: Path) -> None:
    pi = typical_pi("2711", (1,), files=())
    with pytest.raises(BootDirectoryError) as caught:
        run_boot([pi], fast_options(None))
    assert caught.value.exit_code == 3
    assert "rpiboot --fetch-boot-files" in str(caught.value)
    assert pi.received == []


def test_default_directory_missing_for_the_chip_found_is_exit_3(no_default_dirs: Path) -> None:
    write(no_default_dirs / "cwd" / "msd" / "bootcode.bin", content("msd bootcode"))
    pi = typical_pi("2711", (1,), files=())
    run = run_boot([pi], fast_options(None))
    assert run.exit_code == 3
    [failed] = run.events.of("device_failed")
    assert failed.data["code"] == "boot_directory"
    assert "mass-storage-gadget64" in failed.data["message"]
    assert pi.received == []


# --- refusals and symlinks ----------------------------------------------------------------------

HOSTILE_NAMES = [b"../secret.txt", b"2711/../../secret.txt", b"..", b"a/..b"]


def test_refused_names_get_zero_length_replies(boot_dir: Path) -> None:
    secret = write(boot_dir.parent / "secret.txt", b"do not serve")
    absolute = str(boot_dir / "config.txt").encode()
    no_nul = b"A" * 256
    write(boot_dir / ("A" * 255), b"x")  # the 255-byte prefix exists, but has no terminator
    names = HOSTILE_NAMES + [absolute, b"/" + str(secret).lstrip("/").encode(),
                             b"sub\\config.txt", no_nul]
    requests: list[Request] = []
    for name in names:
        requests += load(name, read_when_missing=True)
    requests += load("config.txt") + [done()]
    pi = VirtualPi("2712", (1,), stages=[RomStage(), ServerStage(requests)])
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi.violations == []
    records = server_records(pi)
    for name in names:
        text = name.decode("utf-8", errors="replace")
        assert ("size", text, 0) in records, text
        assert ("file", text, 0) in records, text
    assert pi.files() == {"config.txt": (boot_dir / "config.txt").read_bytes()}
    refused = run.events.of("file_refused")
    assert len(refused) >= len(names)


def test_symlinks_placed_in_directory_are_followed(boot_dir: Path, tmp_path: Path) -> None:
    if not can_create_symlinks(tmp_path):
        pytest.skip("symlinks cannot be created here")
    outside = tmp_path / "elsewhere"
    write(outside / "big.img", content("linked file", 2345))
    write(outside / "chipdir" / "dtb.dtb", content("linked dir file", 321))
    os.symlink(outside / "big.img", boot_dir / "linked.img")
    os.symlink(outside / "chipdir", boot_dir / "2712" / "sub")
    pi = typical_pi("2712", (1,), files=("linked.img", "sub/dtb.dtb"))
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi.files() == {"linked.img": content("linked file", 2345),
                          "sub/dtb.dtb": content("linked dir file", 321)}


# --- file-server request semantics --------------------------------------------------------------

def test_read_file_serves_only_the_file_opened_by_get_file_size(boot_dir: Path) -> None:
    config = (boot_dir / "2711" / "config.txt").read_bytes()
    requests = [
        Request(READ_FILE, b"config.txt"),                         # nothing opened: empty
        Request(GET_FILE_SIZE, b"config.txt"), Request(READ_FILE, b"start.elf"),  # other name
        Request(READ_FILE, b"config.txt"),                         # pending was consumed
        Request(GET_FILE_SIZE, b"config.txt"), Request(READ_FILE, b"config.txt"),  # served
        Request(READ_FILE, b"config.txt"),                         # only once
        Request(GET_FILE_SIZE, b"missing.bin"), Request(READ_FILE, b"missing.bin"),
        done(),
    ]
    pi = VirtualPi("2711", (1,), stages=[RomStage(serial_index=3), ServerStage(requests)])
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi.violations == []
    assert server_records(pi) == [
        ("file", "config.txt", 0),
        ("size", "config.txt", len(config)), ("file", "start.elf", 0),
        ("file", "config.txt", 0),
        ("size", "config.txt", len(config)), ("file", "config.txt", len(config)),
        ("file", "config.txt", 0),
        ("size", "missing.bin", 0), ("file", "missing.bin", 0),
        ("ack", "", 0),
    ]
    assert pi.files()["config.txt"] == config
    assert [e.data["name"] for e in run.events.of("file_missing")] == ["missing.bin"]


@pytest.mark.parametrize("ending, acknowledged", [(done_command(), False), (empty_done(), True),
                                                  (done(), True)])
def test_done_command_has_no_reply_but_empty_name_has(boot_dir: Path, ending: Request,
                                                     acknowledged: bool) -> None:
    pi = VirtualPi("2835", (1,), stages=[RomStage(), ServerStage(load("start.elf") + [ending])])
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi.violations == []
    assert_received_exactly(pi, boot_dir, ["start.elf"])
    last = server_records(pi)[-1]
    if acknowledged:
        assert last == ("ack", "", 0)
    else:
        assert last[0] == "file"  # nothing at all after command 2
    assert run.events.of("stage_done")
    assert not run.events.of("notice", "1-1")  # ended by the message, not by leaving the bus


def test_metadata_is_acknowledged(boot_dir: Path) -> None:
    pi = typical_pi("2712", (1,), files=("config.txt",),
                    meta={"MAC_ADDR": "d8:3a:dd:05:ee:78", "BOOT_ROM": "0000c8b0"})
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi.violations == []
    acks = [r for r in server_records(pi) if r[0] == "ack"]
    assert acks == [("ack", "*MAC_ADDR*d8:3a:dd:05:ee:78", 0), ("ack", "*BOOT_ROM*0000c8b0", 0),
                    ("ack", "", 0)]
    got = {e.data["key"]: e.data["value"] for e in run.events.of("metadata")}
    assert got == {"MAC_ADDR": "d8:3a:dd:05:ee:78", "BOOT_ROM": "0000c8b0"}


def test_unknown_command_is_a_protocol_error(boot_dir: Path) -> None:
    pi = VirtualPi("2712", (1,), stages=[RomStage(), ServerStage([Request(7, b"x")])])
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 5
    assert run.events.of("device_failed")[0].data["code"] == "protocol"


# --- streaming and exactness ---------------------------------------------------------------------

def test_large_file_is_streamed_not_held_in_memory(boot_dir: Path) -> None:
    size = 50 * 1024 * 1024
    sparse = boot_dir / "huge.img"
    with open(sparse, "wb") as stream:
        stream.truncate(size)
    pi = typical_pi("2712", (1,), files=("huge.img",), keep_data=False)
    tracemalloc.start()
    try:
        run = run_boot([pi], fast_options(boot_dir))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert run.exit_code == 0
    assert pi.violations == []
    [record] = [r for r in pi.received if r.kind == "file"]
    digest = hashlib.sha256()
    zeros = bytes(1024 * 1024)
    for _ in range(size // len(zeros)):
        digest.update(zeros)
    assert (record.value, record.sha256) == (size, digest.hexdigest())
    assert peak < size // 10, f"peak traced memory {peak} bytes for a {size}-byte file"


def test_second_stage_streams_in_chunks_with_keep_data_false(boot_dir: Path) -> None:
    """keep_data=False still lets the virtual ROM check the announced length."""
    pi = typical_pi("2711", (1,), files=("kernel8.img",), keep_data=False)
    run = run_boot([pi], fast_options(boot_dir, chunk_size=4096))
    assert run.exit_code == 0
    assert pi.violations == []
    record = next(r for r in pi.received if r.kind == "second_stage")
    expected = (boot_dir / "2711" / "bootcode4.bin").read_bytes()
    assert record.sha256 == hashlib.sha256(expected).hexdigest()


# --- signed boot (-s) ----------------------------------------------------------------------------

@pytest.mark.parametrize("chip, signature_sent", [("2835", True), ("2837", True), ("2711", False),
                                                  ("2712", False)])
def test_signed_boot_message(boot_dir: Path, chip: str, signature_sent: bool) -> None:
    write(boot_dir / "bootsig.bin", b"bootsig")
    signature = bytes(range(1, 21))
    write(boot_dir / "bootcode.sig", signature + b"trailing bytes are not sent")
    pi = typical_pi(chip, (1,), files=("config.txt",))
    run = run_boot([pi], fast_options(boot_dir, signed=True))
    assert run.exit_code == 0
    message = next(r.data for r in pi.received if r.kind == "boot_message")
    assert len(message) == 24
    assert message[4:] == (signature if signature_sent else bytes(20))
    assert_received_exactly(pi, boot_dir, ["config.txt"])


def test_signed_boot_needs_bootsig(boot_dir: Path) -> None:
    from rpiboot.errors import BootDirectoryError
    with pytest.raises(BootDirectoryError, match="bootsig.bin"):
        run_boot([typical_pi("2835")], fast_options(boot_dir, signed=True))


def test_signed_boot_2835_without_bootcode_sig_fails_with_3(boot_dir: Path) -> None:
    write(boot_dir / "bootsig.bin", b"bootsig")
    pi = typical_pi("2835", (1,), files=())
    run = run_boot([pi], fast_options(boot_dir, signed=True))
    assert run.exit_code == 3
    assert "bootcode.sig" in run.events.of("device_failed")[0].data["message"]
    assert pi.received == []


# --- stages over time -----------------------------------------------------------------------------

def test_reenumeration_keeps_the_session(boot_dir: Path) -> None:
    pi = typical_pi("2711", (1, 2), files=("config.txt",), reenumerate_delay=0.2)
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    [session] = run.result.sessions
    assert session.stages == ["rom", "server"]
    ok_session(run, "1-1.2")
    arrivals = [e.data["stage"] for e in run.events.of("device_arrived")]
    assert arrivals == ["rom", "server"]
    assert_received_exactly(pi, boot_dir, ["config.txt"])


def test_device_that_never_comes_back_fails_within_reenumerate_timeout(boot_dir: Path) -> None:
    pi = VirtualPi("2712", (1,), stages=[RomStage()])
    run = run_boot([pi], fast_options(boot_dir, reenumerate_timeout=0.3))
    assert run.exit_code == 5
    [session] = run.result.sessions
    assert session.error is not None and session.error.code == "device_gone"
    assert "did not come back" in str(session.error)
    assert session.finished is not None and session.left_rom_at is not None
    assert 0.3 <= session.finished - session.left_rom_at < 3.0


def test_byte_stream_equals_directory_for_many_files(boot_dir: Path) -> None:
    names = []
    for index in range(12):
        name = f"overlays/file{index}.dtbo"
        write(boot_dir / name, content(name, 1000 + index * 777))
        names.append(name)
    pi = typical_pi("2712", (1,), files=names)
    run = run_boot([pi], fast_options(boot_dir, chunk_size=1024))
    assert run.exit_code == 0
    assert_received_exactly(pi, boot_dir, names)
    assert run.result.sessions[0].bytes_sent == (
        len(pi.second_stage()) + sum(len(expected_file(boot_dir, "2712", n)) for n in names))


def test_final_usb_function_after_the_file_server_is_left_alone(boot_dir: Path) -> None:
    from rpiboot.simulator import FinalStage
    pi = VirtualPi("2711", (1,), stages=[RomStage(serial_index=3),
                                         ServerStage(load("config.txt") + [done()]),
                                         FinalStage()])
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert_received_exactly(pi, boot_dir, ["config.txt"])
    assert [e.data["stage"] for e in run.events.of("device_arrived")] == ["rom", "server"]


def test_file_too_large_for_the_protocol_is_refused(boot_dir: Path) -> None:
    huge = boot_dir / "huge.img"
    try:
        with open(huge, "wb") as stream:
            stream.truncate(2**32)  # one byte more than 32 bits can announce
    except OSError:
        pytest.skip("cannot create a 4 GiB sparse file here")
    pi = typical_pi("2712", (1,), files=("huge.img", "config.txt"))
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi.violations == []
    assert pi.sizes()["huge.img"] == 0
    assert pi.files() == {"config.txt": (boot_dir / "config.txt").read_bytes()}
    assert any("4 GiB" in e.data["reason"] for e in run.events.of("file_refused"))
