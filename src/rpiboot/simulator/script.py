"""What a virtual file-server stage asks the host for, step by step."""

from __future__ import annotations

from dataclasses import dataclass

GET_FILE_SIZE, READ_FILE, DONE = 0, 1, 2


@dataclass(frozen=True)
class Request:
    """One 260-byte message the device sends. ``name`` is raw so tests can send hostile bytes."""

    command: int
    name: bytes
    only_if_found: bool = False
    """Skip this request when the host said the file was missing (size 0). Real firmware is
    believed to do so for optional files; this is an assumption, not verified on hardware."""

    @property
    def text(self) -> str:
        return self.name.decode("utf-8", errors="replace")


def _raw(name: str | bytes) -> bytes:
    return name if isinstance(name, bytes) else name.encode()


def load(name: str | bytes, *, read_when_missing: bool = False) -> list[Request]:
    """GetFileSize then ReadFile, the way firmware loads a file."""
    raw = _raw(name)
    return [Request(GET_FILE_SIZE, raw),
            Request(READ_FILE, raw, only_if_found=not read_when_missing)]


def metadata(key: str, value: str) -> Request:
    return Request(GET_FILE_SIZE, f"*{key}*{value}".encode())


def done() -> Request:
    return Request(DONE, b"")


def done_command() -> Request:
    """Command 2 with a name: upstream gives it no reply."""
    return Request(DONE, b"done")


def empty_done() -> Request:
    """An empty name ends the stage after a zero-length reply."""
    return Request(GET_FILE_SIZE, b"")
