"""--timeout, --run-timeout, --stall-timeout, --reenumerate-timeout and bounded retries."""

from __future__ import annotations

import time

from rpiboot.errors import ExitCode
from rpiboot.simulator import RomStage, ServerStage, VirtualPi, typical_pi
from rpiboot.simulator.script import load
from rpiboot.simulator.virtual_pi import Stall

from operator_support import run


def _failure(events, port="1-1"):
    failed = [item for item in events.of("device_failed") if item.port == port]
    assert failed, events.kinds()
    return failed[0].data


def test_stalled_file_server_is_bounded_by_stall_timeout() -> None:
    pi = typical_pi("2711", (1,))
    pi.stages[1] = ServerStage(load("config.txt"), stall_at_request=1)
    began = time.monotonic()
    result, events = run([pi], stall_timeout=0.4, read_timeout=0.1)
    elapsed = time.monotonic() - began
    assert result.exit_code == ExitCode.TRANSFER
    failure = _failure(events)
    assert failure["code"] == "stalled"
    assert "0.4 s" in failure["message"]
    assert elapsed < 2.0


def test_device_that_never_comes_back_after_the_rom() -> None:
    pi = VirtualPi("2712", (1,), stages=[RomStage()])
    began = time.monotonic()
    result, events = run([pi], reenumerate_timeout=0.3)
    assert time.monotonic() - began < 2.0
    failure = _failure(events)
    assert failure["code"] == "device_gone"
    assert "did not come back within 0.3 s" in failure["message"]
    assert result.exit_code == ExitCode.TRANSFER


def test_open_retries_give_the_reason_when_they_run_out() -> None:
    pi = typical_pi("2711", (1,), open_error="resource busy")
    result, events = run([pi], retries=3)
    failure = _failure(events)
    assert failure["code"] == "transfer"
    assert "cannot open device 1-1" in failure["message"]
    assert "resource busy" in failure["message"]


class _FailingServer(VirtualPi):
    """A file server whose request reads always fail with a pipe error."""

    reads = 0

    def vendor_in(self, function, length, buffer_size):  # type: ignore[override]
        if isinstance(self.stages[self.stage_index], ServerStage):
            self.reads += 1
            raise Stall("broken pipe on purpose")
        return super().vendor_in(function, length, buffer_size)


def test_request_read_retries_give_the_reason_when_they_run_out() -> None:
    pi = _FailingServer("2711", (1,))
    result, events = run([pi], retries=2)
    failure = _failure(events)
    assert failure["code"] == "transfer"
    assert "failed 2 times" in failure["message"]  # --retries counts attempts
    assert "broken pipe on purpose" in failure["message"]
    assert pi.reads == 2
    assert result.exit_code == ExitCode.TRANSFER


def test_timeout_without_device_ends_the_run() -> None:
    began = time.monotonic()
    result, events = run([], timeout=0.2)
    assert 0.15 < time.monotonic() - began < 1.5
    assert result.exit_code == ExitCode.NO_DEVICE
    assert result.error is not None and "0.2 s" in str(result.error)
    assert events.kinds()[-1] == "summary"


def test_loop_ends_after_idle_timeout_with_success() -> None:
    pis = [typical_pi("2711", (1,)), typical_pi("2712", (2,))]
    began = time.monotonic()
    result, events = run(pis, loop=True, timeout=0.3)
    assert time.monotonic() - began < 2.0
    assert result.exit_code == ExitCode.OK
    assert len(events.of("device_done")) == 2


def test_run_timeout_abandons_a_slow_device() -> None:
    pi = typical_pi("2711", (1,))
    pi.stages[1] = ServerStage(load("config.txt"), stall_at_request=1)
    began = time.monotonic()
    result, events = run([pi], run_timeout=0.4, stall_timeout=1.0, read_timeout=0.1)
    assert time.monotonic() - began < 1.5
    failure = _failure(events)
    assert failure["code"] == "stalled"
    assert "run time limit of 0.4 s" in failure["message"]
    assert result.exit_code == ExitCode.TRANSFER


def test_no_event_after_the_summary_when_a_worker_ends_late() -> None:
    pi = typical_pi("2711", (1,))
    pi.stages[1] = ServerStage(load("config.txt"), stall_at_request=1)
    result, events = run([pi], run_timeout=0.3, stall_timeout=0.6, read_timeout=0.1,
                         bulk_timeout=0.05, control_timeout=0.05)
    time.sleep(0.8)  # the worker gives up on its own stall timeout by now
    assert events.kinds()[-1] == "summary"
    assert len(events.of("device_failed")) == 1
