"""A dashboard served for real on 127.0.0.1 (uvicorn on a free port) and a small client."""

from __future__ import annotations

import contextlib
import http.cookiejar
import json
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Iterator

import pytest

pytest.importorskip("starlette", reason="the dashboard needs the [line] extra")
pytest.importorskip("uvicorn", reason="the dashboard needs the [line] extra")

from rpiboot.provision.web.server import Bind, DashboardServer  # noqa: E402
from rpiboot.provision.web.state import StationState  # noqa: E402


@dataclass
class Response:
    status_code: int
    headers: Any
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode()

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class Client:
    base: str
    jar: http.cookiejar.CookieJar = field(default_factory=http.cookiejar.CookieJar)

    def open(self, path: str, headers: dict[str, str] | None = None) -> Any:
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.jar))
        return opener.open(urllib.request.Request(self.base + path, headers=headers or {}),
                           timeout=10)

    def get(self, path: str, headers: dict[str, str] | None = None) -> Response:
        try:
            with self.open(path, headers) as response:
                return Response(response.status, response.headers, response.read())
        except urllib.error.HTTPError as error:
            return Response(error.code, error.headers, error.read())


@contextlib.contextmanager
def served(state: StationState, *, ledger: Any = None, token: str | None = None,
           bind: Bind = Bind("127.0.0.1", 0)) -> Iterator[Client]:
    server = DashboardServer(state, bind, ledger=ledger, token=token)
    bound = server.start()
    try:
        yield Client(f"http://127.0.0.1:{bound.port}")
    finally:
        server.stop()
