"""The Python API: rpiboot.boot(options, on_event=callback) over a VirtualBus."""

from __future__ import annotations

import rpiboot
from rpiboot import BootOptions, Event
from rpiboot.errors import BootDirectoryError, ExitCode
from rpiboot.simulator import typical_pi
from rpiboot.simulator.in_process import VirtualBus

from operator_support import DEMO_DIR


def test_boot_with_a_callback_collecting_events() -> None:
    seen: list[Event] = []
    pis = [typical_pi("2711", (1,), serial="cafe0001"), typical_pi("2712", (2,))]
    result = rpiboot.boot(BootOptions(directory=DEMO_DIR, timeout=2.0),
                          on_event=seen.append, transport=VirtualBus(pis))
    assert result.exit_code == ExitCode.OK == 0
    assert seen[0].kind == "start" and seen[-1].kind == "summary"
    done = {item.port: item.data for item in seen if item.kind == "device_done"}
    assert set(done) == {"1-1", "1-2"}
    assert done["1-1"]["serial"] == "cafe0001"
    served = [item.data["name"] for item in seen
              if item.kind == "file_served" and item.port == "1-1"]
    assert served == ["config.txt", "start.elf"]
    assert pis[0].files()["config.txt"] == (DEMO_DIR / "config.txt").read_bytes()
    assert [s.port for s in result.sessions] == ["1-1", "1-2"]
    assert all(isinstance(item.to_dict()["time"], float) for item in seen)


def test_a_failing_callback_does_not_stop_the_boot(capsys) -> None:
    def broken(item: Event) -> None:
        raise RuntimeError("bug in the caller")

    result = rpiboot.boot(BootOptions(directory=DEMO_DIR, timeout=2.0), on_event=broken,
                          transport=VirtualBus([typical_pi("2711", (1,))]))
    assert result.exit_code == ExitCode.OK
    assert "event callback failed" in capsys.readouterr().err


def test_problems_before_any_device_raise(tmp_path) -> None:
    try:
        rpiboot.boot(BootOptions(directory=tmp_path / "missing"), transport=VirtualBus([]))
    except BootDirectoryError as error:
        assert error.code == "boot_directory" and error.exit_code == 3
    else:
        raise AssertionError("no error")


def test_device_failures_are_in_the_result() -> None:
    pi = typical_pi("2711", (1,), open_error="access")
    result = rpiboot.boot(BootOptions(directory=DEMO_DIR, timeout=2.0),
                          transport=VirtualBus([pi]))
    assert result.exit_code == ExitCode.PERMISSION
    (session,) = result.sessions
    assert session.error is not None and session.error.code == "permission"
    assert session.summary()["result"] == "failed"
