"""Every failure ends with its documented exit status, in bounded time, and never a traceback.

Each case runs through the Python API (the session's error code) and through ``cli.main`` with
the USB transport replaced by a virtual bus (the process's exit status and stderr)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import pytest

from rpiboot.errors import BootDirectoryError
from rpiboot.simulator import RomStage, ServerStage, VirtualPi, typical_pi
from rpiboot.simulator.script import done, load

from engine_support import fast_options, run_boot, run_cli, write

FAST_CLI = ["--plain", "--timeout", "3", "--run-timeout", "20", "--stall-timeout", "0.3",
            "--reenumerate-timeout", "0.5", "--retry-delay", "0.01", "--retries", "2",
            "-m", "5000"]




# (name, boards, API error code, exit status, text expected on stderr)
def _stall() -> list[VirtualPi]:
    return [VirtualPi("2711", (1,), stages=[
        RomStage(serial_index=3),
        ServerStage(load("config.txt") + load("start4.elf") + [done()], stall_at_request=2)])]


CASES: dict[str, tuple[Callable[[], list[VirtualPi]], str, int, str]] = {
    "refused": (lambda: [VirtualPi("2712", (1,), stages=[RomStage(return_code=0x1234)])],
                "refused", 6, "refused the second stage"),
    "unplugged in ROM": (lambda: [typical_pi("2711", (1,), unplug_after_bytes=3000)],
                         "device_gone", 5, "left the bus"),
    "unplugged in server": (lambda: [typical_pi("2711", (1,), files=("kernel8.img",),
                                                unplug_after_bytes=10_000)],
                            "device_gone", 5, "left the bus"),
    "permission": (lambda: [typical_pi("2712", (1,), open_error="access")], "permission", 7,
                   "udev"),
    "open fails": (lambda: [typical_pi("2712", (1,), open_error="busy")], "transfer", 5,
                   "cannot open"),
    "stall": (_stall, "stalled", 5, "no request"),
    "never comes back": (lambda: [VirtualPi("2835", (1,), stages=[RomStage()])],
                         "device_gone", 5, "did not come back"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_failure_through_api(boot_dir: Path, case: str) -> None:
    make, code, status, _ = CASES[case]
    began = time.monotonic()
    run = run_boot(make(), fast_options(boot_dir, reenumerate_timeout=0.5))
    assert time.monotonic() - began < 10  # bounded: nothing waits for a default timeout
    assert run.exit_code == status
    [failed] = run.events.of("device_failed")
    assert failed.data["code"] == code
    assert failed.data["exit_code"] == status
    assert run.events.of("summary")[0].data["exit_code"] == status


@pytest.mark.parametrize("case", list(CASES))
def test_failure_through_cli(boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str], case: str) -> None:
    make, _, status, text = CASES[case]
    code, _, err = run_cli(monkeypatch, capsys, make(), ["-d", str(boot_dir)] + FAST_CLI)
    assert code == status
    assert "rpiboot: error:" in err and text in err


def test_permission_hint_mentions_the_remedy(boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(monkeypatch, capsys, [typical_pi("2712", (1,), open_error="access")],
                           ["-d", str(boot_dir)] + FAST_CLI)
    assert code == 7
    assert "Permission" in err and "--udev-rule" in err and "root" in err


def test_stall_ends_in_bounded_time(boot_dir: Path) -> None:
    began = time.monotonic()
    run = run_boot(_stall(), fast_options(boot_dir, stall_timeout=0.3, read_timeout=0.1))
    elapsed = time.monotonic() - began
    assert run.exit_code == 5
    assert elapsed < 3, elapsed
    [session] = run.result.sessions
    assert session.files_served == 1  # config.txt went through before the stall


def test_missing_boot_directory_is_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(BootDirectoryError):
        run_boot([], fast_options(tmp_path / "nope"))
    code, _, err = run_cli(monkeypatch, capsys, [], ["-d", str(tmp_path / "nope")] + FAST_CLI)
    assert code == 3 and "does not exist" in err


def test_empty_boot_directory_is_3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(monkeypatch, capsys, [typical_pi("2711")],
                           ["-d", str(tmp_path / "empty")] + FAST_CLI)
    assert code == 3 and "bootcode" in err


def test_second_stage_missing_for_the_chip_found_is_3(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "only-2835"
    write(directory / "bootcode.bin", b"bootcode for BCM2835/7 only")
    pi = typical_pi("2711", (1,))
    code, _, err = run_cli(monkeypatch, capsys, [pi], ["-d", str(directory)] + FAST_CLI)
    assert code == 3
    assert "bootcode4.bin" in err
    assert pi.received == []


def test_no_device_within_timeout_is_4(boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    code, out, err = run_cli(monkeypatch, capsys, [],
                             ["-d", str(boot_dir), "--plain", "--timeout", "0.2"])
    assert code == 4
    assert time.monotonic() - began < 5
    assert "Waiting for BCM2835/6/7/2711/2712..." in out
    assert "no Raspberry Pi" in err or "no device" in err.lower()


def test_metadata_directory_missing_is_created(boot_dir: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    pi = typical_pi("2711", serial="10000000abcdef01", meta={"MAC_ADDR": "d8:3a:dd:00:00:01"})
    target = tmp_path / "absent" / "deeper"
    code, _, err = run_cli(monkeypatch, capsys, [pi], ["-d", str(boot_dir), "-j", str(target)]
                           + FAST_CLI)
    assert code == 0, err
    assert [p.name for p in target.iterdir()] == ["10000000abcdef01.json"]


def test_metadata_directory_that_cannot_be_created_is_3(boot_dir: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("in the way")
    code, _, err = run_cli(monkeypatch, capsys, [typical_pi("2711")],
                           ["-d", str(boot_dir), "-j", str(tmp_path / "a-file" / "meta")]
                           + FAST_CLI)
    assert code == 3
    assert "cannot create metadata directory" in err and err.count("\n") == 1


def test_worst_outcome_wins_with_several_devices(boot_dir: Path) -> None:
    pis = [typical_pi("2711", (1,), files=("config.txt",)),
           VirtualPi("2712", (2,), stages=[RomStage(return_code=1)]),
           typical_pi("2835", (3,), open_error="access")]
    run = run_boot(pis, fast_options(boot_dir))
    assert run.exit_code == 7
    codes = sorted(s.summary()["error"] or "ok" for s in run.result.sessions)
    assert codes == ["ok", "permission", "refused"]


def test_unopenable_file_is_answered_as_missing(boot_dir: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # As root every file is readable, so stand in for permissions at the access check.
    import rpiboot.file_source as file_source
    real_access = file_source.os.access
    monkeypatch.setattr(file_source.os, "access",
                        lambda path, mode: "start4.elf" not in str(path)
                        and real_access(path, mode))
    pi = typical_pi("2711", (1,), files=("config.txt", "start4.elf"))
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi.sizes()["start4.elf"] == 0
    assert "start4.elf" not in pi.files()
    assert [e.data["name"] for e in run.events.of("file_missing")] == ["start4.elf"]


def test_second_stage_that_cannot_be_read_is_a_boot_directory_error(
        boot_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rpiboot.file_source import ResolvedFile
    real_chunks = ResolvedFile.chunks

    def failing(self: ResolvedFile, chunk_size: int = 1) -> object:
        if self.name == "bootcode4.bin":
            raise OSError(5, "Input/output error")
        return real_chunks(self, chunk_size)

    monkeypatch.setattr(ResolvedFile, "chunks", failing)
    code, _, err = run_cli(monkeypatch, capsys, [typical_pi("2711", (1,))],
                           ["-d", str(boot_dir)] + FAST_CLI)
    assert code == 3
    assert "cannot read" in err and "bootcode4.bin" in err


def test_file_that_shrinks_before_it_is_sent_fails_the_device(
        boot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rpiboot.file_source import ResolvedFile

    real_open = ResolvedFile.open

    def open_then_truncate(self: ResolvedFile):  # type: ignore[no-untyped-def]
        opened = real_open(self)
        if self.name == "kernel8.img":
            Path(self.origin).write_bytes(b"short")  # in place: the open file shrinks too
        return opened

    monkeypatch.setattr(ResolvedFile, "open", open_then_truncate)
    run = run_boot([typical_pi("2711", (1,), files=("kernel8.img",))], fast_options(boot_dir))
    assert run.exit_code == 5
    [failed] = run.events.of("device_failed")
    assert "shorter" in failed.data["message"]


def test_file_replaced_after_get_file_size_is_sent_as_announced(
        boot_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Upstream keeps the FILE* from GetFileSize; a file renamed over meanwhile does not change
    # what the device receives.
    from rpiboot.file_source import ResolvedFile

    original = (boot_dir / "kernel8.img").read_bytes()
    real_open = ResolvedFile.open

    def open_then_replace(self: ResolvedFile):  # type: ignore[no-untyped-def]
        opened = real_open(self)
        if self.name == "kernel8.img":
            replacement = boot_dir / "replacement"
            replacement.write_bytes(b"new contents")
            replacement.replace(self.origin)
        return opened

    monkeypatch.setattr(ResolvedFile, "open", open_then_replace)
    pi = typical_pi("2711", (1,), files=("kernel8.img",))
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert pi.files()["kernel8.img"] == original
