"""Helpers for the umockdev tests (fixtures live in conftest.py)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, NoReturn

import pytest

IN_CI = os.environ.get("CI") == "true"
SECOND_STAGE = {"2835": "bootcode.bin", "2837": "bootcode.bin", "2711": "bootcode4.bin",
                "2712": "bootcode5.bin"}
FILES = {"2835": ["config.txt", "start.elf", "fixup.dat"],
         "2837": ["config.txt", "start.elf", "fixup.dat"],
         "2711": ["config.txt", "boot.img"], "2712": ["config.txt", "boot.img"]}
SIZES = {"bootcode.bin": 51_234, "bootcode4.bin": 98_765, "bootcode5.bin": 120_001,
         "config.txt": 97, "start.elf": 700_003, "fixup.dat": 7_001, "boot.img": 1_500_017}


def unavailable(reason: str) -> NoReturn:
    if IN_CI:
        pytest.fail(f"CI=true but a umockdev prerequisite is missing: {reason}")
    pytest.skip(reason)
    raise AssertionError("not reached")


def blob(name: str, size: int | None = None) -> bytes:
    """Deterministic, name-specific content."""
    return hashlib.shake_256(name.encode()).digest(size if size is not None else
                                                   SIZES.get(name, 1000))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def rpiboot_command() -> list[str]:
    """The installed console script of this interpreter's rpiboot."""
    beside = Path(sys.executable).with_name("rpiboot")
    found = str(beside) if beside.exists() else shutil.which("rpiboot")
    return [found] if found else [sys.executable, "-m", "rpiboot"]


@dataclass
class VirtualRun:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any]

    @property
    def pis(self) -> list[dict[str, Any]]:
        return self.report["pis"]

    def pi(self, port: str) -> dict[str, Any]:
        return next(pi for pi in self.pis if pi["port"] == port)

    def describe(self) -> str:
        return (f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
                f"\n--- bridge\n{json.dumps(self.report.get('bridge'), indent=1)[:3000]}")


Runner = Callable[..., VirtualRun]


def assert_booted(run: VirtualRun, port: str, chip: str,
                  files: dict[str, bytes] | None = None, boot_dir: Path | None = None,
                  second_stage: bytes | None = None) -> None:
    """The board at ``port`` went through both stages and received exactly these bytes."""
    pi = run.pi(port)
    assert pi["violations"] == [], run.describe()
    assert pi["finished"], run.describe()
    if second_stage is None and boot_dir is not None:
        second_stage = (boot_dir / SECOND_STAGE[chip]).read_bytes()
    if second_stage is not None:
        assert pi["second_stage"] == {"size": len(second_stage), "sha256": sha(second_stage)}
    if files is None and boot_dir is not None:
        files = {name: (boot_dir / name).read_bytes() for name in FILES[chip]}
    if files is not None:
        assert pi["files"] == {name: {"size": len(data), "sha256": sha(data)}
                               for name, data in files.items() if data}


def assert_untouched(run: VirtualRun, port: str) -> None:
    pi = run.pi(port)
    assert pi["received"] == [] and pi["stage_index"] == 0, run.describe()
