"""Run a command against virtual Raspberry Pis behind emulated usbfs (the umockdev host runner).

Must run under ``umockdev-wrapper /usr/bin/python3`` (a Python with PyGObject and the UMockdev
typelib); :mod:`rpiboot.simulator.umockdev_cli` (``rpiboot-virtual``) arranges that. Usage::

    umockdev-wrapper /usr/bin/python3 -m rpiboot.simulator.umockdev_host \\
        --pi 2711:1-3 --pi 2712:1-1.4,serial=5eed0001 --report out.json -- rpiboot -d boot

A board is ``CHIP:PORT_PATH`` followed by comma-separated options:

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
  gadget               after the file server, enumerate as a mass-storage gadget (1d6b:0104)

``--scenario FILE`` reads the same from JSON: ``{"pis": [{"chip": "2711", "port": "1-3",
"serial": "...", "rom_serial": null, "files": [...], "meta": {...}, "two_interfaces": false,
"arrive": 0, "reenumerate_delay": 0.05, "unplug_after": null, "stall_at": null,
"return_code": 0, "open_error": null, "gadget": false}]}``.

The runner builds the testbed, runs the command with ``UMOCKDEV_DIR`` set explicitly, waits for
it, writes a JSON report (``--report``) of what each board received, and exits with the
command's exit status (124 if ``--command-timeout`` expired).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
import time
from typing import Any, Sequence

from .script import Request, done, load, metadata
from .virtual_pi import FinalStage, Received, RomStage, ServerStage, Stage, VirtualPi

DEFAULT_FILES = {"2835": ["config.txt", "start.elf", "fixup.dat"],
                 "2837": ["config.txt", "start.elf", "fixup.dat"],
                 "2711": ["config.txt", "boot.img"],
                 "2712": ["config.txt", "boot.img"]}
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, PR_CAPBSET_DROP = 1, 2, 24
SAVED_PYTHONPATH = "RPIBOOT_VIRTUAL_SAVED_PYTHONPATH"  # set by rpiboot.simulator.umockdev_cli


def parse_port(port: str) -> tuple[int, tuple[int, ...]]:
    """``1-1.4`` -> (1, (1, 4))."""
    bus, dash, ports = port.partition("-")
    try:
        numbers = tuple(int(part) for part in ports.split("."))
        busnum = int(bus)
    except ValueError:
        raise ValueError(f"bad USB port path {port!r}; expected e.g. 1-3 or 1-1.4") from None
    if not dash or not 1 <= busnum <= 255 or not all(1 <= n <= 255 for n in numbers) \
            or len(numbers) > 7:
        raise ValueError(f"bad USB port path {port!r}; expected e.g. 1-3 or 1-1.4")
    return busnum, numbers


def parse_pi_option(text: str, index: int) -> dict[str, Any]:
    """``2711:1-3,serial=abc,files=a+b`` -> a scenario entry."""
    head, *options = text.split(",")
    chip, _, port = head.partition(":")
    spec: dict[str, Any] = {"chip": chip, "port": port or f"1-{index + 1}", "meta": {}}
    for option in options:
        key, eq, value = option.partition("=")
        key = key.strip()
        if key.startswith("meta."):
            spec["meta"][key[5:]] = value
        elif key in ("two-interfaces", "gadget") and not eq:
            spec[key.replace("-", "_")] = True
        elif key == "files":
            spec["files"] = [name for name in value.split("+") if name]
        elif key in ("serial", "rom-serial", "open-error"):
            spec[key.replace("-", "_")] = value
        elif key in ("arrive", "reenumerate-delay"):
            spec[key.replace("-", "_")] = float(value)
        elif key in ("unplug-after", "stall-at", "return-code"):
            spec[key.replace("-", "_")] = int(value, 0)
        else:
            raise ValueError(f"unknown board option {key!r} in {text!r}")
    return spec


def build_pi(spec: dict[str, Any], index: int) -> VirtualPi:
    chip = str(spec["chip"])
    busnum, ports = parse_port(str(spec.get("port") or f"1-{index + 1}"))
    requests: list[Request] = []
    for name in spec.get("files") or DEFAULT_FILES.get(chip, []):
        requests += load(name)
    requests += [metadata(key, str(value)) for key, value in (spec.get("meta") or {}).items()]
    requests.append(done())
    rom_serial = spec.get("rom_serial") or None
    rom = RomStage(serial_index=3 if chip == "2711" or rom_serial else 0,
                   num_interfaces=2 if spec.get("two_interfaces") else 1,
                   return_code=int(spec.get("return_code") or 0), serial=rom_serial)
    serial = str(spec.get("serial") or f"{0x5eed0000 + index:08x}")
    stages: list[Stage] = [rom, ServerStage(requests, serial=serial,
                                            stall_at_request=spec.get("stall_at"))]
    if spec.get("gadget"):
        stages.append(FinalStage(serial=serial, serial_index=3))
    return VirtualPi(chip, ports, busnum, stages,
                     reenumerate_delay=float(spec.get("reenumerate_delay", 0.05)),
                     unplug_after_bytes=spec.get("unplug_after"), keep_data=True,
                     open_error=spec.get("open_error"))


def summarise(pi: VirtualPi, spec: dict[str, Any]) -> dict[str, Any]:
    received = [_received(r) for r in pi.received]
    files = {r["name"]: {"size": r["size"], "sha256": r["sha256"]}
             for r in received if r["kind"] == "file" and r["size"]}
    second = next(({"size": r["size"], "sha256": r["sha256"]} for r in received
                   if r["kind"] == "second_stage"), None)
    acked = [r["name"] for r in received if r["kind"] == "ack" and r["name"].startswith("*")]
    return {"chip": pi.chip, "port": pi.port_path, "serial": spec.get("serial_used"),
            "arrive": spec.get("arrive", 0), "finished": pi.finished.is_set(),
            "finished_monotonic": pi.finished_at,
            "stage_index": pi.stage_index, "stage_count": len(pi.stages),
            "violations": list(pi.violations), "second_stage": second, "files": files,
            "sizes": pi.sizes(), "metadata_acked": acked, "received": received}


def _received(record: Received) -> dict[str, Any]:
    size = len(record.data) if record.data else record.value
    return {"stage": record.stage, "kind": record.kind, "name": record.name,
            "value": record.value, "size": size if record.kind in ("file", "second_stage",
                                                                     "boot_message") else 0,
            "sha256": record.sha256}


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


def load_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    specs: list[dict[str, Any]] = []
    if args.scenario:
        with open(args.scenario, encoding="utf-8") as handle:
            specs += list(json.load(handle).get("pis", []))
    specs += [parse_pi_option(text, len(specs) + i) for i, text in enumerate(args.pi)]
    return specs


class HostRun:
    """Testbed + boards + the command under test."""

    def __init__(self, specs: Sequence[dict[str, Any]]):
        from .umockdev_bridge import UmockdevBus  # needs gi: import only under the wrapper

        self.specs = [dict(spec) for spec in specs]
        self.pis = [build_pi(spec, i) for i, spec in enumerate(self.specs)]
        for spec, pi in zip(self.specs, self.pis):
            spec["serial_used"] = next((s.serial for s in pi.stages
                                        if isinstance(s, ServerStage)), None)
        self.bus = UmockdevBus()
        self.timers: list[threading.Timer] = []

    def start(self) -> None:
        for spec, pi in zip(self.specs, self.pis):
            delay = float(spec.get("arrive") or 0)
            if delay > 0:
                timer = threading.Timer(delay, self.bus.plug_in, (pi,))
                timer.daemon = True
                self.timers.append(timer)
            else:
                self.bus.plug_in(pi)
        self.bus.settle(10)
        for timer in self.timers:
            timer.start()

    def run(self, command: Sequence[str], timeout: float | None) -> int:
        needs_drop = os.geteuid() == 0 and any(s.get("open_error") == "access"
                                               for s in self.specs)
        process = subprocess.Popen(list(command), env=command_env(self.bus.child_env()),
                                   preexec_fn=_drop_dac_capabilities if needs_drop else None)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            return 124
        except KeyboardInterrupt:
            process.terminate()
            process.wait()
            return 130

    def report(self, command: Sequence[str], exit_code: int, duration: float) -> dict[str, Any]:
        return {"command": list(command), "exit_code": exit_code,
                "duration": round(duration, 3),
                "started_monotonic": time.monotonic() - duration, "umockdev_dir": self.bus.root_dir,
                "pis": [summarise(pi, spec) for pi, spec in zip(self.pis, self.specs)],
                "bridge": {"errors": list(self.bus.errors),
                           "unhandled_ioctls": list(self.bus.unhandled),
                           "enumerations": list(self.bus.enumerations)}}

    def close(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.bus.close()


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
    parser.add_argument("-q", "--quiet", action="store_true", help="no summary on stderr")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    return parser


def _summary_lines(report: dict[str, Any]) -> list[str]:
    lines = []
    for pi in report["pis"]:
        state = "finished" if pi["finished"] else f"stopped in stage {pi['stage_index']}"
        lines.append(f"virtual {pi['chip']} at {pi['port']}: {state}, {len(pi['files'])} "
                     f"file(s), {len(pi['violations'])} violation(s)")
        lines += [f"  violation: {text}" for text in pi["violations"]]
    lines += [f"bridge error: {text.splitlines()[0]}" for text in report["bridge"]["errors"]]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    args = _argument_parser().parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("umockdev_host: no command given (put it after --)", file=sys.stderr)
        return 2
    if not os.environ.get("LD_PRELOAD", "").count("umockdev"):
        print("umockdev_host: not running under umockdev-wrapper; use rpiboot-virtual",
              file=sys.stderr)
        return 2
    try:
        specs = load_scenario(args)
        host = HostRun(specs)
    except (ValueError, OSError, KeyError, TypeError) as error:
        print(f"umockdev_host: {error}", file=sys.stderr)
        return 2
    started = time.monotonic()
    try:
        host.start()
        exit_code = host.run(command, args.command_timeout)
        time.sleep(0.05)  # let re-enumerations already under way land in the report
        report = host.report(command, exit_code, time.monotonic() - started)
    finally:
        host.close()
    _write_report(report, args.report)
    if not args.quiet:
        for line in _summary_lines(report):
            print(line, file=sys.stderr)
    return exit_code


def _write_report(report: dict[str, Any], destination: str | None) -> None:
    if not destination:
        return
    text = json.dumps(report, indent=2)
    if destination == "-":
        print(text, file=sys.stderr)
        return
    with open(destination, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
