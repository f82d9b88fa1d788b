"""Run a command against virtual Raspberry Pis behind emulated usbfs (the umockdev host runner).

Must run under ``umockdev-wrapper /usr/bin/python3`` (a Python with PyGObject and the UMockdev
typelib); :mod:`rpiboot.simulator.umockdev_cli` (``rpiboot-virtual``) arranges that. Usage::

    umockdev-wrapper /usr/bin/python3 -m rpiboot.simulator.umockdev_host \\
        --pi 2711:1-3 --pi 2712:1-1.4,serial=5eed0001 --report out.json -- rpiboot -d boot

A board is ``CHIP:PORT_PATH`` (the port is required; one board per port) followed by
comma-separated options:

  serial=S             file-server serial number (default: a per-board one)
  rom-serial=S         the ROM's serial string too (iSerialNumber 3), for ``rpiboot -i``;
                       real ROMs other than the BCM2711's have none
  files=A+B+C          files the file server asks for, in order (default per chip)
  meta.KEY=VALUE       metadata the file server reports (``*KEY*VALUE``), repeatable
  two-interfaces       BCM2837 ROM with mass storage first (vendor interface 1, endpoint 3)
  arrive=SECONDS       plug in after this long (loop mode, late arrivals)
  reenumerate-delay=S  time between leaving the bus and re-enumerating (default 0.05)
  unplug-after=BYTES   pull the board out once this many bulk bytes arrived in a stage
  stall-at=N           the file server stops answering at request read N (0-based)
  return-code=N        the ROM refuses the second stage with this code
  open-error=access    open() fails with EACCES (the runner drops CAP_DAC_OVERRIDE from the
                       command when it runs as root); open-error=io makes open() fail with
                       EISDIR (libusb: I/O error)
  role=R[+R...]        firmware roles, one boot each at the same port (ROM before each):
                       recovery, recovery5, msd, mass-storage-gadget, secure-boot; requests
                       then depend on the files received (rpiboot.simulator.firmware_roles)
  otp-key=FILE         the board's OTP holds the hash of this key (PEM or pubkey.bin) and its
                       EEPROM that key; otp-key-hash=HEX sets the OTP hash alone
  gadget               after the file server, enumerate as the mass-storage gadget (0a5c:0104)
  disk=SIZE[:FILE]     the gadget exports a disk of SIZE bytes (64M, 1G...) backed by FILE
                       (created sparse if missing; default a temporary file removed at the
                       end); repeatable, in the gadget's order (mmcblk0, nvme0n1, sda...);
                       implies gadget. /dev/sdX under the wrapper writes into the file.

``--scenario FILE`` reads the same from JSON: ``{"pis": [{"chip": "2711", "port": "1-3",
"serial": "...", "rom_serial": null, "files": [...], "meta": {...}, "two_interfaces": false,
"arrive": 0, "reenumerate_delay": 0.05, "unplug_after": null, "stall_at": null,
"return_code": 0, "open_error": null, "gadget": false, "disks": [{"size": "64M", "file":
null, "read_only": false, "device": null}], "role": ["recovery", "mass-storage-gadget"],
"otp_key": null, "otp_key_hash": null}]}``.

Every field is checked before anything runs (chip one of 2835/2837/2711/2712; numbers must be
JSON numbers; ``open_error`` is ``access``, ``io`` or null; unknown keys are errors).

The runner builds the testbed, runs the command with ``UMOCKDEV_DIR`` set explicitly, waits for
it, writes a JSON report (``--report``) of what each board received, and exits with the
command's exit status. Its own statuses: 2 bad options, scenario or ``--report`` path (checked
before the run), 124 ``--command-timeout`` expired, 125 the runner itself failed, 126 the
command cannot be executed, 127 the command was not found, 128+N it got signal N (SIGTERM,
SIGINT, SIGHUP: the command is terminated, then the report is written).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any, Sequence

from .board_spec import (DEFAULT_FILES, build_pi, directory_warnings,  # noqa: F401
                         load_scenario, parse_pi_option, parse_port, summarise, validate_spec)
from .virtual_pi import ServerStage, VirtualPi

CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, PR_CAPBSET_DROP = 1, 2, 24
EXIT_USAGE, EXIT_TIMEOUT, EXIT_FAILED, EXIT_CANNOT_RUN, EXIT_NOT_FOUND = 2, 124, 125, 126, 127
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
TERMINATE_GRACE = 5.0


class Failure(Exception):
    """A problem found before (or outside) the command: one line for stderr, and an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


SAVED_PYTHONPATH = "RPIBOOT_VIRTUAL_SAVED_PYTHONPATH"  # set by rpiboot.simulator.umockdev_cli


def _drop_dac_capabilities() -> None:
    """Runs in the child before exec: root then obeys file permissions like anyone else."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            os.write(2, b"umockdev_host: cannot drop CAP_DAC_OVERRIDE; open-error=access will "
                        b"not take effect\n")


def command_env(env: dict[str, str]) -> dict[str, str]:
    """The command gets the PYTHONPATH it had before rpiboot-virtual pointed ours at the
    simulator."""
    saved = env.pop(SAVED_PYTHONPATH, None)
    if saved is not None:
        if saved:
            env["PYTHONPATH"] = saved
        else:
            env.pop("PYTHONPATH", None)
    return env


def resolve_command(command: Sequence[str]) -> str:
    """The program the command runs, or :class:`Failure` with 127 (not found) or 126 (not
    executable), as a shell would say it."""
    program = command[0]
    found = shutil.which(program)
    if found:
        return found
    if os.sep in program and os.path.exists(program):
        raise Failure(f"{program}: cannot execute (not an executable file)", EXIT_CANNOT_RUN)
    raise Failure(f"{program}: command not found", EXIT_NOT_FOUND)


def check_report_path(destination: str | None) -> None:
    """Make sure the report can be written, before anything runs (:class:`Failure`, 2)."""
    if not destination or destination == "-":
        return
    existed = os.path.lexists(destination)
    try:
        with open(destination, "a", encoding="utf-8"):
            pass
    except OSError as error:
        raise Failure(f"cannot write report {destination}: {error.strerror or error}") from None
    if not existed:
        os.unlink(destination)


def preflight(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str],
                                                          list[dict[str, Any]]]:
    """Parse and check the arguments without umockdev: (args, command, specs), or
    :class:`Failure`. rpiboot-virtual calls this before it looks for umockdev."""
    args = _argument_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise Failure("no command given (put it after --)")
    if args.command_timeout is not None and not args.command_timeout > 0:
        raise Failure(f"--command-timeout {args.command_timeout}: expected seconds > 0")
    try:
        specs = load_scenario(args)
    except (ValueError, OSError) as error:
        raise Failure(str(error)) from None
    check_report_path(args.report)
    resolve_command(command)
    return args, list(command), specs


def boot_directory(command: Sequence[str]) -> str | None:
    """The -d/--directory argument of an rpiboot command line, if any."""
    for i, item in enumerate(command[1:], 1):
        if item in ("-d", "--directory") and i + 1 < len(command):
            return command[i + 1]
        if item.startswith("--directory="):
            return item.split("=", 1)[1]
        if item.startswith("-d") and len(item) > 2 and not item.startswith("--"):
            return item[2:]
    return None


class HostRun:
    """Testbed + boards + the command under test."""

    def __init__(self, specs: Sequence[dict[str, Any]]):
        from .umockdev_bridge import UmockdevBus  # needs gi: import only under the wrapper

        self.specs = [dict(spec) for spec in specs]
        self.scratch = tempfile.TemporaryDirectory(prefix="rpiboot-virtual-disks-")
        self.pis = [build_pi(spec, i, self.scratch.name) for i, spec in enumerate(self.specs)]
        for spec, pi in zip(self.specs, self.pis):
            spec["serial_used"] = next((s.serial for s in pi.stages
                                        if isinstance(s, ServerStage)), None)
        self.bus = UmockdevBus()
        self.timers: list[threading.Timer] = []
        self.closed = False
        self.process: subprocess.Popen[bytes] | None = None
        self.signalled: int | None = None
        self._lock = threading.Lock()

    def start(self) -> None:
        for spec, pi in zip(self.specs, self.pis):
            delay = float(spec.get("arrive") or 0)
            if delay > 0:
                timer = threading.Timer(delay, self._late_arrival, (pi,))
                timer.daemon = True
                self.timers.append(timer)
            else:
                self.bus.plug_in(pi)
        self.bus.settle(10)
        for timer in self.timers:
            timer.start()

    def _late_arrival(self, pi: VirtualPi) -> None:
        with self._lock:  # close() takes the lock: no board arrives once it has begun
            if self.closed:
                return
            for other in self.pis:  # a board still at that port is pulled out first
                if other is not pi and other.port_path == pi.port_path and other.function:
                    other.unplug()
            self.bus.plug_in(pi)

    def on_signal(self, signum: int, _frame: Any = None) -> None:
        """SIGTERM/SIGINT/SIGHUP: terminate the command; run() then returns 128+signum."""
        if self.signalled is None:
            self.signalled = signum
        process = self.process
        if process is not None and process.poll() is None:
            try:
                process.terminate()
            except OSError:
                pass

    def run(self, command: Sequence[str], timeout: float | None) -> int:
        if self.signalled is not None:
            return 128 + self.signalled
        needs_drop = os.geteuid() == 0 and any(s.get("open_error") == "access"
                                               for s in self.specs)
        try:
            self.process = process = subprocess.Popen(
                list(command), env=command_env(self.bus.child_env()),
                preexec_fn=_drop_dac_capabilities if needs_drop else None)
        except FileNotFoundError:
            raise Failure(f"{command[0]}: command not found", EXIT_NOT_FOUND) from None
        except PermissionError as error:
            raise Failure(f"{command[0]}: cannot execute ({error.strerror})",
                          EXIT_CANNOT_RUN) from None
        except (OSError, subprocess.SubprocessError) as error:
            raise Failure(f"{command[0]}: cannot execute ({error})", EXIT_CANNOT_RUN) from None
        if self.signalled is not None:  # a signal arrived while it was starting
            self.on_signal(self.signalled)
        deadline = None if timeout is None else time.monotonic() + timeout
        terminated_at: float | None = None
        while True:
            try:
                code = process.wait(0.2)
                break
            except subprocess.TimeoutExpired:
                now = time.monotonic()
                if deadline is not None and now >= deadline and self.signalled is None:
                    process.kill()
                    process.wait()
                    return EXIT_TIMEOUT
                if self.signalled is not None:
                    if terminated_at is None:
                        terminated_at = now
                    elif now - terminated_at > TERMINATE_GRACE:
                        process.kill()  # it ignored SIGTERM
            except KeyboardInterrupt:  # SIGINT without our handler (run() used as a library)
                self.on_signal(signal.SIGINT)
        if self.signalled is not None:
            return 128 + self.signalled
        return code

    @staticmethod
    def _reap(process: subprocess.Popen[bytes]) -> None:
        try:
            process.wait(TERMINATE_GRACE)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def report(self, command: Sequence[str], exit_code: int, duration: float,
               boot_dir: str | None = None) -> dict[str, Any]:
        directory = boot_dir or boot_directory(command)
        warnings = [text for pi in self.pis for text in
                    (directory_warnings(pi, Path(directory)) if directory else [])]
        warnings += [f"the board at {pi.port_path} refused {text}" for pi in self.pis
                     for text in getattr(getattr(pi, "board", None), "refusals", [])]
        return {"warnings": warnings, "command": list(command), "exit_code": exit_code,
                "duration": round(duration, 3),
                "started_monotonic": time.monotonic() - duration, "umockdev_dir": self.bus.root_dir,
                "pis": [summarise(pi, spec) for pi, spec in zip(self.pis, self.specs)],
                "bridge": {"errors": list(self.bus.errors),
                           "unhandled_ioctls": list(self.bus.unhandled),
                           "enumerations": list(self.bus.enumerations)}}

    def close(self) -> None:
        """Stop late arrivals, terminate a command still running, close the bus. Idempotent."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
        for timer in self.timers:
            timer.cancel()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            self._reap(process)
        self.bus.close()
        self.scratch.cleanup()


def _argument_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m rpiboot.simulator.umockdev_host",
        description="Run COMMAND against virtual Raspberry Pis behind emulated usbfs. "
                    "Run under umockdev-wrapper.",
        epilog=__doc__.split("Usage::")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pi", action="append", default=[], metavar="CHIP:PORT[,OPTION...]",
                        help="a virtual board, e.g. 2711:1-3 or 2712:1-1.4,serial=abc")
    parser.add_argument("--scenario", metavar="FILE", help="boards from a JSON file")
    parser.add_argument("--report", metavar="FILE", help="write the JSON report here "
                                                         "('-' for stderr)")
    parser.add_argument("--command-timeout", type=float, default=None, metavar="SECONDS",
                        help="kill the command after this long (exit status 124)")
    parser.add_argument("--boot-dir", metavar="DIR",
                        help="the boot directory the boards are served from, for the report's "
                             "warnings (default: the command's -d/--directory)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    return parser


def _summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for pi in report["pis"]:
        state = ("halted" if pi["halted"] else "finished") if pi["finished"] \
            else f"stopped in stage {pi['stage_index']}"
        lines.append(f"virtual {pi['chip']} at {pi['port']}: {state}, {len(pi['files'])} "
                     f"file(s), {len(pi['violations'])} violation(s)")
        lines += [f"  violation: {text}" for text in pi["violations"]]
    lines += [f"bridge error: {text.splitlines()[0]}" for text in report["bridge"]["errors"]]
    lines += [f"warning: {text}" for text in report["warnings"]]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args, command, specs = preflight(argv)
        report_file = _open_report(args.report)
    except Failure as error:
        print(f"umockdev_host: {error}", file=sys.stderr)
        return error.code
    if not os.environ.get("LD_PRELOAD", "").count("umockdev"):
        print("umockdev_host: not running under umockdev-wrapper; use rpiboot-virtual",
              file=sys.stderr)
        return EXIT_USAGE
    host: HostRun | None = None
    previous = {}
    try:
        host = HostRun(specs)
        for signum in FORWARDED_SIGNALS:
            previous[signum] = signal.signal(signum, host.on_signal)
        started = time.monotonic()
        host.start()
        exit_code = host.run(command, args.command_timeout)
        time.sleep(0.05)  # let re-enumerations already under way land in the report
        report = host.report(command, exit_code, time.monotonic() - started, args.boot_dir)
        host.close()  # unplugs the boards: after the report, whose errors then get close()'s
        report["bridge"]["errors"] = list(host.bus.errors)  # timeouts, if any
    except Failure as error:
        _discard(report_file)
        print(f"umockdev_host: {error}", file=sys.stderr)
        return error.code
    except (ValueError, OSError, KeyError, TypeError, RuntimeError) as error:
        _discard(report_file)
        print(f"umockdev_host: {error}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        _discard(report_file)
        print("umockdev_host: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    finally:
        if host is not None:
            host.close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    _write_report(report, report_file)
    if not args.quiet:
        for line in _summary_lines(report):
            print(line, file=sys.stderr)
    return exit_code


def _open_report(destination: str | None) -> IO[str] | None:
    """Open the report file before the run, so a bad path fails at once (:class:`Failure`)."""
    if not destination:
        return None
    if destination == "-":
        return sys.stderr
    try:
        return open(destination, "w", encoding="utf-8")
    except OSError as error:
        raise Failure(f"cannot write report {destination}: {error.strerror or error}") from None


def _discard(handle: IO[str] | None) -> None:
    if handle is not None and handle is not sys.stderr:
        handle.close()


def _write_report(report: dict[str, Any], handle: IO[str] | None) -> None:
    if handle is None:
        return
    text = json.dumps(report, indent=2)
    if handle is sys.stderr:
        print(text, file=sys.stderr)
        return
    with handle:
        handle.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
