"""The ``rpiboot`` command line: upstream's flags with the same meaning, plus long options.

Exit statuses are listed in :class:`rpiboot.errors.ExitCode` and the README.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from typing import NoReturn
    from .transport import Transport

from . import __version__, stop_signals
from .errors import ExitCode, RpibootError, UsageError
from .events import EventSink
from .option_checks import check_conflicts, check_numbers, normalise
from .options import BootOptions
from .output import JsonReporter, PlainReporter, banner

DESCRIPTION = """\
Boot a Raspberry Pi in USB device mode, either straight into a mass storage device or from the
boot files in a directory. To flash the default bootloader EEPROM of a Compute Module 4 run
'rpiboot -d recovery'. Without a Raspberry Pi at hand, 'rpiboot --demo' boots a virtual one."""

EXIT_STATUS_HELP = """\
exit status: 0 every device completed; 2 usage; 3 boot directory problem; 4 no device within
--timeout; 5 transfer or protocol failure (also --follow timeout); 6 device refused the second
stage; 7 permission denied; 8 libusb not loadable; 9 -j DIR met two different records for one
serial; 130 Ctrl-C, 143 SIGTERM, 129 SIGHUP (the summary is still printed). With several
devices the worst one wins. The --json events are described in docs/events.md."""


class _Parser(argparse.ArgumentParser):
    """Usage errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(int(ExitCode.USAGE),
                  f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="rpiboot", description=DESCRIPTION, epilog=EXIT_STATUS_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_upstream_options(parser.add_argument_group("upstream options"))
    further = parser.add_argument_group("further options")
    _add_output_options(further)
    _add_udev_options(parser.add_argument_group("USB access set-up (Linux)"))
    _add_timing_options(further)  # after the udev options: --help's usage line keeps its order
    return parser


def _add_upstream_options(upstream: argparse._ArgumentGroup) -> None:
    upstream.add_argument("-d", "--directory", type=Path, metavar="DIR",
                          help="boot the device with the files in DIR")
    upstream.add_argument("-o", "--overlay", action="store_true",
                          help="prefer DIR/<usb-path>/NAME (needs -d; never for bootcode*.bin)")
    upstream.add_argument("-l", "--loop", action="store_true",
                          help="keep serving devices as they arrive")
    upstream.add_argument("-m", "--delay", type=int, metavar="MICROSECONDS", default=10000,
                          help="time between bus scans when hot-plug is silent (default 10000)")
    upstream.add_argument("-v", "--verbose", action="count", default=0,
                          help="more detail; -vv for even more")
    upstream.add_argument("-V", "--version", action="store_true", help="print the version")
    upstream.add_argument("-s", "--signed", action="store_true",
                          help="signed boot: DIR holds bootsig.bin (and bootcode.sig for "
                               "BCM2835/7)")
    upstream.add_argument("--port", type=int, metavar="N", dest="port_number",
                          help="only the device on USB port number N (also -0 ... -98)")
    upstream.add_argument("-p", "--path", metavar="PATH", dest="port_path",
                          help="only the device at USB path PATH, e.g. 1-1.3.2")
    upstream.add_argument("-i", "--serial", metavar="SERIAL",
                          help="only the device with this serial number")
    upstream.add_argument("-j", "--metadata", nargs="?", const="", metavar="DIR",
                          help="write the OTP metadata (BCM2711/2712) to DIR/<serial>.json, "
                               "or to stdout without DIR")


def _add_output_options(ours: argparse._ArgumentGroup) -> None:
    """How to report, and what to do besides booting."""
    ours.add_argument("--json", action="store_true",
                      help="print one JSON object per event instead of text (docs/events.md)")
    ours.add_argument("--plain", action="store_true",
                      help="upstream's text lines even on a terminal (no live view)")
    ours.add_argument("--list", action="store_true",
                      help="list the Raspberry Pis in USB boot mode (chip, stage, port, serial, "
                           "speed) without booting them; with --json one object per line")
    ours.add_argument("--follow", nargs="?", type=float, const=60.0, metavar="SECONDS",
                      help="after the file server is done, wait (default 60 s) for the device "
                           "to reappear at its port as its final USB function (e.g. the "
                           "mass-storage gadget) and report it; not in time: exit status 5")


def _add_udev_options(setup: argparse._ArgumentGroup) -> None:
    setup.add_argument("--udev-rule", action="store_true",
                       help="print a udev rule that lets a group open Raspberry Pis in boot mode")
    setup.add_argument("--install-udev-rule", action="store_true",
                       help="write the rule to /etc/udev/rules.d/60-rpiboot.rules (as root) and "
                            "reload udev")
    setup.add_argument("--group", default="plugdev", metavar="GROUP",
                       help="group for the udev rule (default plugdev)")
    setup.add_argument("-y", "--yes", action="store_true",
                       help="do not ask for confirmation")


def _add_timing_options(ours: argparse._ArgumentGroup) -> None:
    """Timeouts, delays and retries, the libusb library to use, and the demo."""
    ours.add_argument("--timeout", type=float, metavar="SECONDS",
                      help="give up if no device arrives (with -l: nothing happens) this long")
    ours.add_argument("--run-timeout", type=float, metavar="SECONDS",
                      help="stop the whole run after this long")
    ours.add_argument("--libusb", metavar="PATH",
                      help="libusb library to use ('system' for the system one; default: the "
                           "libusb-package build, else the system one; env RPIBOOT_LIBUSB)")
    ours.add_argument("--open-delay", type=float, default=0.0, metavar="SECONDS",
                      help="pause before opening a device (upstream: 1 s; default 0)")
    ours.add_argument("--return-code-delay", type=float, default=0.0, metavar="SECONDS",
                      help="pause before reading the ROM's return code (upstream: 1 s; "
                           "default 0)")
    ours.add_argument("--close-delay", type=float, default=0.0, metavar="SECONDS",
                      help="pause after closing a device (upstream: 1 s; default 0)")
    ours.add_argument("--retry-delay", type=float, default=0.05, metavar="SECONDS",
                      help="pause between retries (upstream: 1 s, forever; default 0.05, "
                           "bounded by --retries)")
    ours.add_argument("--retries", type=int, default=5, metavar="N",
                      help="attempts for a failing open or request read, and for a board that "
                           "fails (leaves the bus, stalls) and comes back at its port within "
                           "--reenumerate-timeout (default 5)")
    ours.add_argument("--reenumerate-timeout", type=float, default=10.0, metavar="SECONDS",
                      help="how long a device may take to come back after the second stage "
                           "(default 10)")
    ours.add_argument("--stall-timeout", type=float, default=60.0, metavar="SECONDS",
                      help="how long a file server may stay silent (default 60)")
    ours.add_argument("--chunk-size", type=int, default=256 * 1024, metavar="BYTES",
                      help="bytes per bulk transfer (default 262144; upstream sends 16384)")
    ours.add_argument("--demo", action="store_true",
                      help="boot built-in virtual Raspberry Pis from a demo directory")
    ours.add_argument("--fetch-boot-files", nargs="?", const="", metavar="DIR",
                      help="download usbboot's boot directories (pinned, checked) into DIR "
                           "(default: the user data directory, where plain rpiboot finds them)")


def parse_options(argv: Sequence[str]) -> tuple[argparse.Namespace, BootOptions]:
    parser = build_parser()
    args = parser.parse_args(normalise(argv))
    check_numbers(parser, args)
    check_conflicts(parser, args)
    options = BootOptions(
        directory=args.directory, overlay=args.overlay, loop=args.loop, signed=args.signed,
        port_number=args.port_number, port_path=args.port_path, serial=args.serial,
        metadata=args.metadata is not None,
        metadata_dir=Path(args.metadata) if args.metadata else None, verbose=args.verbose,
        poll_interval=args.delay / 1e6, timeout=args.timeout, run_timeout=args.run_timeout,
        open_delay=args.open_delay, return_code_delay=args.return_code_delay,
        close_delay=args.close_delay, retry_delay=args.retry_delay, retries=args.retries,
        reenumerate_timeout=args.reenumerate_timeout, stall_timeout=args.stall_timeout,
        follow=args.follow, chunk_size=args.chunk_size)
    return args, options


def make_reporter(args: argparse.Namespace) -> EventSink:
    """--json: JSON lines; a terminal: the live view; otherwise upstream's plain lines."""
    if args.json:
        return JsonReporter()
    if not args.plain and _is_terminal(sys.stdout):
        from .live_view import LiveView
        return LiveView(verbose=args.verbose, loop=args.loop)
    return PlainReporter(verbose=args.verbose)


def _is_terminal(stream: object) -> bool:
    try:
        return bool(stream.isatty())  # type: ignore[attr-defined]
    except (AttributeError, ValueError):
        return False


def main(argv: Sequence[str] | None = None, *, transport: "Transport | None" = None) -> int:
    """The command line; ``transport`` replaces USB (tests pass a VirtualBus)."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    args, options = parse_options(arguments)
    if args.version:
        print(banner(__version__))
        return ExitCode.OK
    restore_signals = stop_signals.install()
    try:
        if args.udev_rule or args.install_udev_rule:
            return _udev(args)
        if args.list:
            return _list(args, transport)
        if args.fetch_boot_files is not None:
            return _fetch_boot_files(args.fetch_boot_files)
        return _boot(args, options, transport)
    except RpibootError as error:
        return _report_error(error, args)
    except KeyboardInterrupt as stop:
        return _report_error(stop_signals.interruption(stop), args)
    finally:
        restore_signals()
        _silence_closed_stdout()


def _boot(args: argparse.Namespace, options: BootOptions,
          transport: "Transport | None") -> int:
    """Boot with the reporter the arguments choose; it is closed (the live view stopped) before
    any error is printed."""
    reporter = make_reporter(args)
    try:
        if args.demo:
            from .demo import run_demo
            return int(run_demo(options, reporter))
        from .api import boot
        result = boot(options, on_event=reporter, libusb=args.libusb, transport=transport)
    finally:
        _close(reporter)
    if result.error is not None:  # e.g. no device within --timeout: say why, not only exit 4
        _report_error(result.error, args)
    return int(result.exit_code)


def _close(reporter: object) -> None:
    close = getattr(reporter, "close", None)
    if close is not None:
        close()


def _udev(args: argparse.Namespace) -> int:
    from . import udev
    if args.udev_rule:
        sys.stdout.write(udev.udev_rule(args.group))
        print(f"# Install: {udev.own_command()} --udev-rule | sudo tee {udev.RULES_PATH} && sudo "
              f"udevadm control --reload-rules && sudo udevadm trigger", file=sys.stderr)
        return ExitCode.OK
    confirm = None if args.yes else _ask
    udev.install_udev_rule(args.group, confirm=confirm)
    return ExitCode.OK


def _ask(question: str) -> bool:
    if not _is_terminal(sys.stdin):
        raise UsageError("not asking for confirmation without a terminal: add --yes")
    try:
        return input(question).strip().lower() in ("y", "yes")
    except EOFError:
        return False


def _list(args: argparse.Namespace, transport: "Transport | None") -> int:
    import json
    from .listing import format_table, list_devices
    owned = transport is None
    if transport is None:
        if args.demo:
            from .demo import demo_pis
            from .simulator.in_process import VirtualBus
            transport = VirtualBus(demo_pis())
        else:
            from .api import _open_libusb
            transport = _open_libusb(args.libusb)
    try:
        devices = list_devices(transport)
    finally:
        if owned:
            transport.close()
    if args.json:
        import time
        now = round(time.time(), 6)
        for device in devices:
            print(json.dumps({"event": "device_listed", "time": now, **device.to_dict()},
                             separators=(",", ":")))
    else:
        for line in format_table(devices):
            print(line)
    return ExitCode.OK


def _fetch_boot_files(directory: str) -> int:
    from .boot_files import fetch_boot_files, text_progress
    fetch_boot_files(Path(directory) if directory else None, progress=text_progress())
    return ExitCode.OK


def _silence_closed_stdout() -> None:
    """If stdout was a pipe that closed, keep the interpreter from failing at exit."""
    try:
        sys.stdout.flush()
    except (BrokenPipeError, ValueError):
        import os
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _report_error(error: RpibootError, args: argparse.Namespace) -> int:
    if args.json:
        from .events import event
        JsonReporter()(event("error", code=error.code, message=str(error),
                             exit_code=int(error.exit_code)))
    print(f"rpiboot: error: {error}", file=sys.stderr)
    return int(error.exit_code)


if __name__ == "__main__":
    sys.exit(main())
