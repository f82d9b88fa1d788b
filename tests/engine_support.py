"""Shared helpers for the boot-engine tests: boot directories, fast options, running the engine
against virtual Raspberry Pis on an in-process bus, and checking what each board received.

Fixtures from ``shared/fixtures`` (beside the repository checkout) or from the directory
``RPIBOOT_FIXTURES`` names (the one holding ``upstream/`` and ``golden/``; ``python3
scripts/fetch_fixtures.py DIR`` fetches the pinned upstream files) are optional: tests that need
them skip with a reason when they are absent.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
import threading
from pathlib import Path
from typing import Iterable, Sequence

import pytest

import rpiboot.api
from rpiboot import cli
from rpiboot.api import boot
from rpiboot.events import Event
from rpiboot.manager import RunResult
from rpiboot.options import BootOptions
from rpiboot.simulator import VirtualPi
from rpiboot.simulator.in_process import VirtualBus

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"
FIXTURES = Path(os.environ.get("RPIBOOT_FIXTURES") or SHARED / "fixtures")
UPSTREAM_USBBOOT = FIXTURES / "upstream" / "usbboot"

CHIPS = ("2835", "2837", "2711", "2712")
SECOND_STAGE = {"2835": "bootcode.bin", "2837": "bootcode.bin", "2711": "bootcode4.bin",
                "2712": "bootcode5.bin"}
PREFIX = {"2835": "2710", "2837": "2710", "2711": "2711", "2712": "2712"}


def shared_path(*parts: str) -> Path:
    """A path under shared/ (``fixtures/...`` under RPIBOOT_FIXTURES when set), or skip the test
    when it is absent."""
    path = FIXTURES.joinpath(*parts[1:]) if parts[:1] == ("fixtures",) else SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared fixture not available: {path} (see scripts/fetch_fixtures.py or set "
                    f"RPIBOOT_FIXTURES)")
    return path


def content(label: str, size: int = 300) -> bytes:
    """Distinct, deterministic file contents (so a wrong file can never compare equal)."""
    seed = label.encode()
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += seed + b":" + str(counter).encode() + b";"
        counter += 1
    return bytes(out[:size])


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def boot_dir(tmp_path: Path) -> Path:
    """A boot directory laid out like upstream's: second stages per chip, shared files on top,
    and a few chip-specific overrides in the 2710/2711/2712 sub-directories."""
    root = tmp_path / "boot"
    write(root / "bootcode.bin", content("bootcode.bin top", 5000))
    write(root / "2711" / "bootcode4.bin", content("bootcode4.bin 2711", 7000))
    write(root / "2712" / "bootcode5.bin", content("bootcode5.bin 2712", 9000))
    write(root / "config.txt", content("config.txt top", 120))
    write(root / "start.elf", content("start.elf top", 4000))
    write(root / "start4.elf", content("start4.elf top", 4100))
    write(root / "kernel8.img", content("kernel8.img top", 20000))
    write(root / "2711" / "config.txt", content("config.txt 2711", 130))
    write(root / "2712" / "kernel_2712.img", content("kernel_2712 2712", 30000))
    write(root / "2710" / "start.elf", content("start.elf 2710", 4200))
    return root


def fast_options(directory: Path | None = None, **changes: object) -> BootOptions:
    """Options with short timeouts so failures end quickly and the suite stays fast."""
    options = BootOptions(directory=directory, timeout=5.0, run_timeout=30.0,
                          stall_timeout=0.3, read_timeout=0.1, control_timeout=0.5,
                          bulk_timeout=1.0, reenumerate_timeout=2.0, retry_delay=0.01,
                          retries=3, poll_interval=0.005)
    return dataclasses.replace(options, **changes)


class Events:
    """A thread-safe event recorder usable as ``on_event``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.items: list[Event] = []

    def __call__(self, item: Event) -> None:
        with self._lock:
            self.items.append(item)

    def of(self, kind: str, port: str | None = None) -> list[Event]:
        with self._lock:
            return [e for e in self.items if e.kind == kind and (port is None or e.port == port)]

    def kinds(self, port: str | None = None) -> list[str]:
        with self._lock:
            return [e.kind for e in self.items if port is None or e.port == port]


@dataclasses.dataclass
class Run:
    result: RunResult
    events: Events
    bus: VirtualBus

    @property
    def exit_code(self) -> int:
        return int(self.result.exit_code)


def run_boot(pis: Sequence[VirtualPi], options: BootOptions, *,
             bus: VirtualBus | None = None) -> Run:
    events = Events()
    bus = bus if bus is not None else VirtualBus(pis)
    result = boot(options, on_event=events, transport=bus)
    return Run(result, events, bus)


def expected_file(directory: Path, chip: str, name: str, usb_path: str | None = None) -> bytes:
    """What the lookup rules (without bootfiles.bin) say the host must send for ``name``."""
    candidates: list[Path] = []
    if usb_path is not None and not name.startswith("bootcode"):
        candidates.append(directory / usb_path / name)
    candidates += [directory / PREFIX[chip] / name, directory / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.read_bytes()
    raise AssertionError(f"{name} is not in {directory}")


def assert_received_exactly(pi: VirtualPi, directory: Path, names: Iterable[str], *,
                            usb_path: str | None = None) -> None:
    """The second stage and every named file the board received equal the directory's bytes,
    and the board saw no protocol violation."""
    assert pi.violations == []
    assert pi.second_stage() == expected_file(directory, pi.chip, SECOND_STAGE[pi.chip])
    files = pi.files()
    names = list(names)
    assert sorted(files) == sorted(names)
    for name in names:
        assert files[name] == expected_file(directory, pi.chip, name, usb_path), name


def ok_session(run: Run, port: str) -> None:
    session = next(s for s in run.result.sessions if s.port == port)
    assert session.error is None, session.error
    assert session.summary()["result"] == "ok"


@pytest.fixture
def no_default_dirs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Make the default-directory search look only below a private prefix and a private cwd."""
    import rpiboot.file_source as file_source
    prefix = tmp_path / "prefix"
    cwd = tmp_path / "cwd"
    prefix.mkdir()
    cwd.mkdir()
    monkeypatch.setattr(file_source, "INSTALL_PREFIXES", (prefix,))
    monkeypatch.setenv("RPIBOOT_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.chdir(cwd)
    return tmp_path


def can_create_symlinks(tmp_path: Path) -> bool:
    try:
        os.symlink(tmp_path / "x", tmp_path / ".probe-link")
    except (OSError, NotImplementedError):
        return False
    os.unlink(tmp_path / ".probe-link")
    return True


class WrappingBus(VirtualBus):
    """A VirtualBus whose device handles pass through ``wrap_handle`` (override it) so tests can
    observe or delay the engine's USB calls."""

    def devices(self):  # type: ignore[override]
        return [_WrappedRef(ref, self) for ref in super().devices()]

    def wrap_handle(self, info, handle):  # type: ignore[no-untyped-def]
        return handle


class _WrappedRef:
    def __init__(self, ref, bus: WrappingBus):  # type: ignore[no-untyped-def]
        self._ref = ref
        self._bus = bus
        self.info = ref.info

    def open(self):  # type: ignore[no-untyped-def]
        return self._bus.wrap_handle(self.info, self._ref.open())


class HandleProxy:
    """Forwards everything to a real handle; subclasses override what they watch."""

    def __init__(self, info, handle):  # type: ignore[no-untyped-def]
        self.info = info
        self._handle = handle

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self._handle, name)


def tar_bytes(members: dict[str, bytes]) -> bytes:
    """A tar archive (like bootfiles.bin) holding ``members``."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def run_cli(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
            pis: Sequence[VirtualPi], argv: list[str]) -> tuple[int, str, str]:
    """``cli.main(argv)`` with the USB transport replaced by a virtual bus holding ``pis``;
    returns (exit status, stdout, stderr) and checks no traceback was printed."""
    monkeypatch.setattr(rpiboot.api, "_open_libusb", lambda _library: VirtualBus(pis))
    code = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return int(code), out, err
