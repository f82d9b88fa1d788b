"""SIGTERM and SIGHUP end a run the way Ctrl-C does: in-flight devices are marked interrupted,
the summary and the error line are printed, and the exit status is 128 + the signal number
(130 SIGINT, 143 SIGTERM, 129 SIGHUP), as a shell reports a process the signal killed."""

from __future__ import annotations

import signal
import threading
from typing import Callable

from .errors import HungUp, Interrupted, Terminated

HANDLED = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class StopSignal(KeyboardInterrupt):
    """Raised in the main thread when a stop signal arrives; caught wherever Ctrl-C is."""

    def __init__(self, number: int):
        super().__init__(signal.Signals(number).name)
        self.number = number


def install() -> Callable[[], None]:
    """Make SIGTERM and SIGHUP raise :class:`StopSignal`; returns a function that restores the
    previous handlers. Does nothing outside the main thread (Python allows handlers only there)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    # A signal the parent set to be ignored (nohup, a supervisor) stays ignored.
    previous = {number: signal.signal(number, _raise) for number in HANDLED
                if signal.getsignal(number) is not signal.SIG_IGN}

    def restore() -> None:
        for number, handler in previous.items():
            signal.signal(number, handler)

    return restore


def _raise(number: int, _frame: object) -> None:
    raise StopSignal(number)


def interruption(stop: BaseException, what: str = "interrupted") -> Interrupted:
    """The error for a Ctrl-C (KeyboardInterrupt) or a stop signal."""
    number = getattr(stop, "number", signal.SIGINT)
    kind = {signal.SIGTERM: Terminated, getattr(signal, "SIGHUP", None): HungUp}.get(
        number, Interrupted)
    return kind(f"{what} ({signal.Signals(number).name})")
