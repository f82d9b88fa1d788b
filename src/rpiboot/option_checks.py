"""Command-line checks beyond argparse: every number finite and in range, options that exclude
each other, and the flags ``--demo`` cannot honour. Each failure is one usage line (exit 2)."""

from __future__ import annotations

import argparse
import math
import re
from typing import Sequence

_PORT_FLAG = re.compile(r"^-(\d+)$")

DAY = 86400.0
NUMBER_RANGES: dict[str, tuple[float, float, bool]] = {
    # option dest: (lowest, highest, lowest allowed itself)
    "timeout": (0.0, 30 * DAY, False),
    "run_timeout": (0.0, 30 * DAY, False),
    "follow": (0.0, 30 * DAY, False),
    "reenumerate_timeout": (0.0, DAY, False),
    "stall_timeout": (0.0, DAY, False),
    "open_delay": (0.0, 3600.0, True),
    "return_code_delay": (0.0, 3600.0, True),
    "close_delay": (0.0, 3600.0, True),
    "retry_delay": (0.0, 3600.0, True),
    "delay": (1, 60_000_000, True),
    "retries": (1, 1000, True),
    "chunk_size": (512, 16 * 1024 * 1024, True),
    "port_number": (0, 98, True),
}
"""Bounds of the numeric options. The upper bounds keep every wait inside what threading and
libusb accept (a timeout of days is already 'never' for a boot)."""

_SPELLING = {"delay": "-m", "port_number": "the port number (--port, -0 ... -98)"}

VALUE_OPTIONS = frozenset({
    "--timeout", "--run-timeout", "--open-delay", "--return-code-delay", "--close-delay",
    "--retry-delay", "--retries", "--reenumerate-timeout", "--stall-timeout", "--chunk-size",
    "--follow", "-m", "--delay", "--port", "-d", "--directory", "-p", "--path", "-i",
    "--serial", "-j", "--metadata", "--libusb", "--group"})
"""Options whose next argument is their value, never upstream's -0 ... -98 port flag."""

DEMO_REFUSES = {"port_number": "--port/-0...-98", "port_path": "-p", "serial": "-i",
                "follow": "--follow", "loop": "-l", "signed": "-s", "libusb": "--libusb",
                "overlay": "-o"}
"""What --demo cannot honour: the demo boards sit at fixed ports, have fixed serials, never
become a USB gadget, are unsigned and live in-process (no libusb)."""


def normalise(argv: Sequence[str]) -> list[str]:
    """Upstream's -0 ... -98 become --port N, except where an option takes the value
    (``--timeout -1`` is a negative timeout, refused by :func:`check_numbers`)."""
    result: list[str] = []
    previous = ""
    for argument in argv:
        match = _PORT_FLAG.match(argument)
        if match and previous not in VALUE_OPTIONS:
            result += ["--port", match.group(1)]
        else:
            result.append(argument)
        previous = argument
    return result


def option_name(dest: str) -> str:
    return _SPELLING.get(dest, "--" + dest.replace("_", "-"))


def _shown(number: float | int) -> str:
    """A number as the user would write it: 16777216, not %g's 1.67772e+07."""
    if isinstance(number, int) or (number.is_integer() and abs(number) < 1e15):
        return str(int(number))
    return f"{number:g}"


def number_problem(dest: str, value: float | int | None) -> str | None:
    """Why the value of a numeric option is unusable, or None."""
    if value is None:
        return None
    low, high, low_allowed = NUMBER_RANGES[dest]
    name = option_name(dest)
    if isinstance(value, float) and not math.isfinite(value):
        return f"{name} must be a finite number, not {value}"
    if value < low or (value == low and not low_allowed):
        bound = f"at least {_shown(low)}" if low_allowed else f"more than {_shown(low)}"
        return f"{name} must be {bound}, not {_shown(value)}"
    if value > high:
        return f"{name} must be at most {_shown(high)}, not {_shown(value)}"
    return None


def check_numbers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for dest in NUMBER_RANGES:
        problem = number_problem(dest, getattr(args, dest, None))
        if problem is not None:
            parser.error(problem)


def check_conflicts(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.overlay and args.directory is None:
        parser.error("-o/--overlay needs -d DIR")
    if args.port_number is not None and args.port_path is not None:
        parser.error("a port number (-0 ... -98) and -p PATH exclude each other")
    actions = [name for name in ("list", "udev_rule", "install_udev_rule", "demo",
                                 "fetch_boot_files") if getattr(args, name, None) not in (None, False)]
    if len(actions) > 1 and actions != ["list", "demo"]:
        parser.error(" and ".join("--" + name.replace("_", "-") for name in actions)
                     + " exclude each other")
    if args.demo:
        refused = [flag for dest, flag in DEMO_REFUSES.items()
                   if getattr(args, dest) not in (None, False)]
        if refused:
            parser.error(f"--demo boots built-in virtual boards at fixed ports; it cannot be "
                         f"combined with {', '.join(refused)}")
