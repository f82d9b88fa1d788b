"""OTP metadata (-j): FACTORY_UUID C40 decoding, JSON that always parses, and file names derived
from device-supplied serial numbers that can neither escape the directory nor collide."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path

import pytest
from hypothesis import given, strategies as st

from rpiboot.metadata import MetadataRecord, decode_c40_duid, safe_file_stem
from rpiboot.simulator import RomStage, ServerStage, VirtualPi, typical_pi
from rpiboot.simulator.script import done, load, metadata

from engine_support import fast_options, run_boot

C40_ALPHABET = string.digits + string.ascii_uppercase


# --- a C40 encoder written for the tests (the inverse of upstream's decode_duid.c) ----------------

def c40_value(char: str) -> int:
    return 4 + int(char) if char.isdigit() else 14 + ord(char) - ord("A")


def c40_half_word(triple: str) -> int:
    a, b, c = (c40_value(char) for char in triple)
    return a * 1600 + b * 40 + c + 1


def c40_encode(text: str, *, upper: bool = False) -> str:
    """Groups of three characters -> 16-bit halves; two halves per 32-bit word, low half first;
    words as hex joined by '_'."""
    assert len(text) % 3 == 0
    halves = [c40_half_word(text[i:i + 3]) for i in range(0, len(text), 3)]
    words = []
    for i in range(0, len(halves), 2):
        word = halves[i] | ((halves[i + 1] << 16) if i + 1 < len(halves) else 0)
        words.append(f"{word:X}" if upper else f"{word:x}")
    return "_".join(words)


def test_c40_hand_computed_vector() -> None:
    # 'A' = 14, '0' = 4: 14*1600 + 4*40 + 4 + 1 = 22565 = 0x5825
    assert c40_half_word("A00") == 0x5825
    assert decode_c40_duid("5825") == "A00"
    # Two halves in one word, low half first: "A00" then "ZZZ" (39*1600+39*40+39+1 = 64000)
    assert decode_c40_duid(f"{(64000 << 16) | 0x5825:08x}") == "A00ZZZ"


def test_c40_full_length_duid() -> None:
    duid = "RPI5CM5000000000000000000000000ABC12"[:36]
    assert len(duid) == 36
    encoded = c40_encode(duid)
    assert encoded.count("_") == 5
    assert decode_c40_duid(encoded) == duid


def test_c40_stops_at_a_zero_word() -> None:
    assert decode_c40_duid("5825_0_5825") == "A00"


def test_c40_words_are_read_like_strtoul() -> None:
    # strtoul(word, NULL, 16) accepts blanks and a 0x prefix; strtok skips empty pieces.
    assert decode_c40_duid("0x5825") == "A00"
    assert decode_c40_duid(" 0X5825_") == "A00"
    assert decode_c40_duid("5825__5825") == "A00A00"


@pytest.mark.parametrize("encoded", ["1", "0001", "ffff"])
def test_c40_invalid_values_are_rejected(encoded: str) -> None:
    # half-word 1 -> values 0,0,0 and 0xffff -> 40,38,14: outside 0-9A-Z
    assert decode_c40_duid(encoded) is None


@given(st.text(alphabet=C40_ALPHABET, min_size=1, max_size=12).map(lambda t: t * 3),
       st.booleans())
def test_c40_round_trip(text: str, upper: bool) -> None:
    assert decode_c40_duid(c40_encode(text, upper=upper)) == text


@given(st.text(max_size=80))
def test_c40_decoder_never_raises(text: str) -> None:
    result = decode_c40_duid(text)
    assert result is None or set(result) <= set(C40_ALPHABET)


def test_record_decodes_factory_uuid_and_reports_bad_ones() -> None:
    record = MetadataRecord()
    record.add("FACTORY_UUID", c40_encode("ABC123XYZ"))
    record.add("MAC_ADDR", "d8:3a:dd:05:ee:78")
    assert record.values == {"FACTORY_UUID": "ABC123XYZ", "MAC_ADDR": "d8:3a:dd:05:ee:78"}
    bad = MetadataRecord()
    bad.add("FACTORY_UUID", "1")
    bad.add("KEY_ONLY", None)
    assert not bad
    assert len(bad.problems) == 2


# --- JSON -----------------------------------------------------------------------------------------

@given(st.dictionaries(st.text(min_size=1), st.text(), max_size=8))
def test_json_always_parses(values: dict[str, str]) -> None:
    record = MetadataRecord()
    for key, value in values.items():
        record.add(key, value)
    expected = {k: v for k, v in values.items() if k != "FACTORY_UUID"}
    parsed = json.loads(record.to_json())
    assert {k: v for k, v in parsed.items() if k != "FACTORY_UUID"} == expected


def test_json_escapes_hostile_values() -> None:
    record = MetadataRecord()
    record.add("USER_SERIAL_NUM", 'quote " backslash \\ newline \n tab \t bell \x07 }')
    parsed = json.loads(record.to_json())
    assert parsed["USER_SERIAL_NUM"] == 'quote " backslash \\ newline \n tab \t bell \x07 }'


# --- file names from hostile serials -----------------------------------------------------------------

HOSTILE_SERIALS = ["../../etc/x", "/abs", "a/b", "a_b", "", "x" * 300, "ctl\x01\n\x7f", 'q"uote',
                   ".", "..", ".hidden", "C:\\win", "nul\0byte", "é-unicode", "a" * 64,
                   "a" * 65, "10000000d3adb33f", "-rf", "--help", "CON", "nul", "com1", "LPT9.txt",
                   "aux.json", "-"]


@pytest.mark.parametrize("serial", HOSTILE_SERIALS)
def test_metadata_file_stays_in_directory(tmp_path: Path, serial: str) -> None:
    directory = tmp_path / "meta"
    directory.mkdir()
    record = MetadataRecord()
    record.add("MAC_ADDR", "x")
    path = record.write(directory, serial).path
    assert path.parent == directory
    assert path.resolve().parent == directory.resolve()
    assert path.name.endswith(".json") and not path.name.startswith(".")
    assert len(path.name) <= 100
    assert [p.name for p in directory.iterdir()] == [path.name]
    assert json.loads(path.read_text()) == {"MAC_ADDR": "x"}


def test_ordinary_serial_is_kept_verbatim() -> None:
    assert safe_file_stem("10000000d3adb33f") == "10000000d3adb33f"


def test_hostile_serials_do_not_collide() -> None:
    stems = [safe_file_stem(serial) for serial in HOSTILE_SERIALS]
    assert len(set(stems)) == len(stems)


def test_crafted_serial_cannot_take_another_devices_file_name() -> None:
    """A device may choose its serial to equal the name another serial was mapped to."""
    for victim in HOSTILE_SERIALS:
        mapped = safe_file_stem(victim)
        if mapped != victim:
            assert safe_file_stem(mapped) != mapped


@given(st.text(max_size=120), st.text(max_size=120))
def test_distinct_serials_get_distinct_names(first: str, second: str) -> None:
    if first != second:
        assert safe_file_stem(first) != safe_file_stem(second)


@given(st.text(max_size=200))
def test_stem_is_a_plain_file_name(serial: str) -> None:
    stem = safe_file_stem(serial)
    assert stem and not stem.startswith(".")
    assert set(stem) <= set(string.ascii_letters + string.digits + "._-")
    assert len(stem) <= 96  # 64 characters, "-", a 16-digit hash


# --- through the engine ------------------------------------------------------------------------------

META = {"MAC_ADDR": "d8:3a:dd:05:ee:78", "BOARD_ATTR": '0"x\\y'}


def test_metadata_files_for_hostile_serials(boot_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    serials = ["../../etc/x", "/abs", "a/b", "", "s" * 120, "ctl\x01\x1b[31m", 'q"uote',
               "10000000d3adb33f"]
    duid = "A00B11C22D33E44F55G66H77I88J99KZZZ"[:33]
    pis = [VirtualPi("2712" if i % 2 else "2711", (i + 1,), stages=[
        RomStage(serial_index=0 if i % 2 else 3),
        ServerStage([metadata(k, v) for k, v in META.items()]
                    + [metadata("FACTORY_UUID", c40_encode(duid))] + load("config.txt")
                    + [done()], serial=serial)])
           for i, serial in enumerate(serials)]
    run = run_boot(pis, fast_options(boot_dir, metadata=True, metadata_dir=out))
    assert run.exit_code == 0
    written = sorted(out.iterdir())
    assert len(written) == len(serials)
    assert all(path.suffix == ".json" for path in written)
    for path in written:
        assert json.loads(path.read_text()) == {**META, "FACTORY_UUID": duid}
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["boot", "out"])
    assert (out / "10000000d3adb33f.json").is_file()
    reported = sorted(Path(e.data["path"]).name for e in run.events.of("metadata_written"))
    assert reported == [p.name for p in written]
    assert all(pi.violations == [] for pi in pis)


@pytest.mark.parametrize("chip", ["2835", "2837"])
def test_no_metadata_file_for_older_chips(boot_dir: Path, tmp_path: Path, chip: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    pi = typical_pi(chip, (1,), files=("start.elf",), meta=META)
    run = run_boot([pi], fast_options(boot_dir, metadata=True, metadata_dir=out))
    assert run.exit_code == 0
    assert list(out.iterdir()) == []
    assert not run.events.of("metadata")
    # The requests are still acknowledged, as upstream does.
    assert [r.name for r in pi.received if r.kind == "ack"][:2] == [
        f"*{k}*{v}" for k, v in META.items()]
    assert pi.violations == []


def test_metadata_without_directory_goes_to_an_event(boot_dir: Path) -> None:
    pi = typical_pi("2711", (1,), files=(), meta=META)
    run = run_boot([pi], fast_options(boot_dir, metadata=True))
    assert run.exit_code == 0
    [item] = run.events.of("metadata_json")
    assert json.loads(item.data["json"]) == META


def test_metadata_is_not_written_without_j(boot_dir: Path, tmp_path: Path) -> None:
    pi = typical_pi("2711", (1,), files=(), meta=META)
    run = run_boot([pi], fast_options(boot_dir))
    assert run.exit_code == 0
    assert not run.events.of("metadata_json") and not run.events.of("metadata_written")


# --- issue 12: names, permissions, never losing a record -----------------------------------------

@pytest.mark.parametrize("serial", ["-rf", "--help", "-", "CON", "nul", "com1", "LPT9.txt",
                                    "aux.json", "Com¹"])
def test_serial_file_names_are_neither_options_nor_windows_devices(serial: str) -> None:
    stem = safe_file_stem(serial)
    assert not stem.startswith(("-", "."))
    assert stem.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT9",
                                              "COM¹"}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_metadata_file_mode_follows_the_umask(tmp_path: Path, umask: int, mode: int) -> None:
    record = MetadataRecord()
    record.add("MAC_ADDR", "x")
    old = os.umask(umask)
    try:
        path = record.write(tmp_path, "10000000d3adb33f").path
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode


def test_a_second_record_with_the_same_serial_never_replaces_the_first(tmp_path: Path) -> None:
    genuine, impostor = MetadataRecord(), MetadataRecord()
    genuine.add("MAC_ADDR", "d8:3a:dd:00:00:01")
    impostor.add("MAC_ADDR", "d8:3a:dd:66:66:66")
    first = genuine.write(tmp_path, "abc")
    second = impostor.write(tmp_path, "abc")
    assert first.path.name == "abc.json" and first.conflict is None
    assert second.path.name == "abc-2.json" and second.conflict == first.path
    assert json.loads(first.path.read_text())["MAC_ADDR"].endswith("01")
    assert json.loads(second.path.read_text())["MAC_ADDR"].endswith("66")
    again = genuine.write(tmp_path, "abc")  # the same board again: same file, no conflict
    assert again.path == first.path and again.conflict is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["abc-2.json", "abc.json"]
