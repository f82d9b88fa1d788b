"""How a run ends while devices are still in progress: run time-out and Ctrl-C cancel them, the
verdict is fixed when the run returns, and a worker that finishes late changes nothing."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from rpiboot import manager
from rpiboot.api import boot
from rpiboot.errors import ExitCode
from rpiboot.session import State
from rpiboot.simulator import RomStage, ServerStage, VirtualPi
from rpiboot.simulator.in_process import VirtualBus
from rpiboot.simulator.script import done, load

from rpiboot.transport import DeviceGone, TransferTimeout

from engine_support import Events, HandleProxy, WrappingBus, fast_options, run_boot


def silent_server(chip: str = "2711") -> VirtualPi:
    """Serves config.txt, then never sends another request."""
    return VirtualPi(chip, (1,), stages=[
        RomStage(serial_index=3 if chip == "2711" else 0),
        ServerStage(load("config.txt") + [done()], stall_at_request=2)])


def test_run_timeout_cancels_the_worker_and_the_verdict_stays(boot_dir: Path) -> None:
    options = fast_options(boot_dir, run_timeout=0.5, stall_timeout=30.0, read_timeout=0.2)
    run = run_boot([silent_server()], options)
    assert run.exit_code == ExitCode.TRANSFER
    [session] = run.result.sessions
    assert session.state is State.FAILED and session.error is not None
    assert session.error.code == "stalled"
    time.sleep(0.6)  # longer than a read: a worker that ignored the cancel would finish now
    assert run.exit_code == ExitCode.TRANSFER
    assert session.state is State.FAILED
    assert not run.events.of("device_done")
    assert not any(t.name.startswith("rpiboot-") and t.is_alive()
                   for t in threading.enumerate())
    assert run.events.items[-1].kind == "summary"


def serving(pi: VirtualPi) -> bool:
    return pi.stage_index >= 1 and any(r.kind == "request_read" for r in pi.received)


class InterruptingBus(VirtualBus):
    """Raises KeyboardInterrupt in the manager's loop once ``ready()`` says so."""

    def __init__(self, pis: list[VirtualPi], ready):  # type: ignore[no-untyped-def]
        super().__init__(pis)
        self.ready = ready

    def wait_for_change(self, timeout: float) -> None:
        if self.ready():
            raise KeyboardInterrupt
        super().wait_for_change(timeout)


def test_ctrl_c_with_a_device_in_flight_exits_130(boot_dir: Path) -> None:
    pis = [silent_server()]
    options = fast_options(boot_dir, stall_timeout=30.0, read_timeout=0.2)
    run = run_boot(pis, options, bus=InterruptingBus(pis, lambda: serving(pis[0])))
    assert run.exit_code == ExitCode.INTERRUPTED
    [failed] = run.events.of("device_failed")
    assert failed.data["code"] == "interrupted"
    assert run.events.of("summary")[0].data["exit_code"] == ExitCode.INTERRUPTED


def test_a_real_failure_still_outranks_the_interrupt(boot_dir: Path) -> None:
    refused = VirtualPi("2712", (2,), stages=[RomStage(return_code=1)])
    pis = [silent_server(), refused]
    events = Events()
    bus = InterruptingBus(pis, lambda: serving(pis[0]) and events.of("device_failed", "1-2"))
    options = fast_options(boot_dir, stall_timeout=30.0, read_timeout=0.2)
    result = boot(options, on_event=events, transport=bus)
    assert result.exit_code == ExitCode.REFUSED
    codes = {e.port: e.data["code"] for e in events.of("device_failed")}
    assert codes == {"1-1": "interrupted", "1-2": "refused"}



class _SlowToLeaveBus(WrappingBus):
    """The silent board's next request read hangs, then finds the device gone."""

    def wrap_handle(self, info, handle):  # type: ignore[no-untyped-def]
        class SlowToLeave(HandleProxy):
            def vendor_in(self, value, index, length, timeout):  # type: ignore[no-untyped-def]
                try:
                    return self._handle.vendor_in(value, index, length, timeout)
                except TransferTimeout:
                    time.sleep(0.4)
                    raise DeviceGone("gone") from None

        return SlowToLeave(info, handle)


def test_a_worker_left_behind_emits_nothing_after_the_summary(boot_dir: Path,
                                                               monkeypatch) -> None:
    """A worker still inside a transfer when the run ends (past JOIN_GRACE) that then sees its
    device leave: the summary stays the last event."""
    monkeypatch.setattr(manager, "JOIN_GRACE", 0.0)
    options = fast_options(boot_dir, run_timeout=0.2, stall_timeout=30.0, read_timeout=0.05)
    run = run_boot([], options, bus=_SlowToLeaveBus([silent_server()]))
    time.sleep(0.8)
    assert run.exit_code == ExitCode.TRANSFER
    assert run.events.items[-1].kind == "summary", [e.kind for e in run.events.items[-3:]]
