"""The command line: upstream's flags and their conflicts, output, and real processes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import rpiboot.api
from rpiboot import __version__, cli
from rpiboot.simulator import RomStage, ServerStage, VirtualPi, typical_pi
from rpiboot.simulator.script import done, load

from engine_support import (REPO_ROOT, HandleProxy, WrappingBus, assert_received_exactly, run_cli,
                            tar_bytes)

FAST = ["--plain", "--timeout", "3", "--run-timeout", "20", "--stall-timeout", "0.3",
        "--retry-delay", "0.01", "-m", "5000"]




# --- upstream flag conflicts ----------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["-o"],                          # -o needs -d
    ["-3", "-p", "1-1.3"],           # a port number excludes -p
    ["-p", "1-1", "-0"],
    ["-m", "0"],                     # -m 0 rejected, as upstream
    ["-99"],                         # port numbers are 0 ... 98
    ["--no-such-flag"],
    ["-m", "abc"],
])
def test_usage_errors_exit_2(tmp_path: Path, argv: list[str],
                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        cli.main(argv)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "error" in err and "Traceback" not in err


@pytest.mark.parametrize("argv, field, value", [
    (["-0"], "port_number", 0), (["-98"], "port_number", 98), (["-7"], "port_number", 7),
    (["-p", "1-1.3.2"], "port_path", "1-1.3.2"), (["-i", "abc123"], "serial", "abc123"),
    (["-m", "250000"], "poll_interval", 0.25), (["-l"], "loop", True), (["-s"], "signed", True),
    (["-vv"], "verbose", 2),
])
def test_upstream_flags_map_to_options(argv: list[str], field: str, value: object) -> None:
    _, options = cli.parse_options(argv)
    assert getattr(options, field) == value


def test_j_with_and_without_directory() -> None:
    _, options = cli.parse_options(["-j"])
    assert options.metadata and options.metadata_dir is None
    _, options = cli.parse_options(["-j", "/tmp/meta", "-d", "x"])
    assert options.metadata and options.metadata_dir == Path("/tmp/meta")
    _, options = cli.parse_options(["-d", "x", "-o"])
    assert options.overlay and options.directory == Path("x")


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-V"]) == 0
    assert __version__ in capsys.readouterr().out


# --- boots through the command line ----------------------------------------------------------------

def test_plain_output_has_upstream_lines(boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    pi = typical_pi("2711", (1,), files=("config.txt", "start4.elf"))
    code, out, _ = run_cli(monkeypatch, capsys, [pi], ["-d", str(boot_dir)] + FAST)
    assert code == 0
    for line in ["Waiting for BCM2835/6/7/2711/2712...", "Sending bootcode.bin",
                 "Second stage boot server", f"Loading: {boot_dir / '2711' / 'config.txt'}",
                 "File read: config.txt", "File read: start4.elf",
                 "Second stage boot server done"]:
        assert line in out.splitlines(), line
    assert_received_exactly(pi, boot_dir, ["config.txt", "start4.elf"])


def test_json_output_is_one_object_per_line(boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    pis = [typical_pi("2712", (1,), files=("config.txt",)),
           typical_pi("2835", (2,), files=("start.elf",))]
    code, out, _ = run_cli(monkeypatch, capsys, pis, ["-d", str(boot_dir), "--json"] + FAST)
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert events[-1]["event"] == "summary" and events[-1]["exit_code"] == 0
    assert sorted(e["port"] for e in events if e["event"] == "device_done") == ["1-1", "1-2"]


def test_port_flag_selects_one_device(boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    wanted, other = typical_pi("2712", (2,)), typical_pi("2712", (1,))
    code, _, _ = run_cli(monkeypatch, capsys, [other, wanted], ["-d", str(boot_dir), "-2"] + FAST)
    assert code == 0
    assert wanted.violations == [] and wanted.files()
    assert other.received == []


def test_path_and_serial_flags(boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                               capsys: pytest.CaptureFixture[str]) -> None:
    def board(port: int, serial: str) -> VirtualPi:
        return VirtualPi("2711", (1, port), stages=[
            RomStage(serial_index=3, serial=serial),
            ServerStage(load("config.txt") + [done()], serial=serial)])

    pis = [board(1, "aaa"), board(2, "bbb")]
    code, _, _ = run_cli(monkeypatch, capsys, pis, ["-d", str(boot_dir), "-p", "1-1.2"] + FAST)
    assert code == 0 and pis[0].received == [] and pis[1].files()
    pis = [board(1, "aaa"), board(2, "bbb")]
    code, _, _ = run_cli(monkeypatch, capsys, pis, ["-d", str(boot_dir), "-i", "aaa"] + FAST)
    assert code == 0 and pis[0].files() and pis[1].received == []


def test_j_without_directory_prints_json_to_stdout(boot_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    meta = {"MAC_ADDR": "d8:3a:dd:05:ee:78", "USER_SERIAL_NUM": 'evil" value \\'}
    pi = typical_pi("2712", (1,), files=(), meta=meta)
    code, out, _ = run_cli(monkeypatch, capsys, [pi], ["-d", str(boot_dir), "-j"] + FAST)
    assert code == 0
    lines = out.splitlines()
    start = lines.index("{")
    end = lines.index("}", start)
    assert json.loads("\n".join(lines[start:end + 1])) == meta


def test_j_with_directory_writes_file(boot_dir: Path, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    meta = {"MAC_ADDR": "d8:3a:dd:05:ee:78"}
    out_dir = tmp_path / "meta"
    out_dir.mkdir()
    pi = typical_pi("2711", (1,), files=(), meta=meta, serial="10000000abcdef01")
    code, out, _ = run_cli(monkeypatch, capsys, [pi],
                           ["-d", str(boot_dir), "-j", str(out_dir)] + FAST)
    assert code == 0
    path = out_dir / "10000000abcdef01.json"
    assert json.loads(path.read_text()) == meta
    assert f"Created metadata file: {path}" in out


def test_loop_flag_serves_several_then_times_out(boot_dir: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pis = [typical_pi("2711", (1,)), typical_pi("2712", (2,)), typical_pi("2837", (3,))]
    code, out, _ = run_cli(monkeypatch, capsys, pis,
                           ["-d", str(boot_dir), "-l", "--plain", "--timeout", "0.3",
                            "--stall-timeout", "0.3", "-m", "5000"])
    assert code == 0
    assert out.count("Second stage boot server done") == 3
    assert all(pi.violations == [] and pi.files() for pi in pis)


# --- real processes ----------------------------------------------------------------------------------

def _python_m(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-m", "rpiboot", *argv], capture_output=True,
                          text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)


def test_subprocess_demo() -> None:
    done_ = _python_m("--demo", "--plain")
    assert done_.returncode == 0, done_.stderr
    assert "Traceback" not in done_.stdout + done_.stderr
    assert done_.stdout.count("Second stage boot server done") == 3
    assert "received exactly the files" in done_.stderr


def test_subprocess_demo_json() -> None:
    done_ = _python_m("--demo", "--json")
    assert done_.returncode == 0, done_.stderr
    events = [json.loads(line) for line in done_.stdout.splitlines()]
    assert events[-1]["event"] == "summary"


@pytest.mark.parametrize("argv", [["-o"], ["-5", "-p", "1-1"], ["-m", "0"]])
def test_subprocess_usage_errors(argv: list[str]) -> None:
    done_ = _python_m(*argv)
    assert done_.returncode == 2
    assert "Traceback" not in done_.stderr and "error" in done_.stderr


def test_subprocess_version() -> None:
    done_ = _python_m("-V")
    assert done_.returncode == 0 and __version__ in done_.stdout


def test_subprocess_missing_directory(tmp_path: Path) -> None:
    done_ = _python_m("-d", str(tmp_path / "absent"), "--plain", "--timeout", "0.1")
    assert done_.returncode == 3
    assert "Traceback" not in done_.stderr and "rpiboot: error:" in done_.stderr


def test_loading_lines_name_paths_as_upstream_prints_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "boot"
    (directory / "2711").mkdir(parents=True)
    (directory / "bootfiles.bin").write_bytes(
        tar_bytes({"2711/bootcode4.bin": b"bc4", "2711/mcb.bin": b"mcb"}))
    (directory / "2711" / "config.txt").write_text("override")
    pi = typical_pi("2711", (1,), files=("mcb.bin", "config.txt"))
    code, out, _ = run_cli(monkeypatch, capsys, [pi], ["-d", str(directory)] + FAST)
    assert code == 0
    assert pi.files() == {"mcb.bin": b"mcb", "config.txt": b"override"}
    loading = [line for line in out.splitlines() if line.startswith("Loading")]
    # Archive members get no line (upstream prints none); the file beside the archive does.
    assert loading == [f"Loading bootfiles.bin overlay: {directory / '2711' / 'config.txt'}"]


def test_chunk_size_sets_the_bulk_transfer_size(boot_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    sizes: list[int] = []

    class Recording(WrappingBus):
        def wrap_handle(self, info, handle):  # type: ignore[no-untyped-def]
            class Handle(HandleProxy):
                def bulk_out(self, endpoint, data, timeout):  # type: ignore[no-untyped-def]
                    sizes.append(len(data))
                    return handle.bulk_out(endpoint, data, timeout)
            return Handle(info, handle)

    pi = typical_pi("2711", (1,), files=("kernel8.img",))  # 20000 bytes in boot_dir
    monkeypatch.setattr(rpiboot.api, "_open_libusb", lambda _library: Recording([pi]))
    assert cli.main(["-d", str(boot_dir), "--chunk-size", "16384"] + FAST) == 0
    capsys.readouterr()
    assert_received_exactly(pi, boot_dir, ["kernel8.img"])
    assert max(sizes) == 16384 and 20000 - 16384 in sizes


@pytest.mark.parametrize("size", ["0", "511", "999999999"])
def test_chunk_size_out_of_range_is_a_usage_error(size: str, capsys: pytest.CaptureFixture[str]
                                                  ) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--chunk-size", size])
    assert exit_info.value.code == 2
    assert "--chunk-size" in capsys.readouterr().err
