"""Start-up time of `rpi-eeprom-config IMAGE` (print the configuration of an image).

Run either way:

    python3 benchmarks/bench_eeprom_startup.py [--rounds 20] [IMAGE]
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
    data += b"\xff" * (128 * 1024 - len(data))
    data += img.build_file_section(img.BOOTCONF_TXT, b"[all]\nBOOT_UART=1\n")
    data += b"\xff" * (512 * 1024 - len(data))
    path.write_bytes(bytes(data))
    return path


def time_command(code: str, image: Path, rounds: int) -> float:
    """Median wall time in seconds of `python -c code IMAGE` over rounds runs."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code, str(image)], check=True,
                       stdout=subprocess.DEVNULL)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def measure(image: Path, rounds: int) -> dict[str, float]:
    return {
        "python -c pass": time_command("pass", image, rounds),
        "rpi-eeprom-config IMAGE": time_command(RUN_TOOL, image, rounds),
        "eager (cryptography imported first)": time_command(f"{EAGER_IMPORTS}; {RUN_TOOL}", image, rounds),
    }


def test_eeprom_config_startup(benchmark, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    image = synthetic_image(tmp_path / "pieeprom.bin")
    benchmark.pedantic(subprocess.run, args=([sys.executable, "-c", RUN_TOOL, str(image)],),
                       kwargs={"check": True, "stdout": subprocess.DEVNULL}, rounds=5, iterations=1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", type=Path)
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        image = args.image or synthetic_image(Path(tmp) / "pieeprom.bin")
        for name, seconds in measure(image, args.rounds).items():
            print(f"{name:40s} {seconds * 1000:7.1f} ms (median of {args.rounds})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
