"""The device manager: filters, concurrency, loop mode and when a run stops."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rpiboot.simulator import RomStage, ServerStage, VirtualPi, typical_pi
from rpiboot.simulator.script import load, done

from engine_support import (HandleProxy, WrappingBus, assert_received_exactly, fast_options, ok_session,
                      run_boot)


# --- filters ------------------------------------------------------------------------------------

def test_port_number_filter(boot_dir: Path) -> None:
    wanted = typical_pi("2711", (1, 3), files=("config.txt",))
    others = [typical_pi("2711", (1, 2), files=("config.txt",)),
              typical_pi("2712", (4,), files=("config.txt",))]
    run = run_boot([others[0], wanted, others[1]], fast_options(boot_dir, port_number=3))
    assert run.exit_code == 0
    assert [s.port for s in run.result.sessions] == ["1-1.3"]
    assert_received_exactly(wanted, boot_dir, ["config.txt"])
    assert all(pi.received == [] for pi in others)


def test_port_path_filter(boot_dir: Path) -> None:
    wanted = typical_pi("2835", (3, 1), files=("start.elf",))
    other = typical_pi("2835", (3, 2), files=("start.elf",))
    run = run_boot([other, wanted], fast_options(boot_dir, port_path="1-3.1", verbose=2))
    assert run.exit_code == 0
    assert [s.port for s in run.result.sessions] == ["1-3.1"]
    assert_received_exactly(wanted, boot_dir, ["start.elf"])
    assert other.received == []
    ignored = run.events.of("device_ignored", "1-3.2")
    assert ignored and "1-3.2" in ignored[0].data["reason"]


def _serial_pi(serial: str, port: int) -> VirtualPi:
    # A BCM2711 ROM (iSerialNumber 3) reports a serial string, as upstream's -i relies on.
    return VirtualPi("2711", (port,), stages=[
        RomStage(serial_index=3, serial=serial),
        ServerStage(load("config.txt") + [done()], serial=serial)])


def test_serial_filter(boot_dir: Path) -> None:
    wanted, other = _serial_pi("cafe0001", 2), _serial_pi("cafe0002", 1)
    run = run_boot([other, wanted], fast_options(boot_dir, serial="cafe0001"))
    assert run.exit_code == 0
    assert [s.port for s in run.result.sessions] == ["1-2"]
    assert run.result.sessions[0].serial == "cafe0001"
    assert_received_exactly(wanted, boot_dir, ["config.txt"])
    assert other.received == []


def test_filter_matching_nothing_times_out_with_4(boot_dir: Path) -> None:
    pi = typical_pi("2711", (1,))
    run = run_boot([pi], fast_options(boot_dir, port_number=7, timeout=0.3))
    assert run.exit_code == 4
    assert pi.received == []


# --- concurrency ----------------------------------------------------------------------------------

class RendezvousBus(WrappingBus):
    """Every file server's first request read waits until all ``parties`` file servers are
    inside it. If the engine served devices one after the other, the barrier would break."""

    def __init__(self, pis, parties: int):  # type: ignore[no-untyped-def]
        self.barrier = threading.Barrier(parties, timeout=5)
        self.broken: list[str] = []
        self.inside: list[str] = []
        super().__init__(pis)

    def wrap_handle(self, info, handle):  # type: ignore[no-untyped-def]
        if info.serial_index in (0, 3):
            return handle
        bus = self

        class Waiting(HandleProxy):
            waited = False

            def vendor_in(self, value, index, length, timeout):  # type: ignore[no-untyped-def]
                if not self.waited:
                    self.waited = True
                    bus.inside.append(info.port_path)
                    try:
                        bus.barrier.wait()
                    except threading.BrokenBarrierError:
                        bus.broken.append(info.port_path)
                return handle.vendor_in(value, index, length, timeout)

        return Waiting(info, handle)


@pytest.mark.parametrize("count", [2, 4])
def test_devices_are_served_concurrently(boot_dir: Path, count: int) -> None:
    chips = ["2711", "2712", "2835", "2837"]
    pis = [typical_pi(chips[i], (i + 1,), files=("config.txt",), serial=f"serial{i}")
           for i in range(count)]
    bus = RendezvousBus(pis, count)
    run = run_boot(pis, fast_options(boot_dir, stall_timeout=10, read_timeout=10), bus=bus)
    assert bus.broken == [], "file servers did not run at the same time"
    assert sorted(bus.inside) == sorted(pi.port_path for pi in pis)
    assert run.exit_code == 0
    for pi in pis:
        assert_received_exactly(pi, boot_dir, ["config.txt"])
        ok_session(run, pi.port_path)
    # Event order agrees: every server stage started before any of them was done.
    kinds = [(e.kind, e.data.get("stage")) for e in run.events.items]
    last_start = max(i for i, k in enumerate(kinds) if k == ("stage_started", "server"))
    first_done = min(i for i, k in enumerate(kinds) if k == ("stage_done", "server"))
    assert last_start < first_done


def test_failure_of_one_device_does_not_stop_another(boot_dir: Path) -> None:
    good = typical_pi("2711", (1,), files=("config.txt",))
    bad = VirtualPi("2712", (2,), stages=[RomStage(return_code=5)])
    run = run_boot([good, bad], fast_options(boot_dir))
    assert run.exit_code == 6  # the worst outcome wins
    ok_session(run, "1-1")
    assert_received_exactly(good, boot_dir, ["config.txt"])


# --- loop mode and stopping ------------------------------------------------------------------------

def test_loop_serves_devices_arriving_over_time(boot_dir: Path) -> None:
    first = typical_pi("2711", (1,), files=("config.txt",))
    later = [typical_pi("2712", (2,), files=("config.txt",)),
             typical_pi("2835", (3,), files=("start.elf",))]
    from rpiboot.simulator.in_process import VirtualBus
    bus = VirtualBus([first])
    timers = [threading.Timer(0.15 * (i + 1), bus.plug_in, (pi,)) for i, pi in enumerate(later)]
    for timer in timers:
        timer.start()
    try:
        run = run_boot([], fast_options(boot_dir, loop=True, timeout=0.6), bus=bus)
    finally:
        for timer in timers:
            timer.cancel()
    assert run.exit_code == 0
    assert sorted(s.port for s in run.result.sessions) == ["1-1", "1-2", "1-3"]
    assert_received_exactly(first, boot_dir, ["config.txt"])
    assert_received_exactly(later[0], boot_dir, ["config.txt"])
    assert_received_exactly(later[1], boot_dir, ["start.elf"])


def test_loop_stops_at_run_timeout(boot_dir: Path) -> None:
    pi = typical_pi("2711", (1,), files=("config.txt",))
    run = run_boot([pi], fast_options(boot_dir, loop=True, timeout=None, run_timeout=0.5))
    assert run.exit_code == 0
    ok_session(run, "1-1")


def test_loop_with_no_device_at_all_is_4(boot_dir: Path) -> None:
    run = run_boot([], fast_options(boot_dir, loop=True, timeout=None, run_timeout=0.3))
    assert run.exit_code == 4


def test_without_loop_the_run_ends_after_the_first_device(boot_dir: Path) -> None:
    from rpiboot.simulator.in_process import VirtualBus
    first = typical_pi("2711", (1,), files=("config.txt",))
    second = typical_pi("2712", (2,), files=("config.txt",))
    bus = VirtualBus([first])

    def plug_second(item):  # type: ignore[no-untyped-def]
        if item.kind == "device_done":
            bus.plug_in(second)  # arrives once the first is complete: must be left alone

    from rpiboot.api import boot
    result = boot(fast_options(boot_dir, timeout=5), on_event=plug_second, transport=bus)
    assert int(result.exit_code) == 0
    assert [s.port for s in result.sessions] == ["1-1"]
    assert second.stage_index == 0 and second.received == []


def test_with_loop_a_device_arriving_after_the_first_is_served(boot_dir: Path) -> None:
    from rpiboot.simulator.in_process import VirtualBus
    first = typical_pi("2711", (1,), files=("config.txt",))
    second = typical_pi("2712", (2,), files=("config.txt",))
    bus = VirtualBus([first])

    def plug_second(item):  # type: ignore[no-untyped-def]
        if item.kind == "device_done" and item.port == "1-1":
            bus.plug_in(second)

    from rpiboot.api import boot
    result = boot(fast_options(boot_dir, loop=True, timeout=0.5), on_event=plug_second,
                  transport=bus)
    assert int(result.exit_code) == 0
    assert sorted(s.port for s in result.sessions) == ["1-1", "1-2"]
    assert_received_exactly(second, boot_dir, ["config.txt"])


def test_no_device_within_timeout_is_4(boot_dir: Path) -> None:
    run = run_boot([], fast_options(boot_dir, timeout=0.2))
    assert run.exit_code == 4
    assert run.result.error is not None and run.result.error.code == "no_device"
    summary = run.events.of("summary")[0]
    assert summary.data["exit_code"] == 4


def test_polling_without_hotplug_still_finds_late_devices(boot_dir: Path) -> None:
    from rpiboot.simulator.in_process import VirtualBus
    pi = typical_pi("2712", (1,), files=("config.txt",), reenumerate_delay=0.05)
    bus = VirtualBus([], hotplug=False)
    timer = threading.Timer(0.1, bus.plug_in, (pi,))
    timer.start()
    try:
        run = run_boot([], fast_options(boot_dir, timeout=2), bus=bus)
    finally:
        timer.cancel()
    assert run.exit_code == 0
    assert_received_exactly(pi, boot_dir, ["config.txt"])
