"""The station dashboard as an ASGI application (Starlette).

Routes: ``/`` the page, ``/static/*`` its script and style, ``/api/state`` the station as JSON
(ports, the run's totals, today's totals from the ledger, the last boards), ``/api/events`` the
same object pushed as Server-Sent Events whenever it changes, ``/api/boards`` the ledger's last
boards (``?search=``, ``?limit=``), ``/api/boards.csv`` the same as CSV. Everything is read-only.

With a token every route needs it: ``Authorization: Bearer TOKEN``, or ``?token=TOKEN`` once,
which sets a cookie for the page's own requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import hmac
import io
import json
import time
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from typing import Any, AsyncIterator, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .state import StationState

TOKEN_COOKIE = "rpiboot_token"
HEARTBEAT_SECONDS = 15.0
RECENT_LIMIT = 50
RECENT_ON_PAGE = 12
LEDGER_REFRESH = 5.0
EXPORT_LIMIT = 100_000
CSV_FIELDS = ("serial", "chip", "port", "station", "unit", "result", "error", "image_sha256",
              "bytes_written", "verified", "started", "finished")

LedgerFactory = Callable[[], Any]
"""Opens a ledger (rpiboot.provision.ledger.Ledger) in the thread that will use it."""


def json_body(value: Any) -> bytes:
    """JSON that stays valid whatever a device sent (ASCII escapes, lone surrogates too)."""
    return json.dumps(value, ensure_ascii=True, separators=(",", ":"), default=str).encode()


class LedgerReader:
    """The ledger's read side for the dashboard, on one thread of its own (database
    connections are tied to the thread that opened them)."""

    def __init__(self, factory: LedgerFactory | None):
        self._factory = factory
        self._ledger: Any = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dashboard-ledger")
        self._view: dict[str, Any] | None = None
        self._view_key: tuple[int, int] | None = None

    async def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        if self._factory is None:
            return None
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._call, method, args, kwargs)

    async def view(self, finished: int) -> dict[str, Any] | None:
        """Today's totals and the last boards, read again when a board finished or after
        :data:`LEDGER_REFRESH` seconds (progress updates must not hammer the database).
        An unreachable ledger is shown on the page, never fatal."""
        key = (finished, int(time.monotonic() // LEDGER_REFRESH))
        if self._view_key != key:
            try:
                today = await self.call("totals", _start_of_today())
                recent = await self.call("recent", limit=RECENT_ON_PAGE)
                self._view = None if self._factory is None else {"today": today,
                                                                 "recent": recent or []}
            except Exception as error:
                self._view = {"error": f"ledger unavailable: {error}"[:300]}
            self._view_key = key
        return self._view

    def _call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._ledger is None:
            assert self._factory is not None
            self._ledger = self._factory()
        try:
            return getattr(self._ledger, method)(*args, **kwargs)
        except Exception:
            self._drop()
            raise

    def _drop(self) -> None:
        ledger, self._ledger = self._ledger, None
        try:
            if ledger is not None:
                ledger.close()
        except Exception:
            pass

    def close(self) -> None:
        self._executor.submit(self._drop)
        self._executor.shutdown(wait=True)


class TokenGate:
    """ASGI middleware: every request needs the token (header, cookie or ``?token=``)."""

    def __init__(self, app: ASGIApp, token: str | None):
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.token is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        offered = _offered_token(request)
        if offered is None or not hmac.compare_digest(offered.encode(), self.token.encode()):
            response = PlainTextResponse(
                "this dashboard needs its access token: open the address printed by "
                "rpiboot-provision (…?token=…)\n", status_code=401,
                headers={"WWW-Authenticate": "Bearer"})
            await response(scope, receive, send)
            return
        if request.query_params.get("token") is not None:
            await self._set_cookie(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _set_cookie(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_cookie(message: Message) -> None:
            if message["type"] == "http.response.start":
                cookie = (f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict")
                message.setdefault("headers", []).append((b"set-cookie", cookie.encode()))
            await send(message)
        await self.app(scope, receive, send_with_cookie)


def _offered_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.query_params.get("token") or request.cookies.get(TOKEN_COOKIE)


def create_app(state: StationState, *, ledger: LedgerFactory | None = None,
               token: str | None = None) -> Starlette:
    """The dashboard for ``state``; ``ledger`` opens the ledger for totals and history."""
    reader = LedgerReader(ledger)

    async def page(request: Request) -> Response:
        return _static("index.html", "text/html; charset=utf-8")

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        kinds = {"app.js": "text/javascript; charset=utf-8", "style.css": "text/css; charset=utf-8"}
        if name not in kinds:
            return PlainTextResponse("not found\n", status_code=404)
        return _static(name, kinds[name])

    async def api_state(request: Request) -> Response:
        return Response(json_body(await _full_state(state, reader)),
                        media_type="application/json")

    async def api_events(request: Request) -> Response:
        return StreamingResponse(_event_stream(request, state, reader),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def api_boards(request: Request) -> Response:
        boards = await _recent(reader, request, RECENT_LIMIT)
        return Response(json_body(boards), media_type="application/json")

    async def api_boards_csv(request: Request) -> Response:
        boards = await _recent(reader, request, EXPORT_LIMIT)
        return Response(_csv(boards), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": 'attachment; filename="boards.csv"'})

    routes = [Route("/", page), Route("/static/{name}", static),
              Route("/api/state", api_state), Route("/api/events", api_events),
              Route("/api/boards", api_boards), Route("/api/boards.csv", api_boards_csv)]
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        reader.close()

    return Starlette(routes=routes, middleware=[Middleware(TokenGate, token=token)],
                     lifespan=lifespan)


def _static(name: str, media_type: str) -> Response:
    body = resources.files(__package__).joinpath("static", name).read_bytes()
    return Response(body, media_type=media_type,
                    headers={"Content-Security-Policy": "default-src 'self'; "
                             "img-src 'self' data:; style-src 'self'; script-src 'self'",
                             "X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})


async def _full_state(state: StationState, reader: LedgerReader) -> dict[str, Any]:
    snapshot = state.snapshot()
    snapshot["ledger"] = await reader.view(_finished_count(snapshot))
    return snapshot


def _finished_count(snapshot: dict[str, Any]) -> int:
    run = snapshot["run"]
    return int(run["ok"] + run["failed"] + run["skipped"])


async def _recent(reader: LedgerReader, request: Request, cap: int) -> list[dict[str, Any]]:
    search = request.query_params.get("search") or None
    try:
        limit = min(max(int(request.query_params.get("limit", cap)), 1), cap)
    except ValueError:
        limit = cap
    return list(await reader.call("recent", limit=limit, search=search) or [])


async def _event_stream(request: Request, state: StationState,
                        reader: LedgerReader) -> AsyncIterator[bytes]:
    """The full state at once, then again on every change; a comment now and then keeps
    proxies from closing an idle stream."""
    version = -1
    last_sent = 0.0
    while not await request.is_disconnected():
        if state.version != version:
            version = state.version
            yield b"event: state\ndata: " + json_body(await _full_state(state, reader)) + b"\n\n"
            last_sent = time.monotonic()
        elif time.monotonic() - last_sent > HEARTBEAT_SECONDS:
            yield b": still here\n\n"
            last_sent = time.monotonic()
        await asyncio.sleep(0.2)


def _csv(boards: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for board in boards:
        writer.writerow({key: _csv_cell(board.get(key)) for key in CSV_FIELDS})
    return out.getvalue()


def _csv_cell(value: Any) -> Any:
    """A cell a spreadsheet will not run as a formula (device strings are untrusted)."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def _start_of_today() -> float:
    now = time.localtime()
    return time.mktime((now.tm_year, now.tm_mon, now.tm_mday, 0, 0, 0, 0, 0, -1))
