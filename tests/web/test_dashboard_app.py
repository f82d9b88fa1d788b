"""The dashboard's routes, token gate and server, without a browser."""

from __future__ import annotations

import csv
import io
import json
import socket
import urllib.error
import urllib.request
from typing import Any

import pytest

from dashboard_support import Client, served

from rpiboot.provision.web.server import Bind, DashboardServer, WebError, parse_bind, token_for
from rpiboot.provision.web.state import StationState


class _Ledger:
    """A ledger's read side as the dashboard uses it (recent, totals, close)."""

    boards = [{"serial": "=HYPERLINK(\"http://x\")", "chip": "BCM2711", "port": "1-1",
               "station": "a", "unit": 3, "result": "ok", "error": None,
               "image_sha256": "ab" * 32, "bytes_written": 1024, "verified": True,
               "started": "2026-12-01T10:00:00Z", "finished": "2026-12-01T10:01:00Z"},
              {"serial": "1000abcd", "chip": "BCM2712", "port": "1-2", "station": "b",
               "unit": None, "result": "verify_mismatch", "error": "bad byte",
               "image_sha256": "cd" * 32, "bytes_written": 2048, "verified": False,
               "started": "2026-12-01T10:02:00Z", "finished": "2026-12-01T10:03:00Z"}]
    calls: list[tuple[str, Any]] = []

    def recent(self, limit: int = 50, search: str | None = None) -> list[dict[str, Any]]:
        self.calls.append(("recent", search))
        found = [b for b in self.boards if not search or search in json.dumps(b)]
        return found[:limit]

    def totals(self, since: float) -> dict[str, Any]:
        return {"ok": 1, "failed": 1, "by_code": {"verify_mismatch": 1}}

    def close(self) -> None:
        pass


def _state() -> StationState:
    state = StationState("line1-a", "cm4")
    state.apply({"event": "board_arrived", "port": "1-1", "chip": "BCM2711"})
    return state


def test_page_and_state() -> None:
    with served(_state(), ledger=_Ledger) as client:
        page = client.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert client.get("/static/app.js").status_code == 200
        assert client.get("/static/../app.py").status_code == 404
        state = client.get("/api/state").json()
        assert state["station"] == "line1-a" and state["ports"][0]["port"] == "1-1"
        assert state["ledger"]["today"] == {"ok": 1, "failed": 1,
                                            "by_code": {"verify_mismatch": 1}}
        assert [b["serial"] for b in state["ledger"]["recent"]][1] == "1000abcd"


def test_boards_search_and_csv_export() -> None:
    with served(_state(), ledger=_Ledger) as client:
        assert [b["serial"] for b in client.get("/api/boards?search=1000").json()] == ["1000abcd"]
        export = client.get("/api/boards.csv")
        assert export.headers["content-type"].startswith("text/csv")
        rows = list(csv.DictReader(io.StringIO(export.text)))
        assert [r["result"] for r in rows] == ["ok", "verify_mismatch"]
        assert rows[0]["serial"].startswith("'=")  # never a formula in a spreadsheet
        assert rows[1]["verified"] == "False" and rows[0]["unit"] == "3"


def test_without_a_ledger_the_page_still_works() -> None:
    with served(_state()) as client:
        assert client.get("/api/state").json()["ledger"] is None
        assert client.get("/api/boards").json() == []


def test_an_unreachable_ledger_is_shown_not_fatal() -> None:
    def broken() -> Any:
        raise OSError("connection refused")
    with served(_state(), ledger=broken) as client:
        state = client.get("/api/state").json()
        assert state["ledger"]["error"].startswith("ledger unavailable: connection refused")


def test_event_stream_sends_the_state() -> None:
    state = _state()
    with served(state) as client:
        with client.open("/api/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.readline() == b"event: state\n"
            data = json.loads(stream.readline()[len(b"data: "):])
            assert data["ports"][0]["chip"] == "BCM2711"
            state.apply({"event": "board_failed", "port": "1-1", "code": "device_gone",
                         "message": "gone"})
            assert stream.readline() == b"\n"
            assert stream.readline() == b"event: state\n"
            data = json.loads(stream.readline()[len(b"data: "):])
            assert data["ports"][0]["state"] == "failed"


def test_token_gate() -> None:
    token = "s3cret-token-xyz"
    with served(_state(), token=token) as client:
        for path in ("/", "/api/state", "/api/boards.csv", "/static/app.js"):
            assert client.get(path).status_code == 401, path
        assert client.get("/api/state", headers={"Authorization": "Bearer wrong-token"}
                          ).status_code == 401
        assert client.get("/api/state", headers={"Authorization": f"Bearer {token}"}
                          ).status_code == 200
        first = client.get(f"/?token={token}")
        assert first.status_code == 200 and "rpiboot_token" in first.headers["set-cookie"]
        assert client.get("/api/state").status_code == 200  # the cookie now


def test_bind_parsing_and_tokens() -> None:
    assert parse_bind("8080") == Bind("127.0.0.1", 8080)
    assert parse_bind("0.0.0.0:80") == Bind("0.0.0.0", 80)
    assert parse_bind("[::1]:9000") == Bind("::1", 9000)
    for bad in ("host:port", "1.2.3.4:70000", ""):
        with pytest.raises(WebError):
            parse_bind(bad)
    assert Bind("127.0.0.1", 1).loopback and Bind("localhost", 1).loopback
    assert Bind("::1", 1).loopback and not Bind("0.0.0.0", 1).loopback
    assert token_for(Bind("127.0.0.1", 1), None) is None
    generated = token_for(Bind("0.0.0.0", 1), None)
    assert generated and len(generated) >= 20
    assert token_for(Bind("0.0.0.0", 1), None) != generated
    with pytest.raises(WebError):
        token_for(Bind("0.0.0.0", 1), "short")


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def test_a_non_loopback_bind_requires_its_token() -> None:
    bind = Bind("0.0.0.0", 0)
    token = token_for(bind, None)
    server = DashboardServer(_state(), bind, token=token)
    bound = server.start()
    try:
        # requests only ever go to this machine's loopback address
        base = f"http://127.0.0.1:{bound.port}"
        assert _get(base + "/api/state") == 401
        assert _get(base + f"/api/state?token={token}") == 200
        assert bound.url(token).endswith(f"?token={token}")
    finally:
        server.stop()


def test_a_busy_port_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(WebError, match=f"cannot listen on 127.0.0.1:{port}"):
            DashboardServer(StationState(), Bind("127.0.0.1", port)).start()
