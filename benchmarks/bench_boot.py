"""End-to-end timings of the boot engine against the in-process virtual Raspberry Pi.

Run either way:

    python3 -m pytest benchmarks -q          # pytest-benchmark tables
    python3 benchmarks/bench_boot.py         # plain figures, no pytest needed

What is measured (all through :func:`rpiboot.api.boot`, the same code that serves real devices):

* a two-stage BCM2711 boot: ROM (bootcode4.bin) then a file server loading config.txt,
  start4.elf and a 4 MiB kernel8.img;
* four devices (2711, 2712, 2835, 2837) booted at once, the same payload each;
* throughput of one 64 MiB file (sparse on disk; the virtual Pi hashes instead of keeping it).

The virtual bus has no USB latency, so these figures are the host's own overhead: protocol
handling, file streaming and thread scheduling. Real USB 2.0 caps out near 35-40 MB/s.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import tracemalloc
import time
from pathlib import Path

from rpiboot.api import boot
from rpiboot.options import BootOptions
from rpiboot.simulator import typical_pi
from rpiboot.simulator.in_process import VirtualBus

MIB = 1024 * 1024
KERNEL_SIZE = 4 * MIB
LARGE_SIZE = 64 * MIB
FILES = ("config.txt", "start4.elf", "kernel8.img")


def make_boot_dir(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "bootcode.bin").write_bytes(os.urandom(52_000))
    for chip, name in (("2711", "bootcode4.bin"), ("2712", "bootcode5.bin")):
        (root / chip).mkdir(exist_ok=True)
        (root / chip / name).write_bytes(os.urandom(80_000))
    (root / "config.txt").write_bytes(b"arm_64bit=1\nenable_uart=1\n")
    (root / "start4.elf").write_bytes(os.urandom(2 * MIB))
    (root / "kernel8.img").write_bytes(os.urandom(KERNEL_SIZE))
    with open(root / "large.img", "wb") as stream:
        stream.truncate(LARGE_SIZE)
    return root


def options(directory: Path) -> BootOptions:
    return BootOptions(directory=directory, timeout=10, run_timeout=120, stall_timeout=5,
                       read_timeout=1, poll_interval=0.001)


def boot_once(directory: Path, chips: tuple[str, ...], files: tuple[str, ...] = FILES) -> int:
    pis = [typical_pi(chip, (index + 1,), files=files, keep_data=False,
                      serial=f"b0{index:06x}")
           for index, chip in enumerate(chips)]
    result = boot(options(directory), transport=VirtualBus(pis))
    if int(result.exit_code) != 0 or any(pi.violations for pi in pis):
        raise RuntimeError(f"benchmark boot failed: {result.exit_code}, "
                           f"{[pi.violations for pi in pis]}")
    return sum(session.bytes_sent for session in result.sessions)


# --- pytest-benchmark ------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # running as a script without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    @pytest.fixture(scope="module")
    def boot_dir(tmp_path_factory):  # type: ignore[no-untyped-def]
        return make_boot_dir(tmp_path_factory.mktemp("bench") / "boot")

    def test_bench_two_stage_2711(benchmark, boot_dir):  # type: ignore[no-untyped-def]
        sent = benchmark.pedantic(boot_once, args=(boot_dir, ("2711",)), rounds=10,
                                  warmup_rounds=1)
        assert sent > KERNEL_SIZE

    def test_bench_four_devices(benchmark, boot_dir):  # type: ignore[no-untyped-def]
        sent = benchmark.pedantic(boot_once, args=(boot_dir, ("2711", "2712", "2835", "2837")),
                                  rounds=5, warmup_rounds=1)
        assert sent > 4 * KERNEL_SIZE

    def test_bench_64mib_file(benchmark, boot_dir):  # type: ignore[no-untyped-def]
        sent = benchmark.pedantic(boot_once, args=(boot_dir, ("2712",), ("large.img",)),
                                  rounds=3, warmup_rounds=0)
        assert sent > LARGE_SIZE
        if benchmark.stats is not None:  # None with --benchmark-disable
            benchmark.extra_info["MB/s"] = round(
                LARGE_SIZE / 1e6 / benchmark.stats.stats.mean, 1)


# --- as a script ---------------------------------------------------------------------------------------

def _measure(label: str, rounds: int, function, *args) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(rounds):
        began = time.perf_counter()
        function(*args)
        times.append(time.perf_counter() - began)
    median = statistics.median(times)
    print(f"{label:<48} median {median * 1000:8.1f} ms  (min {min(times) * 1000:.1f}, "
          f"max {max(times) * 1000:.1f}, {rounds} rounds)")
    return median


def _peak_memory(function, *args) -> int:  # type: ignore[no-untyped-def]
    tracemalloc.start()
    try:
        function(*args)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def main() -> int:
    with tempfile.TemporaryDirectory() as temporary:
        directory = make_boot_dir(Path(temporary) / "boot")
        boot_once(directory, ("2711",))  # warm-up
        one = _measure("two-stage BCM2711 boot (ROM + 3 files, 6.1 MiB)", 10, boot_once,
                       directory, ("2711",))
        four = _measure("four devices at once (2711/2712/2835/2837)", 5, boot_once, directory,
                        ("2711", "2712", "2835", "2837"))
        large = _measure("one 64 MiB file (2712, ROM + file)", 3, boot_once, directory,
                         ("2712",), ("large.img",))
        peak = _peak_memory(boot_once, directory, ("2712",), ("large.img",))
        print(f"four devices vs one: {four / one:.2f}x the time of one")
        print(f"peak Python memory while serving the 64 MiB file: {peak / MIB:.1f} MiB "
              f"(tracemalloc; the file is streamed in {BootOptions().chunk_size // 1024} KiB "
              f"chunks)")
        print(f"64 MiB throughput: {LARGE_SIZE / 1e6 / large:.0f} MB/s "
              f"({LARGE_SIZE / MIB / large:.0f} MiB/s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
