"""Serving the dashboard beside a provisioning run: uvicorn on a thread of its own.

``--web HOST:PORT`` binds where it is told; a loopback address needs nothing more, any other
address needs a token (``--web-token``, or one generated and printed), since the page shows
serial numbers and the line's history to whoever can reach the port.
"""

from __future__ import annotations

import ipaddress
import secrets
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable

from ..errors import ProvisionError
from .state import StationState


class WebError(ProvisionError):
    """A --web / --web-token value that cannot be used: a usage error, found before the run."""
    code = "usage"


@dataclass(frozen=True)
class Bind:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return False

    def url(self, token: str | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "[::]") else host
        return f"http://{shown}:{self.port}/" + (f"?token={token}" if token else "")


def parse_bind(text: str) -> Bind:
    """``HOST:PORT``, ``PORT`` (loopback), or ``[V6]:PORT``."""
    host, _, port_text = text.rpartition(":")
    host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise WebError(f"--web: expected HOST:PORT, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise WebError(f"--web: port {port} is out of range (0-65535)")
    return Bind(host.strip("[]") if host.startswith("[") else host, port)


def token_for(bind: Bind, given: str | None) -> str | None:
    """The token the dashboard requires: none on loopback unless given, else given or new."""
    if given is not None:
        if len(given) < 8:
            raise WebError("--web-token must be at least 8 characters")
        return given
    return None if bind.loopback else secrets.token_urlsafe(18)


class DashboardServer:
    """uvicorn serving :func:`create_app` until :meth:`stop`."""

    def __init__(self, state: StationState, bind: Bind, *, token: str | None = None,
                 ledger: object = None):
        import uvicorn  # the [line] extra: imported only when a dashboard is asked for

        from .app import create_app
        self.bind = bind
        self.token = token
        self.state = state
        app = create_app(state, ledger=ledger, token=token)  # type: ignore[arg-type]
        config = uvicorn.Config(app, host=bind.host, port=bind.port, log_level="warning",
                                access_log=False, lifespan="on")
        # uvicorn installs no signal handlers off the main thread: Ctrl-C / SIGTERM stay the
        # run's, which stops the dashboard when it ends.
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="dashboard", daemon=True)

    def start(self, timeout: float = 10.0) -> Bind:
        """Start serving; returns the bound address (the real port when 0 was asked)."""
        self._check_free()
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise WebError(f"the dashboard could not listen on {self.bind.host}:"
                               f"{self.bind.port}")
            time.sleep(0.02)
        sockets = [s for server in self._server.servers for s in server.sockets]
        port = sockets[0].getsockname()[1] if sockets else self.bind.port
        self.bind = Bind(self.bind.host, port)
        return self.bind

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)

    def _check_free(self) -> None:
        """A clear error before the run starts rather than uvicorn's log line after."""
        family = socket.AF_INET6 if ":" in self.bind.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((self.bind.host, self.bind.port))
            except OSError as error:
                raise WebError(f"--web: cannot listen on {self.bind.host}:{self.bind.port}: "
                               f"{error.strerror or error}") from None


def start_dashboard(web: str, token: str | None, *, station: str = "", profile: str = "",
                    ledger: Callable[[], object] | None = None) -> tuple[DashboardServer, str]:
    """Parse ``--web``/``--web-token``, start serving; returns the server and the address to
    open (with the token when one is needed). The server's ``state`` takes the run's events."""
    bind = parse_bind(web)
    token = token_for(bind, token)
    server = DashboardServer(StationState(station, profile), bind, token=token, ledger=ledger)
    bound = server.start()
    return server, bound.url(token)
