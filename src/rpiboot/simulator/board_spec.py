"""Virtual boards from ``--pi CHIP:PORT[,OPTION...]`` and ``--scenario`` JSON: parsing, checks,
building the :class:`~rpiboot.simulator.virtual_pi.VirtualPi`, and each board's report entry.

Standard library only: ``rpiboot-virtual`` checks specs under the project's Python before
umockdev runs, and the host runner builds the boards under the system Python.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from .script import Request, done, load, metadata
from .virtual_disk import VirtualDisk, check_disk_spec, describe
from .virtual_pi import FinalStage, Received, RomStage, ServerStage, Stage, VirtualPi

DEFAULT_FILES = {"2835": ["config.txt", "start.elf", "fixup.dat"],
                 "2837": ["config.txt", "start.elf", "fixup.dat"],
                 "2711": ["config.txt", "boot.img"],
                 "2712": ["config.txt", "boot.img"]}
OPEN_ERRORS = ("access", "io")
SPEC_KEYS = {"chip", "port", "serial", "rom_serial", "files", "meta", "two_interfaces", "arrive",
             "reenumerate_delay", "unplug_after", "stall_at", "return_code", "open_error",
             "gadget", "disks"}


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
        elif key == "disk":
            size, _, path = value.partition(":")
            spec.setdefault("disks", []).append({"size": size, "file": path or None})
        elif key in ("serial", "rom-serial", "open-error"):
            spec[key.replace("-", "_")] = value
        elif key in ("arrive", "reenumerate-delay"):
            try:
                spec[key.replace("-", "_")] = float(value)
            except ValueError:
                raise ValueError(f"{key}={value!r} in {text!r}: expected seconds") from None
        elif key in ("unplug-after", "stall-at", "return-code"):
            try:
                spec[key.replace("-", "_")] = int(value, 0)
            except ValueError:
                raise ValueError(f"{key}={value!r} in {text!r}: expected an integer") from None
        else:
            raise ValueError(f"unknown board option {key!r} in {text!r}")
    return validate_spec(spec, f"--pi {text!r}")


def validate_spec(spec: Any, where: str) -> dict[str, Any]:
    """Check every field of one board (from --pi or the scenario); ValueError names the field."""
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a board must be a JSON object, not {type(spec).__name__}")
    unknown = sorted(set(spec) - SPEC_KEYS)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(map(repr, unknown))}")

    def bad(key: str, expected: str) -> ValueError:
        return ValueError(f"{where}: {key}={spec[key]!r}: expected {expected}")

    chip = spec.get("chip")
    if isinstance(chip, int) and not isinstance(chip, bool):
        chip = spec["chip"] = str(chip)
    if chip not in DEFAULT_FILES:
        raise ValueError(f"{where}: chip={chip!r}: expected one of {', '.join(DEFAULT_FILES)}")
    if spec.get("port") is not None:
        if not isinstance(spec["port"], str):
            raise bad("port", "a port path like \"1-3\"")
        try:
            parse_port(spec["port"])
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
    for key in ("serial", "rom_serial"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise bad(key, "a string")
    if spec.get("files") is not None and (not isinstance(spec["files"], list) or not all(
            isinstance(name, str) and name for name in spec["files"])):
        raise bad("files", "a list of file names")
    if spec.get("meta") is not None and (not isinstance(spec["meta"], dict) or not all(
            isinstance(value, (str, int, float)) for value in spec["meta"].values())):
        raise bad("meta", "an object of KEY: VALUE")
    for key in ("two_interfaces", "gadget"):
        if spec.get(key) is not None and not isinstance(spec[key], bool):
            raise bad(key, "true or false")
    for key in ("arrive", "reenumerate_delay"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value < float("inf")):
            raise bad(key, "a number of seconds >= 0")
    for key in ("unplug_after", "stall_at", "return_code"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 0):
            raise bad(key, "an integer >= 0")
    if spec.get("open_error") is not None and spec["open_error"] not in OPEN_ERRORS:
        raise bad("open_error", "access, io or null")
    if spec.get("disks") is not None:
        if not isinstance(spec["disks"], list):
            raise bad("disks", "a list of disks")
        spec["disks"] = [check_disk_spec(disk, f"{where}, disks[{i}]")
                         for i, disk in enumerate(spec["disks"])]
    return spec


def build_disks(spec: dict[str, Any], scratch: str) -> list[VirtualDisk]:
    """The gadget's disks; those without a file get one in ``scratch``."""
    disks = []
    for i, disk in enumerate(spec.get("disks") or ()):
        path = disk.get("file") or os.path.join(scratch, f"{spec.get('port')}-{i}.img")
        disks.append(VirtualDisk(Path(path), int(disk["size"]), bool(disk.get("read_only")),
                                 disk.get("lun"), disk.get("device")))
    return disks


def build_pi(spec: dict[str, Any], index: int, scratch: str = "") -> VirtualPi:
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
    if spec.get("gadget") or spec.get("disks"):
        stages.append(FinalStage(serial=serial, serial_index=3,
                                 disks=build_disks(spec, scratch)))
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
            "sizes": pi.sizes(), "metadata_acked": acked, "received": received,
            "disks": describe([disk for stage in pi.stages if isinstance(stage, FinalStage)
                               for disk in stage.disks])}


def _received(record: Received) -> dict[str, Any]:
    size = len(record.data) if record.data else record.value
    return {"stage": record.stage, "kind": record.kind, "name": record.name,
            "value": record.value, "size": size if record.kind in ("file", "second_stage",
                                                                     "boot_message") else 0,
            "sha256": record.sha256}


def load_scenario(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The boards from --scenario and --pi, every field checked (ValueError, OSError)."""
    specs: list[dict[str, Any]] = []
    if args.scenario:
        where = f"scenario {args.scenario}"
        with open(args.scenario, encoding="utf-8") as handle:
            try:
                data = json.load(handle)
            except ValueError as error:
                raise ValueError(f"{where}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{where}: the top level must be an object like "
                             f'{{"pis": [...]}}, not {type(data).__name__}')
        unknown = sorted(set(data) - {"pis"})
        if unknown:
            raise ValueError(f"{where}: unknown top-level field(s) "
                             f"{', '.join(map(repr, unknown))}")
        pis = data.get("pis", [])
        if not isinstance(pis, list):
            raise ValueError(f'{where}: "pis" must be a list, not {type(pis).__name__}')
        specs += [validate_spec(spec, f"{where}, pis[{i}]") for i, spec in enumerate(pis)]
    specs += [parse_pi_option(text, len(specs) + i) for i, text in enumerate(args.pi)]
    return specs
