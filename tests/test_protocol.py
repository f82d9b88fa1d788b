"""The sans-IO protocol layer: lengths, the boot message, and classification of device requests."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, strategies as st

from rpiboot import protocol
from rpiboot.protocol import (BadRequest, Done, GetFileSize, Metadata, ReadFile,
                              encode_file_message, parse_file_message)


@given(st.integers(0, protocol.MAX_LENGTH))
def test_split_and_join_length(length: int) -> None:
    value, index = protocol.split_length(length)
    assert 0 <= value <= 0xFFFF and 0 <= index <= 0xFFFF
    assert protocol.join_length(value, index) == length


@pytest.mark.parametrize("length", [-1, protocol.MAX_LENGTH + 1])
def test_split_length_rejects_out_of_range(length: int) -> None:
    with pytest.raises(ValueError):
        protocol.split_length(length)


def test_boot_message_layout() -> None:
    message = protocol.boot_message(0x12345, bytes(range(20)))
    assert len(message) == protocol.BOOT_MESSAGE_SIZE == 24
    assert struct.unpack("<i", message[:4])[0] == 0x12345
    assert message[4:] == bytes(range(20))
    assert protocol.boot_message(7)[4:] == bytes(20)
    with pytest.raises(ValueError):
        protocol.boot_message(7, b"short")


def test_return_code() -> None:
    assert protocol.parse_return_code(b"\0\0\0\0") == 0
    assert protocol.parse_return_code(struct.pack("<i", -2)) == -2
    with pytest.raises(ValueError):
        protocol.parse_return_code(b"\0\0")


_COMMANDS = st.one_of(st.sampled_from([0, 1, 2, 3, -1]), st.integers(-2**31, 2**31 - 1))
_NAME_FIELDS = st.one_of(
    st.binary(max_size=256),  # anything, NUL-padded below
    st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
            max_size=60).map(str.encode).filter(lambda name: len(name) <= 255),  # names
    st.binary(max_size=255).map(lambda body: b"*" + body),  # metadata-like
    st.binary(min_size=256, max_size=256).map(lambda raw: raw.replace(b"\0", b"x")),  # no NUL
).map(lambda name: name.ljust(protocol.NAME_FIELD_SIZE, b"\0"))


def _refusal(event: object) -> tuple[int, bool, bool]:
    """A BadRequest's command, whether it gets a zero-length reply, and whether it is fatal."""
    assert isinstance(event, BadRequest) and event.reason
    return event.command, event.reply, event.fatal


@given(_COMMANDS, _NAME_FIELDS)
def test_classification_follows_the_rules(command: int, field: bytes) -> None:
    event = parse_file_message(struct.pack("<i", command) + field)
    end = field.find(b"\0")
    known = command in (0, 1)
    if end == 0 or command == 2:  # an empty name, or command 2 whatever its name holds
        assert event == Done(acknowledge=end == 0)
    elif end < 0:  # no terminator: refused; a known command still gets its zero-length reply
        assert _refusal(event) == (command, known, not known)
    elif field.startswith(b"*"):  # metadata, whatever the command
        assert isinstance(event, Metadata)
        assert "*" not in event.key and (event.value is None or "*" not in event.value)
        assert event.key or event.value is None
    elif not known:
        assert _refusal(event) == (command, False, True)
    else:
        try:
            name = field[:end].decode("utf-8")
        except UnicodeDecodeError:
            assert _refusal(event) == (command, True, False)
            return
        assert event == (GetFileSize(name), ReadFile(name))[command]


@given(st.binary(max_size=600))
def test_short_messages_are_fatal_and_extra_bytes_are_ignored(raw: bytes) -> None:
    event = parse_file_message(raw)
    if len(raw) < protocol.FILE_MESSAGE_SIZE:
        assert isinstance(event, BadRequest) and event.fatal and not event.reply
    else:
        assert event == parse_file_message(raw[:protocol.FILE_MESSAGE_SIZE])


_NAME = st.text(st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)),
                min_size=1).filter(lambda s: len(s.encode()) <= 255 and not s.startswith("*"))


@given(st.sampled_from([0, 1]), _NAME)
def test_encode_parse_round_trip(command: int, name: str) -> None:
    event = parse_file_message(encode_file_message(command, name))
    assert event == (GetFileSize(name), ReadFile(name))[command]


def test_done_forms() -> None:
    assert parse_file_message(encode_file_message(2, "anything")) == Done(acknowledge=False)
    assert parse_file_message(encode_file_message(2, "")) == Done(acknowledge=True)
    assert parse_file_message(encode_file_message(0, "")) == Done(acknowledge=True)
    assert parse_file_message(encode_file_message(1, "")) == Done(acknowledge=True)


def test_name_without_terminator_is_refused_with_reply() -> None:
    event = parse_file_message(encode_file_message(0, b"A" * 256))
    assert isinstance(event, BadRequest) and event.reply and not event.fatal


def test_name_of_255_bytes_is_accepted() -> None:
    assert parse_file_message(encode_file_message(1, "B" * 255)) == ReadFile("B" * 255)


@pytest.mark.parametrize("body, key, value", [
    ("*MAC_ADDR*d8:3a:dd:05:ee:78", "MAC_ADDR", "d8:3a:dd:05:ee:78"),
    ("**KEY**VALUE*", "KEY", "VALUE"),
    ("*ONLY_KEY", "ONLY_KEY", None),
    ("*", "", None),
])
def test_metadata_parsing(body: str, key: str, value: str | None) -> None:
    assert parse_file_message(encode_file_message(0, body)) == Metadata(key, value)
    assert parse_file_message(encode_file_message(1, body)) == Metadata(key, value)


def test_metadata_marker_with_done_command_is_done() -> None:
    assert parse_file_message(encode_file_message(2, "*KEY*V")) == Done(acknowledge=False)


@pytest.mark.parametrize("name", [b"x", b"\xff\xfe", b"y" * 256])
def test_unknown_command_is_fatal(name: bytes) -> None:
    event = parse_file_message(encode_file_message(3, name))
    assert isinstance(event, BadRequest) and event.fatal


@pytest.mark.parametrize("name", [b"z" * 256, b"\xff\xfe"])
def test_done_command_ends_whatever_the_name(name: bytes) -> None:
    assert parse_file_message(encode_file_message(2, name)) == Done(acknowledge=False)


def test_encode_rejects_long_names() -> None:
    with pytest.raises(ValueError):
        encode_file_message(0, b"x" * 257)
