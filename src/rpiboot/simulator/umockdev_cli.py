"""``rpiboot-virtual``: start virtual Raspberry Pis under umockdev and run a command against them.

Linux only. The boards sit behind emulated usbfs, so the command uses real libusb exactly as on
a host with Raspberry Pis plugged in::

    rpiboot-virtual --pi 2711:1-3 --pi 2712:1-1.4 -- rpiboot -d DIR
    rpiboot-virtual --pi 2711:1-3,meta.MAC_ADDR=d8:3a:dd:01:02:03 --report out.json -- rpiboot -j
    rpiboot-virtual --pi 2837:1-2,two-interfaces --pi 2711:1-5,arrive=1.5 -- rpiboot -l --timeout 3

A board is ``CHIP:PORT_PATH[,OPTION...]`` (chips 2835, 2837, 2711, 2712); the options (serial,
files, meta.KEY, two-interfaces, arrive, reenumerate-delay, unplug-after, stall-at, return-code,
open-error, gadget) are described in :mod:`rpiboot.simulator.umockdev_host`, as is the JSON
``--scenario`` format. ``--report FILE`` writes what each board received (names, sizes, SHA-256,
protocol violations).

Exit status: the command's, except (as with ``env`` and ``timeout``):

  2    bad options, board spec or scenario, or the ``--report`` path cannot be written
       (all checked before anything runs)
  124  ``--command-timeout`` expired (the command was killed)
  125  rpiboot-virtual itself failed: umockdev or PyGObject missing, or the runner crashed
  126  the command cannot be executed
  127  the command was not found
  128+N  rpiboot-virtual got signal N (SIGTERM, SIGINT, SIGHUP); the command was terminated

How it runs: this entry point runs under the project's Python, finds ``umockdev-wrapper`` and a
Python that has PyGObject with the UMockdev typelib (``/usr/bin/python3`` on Debian/Ubuntu, or
``--python``/``RPIBOOT_VIRTUAL_PYTHON``), and runs ``umockdev-wrapper PYTHON -m
rpiboot.simulator.umockdev_host ...`` with this very package importable. The simulator is
standard-library only, so both Pythons share it. Requirements (Debian/Ubuntu)::

    sudo apt-get install umockdev gir1.2-umockdev-1.0 python3-gi

Under umockdev, libusb builds that learn about devices through udev (Debian's system libusb,
``rpiboot --libusb system``) receive hot-plug events; netlink builds (libusb-package's wheel) get
none and only see devices present when their libusb context was created; rpiboot copes with both
(it re-reads the bus through a fresh libusb context whenever hot-plug has been silent).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Sequence

INSTALL_HINT = "install it with: sudo apt-get install umockdev gir1.2-umockdev-1.0 python3-gi"
PROBE = ("import gi; gi.require_version('UMockdev', '1.0'); "
         "from gi.repository import UMockdev; UMockdev.Testbed")
PYTHON_ENV = "RPIBOOT_VIRTUAL_PYTHON"
EXIT_USAGE, EXIT_FAILED = 2, 125
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
SAVED_PYTHONPATH = "RPIBOOT_VIRTUAL_SAVED_PYTHONPATH"


class Unavailable(Exception):
    """A prerequisite for running virtual Pis under umockdev is missing."""


def find_wrapper() -> str:
    wrapper = shutil.which("umockdev-wrapper")
    if not wrapper:
        raise Unavailable(f"umockdev-wrapper not found; {INSTALL_HINT}")
    return wrapper


def python_candidates(explicit: str | None = None) -> list[str]:
    names = [explicit] if explicit else [os.environ.get(PYTHON_ENV), "/usr/bin/python3",
                                         sys.executable, shutil.which("python3")]
    seen: list[str] = []
    for name in names:
        if name and name not in seen:
            seen.append(name)
    return seen


def has_umockdev_gi(python: str) -> bool:
    try:
        result = subprocess.run([python, "-c", PROBE], capture_output=True, timeout=30,
                                env=_without_pythonpath())
    except (OSError, subprocess.SubprocessError):
        return False
    return result.returncode == 0


def find_python(explicit: str | None = None) -> str:
    """A Python that can import PyGObject's UMockdev binding."""
    candidates = python_candidates(explicit)
    for python in candidates:
        if has_umockdev_gi(python):
            return python
    raise Unavailable(f"no Python with PyGObject and the UMockdev typelib (tried "
                      f"{', '.join(candidates)}); {INSTALL_HINT}")


def check() -> tuple[str, str]:
    """(wrapper, python), or :class:`Unavailable` with an install hint."""
    if not sys.platform.startswith("linux"):
        raise Unavailable("virtual Pis under umockdev need Linux")
    return find_wrapper(), find_python()


def _without_pythonpath() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    return env


def _package_link_dir() -> tempfile.TemporaryDirectory[str]:
    """A directory holding only a link to this ``rpiboot`` package, for the other Python's
    PYTHONPATH (the package's real parent may be a site-packages full of other things)."""
    package = Path(__file__).resolve().parent.parent
    holder = tempfile.TemporaryDirectory(prefix="rpiboot-virtual-")
    os.symlink(package, Path(holder.name) / "rpiboot")
    return holder


def host_command(wrapper: str, python: str, arguments: Sequence[str]) -> list[str]:
    return [wrapper, python, "-m", "rpiboot.simulator.umockdev_host", *arguments]


def _split_own_options(argv: list[str]) -> tuple[str | None, bool, list[str]]:
    """Take --python/--check (before any ``--``); everything else goes to the host runner."""
    python, check_only, rest = None, False, []
    iterator = iter(range(len(argv)))
    for i in iterator:
        item = argv[i]
        if item == "--":
            rest += argv[i:]
            break
        if item == "--check":
            check_only = True
        elif item == "--python" and i + 1 < len(argv):
            python = argv[i + 1]
            next(iterator, None)
        elif item.startswith("--python="):
            python = item.split("=", 1)[1]
        else:
            rest.append(item)
    return python, check_only, rest


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(list(sys.argv[1:] if argv is None else argv))
    except KeyboardInterrupt:
        print("rpiboot-virtual: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def _main(arguments: list[str]) -> int:
    python, check_only, rest = _split_own_options(arguments)
    own = rest[:rest.index("--")] if "--" in rest else rest
    if "-h" in own or "--help" in own:
        _print_help()
        return 0
    if not (rest or check_only):
        help_parser().print_usage(sys.stderr)
        print("rpiboot-virtual: no boards and no command; see rpiboot-virtual --help",
              file=sys.stderr)
        return EXIT_USAGE
    if not check_only:
        from . import umockdev_host  # standard library only: no umockdev needed to check

        try:
            umockdev_host.preflight(rest)
        except umockdev_host.Failure as error:
            print(f"rpiboot-virtual: {error}", file=sys.stderr)
            return error.code
    try:
        if not sys.platform.startswith("linux"):
            raise Unavailable("virtual Pis under umockdev need Linux")
        wrapper, interpreter = find_wrapper(), find_python(python)
    except Unavailable as error:
        print(f"rpiboot-virtual: {error}", file=sys.stderr)
        return EXIT_FAILED
    if check_only:
        print(f"rpiboot-virtual: ready ({wrapper} with {interpreter})")
        return 0
    with _package_link_dir() as link_dir:
        env = dict(os.environ, PYTHONPATH=link_dir)
        env[SAVED_PYTHONPATH] = os.environ.get("PYTHONPATH", "")
        return _run_forwarding_signals(host_command(wrapper, interpreter, rest), env)


def _run_forwarding_signals(command: list[str], env: dict[str, str]) -> int:
    """Run the host runner; SIGTERM/SIGINT/SIGHUP sent to us go to it (it then terminates the
    command and writes its report), and we wait for it so the link directory is removed."""
    try:
        child = subprocess.Popen(command, env=env)
    except OSError as error:
        print(f"rpiboot-virtual: cannot run {command[0]}: {error.strerror or error}",
              file=sys.stderr)
        return EXIT_FAILED
    received: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        received.append(signum)
        if child.poll() is None:
            try:
                child.send_signal(signum)
            except OSError:
                pass

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED_SIGNALS}
    try:
        code = child.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    if code < 0:  # the runner itself died of a signal
        return 128 - code
    return code


HELP_EPILOG = """\
board options (after CHIP:PORT, comma-separated):
  serial=S, rom-serial=S     file-server serial; a ROM serial string too (for rpiboot -i)
  files=A+B, meta.KEY=VALUE  what the file server asks for; metadata it reports
  role=R[+R...]              firmware roles, one boot each at the same port: recovery,
                             recovery5, msd, mass-storage-gadget, secure-boot
  otp-key=FILE, otp-key-hash=HEX   secure boot: the key whose hash the OTP holds
  gadget, disk=SIZE[:FILE]   end as the mass-storage gadget (0a5c:0104); a disk of SIZE
                             (64M, 1G) backed by FILE, seen as /dev/sdX by the command
  two-interfaces, arrive=S, reenumerate-delay=S, unplug-after=BYTES, stall-at=N,
  return-code=N, open-error=access|io        faults and timing

examples:
  rpiboot-virtual --pi 2711:1-3 --pi 2712:1-1.4 -- rpiboot -d DIR
  rpiboot-virtual --pi 2711:1-3,role=recovery --report out.json -- rpiboot -d recovery
  rpiboot-virtual --pi 2711:1-3,role=mass-storage-gadget,disk=64M:emmc.img -- \\
      rpiboot -d mass-storage-gadget64 --follow 10

exit status: the command's; 2 bad options, board spec or scenario; 124 --command-timeout
expired; 125 rpiboot-virtual failed (umockdev, PyGObject missing); 126 the command cannot be
executed; 127 not found; 128+N terminated by signal N.
Needs Linux with: sudo apt-get install umockdev gir1.2-umockdev-1.0 python3-gi
"""


def help_parser() -> argparse.ArgumentParser:
    """For --help only: the options are parsed by the host runner."""
    parser = argparse.ArgumentParser(
        prog="rpiboot-virtual", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Run COMMAND against virtual Raspberry Pis in USB boot mode, behind "
                    "emulated usbfs, so it uses real libusb (Linux, umockdev).",
        epilog=HELP_EPILOG)
    parser.add_argument("--pi", action="append", metavar="CHIP:PORT[,OPTION...]",
                        help="a virtual board (chip 2835, 2837, 2711 or 2712; port like 1-3); "
                             "repeatable, one board per port")
    parser.add_argument("--scenario", metavar="FILE", help="boards from a JSON file")
    parser.add_argument("--report", metavar="FILE",
                        help="write what each board received as JSON ('-' for stderr)")
    parser.add_argument("--boot-dir", metavar="DIR",
                        help="the directory the boards are booted from, for the report's "
                             "warnings (default: the command's -d)")
    parser.add_argument("--command-timeout", metavar="SECONDS",
                        help="kill the command after this long (exit status 124)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    parser.add_argument("--python", metavar="PYTHON",
                        help=f"a Python with PyGObject and UMockdev (default ${PYTHON_ENV}, "
                             "then /usr/bin/python3)")
    parser.add_argument("--check", action="store_true",
                        help="only check that umockdev can be used")
    parser.add_argument("command", nargs="*", metavar="-- COMMAND [ARG...]")
    return parser


def _print_help(stream: object = None) -> None:
    help_parser().print_help(stream)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
