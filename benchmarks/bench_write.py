"""The provisioning write path: throughput, CPU of a fan-out, memory with a large image.

Run either way:

    python3 benchmarks/bench_write.py [--size-mib 512] [--dir DIR]   # plain figures
    python3 -m pytest benchmarks/bench_write.py -q                   # a small pytest-benchmark

What is measured (targets are regular files in ``--dir``, default the system's temporary
directory; a real disk behind USB is far slower than either tool here):

1. throughput of :func:`write_image` (sha256 of the image and of each written range included)
   against ``dd if=IMAGE of=TARGET bs=4M conv=fsync,notrunc`` of the same raw image into the
   same pre-allocated target file;
2. CPU time (user + system, ``resource.getrusage``, all threads) of decompressing one ``.xz``
   image and writing it to 1 target, and to 4 targets through one :class:`FanOut`, next to
   decompression alone;
3. peak resident memory (``ru_maxrss`` of a fresh child process) writing a sparse raw image of
   256 MiB and of 2 GiB: it must not grow with the image.
"""

from __future__ import annotations

import argparse
import lzma
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rpiboot.provision.fan_out import fan_out
from rpiboot.provision.image_source import open_image
from rpiboot.provision.writer import SharedDigests, write_image

MIB = 1 << 20


def make_raw_image(path: Path, size: int) -> Path:
    """A raw image: random 1 MiB blocks alternating with compressible text and zeros."""
    pattern = [os.urandom(MIB), b"rpiboot provisioning " * (MIB // 21) + bytes(MIB % 21),
               bytes(MIB)]
    with open(path, "wb") as handle:
        for index in range(size // MIB):
            handle.write(pattern[index % 3])
    return path


def make_xz(raw: Path) -> Path:
    target = raw.with_name(raw.name + ".xz")
    if shutil.which("xz"):
        subprocess.run(["xz", "-k", "-f", "-1", "-T2", str(raw)], check=True)
    else:
        target.write_bytes(lzma.compress(raw.read_bytes(), preset=1))
    return target


def target_file(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
    return path


def write_with_provision(image: Path, target: Path) -> float:
    source = open_image(image)
    began = time.perf_counter()
    fd = os.open(target, os.O_WRONLY)
    try:
        write_image(source.chunks(), fd, disk_size=target.stat().st_size, image_size=source.size,
                    hash_image=False)
    finally:
        os.close(fd)
    return time.perf_counter() - began


def write_with_dd(image: Path, target: Path) -> float:
    began = time.perf_counter()
    subprocess.run(["dd", f"if={image}", f"of={target}", "bs=4M", "conv=fsync,notrunc",
                    "status=none"], check=True)
    return time.perf_counter() - began


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def fan_out_cpu(image: Path, targets: list[Path]) -> tuple[float, float]:
    """(CPU seconds, wall seconds) to decompress ``image`` once and write it to ``targets``."""
    source = open_image(image)
    digests = SharedDigests()

    def writer(target: Path):  # type: ignore[no-untyped-def]
        def write(feed):  # type: ignore[no-untyped-def]
            fd = os.open(target, os.O_WRONLY)
            try:
                return write_image(feed, fd, disk_size=target.stat().st_size,
                                   image_size=source.size, hash_image=False, digests=digests)
            finally:
                os.close(fd)
        return write

    cpu, wall = cpu_seconds(), time.perf_counter()
    if targets:
        results = fan_out(source.chunks(), [writer(t) for t in targets])
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            raise failed[0]
    else:
        for _chunk in source.chunks():
            pass
    return cpu_seconds() - cpu, time.perf_counter() - wall


def peak_rss_child(image: Path, target: Path) -> int:
    """ru_maxrss (KiB) of a fresh interpreter that writes ``image`` to ``target``."""
    code = ("import os,sys\n"
            "from rpiboot.provision.image_source import open_image\n"
            "from rpiboot.provision.writer import write_image\n"
            "s = open_image(sys.argv[1]); fd = os.open(sys.argv[2], os.O_WRONLY)\n"
            "write_image(s.chunks(), fd, disk_size=os.fstat(fd).st_size or s.size,"
            " image_size=s.size)\n")
    process = subprocess.Popen([sys.executable, "-c", code, str(image), str(target)])
    _pid, status, usage = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"child failed with status {status}")
    return usage.ru_maxrss


def sparse(path: Path, size: int) -> Path:
    with open(path, "wb") as handle:
        handle.truncate(size)
        handle.seek(size // 2)
        handle.write(b"middle")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mib", type=int, default=512)
    parser.add_argument("--dir", type=Path, default=None)
    parser.add_argument("--rounds", type=int, default=3)
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=options.dir) as temporary:
        root = Path(temporary)
        size = options.size_mib * MIB
        raw = make_raw_image(root / "os.img", size)
        target = target_file(root / "target.bin", size)
        ours = statistics.median(write_with_provision(raw, target) for _ in range(options.rounds))
        dd = statistics.median(write_with_dd(raw, target) for _ in range(options.rounds))
        print(f"raw {options.size_mib} MiB to a file: write_image {size / MIB / ours:.0f} MiB/s,"
              f" dd bs=4M conv=fsync {size / MIB / dd:.0f} MiB/s "
              f"(median of {options.rounds}; write_image hashes each 4 MiB range for verify)")

        xz = make_xz(raw)
        targets = [target_file(root / f"t{n}.bin", size) for n in range(4)]
        alone = fan_out_cpu(xz, [])
        one = fan_out_cpu(xz, targets[:1])
        four = fan_out_cpu(xz, targets)
        print(f".xz ({xz.stat().st_size / MIB:.0f} MiB -> {options.size_mib} MiB) CPU seconds: "
              f"decompress+sha256 only {alone[0]:.2f}, 1 target {one[0]:.2f}, "
              f"4 targets {four[0]:.2f} ({four[0] / one[0]:.2f}x of 1 target); wall "
              f"{alone[1]:.2f} / {one[1]:.2f} / {four[1]:.2f} s")
        for path in [raw, *targets, target]:
            path.unlink()

        for mib in (256, 2048):
            image = sparse(root / f"sparse{mib}.img", mib * MIB)
            disk = target_file(root / "sparse-target.bin", mib * MIB)
            rss = peak_rss_child(image, disk)
            print(f"sparse raw {mib} MiB image: peak RSS {rss / 1024:.0f} MiB")
            image.unlink()
            disk.unlink()
    return 0


# --- pytest-benchmark ------------------------------------------------------------------------------

try:
    import pytest
except ImportError:  # running as a script without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:
    def test_bench_write_64mib(benchmark, tmp_path):  # type: ignore[no-untyped-def]
        raw = make_raw_image(tmp_path / "os.img", 64 * MIB)
        target = target_file(tmp_path / "target.bin", 64 * MIB)
        benchmark.pedantic(write_with_provision, args=(raw, target), rounds=3, warmup_rounds=1)
        assert target.read_bytes() == raw.read_bytes()


if __name__ == "__main__":
    sys.exit(main())
