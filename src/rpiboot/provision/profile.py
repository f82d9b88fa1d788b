"""Provisioning profiles: one TOML file says what every board leaves with.

    name = "cm4-line"                      # optional, default: the file's stem

    [boot]                                 # optional
    directory = "mass-storage-gadget64"    # default: the installed gadget for the board's chip

    [eeprom]                               # optional: flash the bootloader first
    recovery = "recovery"                  # recovery firmware directory (usbboot's recovery/)
    boot_conf = "boot.conf"                # bootloader configuration to store in the image
    image = "pieeprom.original.bin"        # optional, default recovery/pieeprom.original.bin
    key = "private.pem"                    # optional: sign the configuration

    [os]                                   # required
    image = "os.img.xz"                    # raw, .xz, .gz, .bz2, .zst or .zip
    bmap = "os.img.bmap"                   # optional
    storage = "emmc"                       # optional: which of the gadget's disks
    verify = true

    [customise]                            # optional: first-boot settings (templates)
    hostname = "cm4-{serial}"

    [ledger]                               # optional
    path = "ledger.sqlite"                 # or url = "postgresql://..."; --ledger overrides
    pool = "default"                       # identity pool that {pool.COLUMN} takes from

Relative paths are relative to the profile's own file. Every problem is a :class:`ProfileError`
with one line naming the key. Templates (``{serial}``, ``{mac}``, ``{chip}``, ``{unit}`` with a
format such as ``{unit:04d}``, ``{pool.COLUMN}``) are parsed here, so an unknown placeholder is
found before any board arrives.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .errors import ProvisionError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


class ProfileError(ProvisionError):
    """The profile, or a file it names, cannot be used."""

    code = "profile_invalid"


# --- schema ---------------------------------------------------------------------------------

STR, BOOL, INT, PATH, STR_LIST = "string", "boolean", "integer", "path", "list of strings"

SCHEMA: dict[str, dict[str, str]] = {
    "": {"name": STR},
    "boot": {"directory": PATH},
    "eeprom": {"recovery": PATH, "boot_conf": PATH, "image": PATH, "key": PATH},
    "os": {"image": PATH, "bmap": PATH, "storage": STR, "verify": BOOL},
    "customise": {
        "hostname": STR, "user": STR, "password_hash": STR, "ssh_authorized_keys": STR_LIST,
        "ssh_password_auth": BOOL, "wifi_ssid": STR, "wifi_password": STR, "wifi_country": STR,
        "wifi_hidden": BOOL, "keyboard_layout": STR, "locale": STR, "timezone": STR,
        "init": STR,
    },
    "ledger": {"path": PATH, "url": STR, "pool": STR},
}
REQUIRED = {"eeprom": ("recovery", "boot_conf"), "os": ("image",)}
HINTS = {
    ("customise", "password"): "put a crypt(3) hash in password_hash "
                               "(e.g. from 'openssl passwd -6'), never a plain password",
}
TEMPLATE_FIELDS = ("serial", "mac", "chip", "unit")
SAMPLES = {"serial": "0123abcd", "mac": "d8:3a:dd:00:00:01", "chip": "2711", "unit": 1}
INIT_CHOICES = ("cloud-init", "firstrun")
POOL_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


# --- the loaded profile ---------------------------------------------------------------------

@dataclass(frozen=True)
class Template:
    """A customisation value with placeholders, parsed once."""

    text: str
    fields: frozenset[str]
    """Placeholder names used: serial, mac, chip, unit, pool.COLUMN."""

    def render(self, values: Mapping[str, Any]) -> str:
        return _Formatter(values).format(self.text)


@dataclass(frozen=True)
class EepromSection:
    recovery: Path
    boot_conf: Path
    image: Path
    key: Path | None = None


@dataclass(frozen=True)
class OsSection:
    image: Path
    bmap: Path | None = None
    storage: str | None = None
    verify: bool = True


@dataclass(frozen=True)
class Profile:
    path: Path
    name: str
    os: OsSection
    boot_directory: Path | None = None
    eeprom: EepromSection | None = None
    customise: dict[str, Any] = field(default_factory=dict)
    """Settings as written; string values (and list items) are :class:`Template` objects."""
    ledger: str | None = None
    """Ledger path or URL from the profile (None: the default ledger)."""
    pool: str = "default"
    profile_id: str = ""
    """sha256 of the normalised profile and of every file it names."""
    files: dict[str, Path] = field(default_factory=dict)
    """Every file the profile names, by key (``os.image``...)."""

    @property
    def template_fields(self) -> frozenset[str]:
        used: set[str] = set()
        for value in self.customise.values():
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, Template):
                    used |= item.fields
        return frozenset(used)

    @property
    def pool_columns(self) -> frozenset[str]:
        return frozenset(name[5:] for name in self.template_fields if name.startswith("pool."))

    def settings_values(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """The [customise] settings with every template filled in from ``values``."""
        return {key: _render(value, values) for key, value in self.customise.items()}


def _render(value: Any, values: Mapping[str, Any]) -> Any:
    if isinstance(value, Template):
        return value.render(values)
    if isinstance(value, list):
        return [_render(item, values) for item in value]
    return value


# --- loading --------------------------------------------------------------------------------

def load_profile(path: str | Path) -> Profile:
    """Read, check and resolve a profile; raises :class:`ProfileError` with one line."""
    path = Path(path)
    raw = _read_toml(path)
    _check_keys(raw)
    base = path.resolve().parent
    files: dict[str, Path] = {}

    def file_key(section: str, key: str) -> Path | None:
        value = raw.get(section, {}).get(key)
        if value is None:
            return None
        resolved = base / os.path.expanduser(value)
        files[f"{section}.{key}"] = resolved
        return resolved

    if "os" not in raw:
        raise ProfileError(f"{path}: the profile needs an [os] section with image = \"...\"")
    os_section = OsSection(image=file_key("os", "image"),  # type: ignore[arg-type]
                           bmap=file_key("os", "bmap"), storage=raw["os"].get("storage"),
                           verify=raw["os"].get("verify", True))
    eeprom = None
    if "eeprom" in raw:
        recovery = file_key("eeprom", "recovery")
        assert recovery is not None
        image = file_key("eeprom", "image")
        if image is None:
            image = recovery / "pieeprom.original.bin"
            files["eeprom.image"] = image
        eeprom = EepromSection(recovery, file_key("eeprom", "boot_conf"),  # type: ignore[arg-type]
                               image, file_key("eeprom", "key"))
    boot_directory = file_key("boot", "directory")
    customise = _parse_customise(path, raw.get("customise", {}))
    ledger = _ledger_target(path, raw.get("ledger", {}), base)
    _check_files(path, files)
    return Profile(path=path, name=raw.get("name") or path.stem, os=os_section,
                   boot_directory=boot_directory, eeprom=eeprom, customise=customise,
                   ledger=ledger, pool=raw.get("ledger", {}).get("pool", "default"),
                   profile_id=profile_id(raw, files), files=files)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ProfileError(f"profile '{path}' does not exist") from None
    except IsADirectoryError:
        raise ProfileError(f"profile '{path}' is a directory, not a TOML file") from None
    except OSError as error:
        raise ProfileError(f"cannot read profile '{path}': {error.strerror}") from None
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a text file (TOML must be UTF-8)") from None
    except tomllib.TOMLDecodeError as error:
        raise ProfileError(f"{path}: not valid TOML: {error}") from None


def _check_keys(raw: dict[str, Any]) -> None:
    for key, value in raw.items():
        if key in SCHEMA and key:
            if not isinstance(value, dict):
                raise ProfileError(f"'{key}' must be a section ([{key}]), not a single value")
            for inner, inner_value in value.items():
                _check_value(key, inner, inner_value)
            for needed in REQUIRED.get(key, ()):
                if needed not in value:
                    raise ProfileError(f"[{key}] needs '{needed}'")
        else:
            _check_value("", key, value)


def _check_value(section: str, key: str, value: Any) -> None:
    where = f"[{section}] {key}" if section else key
    known = SCHEMA[section]
    if key not in known:
        hint = HINTS.get((section, key))
        if hint is None:
            choices = list(known) + ([] if section else [s for s in SCHEMA if s])
            close = difflib.get_close_matches(key, choices, n=1)
            hint = f"did you mean '{close[0]}'?" if close else \
                f"known keys: {', '.join(known) or 'none'}"
        kind = "section" if isinstance(value, dict) and not section else "key"
        raise ProfileError(f"unknown {kind} {where!r}; {hint}")
    expected = known[key]
    ok = {STR: isinstance(value, str), PATH: isinstance(value, str) and value != "",
          BOOL: isinstance(value, bool),
          INT: isinstance(value, int) and not isinstance(value, bool),
          STR_LIST: isinstance(value, list) and all(isinstance(v, str) for v in value)}[expected]
    if not ok:
        raise ProfileError(f"{where} must be a {'non-empty ' if expected == PATH else ''}"
                           f"{expected}, not {_describe(value)}")


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
             list: "a list", dict: "a table"}
    shown = "" if isinstance(value, (dict, list)) else f" ({value!r})"
    return names.get(type(value), type(value).__name__) + shown


def _parse_customise(path: Path, section: dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    for key, value in section.items():
        if key == "init" and value not in INIT_CHOICES:
            raise ProfileError(f"[customise] init must be one of {', '.join(INIT_CHOICES)}, "
                               f"not {value!r}")
        if isinstance(value, str) and key != "init":
            parsed[key] = parse_template(value, f"[customise] {key}")
        elif isinstance(value, list):
            parsed[key] = [parse_template(item, f"[customise] {key}") for item in value]
        else:
            parsed[key] = value
    return parsed


def parse_template(text: str, where: str) -> Template:
    """Parse ``text`` and try it with sample values; unknown placeholders are errors."""
    fields: set[str] = set()
    try:
        for _literal, name, spec, conversion in string.Formatter().parse(text):
            if name is None:
                continue
            if conversion is not None:
                raise ProfileError(f"{where}: '!{conversion}' is not allowed in a template")
            fields.add(_check_field(name, spec or "", where))
    except ValueError as error:
        raise ProfileError(f"{where}: bad template {text!r}: {error} "
                           f"(write {{{{ and }}}} for literal braces)") from None
    template = Template(text, frozenset(fields))
    sample = dict(SAMPLES, **{name: "x" for name in fields if name.startswith("pool.")})
    try:
        template.render(sample)
    except (ValueError, TypeError) as error:
        raise ProfileError(f"{where}: template {text!r} cannot be filled: {error}") from None
    return template


def _check_field(name: str, spec: str, where: str) -> str:
    if name.startswith("pool."):
        column = name[5:]
        if not POOL_COLUMN.match(column):
            raise ProfileError(f"{where}: {{{name}}}: a pool column is a name of letters, "
                               f"digits and '_'")
        return name
    if name not in TEMPLATE_FIELDS:
        close = difflib.get_close_matches(name, TEMPLATE_FIELDS, n=1)
        hint = f"did you mean {{{close[0]}}}?" if close else \
            "known: " + ", ".join(f"{{{f}}}" for f in TEMPLATE_FIELDS) + ", {pool.COLUMN}"
        raise ProfileError(f"{where}: unknown placeholder {{{name}}}; {hint}")
    if "{" in spec:
        raise ProfileError(f"{where}: nested placeholders are not allowed")
    return name


class _Formatter(string.Formatter):
    """Fills ``{pool.COLUMN}`` from the key ``pool.COLUMN`` (no attribute lookup at all)."""

    def __init__(self, values: Mapping[str, Any]):
        self.values = values

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> tuple[Any, str]:
        if field_name not in self.values:
            raise KeyError(f"no value for {{{field_name}}}")
        return self.values[field_name], field_name


def _ledger_target(path: Path, section: dict[str, Any], base: Path) -> str | None:
    if "path" in section and "url" in section:
        raise ProfileError("[ledger] takes either path or url, not both")
    if "url" in section:
        return section["url"]
    if "path" in section:
        return str(base / os.path.expanduser(section["path"]))
    return None


# --- files ----------------------------------------------------------------------------------

DIRECTORY_KEYS = {"boot.directory", "eeprom.recovery"}


def _check_files(path: Path, files: dict[str, Path]) -> None:
    for key, file in files.items():
        section, name = key.split(".")
        where = f"[{section}] {name}"
        want_dir = key in DIRECTORY_KEYS
        if not file.exists():
            raise ProfileError(f"{where}: '{file}' does not exist")
        if want_dir and not file.is_dir():
            raise ProfileError(f"{where}: '{file}' is not a directory")
        if not want_dir and not file.is_file():
            raise ProfileError(f"{where}: '{file}' is not a regular file")
        if not os.access(file, os.R_OK | (os.X_OK if want_dir else 0)):
            raise ProfileError(f"{where}: '{file}' is not readable")


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _tree_sha256(directory: Path) -> str:
    """A directory's identity: its regular files' names and contents, in order."""
    digest = hashlib.sha256()
    for item in sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(item.relative_to(directory)).encode() + b"\0")
        digest.update(file_sha256(item).encode())
    return digest.hexdigest()


def profile_id(raw: dict[str, Any], files: dict[str, Path]) -> str:
    """The same id for the same settings and the same file contents, wherever they live.

    The ledger's path/url are left out: where the record goes is not what the board gets.
    """
    settings = {key: value for key, value in raw.items() if key != "ledger"}
    pool = raw.get("ledger", {}).get("pool")
    hashes = {}
    for key, file in sorted(files.items()):
        try:
            hashes[key] = _tree_sha256(file) if file.is_dir() else file_sha256(file)
        except OSError as error:
            raise ProfileError(f"[{key.replace('.', '] ')}: cannot read '{file}': "
                               f"{error.strerror}") from None
    text = json.dumps({"profile": settings, "pool": pool, "files": hashes}, sort_keys=True,
                      default=str)
    return hashlib.sha256(text.encode()).hexdigest()
