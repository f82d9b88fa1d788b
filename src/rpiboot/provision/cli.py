"""The ``rpiboot-provision`` command line: check, run, export, pool import.

Every problem is one line on stderr and a documented exit status
(:class:`~rpiboot.provision.errors.ExitCode`, docs/provision.md); never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .. import __version__
from ..errors import RpibootError
from ..events import EventSink, event
from ..output import JsonReporter
from .errors import ExitCode, ProvisionError, exit_code_for
from .pipeline import RunOptions

if TYPE_CHECKING:
    from typing import NoReturn

PROG = "rpiboot-provision"
EXIT_HELP = """\
exit status: 0 every board provisioned (or skipped as already provisioned); 1 internal error;
2 usage; 3 the profile or a file it names is unusable; 4 no board (or fewer than --count) within
--timeout; 5 at least one board failed; 7 permission denied; 8 libusb not loadable; 9 the ledger
cannot be opened or written; 130 interrupted. Details: docs/provision.md."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> "NoReturn":  # type: ignore[override]
        self.exit(int(ExitCode.USAGE), f"{PROG}: error: {message} (see '{PROG} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, epilog=EXIT_HELP,
                     description="Provision Raspberry Pis in USB boot mode: bootloader EEPROM, "
                                 "OS image written and verified, first-boot settings, and a "
                                 "ledger record of every board.",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", "--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    check = commands.add_parser("check", help="validate a profile and every file it names")
    check.add_argument("profile", type=Path, metavar="PROFILE.toml", help="the profile")
    check.add_argument("--json", action="store_true", help="print the result as JSON")
    check.add_argument("--ledger", metavar="PATH|URL",
                       help="also open this ledger as run would (default: the profile's "
                            "[ledger], if any)")
    run = commands.add_parser("run", help="provision every board that arrives",
                              epilog=EXIT_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_run_options(run)
    export = commands.add_parser("export", help="print the ledger")
    export.add_argument("--ledger", metavar="PATH|URL")
    export.add_argument("--format", choices=("json", "csv"), default="json")
    demo = commands.add_parser("demo", help="provision virtual boards end to end (no hardware)")
    demo.add_argument("--boards", type=_positive_int, default=4, metavar="N",
                      help="how many virtual boards (default 4)")
    demo.add_argument("--keep", type=_new_directory, metavar="DIR",
                      help="work in DIR (new or empty) and keep the image, disks, profile and "
                           "ledger")
    demo_output = demo.add_mutually_exclusive_group()
    demo_output.add_argument("--json", action="store_true", help="JSON events, one per line")
    demo_output.add_argument("--plain", action="store_true", help="plain lines")
    demo.set_defaults(verbose=0)
    pool = commands.add_parser("pool", help="identity pools ({pool.COLUMN} in templates)")
    pool_commands = pool.add_subparsers(dest="pool_command", metavar="ACTION",
                                        parser_class=_Parser)
    pool_import = pool_commands.add_parser("import", help="load a CSV file (header = columns)")
    pool_import.add_argument("file", type=Path, metavar="FILE.csv")
    pool_import.add_argument("--ledger", metavar="PATH|URL")
    pool_import.add_argument("--pool", default="default", help="pool name (default: default)")
    return parser


def _add_run_options(run: argparse.ArgumentParser) -> None:
    run.add_argument("profile", type=Path, metavar="PROFILE.toml",
                     help="the profile: what every board gets (docs/provision.md)")
    run.add_argument("--count", type=_positive_int, metavar="N",
                     help="stop after N boards")
    run.add_argument("-l", "--loop", action="store_true", help="keep serving boards")
    run.add_argument("--ledger", metavar="PATH|URL",
                     help="ledger file or postgresql:// URL (default: the profile's, else the "
                          "user's data directory)")
    run.add_argument("--timeout", type=_positive_float, metavar="S",
                     help="give up when no board has arrived for S seconds")
    run.add_argument("--station", metavar="NAME", type=_station,
                     help="station name recorded with every board (default: the host name)")
    run.add_argument("--reprovision", action="store_true",
                     help="provision boards already provisioned with this profile again")
    run.add_argument("--gather", type=_non_negative_float, metavar="S", default=3.0,
                     help="seconds a board waits at the write step for others to share one "
                          "decompression (default 3)")
    output = run.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="JSON events, one per line")
    output.add_argument("--plain", action="store_true", help="plain lines, no live table")
    run.add_argument("-v", "--verbose", action="count", default=0)
    run.add_argument("-p", "--path", dest="port_path", metavar="PATH",
                     help="only the board at USB path PATH, e.g. 1-1.3")
    run.add_argument("--port", dest="port_number", type=int, metavar="N",
                     help="only boards on USB port number N")
    run.add_argument("-i", "--serial", metavar="SERIAL", help="only the board with this serial")
    run.add_argument("--libusb", metavar="PATH", help="libusb library to use")
    run.add_argument("--web", metavar="HOST:PORT",
                     help="serve the station dashboard (loopback unless told otherwise; "
                          "needs the [line] extra)")
    run.add_argument("--web-token", metavar="TOKEN",
                     help="the dashboard's access token (required, else generated, for a "
                          "non-loopback address)")


def _number(text: str, kind: type) -> Any:
    try:
        return kind(text)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {what}, not {text!r}") from None


def _positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _new_directory(text: str) -> Path:
    path = Path(text)
    if path.exists() and not (path.is_dir() and not any(path.iterdir())):
        raise argparse.ArgumentTypeError(f"{text} exists and is not an empty directory "
                                         "(the demo would overwrite what is there)")
    return path


def _positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def _station(text: str) -> str:
    if not text.strip() or len(text) > 128 or not text.isprintable():
        raise argparse.ArgumentTypeError("must be 1-128 printable characters")
    return text.strip()


def _non_negative_float(text: str) -> float:
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


# --- commands ---------------------------------------------------------------------------------

def _check(args: argparse.Namespace) -> int:
    from .preflight import ledger_target_text, preflight
    from .profile import load_profile
    profile = load_profile(args.profile)
    checked = preflight(profile)
    target = args.ledger if args.ledger is not None else profile.ledger
    if target is not None:
        from .ledger import open_ledger
        open_ledger(target).close()
        checked.notes.append(f"ledger {ledger_target_text(target)}: writable")
    if args.json:
        print(json.dumps({"ok": True, "profile": str(args.profile),
                          "profile_id": checked.profile.profile_id,
                          "files": {key: str(path) for key, path in
                                    checked.profile.files.items()}}))
    else:
        for line in checked.describe():
            print(line)
        print(f"{args.profile}: OK")
    return 0


def _run(args: argparse.Namespace) -> int:
    from .api import provision
    from .profile import load_profile
    try:
        if args.web_token is not None and args.web is None:
            from .web.server import WebError
            raise WebError("--web-token needs --web")
        profile = load_profile(args.profile)
        dashboard = _start_dashboard(args, profile) if args.web else None
    except (ProvisionError, RpibootError) as error:
        if not args.json:
            raise
        return _report_error(JsonReporter(), error)  # as rpiboot --json: the error event too
    options = RunOptions(count=args.count, loop=args.loop, timeout=args.timeout,
                         port_number=args.port_number, port_path=args.port_path,
                         serial=args.serial, reprovision=args.reprovision,
                         station=args.station or "", gather=args.gather)
    reporter = _reporter(args)
    if dashboard is not None:
        reporter = _tee(reporter, dashboard.state)
    try:
        outcome = provision(profile, options, on_event=reporter, ledger=args.ledger,
                            libusb=args.libusb, on_ready=_handle_sigterm)
    except (ProvisionError, RpibootError) as error:
        return _report_error(reporter, error)
    finally:
        close = getattr(reporter, "close", None)
        if close is not None:
            close()
        if dashboard is not None:
            dashboard.stop()
    return int(outcome.exit_code)


def _start_dashboard(args: argparse.Namespace, profile: Any) -> Any:
    """Serve the dashboard before any board is touched (a busy port is an error up front)."""
    from .ledger import open_ledger
    from .web.server import WebError, start_dashboard
    target = args.ledger if args.ledger is not None else profile.ledger
    station = args.station or socket.gethostname()
    try:
        server, url = start_dashboard(args.web, args.web_token, station=station,
                                      profile=str(profile.name),
                                      ledger=lambda: open_ledger(target, station=station))
    except ImportError as error:
        raise WebError(f"--web needs the dashboard's packages ({error.name} is missing): "
                       f"pip install 'rpiboot[line]'") from None
    print(f"{PROG}: station dashboard at {url}", file=sys.stderr, flush=True)
    return server


def _tee(reporter: EventSink, state: Any) -> EventSink:
    def both(item: Any) -> None:
        reporter(item)
        state.apply(item.to_dict())
    both.close = getattr(reporter, "close", None)  # type: ignore[attr-defined]
    return both


def _handle_sigterm(pipeline: Any) -> None:
    try:
        signal.signal(signal.SIGTERM, lambda _number, _frame: pipeline.interrupt())
    except ValueError:
        pass  # not the main thread (the API used from a program): the caller decides


def _reporter(args: argparse.Namespace) -> EventSink:
    if args.json:
        return JsonReporter()
    if args.plain or not sys.stdout.isatty():
        from .report import PlainReporter
        return PlainReporter(verbose=args.verbose)
    from .report import LiveView
    return LiveView()


def _report_error(reporter: EventSink, error: Exception) -> int:
    code = getattr(error, "code", "error")
    status = exit_code_for(code)
    reporter(event("error", code=code, message=str(error), exit_code=int(status)))
    return int(status)


def _demo(args: argparse.Namespace) -> int:
    from .demo import boards_text, run_demo
    reporter = _reporter(args)
    try:
        outcome, kept = run_demo(reporter, boards=args.boards, keep=args.keep,
                                 on_ready=_handle_sigterm)
    finally:
        close = getattr(reporter, "close", None)
        if close is not None:
            close()
    if not args.json:
        for line in boards_text(outcome):
            print(line, file=sys.stderr)
        if kept is not None:
            print(f"demo: files kept in {kept} (disks board*.img, demo-ledger.sqlite)",
                  file=sys.stderr)
    return int(outcome.exit_code)


def _export(args: argparse.Namespace) -> int:
    from .ledger import LedgerError, default_ledger_path, is_url, open_ledger
    if not is_url(args.ledger):
        path = Path(args.ledger).expanduser() if args.ledger else default_ledger_path()
        if not path.exists():  # a mistyped path must not read as an empty ledger
            raise LedgerError(f"no ledger at {path}")
    ledger = open_ledger(args.ledger)
    try:
        records = ledger.export()
    finally:
        ledger.close()
    if args.format == "json":
        json.dump(records, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        _write_csv(records)
    return 0


def _write_csv(records: list[dict[str, Any]]) -> None:
    columns: list[str] = []
    for record in records:
        columns += [key for key in record if key not in columns]
    writer = csv.DictWriter(sys.stdout, fieldnames=columns, extrasaction="ignore")
    writer.writeheader()
    for record in records:
        writer.writerow({key: _csv_value(value) for key, value in record.items()})


def _csv_value(value: Any) -> Any:
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):  # as web/app
        return "'" + value  # a spreadsheet must not run a device-supplied formula
    return value


def _pool_import(args: argparse.Namespace) -> int:
    from .ledger import open_ledger, read_pool_csv
    rows = read_pool_csv(args.file)  # checked whole before the ledger is opened
    ledger = open_ledger(args.ledger)
    try:
        count = ledger.import_pool(rows, pool=args.pool)
    finally:
        ledger.close()
    print(f"{count} entries imported into pool '{args.pool}'")
    return 0


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return int(ExitCode.USAGE)
    if args.command == "pool" and args.pool_command is None:
        parser.error("pool needs an action: import")
    handler = {"check": _check, "run": _run, "export": _export, "pool": _pool_import,
               "demo": _demo}
    return handler[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return int(ExitCode.INTERRUPTED)
    except (ProvisionError, RpibootError) as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return int(exit_code_for(getattr(error, "code", "error")))
    except BrokenPipeError:
        return 0
    except Exception as error:  # a bug: still one line, never a traceback
        print(f"{PROG}: internal error: {type(error).__name__}: {error}", file=sys.stderr)
        return int(ExitCode.INTERNAL)


if __name__ == "__main__":
    sys.exit(main())
