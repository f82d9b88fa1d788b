"""The OTP metadata decoded (issue 11 §2): revision codes, the secure-boot key state, and where
the decoded board shows up (device_done's ``board``, the summary, ``-v``), while ``-j`` files keep
exactly the keys the device sent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

# Device values are untrusted; the first text strategy of a fresh environment builds Hypothesis'
# character tables, which is slow on a loaded machine: not a property of the code under test.
RELAXED = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None)

from rpiboot.board_info import decode_board, decode_revision_code, describe
from rpiboot.event_schema import validate
from rpiboot.simulator import typical_pi

from engine_support import fast_options, run_boot, run_cli

CM4_META = {
    "MAC_ADDR": "d8:3a:dd:05:ee:78",
    "CUSTOMER_KEY_HASH": "0" * 64,
    "BOOT_ROM": "0000c8b0",
    "BOARD_ATTR": "00000000",
    "USER_BOARDREV": "c03141",
    "JTAG_LOCKED": "0",
    "ADVANCED_BOOT": "0000e8e8",
}


@pytest.mark.parametrize("code, expected", [
    ("c03141", ("Compute Module 4", "1.1", 4096, "Sony UK", "BCM2711")),
    ("a02082", ("3B", "1.2", 1024, "Sony UK", "BCM2837")),
    ("a52082", ("3B", "1.2", 1024, "Stadium", "BCM2837")),
    ("902120", ("Zero 2 W", "1.0", 512, "Sony UK", "BCM2837")),
    ("e04171", ("5", "1.1", 16384, "Sony UK", "BCM2712")),
    ("d041a0", ("Compute Module 5 Lite", "1.0", 8192, "Sony UK", "BCM2712")),
    ("920093", ("Zero", "1.3", 512, "Embest", "BCM2835")),
])
def test_documented_revision_codes(code: str, expected: tuple[object, ...]) -> None:
    fields = decode_revision_code(int(code, 16))
    assert tuple(fields[name] for name in ("model", "revision", "memory_mb", "manufacturer",
                                           "processor")) == expected


def test_cm4_example_from_usbboot_readme() -> None:
    board = decode_board(CM4_META)
    assert board is not None
    assert board.to_dict()["secure_boot_key_programmed"] is False
    assert board.jtag_locked is False and board.wireless is True and board.emmc is True
    assert board.advanced_boot == {"raw": "0000e8e8", "eth_clk_gpio": 0x68,
                                   "eth_clk_enabled": True, "lan_run_gpio": 0x68,
                                   "lan_run_enabled": True}
    assert describe(board.to_dict()) == ("Compute Module 4 rev 1.1, 4 GB, Sony UK, BCM2711, "
                                         "wireless, eMMC, no secure-boot key")


def test_programmed_key_lite_without_wireless_and_jtag_locked() -> None:
    board = decode_board({**CM4_META, "CUSTOMER_KEY_HASH": "8251a63a" + "0" * 56,
                          "BOARD_ATTR": "c0000000", "JTAG_LOCKED": "1"})
    assert board is not None
    assert (board.secure_boot_key_programmed, board.wireless, board.emmc, board.jtag_locked) == (
        True, False, False, True)
    assert describe(board.to_dict()).endswith(
        "no wireless, no eMMC, secure-boot key programmed, JTAG locked")


@pytest.mark.parametrize("code", ["003141", "c0ff41", "c7f141", "c0a141", "zz", "", "1" * 9])
def test_unknown_or_old_style_codes_decode_to_unknown(code: str) -> None:
    board = decode_board({"USER_BOARDREV": code})
    assert board is not None
    fields = board.to_dict()
    assert "unknown" in (fields["model"], fields["manufacturer"], fields["processor"],
                         fields["revision"]) or fields["memory_mb"] is None


def test_no_known_key_means_no_board() -> None:
    assert decode_board({"MAC_ADDR": "d8:3a:dd:05:ee:78"}) is None
    assert describe(None) == ""


def test_malformed_key_hash_is_not_a_verdict() -> None:
    board = decode_board({"CUSTOMER_KEY_HASH": "00"})
    assert board is not None and board.secure_boot_key_programmed is None


@RELAXED
@given(st.dictionaries(st.sampled_from(["USER_BOARDREV", "CUSTOMER_KEY_HASH", "JTAG_LOCKED",
                                        "BOARD_ATTR", "ADVANCED_BOOT", "OTHER"]),
                       st.text(max_size=80) | st.text("0123456789abcdefABCDEFx \x00", max_size=70)))
def test_any_device_values_decode_without_exception(values: dict[str, str]) -> None:
    board = decode_board(values)
    if board is not None:
        json.dumps(board.to_dict())
        assert isinstance(describe(board.to_dict()), str)


@RELAXED
@given(st.dictionaries(st.text(), st.none() | st.integers() | st.text() | st.booleans()))
def test_describe_accepts_any_object(board: dict[str, object]) -> None:
    assert isinstance(describe(board), str)


def test_board_in_device_done_and_summary_while_j_file_keeps_upstream_keys(
        boot_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pi = typical_pi("2711", (3,), files=("config.txt",), meta=CM4_META, serial="c0ffee01")
    run = run_boot([pi], fast_options(boot_dir, metadata=True, metadata_dir=out))
    assert run.exit_code == 0
    [done] = run.events.of("device_done")
    board = done.data["board"]
    assert {k: board[k] for k in ("model", "revision", "memory_mb", "manufacturer",
                                  "processor", "secure_boot_key_programmed")} == {
        "model": "Compute Module 4", "revision": "1.1", "memory_mb": 4096,
        "manufacturer": "Sony UK", "processor": "BCM2711", "secure_boot_key_programmed": False}
    [summary] = run.events.of("summary")
    assert summary.data["devices"][0]["board"] == board
    for item in (done, summary):
        assert validate(item.to_dict()) == []
    assert json.loads((out / "c0ffee01.json").read_text()) == CM4_META


def test_board_is_null_without_metadata(boot_dir: Path) -> None:
    run = run_boot([typical_pi("2712", (1,), files=("config.txt",))], fast_options(boot_dir))
    [done] = run.events.of("device_done")
    assert done.data["board"] is None


def test_verbose_plain_output_and_summary_show_the_board(
        boot_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pis = [typical_pi("2711", (3,), files=("config.txt",), meta=CM4_META)]
    code, out, _err = run_cli(monkeypatch, capsys, pis,
                              ["-d", str(boot_dir), "-v", "--plain", "--timeout", "5"])
    assert code == 0
    text = "Compute Module 4 rev 1.1, 4 GB, Sony UK, BCM2711"
    assert f"1-3: board {text}" in out
    assert [line for line in out.splitlines() if line.startswith("  1-3") and text in line]


def test_json_device_done_carries_the_board(
        boot_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pis = [typical_pi("2711", (3,), files=("config.txt",), meta=CM4_META)]
    code, out, _err = run_cli(monkeypatch, capsys, pis,
                              ["-d", str(boot_dir), "--json", "--timeout", "5"])
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    [done] = [item for item in events if item["event"] == "device_done"]
    assert done["board"]["model"] == "Compute Module 4"
    assert all(validate(item) == [] for item in events)
