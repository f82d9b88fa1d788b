"""Start-up time of `rpi-eeprom-config IMAGE` (print the configuration of an image).

Run either way:

    python3 benchmarks/bench_eeprom_startup.py [--rounds 20] [--before OLD_SRC] [IMAGE]
    python3 -m pytest benchmarks -q -k eeprom_startup

Each round is a fresh interpreter (`python -m rpiboot.eeprom.config_tool IMAGE`, what the
console script runs), so the figure is the whole command: interpreter start, imports, reading
the image, printing its config. "eager" runs the same command after importing the parts of
`cryptography` the tools used to import at start-up, which is what the command cost before
`cryptography` was imported only when a key is used. Without IMAGE a synthetic 512 KiB image is
used (the time does not depend on the image's contents).
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EAGER_IMPORTS = ("import cryptography.exceptions, cryptography.hazmat.primitives.hashes, "
                 "cryptography.hazmat.primitives.serialization, "
                 "cryptography.hazmat.primitives.asymmetric.padding, "
                 "cryptography.hazmat.primitives.asymmetric.rsa")
RUN_TOOL = "import sys; from rpiboot.eeprom.config_tool import main; sys.exit(main(sys.argv[1:]))"


def synthetic_image(path: Path) -> Path:
    """A minimal valid BCM2711 image: bootcode, then bootconf.txt."""
    from rpiboot.eeprom import image as img
    bootcode = b"\x11" * 1000
    data = bytearray(struct.pack(">LL", img.MAGIC, len(bootcode)) + bootcode)
    data += b"\xff" * (img.align8(len(data)) - len(data))
    pad = 128 * 1024 - len(data)
    data += struct.pack(">LL", img.PAD_MAGIC, pad - 8) + b"\xff" * (pad - 8)
    data += img.build_file_section(img.BOOTCONF_TXT, b"[all]\nBOOT_UART=1\n")
    data += b"\xff" * (512 * 1024 - len(data))
    path.write_bytes(bytes(data))
    return path


def time_command(code: str, image: Path, rounds: int, pythonpath: str | None = None) -> tuple[float, float]:
    """Medians over rounds runs of `python -c code IMAGE`: (wall seconds, CPU seconds).

    CPU time (user + system of the child) is the steadier figure on a shared machine."""
    env = None if pythonpath is None else {**os.environ, "PYTHONPATH": pythonpath}
    walls, cpus = [], []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, str(image)], check=True,
                       stdout=subprocess.DEVNULL, env=env)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(walls), statistics.median(cpus)


def measure(image: Path, rounds: int, before: str | None) -> dict[str, tuple[float, float]]:
    results = {
        "python -c pass": time_command("pass", image, rounds),
        "rpi-eeprom-config IMAGE": time_command(RUN_TOOL, image, rounds),
        "eager (cryptography imported first)": time_command(f"{EAGER_IMPORTS}; {RUN_TOOL}", image, rounds),
    }
    if before:
        results[f"rpi-eeprom-config IMAGE from {before}"] = time_command(RUN_TOOL, image, rounds, before)
    return results


def test_eeprom_config_startup(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = synthetic_image(tmp_path / "pieeprom.bin")
    benchmark.pedantic(subprocess.run, args=([sys.executable, "-c", RUN_TOOL, str(image)],),
                       kwargs={"check": True, "stdout": subprocess.DEVNULL}, rounds=5, iterations=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--before", metavar="SRC_DIR",
                        help="also time another copy of the package (its src/ directory), e.g. "
                             "`git archive OLD src | tar -x -C DIR` then DIR/src")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image or synthetic_image(Path(tmp) / "pieeprom.bin")
        print(f"{'command':50s} {'wall':>9s} {'CPU':>9s}   (medians of {args.rounds})")
        for name, (wall, cpu) in measure(image, args.rounds, args.before).items():
            print(f"{name:50s} {wall * 1000:7.1f}ms {cpu * 1000:7.1f}ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
