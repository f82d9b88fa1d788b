"""The station dashboard (``rpiboot-provision run --web HOST:PORT``): a page with a card per USB
port, the line's totals and the last boards, updated live over Server-Sent Events.

Needs the ``[line]`` extra (Starlette, uvicorn). :class:`~.state.StationState` is pure Python and
always importable; the server imports its stack only when started.
"""

from .state import StationState

__all__ = ["StationState"]
