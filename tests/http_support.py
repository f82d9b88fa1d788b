"""A local HTTP server on 127.0.0.1 for the download tests (never the internet): serves a
directory laid out as ``OWNER/REPO/COMMIT/PATH``, honours ``Range: bytes=N-``, and can be told to
cut a response short or to ignore ranges."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator

import pytest


@dataclass
class ServerState:
    root: Path
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    """(path, Range header) of every request."""
    cut_after: dict[str, int] = field(default_factory=dict)
    """URL path -> bytes to send before dropping the connection (once)."""
    honour_ranges: bool = True


class _Handler(BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, *_args: object) -> None:
        pass

    def do_GET(self) -> None:  # noqa: N802 (the http.server name)
        state = self.server.state  # type: ignore[attr-defined]
        state.requests.append((self.path, self.headers.get("Range")))
        path = state.root / self.path.lstrip("/")
        if ".." in self.path or not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = self._range_start(state, len(data))
        if start is None:
            self.send_error(416)
            return
        body = data[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        cut = state.cut_after.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.wfile.flush()
            self.close_connection = True

    def _range_start(self, state: ServerState, size: int) -> int | None:
        header = self.headers.get("Range")
        if not header or not state.honour_ranges:
            return 0
        start = int(header.removeprefix("bytes=").rstrip("-"))
        return start if start < size else None


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[tuple[str, ServerState]]:
    """(base URL, state): put files under ``state.root`` as OWNER/REPO/COMMIT/PATH."""
    state = ServerState(tmp_path / "served")
    state.root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.state = state  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
