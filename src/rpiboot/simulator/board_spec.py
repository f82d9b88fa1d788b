"""Virtual boards from ``--pi CHIP:PORT[,OPTION...]`` and ``--scenario`` JSON: parsing, checks,
building the :class:`~rpiboot.simulator.virtual_pi.VirtualPi`, and each board's report entry.

Standard library only: ``rpiboot-virtual`` checks specs under the project's Python before
umockdev runs, and the host runner builds the boards under the system Python.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from .firmware_roles import role_report, virtual_board
from .script import Request, done, load, metadata
from .signatures import pubkey_from_pem
from .virtual_disk import VirtualDisk, check_disk_spec, describe
from .virtual_pi import FinalStage, Received, RomStage, ServerStage, Stage, VirtualPi

DEFAULT_FILES = {"2835": ["config.txt", "start.elf", "fixup.dat"],
                 "2837": ["config.txt", "start.elf", "fixup.dat"],
                 "2711": ["config.txt", "boot.img"],
                 "2712": ["config.txt", "boot.img"]}
OPEN_ERRORS = ("access", "io")
CHIP_DIRECTORIES = {"2835": "2710", "2837": "2710", "2711": "2711", "2712": "2712"}
SPEC_KEYS = {"chip", "port", "serial", "rom_serial", "files", "meta", "two_interfaces", "arrive",
             "reenumerate_delay", "unplug_after", "stall_at", "return_code", "open_error",
             "gadget", "disks", "role", "otp_key", "otp_key_hash", "glitch_after",
             "server_glitch", "return_code_size"}
"""glitch_after, server_glitch and return_code_size are fault knobs (VirtualPi's
glitch_after_bytes, a file server that leaves before asking, RomStage.return_code_size)."""
ROLE_EXCLUSIVE = ("files", "meta", "rom_serial", "two_interfaces", "stall_at", "return_code")
NOT_PAYLOAD_SUFFIXES = (".md", ".txt", ".sh", ".conf", ".json", ".pem", ".py", ".original.bin")
NOT_PAYLOAD_NAMES = {"bootfiles.bin", "rpi-eeprom-config", "README", "LICENSE",
                     "pieeprom.signed_boot.bin"}  # update-pieeprom -f: a build input


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
    chip, colon, port = head.partition(":")
    if not colon or not port:
        raise ValueError(f"--pi {text!r}: give the board's USB port path, e.g. --pi "
                         f"{chip or '2711'}:1-3")
    spec: dict[str, Any] = {"chip": chip, "port": port, "meta": {}}
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
        elif key == "role":
            spec["role"] = [name for name in value.split("+") if name]
        elif key in ("serial", "rom-serial", "open-error", "otp-key", "otp-key-hash"):
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
    if not spec["meta"]:
        del spec["meta"]
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
    if spec.get("port") is None:
        raise ValueError(f"{where}: no port; give the board's USB port path, e.g. \"1-3\"")
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
    for key in ("two_interfaces", "gadget", "server_glitch"):
        if spec.get(key) is not None and not isinstance(spec[key], bool):
            raise bad(key, "true or false")
    for key in ("arrive", "reenumerate_delay"):
        value = spec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not 0 <= value < float("inf")):
            raise bad(key, "a number of seconds >= 0")
    for key in ("unplug_after", "stall_at", "return_code", "glitch_after", "return_code_size"):
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
    _check_roles(spec, where)
    return spec


def _check_roles(spec: dict[str, Any], where: str) -> None:
    roles = spec.get("role")
    if roles is None:
        if spec.get("otp_key") or spec.get("otp_key_hash"):
            raise ValueError(f"{where}: otp_key needs a role (e.g. role=secure-boot)")
        return
    if isinstance(roles, str):
        roles = spec["role"] = [name for name in roles.split("+") if name]
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) for r in roles):
        raise ValueError(f"{where}: role={roles!r}: expected a role or a list of roles")
    clash = [key for key in ROLE_EXCLUSIVE if spec.get(key)]
    if clash:
        raise ValueError(f"{where}: role decides what the board requests; drop "
                         f"{', '.join(clash)}")
    for key in ("otp_key", "otp_key_hash"):
        if spec.get(key) is not None and not isinstance(spec[key], str):
            raise ValueError(f"{where}: {key}={spec[key]!r}: expected a string")
    hash_text = spec.get("otp_key_hash")
    if hash_text is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", hash_text):
        raise ValueError(f"{where}: otp_key_hash: expected 64 hex digits")
    try:
        spec["otp_pubkey"] = _otp_pubkey(spec.get("otp_key"))
        build_roles_probe(spec)
    except (OSError, ValueError) as error:
        text = error.strerror if isinstance(error, OSError) and error.strerror else error
        raise ValueError(f"{where}: {text}") from None


def _otp_pubkey(path: str | None) -> bytes | None:
    """pubkey.bin of the key whose hash the board's OTP holds (PEM key or pubkey.bin)."""
    if not path:
        return None
    with open(path, "rb") as handle:
        data = handle.read(1 << 16)
    if len(data) == 264:
        return data
    try:
        return pubkey_from_pem(data)
    except ValueError:
        raise ValueError(f"otp_key {path}: not a PEM RSA key or a 264-byte pubkey.bin") from None


def build_roles_probe(spec: dict[str, Any]) -> None:
    """Raise ValueError now (before anything runs) for an unknown role or a chip it is not for."""
    virtual_board(str(spec["chip"]), (1,), spec["role"])


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
    busnum, ports = parse_port(str(spec["port"]))
    serial = str(spec.get("serial") or f"{0x5eed0000 + index:08x}")
    if spec.get("role"):
        pubkey = spec.get("otp_pubkey")
        key_hash = spec.get("otp_key_hash") or (hashlib.sha256(pubkey).hexdigest()
                                                if pubkey else None)
        return virtual_board(chip, ports, spec["role"], disks=build_disks(spec, scratch),
                             serial=serial, otp_key_hash=key_hash, eeprom_pubkey=pubkey,
                             bus_number=busnum,
                             reenumerate_delay=float(spec.get("reenumerate_delay", 0.05)),
                             unplug_after_bytes=spec.get("unplug_after"),
                             open_error=spec.get("open_error"))
    requests: list[Request] = []
    for name in spec.get("files") or DEFAULT_FILES.get(chip, []):
        requests += load(name)
    requests += [metadata(key, str(value)) for key, value in (spec.get("meta") or {}).items()]
    requests.append(done())
    rom_serial = spec.get("rom_serial") or None
    rom = RomStage(serial_index=3 if chip == "2711" or rom_serial else 0,
                   num_interfaces=2 if spec.get("two_interfaces") else 1,
                   return_code=int(spec.get("return_code") or 0), serial=rom_serial,
                   return_code_size=int(spec.get("return_code_size", 4)))
    stages: list[Stage] = [rom, ServerStage(requests, serial=serial,
                                            stall_at_request=spec.get("stall_at"))]
    if spec.get("server_glitch"):
        stages.insert(1, ServerStage([], serial=serial, leave_at_request=0))
    if spec.get("gadget") or spec.get("disks"):
        stages.append(FinalStage(serial=serial, serial_index=3,
                                 disks=build_disks(spec, scratch)))
    return VirtualPi(chip, ports, busnum, stages,
                     reenumerate_delay=float(spec.get("reenumerate_delay", 0.05)),
                     unplug_after_bytes=spec.get("unplug_after"), keep_data=True,
                     open_error=spec.get("open_error"),
                     glitch_after_bytes=spec.get("glitch_after"))


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
                               for disk in stage.disks]),
            "halted": pi.halted, "roles": role_report(pi)}


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
        data = read_scenario(args.scenario)
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
    if not specs:
        raise ValueError("no boards: give --pi CHIP:PORT (e.g. --pi 2711:1-3) or --scenario FILE")
    slots = [(spec["port"], float(spec.get("arrive") or 0)) for spec in specs]
    twice = sorted({port for port, arrive in slots if slots.count((port, arrive)) > 1})
    if twice:
        raise ValueError(f"two boards on the same USB port {', '.join(twice)} at the same time; "
                         "give the later one arrive=SECONDS (it replaces the first) - a board "
                         "that boots several times is one board with a role")
    return specs


def read_scenario(path: str) -> Any:
    """The scenario file's JSON; ValueError with one line for every way that can fail."""
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as error:
        raise ValueError(f"scenario {path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ValueError(f"scenario {path}: not UTF-8 text") from None
    except ValueError as error:
        raise ValueError(f"scenario {path}: not valid JSON ({error})") from None


def directory_warnings(pi: VirtualPi, directory: Path) -> list[str]:
    """A finished board that never asked for files the boot directory offers: the rehearsal
    passed without them (e.g. an EEPROM update "succeeding" with no pieeprom sent)."""
    if not pi.finished.is_set() or not directory.is_dir():
        return []
    requested = {r.name for r in pi.received if r.kind == "request_read"}
    offered = _payload(directory) | _payload(directory / CHIP_DIRECTORIES[pi.chip])
    disks = {disk.path.name for stage in pi.stages if isinstance(stage, FinalStage)
             for disk in stage.disks if disk.path.parent.resolve() == directory.resolve()}
    missing = sorted(offered - requested - disks)
    if not missing:
        return []
    return [f"the board at {pi.port_path} (BCM{pi.chip}) finished without requesting "
            f"{', '.join(missing)}, which {directory} offers: they were not tested"]


def role_warnings(pis: Sequence[VirtualPi]) -> list[str]:
    """Firmware that ran without files it expects (e.g. recovery.bin with no pieeprom.bin,
    which real firmware reports as success)."""
    warnings = []
    for pi in pis:
        for stage in (role_report(pi) or {}).get("stages", []):
            if stage["reached"] and stage["never_received"]:
                warnings.append(f"the board at {pi.port_path} ran {stage['role']} without "
                                f"receiving {', '.join(stage['never_received'])}")
    return warnings


def _payload(directory: Path) -> set[str]:
    try:
        names = [entry.name for entry in directory.iterdir() if entry.is_file()]
    except OSError:
        return set()
    return {name for name in names if not name.startswith((".", "bootcode", "README"))
            and name not in NOT_PAYLOAD_NAMES and not name.endswith(NOT_PAYLOAD_SUFFIXES)}
