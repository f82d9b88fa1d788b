"""`rpiboot-provision run --web`: the options' errors come before any board is touched."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from rpiboot.provision import cli
from rpiboot.provision.errors import ExitCode


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    boot = tmp_path / "boot"
    boot.mkdir()
    for name in ("bootcode4.bin", "bootcode5.bin", "bootcode.bin", "config.txt"):
        (boot / name).write_bytes(name.encode() * 10)
    (tmp_path / "os.img").write_bytes(bytes(4096))
    path = tmp_path / "line.toml"
    path.write_text(f'[boot]\ndirectory = "{boot}"\n[os]\nimage = "os.img"\n')
    return path


def _run(profile: Path, *extra: str) -> int:
    return cli.main(["run", str(profile), "--plain", "--timeout", "0.2", "--ledger",
                     str(profile.parent / "ledger.sqlite"), *extra])


@pytest.mark.parametrize("extra, words", [
    (("--web-token", "abcdefghij"), "--web-token needs --web"),
    (("--web", "nowhere:http"), "expected HOST:PORT"),
    (("--web", "0.0.0.0:0", "--web-token", "short"), "at least 8 characters"),
])
def test_bad_web_options_are_usage_errors(profile: Path, capsys: pytest.CaptureFixture[str],
                                          extra: tuple[str, ...], words: str) -> None:
    assert _run(profile, *extra) == ExitCode.USAGE
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_a_busy_port_stops_the_run_before_it_starts(profile: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn", reason="the dashboard needs the [line] extra")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert _run(profile, "--web", f"127.0.0.1:{port}") == ExitCode.USAGE
    assert f"cannot listen on 127.0.0.1:{port}" in capsys.readouterr().err


def test_the_address_is_printed_with_a_generated_token(profile: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    pytest.importorskip("uvicorn", reason="the dashboard needs the [line] extra")
    status = _run(profile, "--web", "0.0.0.0:0", "--libusb", "/nonexistent/libusb.so")
    err = capsys.readouterr().err
    assert "station dashboard at http://127.0.0.1:" in err and "?token=" in err, err
    assert status != ExitCode.USAGE
