"""End to end: rpiboot-provision on virtual boards, one .xz image, 1 and 4 boards at once.

Run either way:

    python3 -m pytest benchmarks/bench_provision.py -q     # pytest-benchmark table
    python3 benchmarks/bench_provision.py [SIZE_MIB]       # plain figures (default 256 MiB)

Each board boots the mass-storage gadget on the in-process virtual bus (no USB latency), its
disk is a file in a temporary directory, and the whole pipeline runs: boot, claim in an SQLite
ledger, write (one decompression shared by the boards of a batch), verify (read back bypassing
the page cache), record. Figures: wall time, process CPU time (user + system, all threads) and
the write rate per board. The image is half random, half zeros (compresses about 2:1).
"""

from __future__ import annotations

import lzma
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "provision"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from provision_support import board, make_boot_dirs, run_virtual, write_profile  # noqa: E402

MIB = 1 << 20


def make_image(root: Path, size: int) -> Path:
    path = root / "os.img.xz"
    compressor = lzma.LZMACompressor(preset=1)
    with open(path, "wb") as out:
        for _ in range(size // MIB):
            out.write(compressor.compress(os.urandom(MIB // 2) + bytes(MIB // 2)))
        out.write(compressor.flush())
    return path


def provision_once(root: Path, boards: int, size: int) -> dict[str, float]:
    run_dir = Path(tempfile.mkdtemp(dir=root))
    make_boot_dirs(run_dir)
    os.symlink(root / "os.img.xz", run_dir / "os.img.xz")
    profile = write_profile(run_dir / "p.toml",
                            '[boot]\ndirectory = "gadget"\n[os]\nimage = "os.img.xz"\n')
    pis = [board("2711", n, f"bench{n:04d}", run_dir / f"disk{n}.img", size + 8 * MIB)
           for n in range(1, boards + 1)]
    cpu, wall = time.process_time(), time.monotonic()
    run = run_virtual(run_dir, profile, pis, gather=2.0, timeout=600.0)
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    assert run.error is None and run.outcome.exit_code == 0, run.error or run.outcome
    writes = [e for e in run.kinds("step_done") if e["step"] == "write"]
    return {"boards": boards, "wall": wall, "cpu": cpu,
            "write_mb_s": min(size / e["seconds"] / 1e6 for e in writes),
            "batches": len({e["details"]["batch"] for e in writes})}


def main() -> None:
    size = int(sys.argv[1]) * MIB if len(sys.argv) > 1 else 256 * MIB
    with tempfile.TemporaryDirectory(prefix="bench-provision-") as directory:
        root = Path(directory)
        make_image(root, size)
        print(f"image: {size // MIB} MiB decompressed, {(root / 'os.img.xz').stat().st_size // MIB}"
              f" MiB as .xz")
        for boards in (1, 4):
            figures = provision_once(root, boards, size)
            print(f"{boards} board(s): wall {figures['wall']:.2f} s, CPU {figures['cpu']:.2f} s, "
                  f"slowest write {figures['write_mb_s']:.0f} MB/s per board, "
                  f"{figures['batches']} decompression(s)")


def test_provision_four_boards_xz(benchmark, tmp_path):  # type: ignore[no-untyped-def]
    make_image(tmp_path, 32 * MIB)
    benchmark.pedantic(provision_once, args=(tmp_path, 4, 32 * MIB), rounds=1, iterations=1)


if __name__ == "__main__":
    main()
