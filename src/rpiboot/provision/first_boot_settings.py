"""First-boot settings for a Raspberry Pi OS image, and the rules every value must pass.

The values end up inside YAML (cloud-init) and a shell script (firstrun.sh),
both run as root on the board's first boot, so each is checked against a
strict pattern here, before any file is generated: a value that passes
cannot break out of its quoting in either file. Templates ({serial}, ...)
are expanded by the pipeline before a :class:`Settings` is built.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import re
import unicodedata
import zoneinfo
from dataclasses import dataclass, field

from .errors import ProvisionError

INIT_MECHANISMS = ("cloud-init", "firstrun")

_HOSTNAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# System accounts of a Debian / Raspberry Pi OS base system: renaming the
# first user to one of these would break the image.
_RESERVED_USERS = frozenset(
    "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc "
    "gnats nobody systemd-network systemd-timesync messagebus sshd avahi polkitd".split())
_CRYPT = re.compile(r"\$(6|5|y|7|2[aby])\$[./A-Za-z0-9$=,]{8,250}")
_KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
              "sk-ecdsa-sha2-nistp256@openssh.com")
_KEY = re.compile(r"(?:^|.*\s)(?:%s)\s+[A-Za-z0-9+/]{16,}={0,3}(?:\s.*)?$"
                  % "|".join(re.escape(t) for t in _KEY_TYPES))
_PSK_HEX = re.compile(r"[0-9A-Fa-f]{64}")
_COUNTRY = re.compile(r"[A-Z]{2}")
_KEYMAP = re.compile(r"[a-z][a-z0-9_]{0,15}")
_LOCALE = re.compile(r"[A-Za-z]{1,8}(_[A-Za-z]{2,3})?(\.[A-Za-z0-9-]{1,20})?(@[A-Za-z0-9]{1,20})?")
_TIMEZONE = re.compile(r"[A-Za-z0-9_+-]{1,40}(/[A-Za-z0-9_+-]{1,40}){0,2}")


class CustomiseError(ProvisionError):
    """Customisation failed: bad settings (customise_invalid) or the disk (customise_failed)."""

    code = "customise_failed"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


def invalid(message: str) -> CustomiseError:
    return CustomiseError(message, "customise_invalid")


@dataclass
class Settings:
    hostname: str | None = None
    user: str | None = None
    password_hash: str | None = None       # crypt(3) string ($6$/$y$...), never a plain password
    ssh_authorized_keys: list[str] = field(default_factory=list)
    ssh_password_auth: bool | None = None
    wifi_ssid: str | None = None
    wifi_password: str | None = None        # passphrase (8-63 characters) or 64 hex digits (PSK)
    wifi_country: str | None = None
    wifi_hidden: bool = False
    keyboard_layout: str | None = None
    locale: str | None = None
    timezone: str | None = None
    init: str | None = None                 # "cloud-init" | "firstrun" | None (detect from the image)

    @property
    def ssh_enabled(self) -> bool:
        return bool(self.ssh_authorized_keys) or self.ssh_password_auth is True

    def is_empty(self) -> bool:
        blank = dataclasses.replace(Settings(), init=self.init)
        return self == blank


def validate_settings(settings: Settings) -> Settings:
    """A checked copy of ``settings`` (country upper-cased, keys stripped); raises CustomiseError."""
    keys = settings.ssh_authorized_keys
    if isinstance(keys, (str, bytes)) or not isinstance(keys, (list, tuple)):
        raise invalid("ssh_authorized_keys must be a list of strings")
    s = dataclasses.replace(settings, ssh_authorized_keys=list(keys))
    _check_types(s)
    if s.init is not None and s.init not in INIT_MECHANISMS:
        raise invalid(f"customise init must be one of {', '.join(INIT_MECHANISMS)}, not {s.init!r}")
    _check(s.hostname, _HOSTNAME, "hostname", "1-63 letters, digits or '-', not starting "
           "or ending with '-' (RFC 1123 label)")
    _check_user(s)
    _check_ssh(s)
    _check_wifi(s)
    _check(s.keyboard_layout, _KEYMAP, "keyboard layout", "an XKB layout name such as 'gb' or 'us'")
    _check(s.locale, _LOCALE, "locale", "a locale name such as 'en_GB.UTF-8'")
    _check(s.timezone, _TIMEZONE, "timezone", "a tz database name such as 'Europe/London'")
    _check_timezone_known(s.timezone)
    return s


def _check_timezone_known(timezone: str | None) -> None:
    """A typo such as 'Europe/Londn' would leave every board on UTC without a word; the host's
    tz database (when it has one) is the board's in all but the newest zones."""
    known = _known_timezones()
    if timezone is None or not known or timezone in known:
        return
    close = difflib.get_close_matches(timezone, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise invalid(f"unknown timezone {_show(timezone)} (not in the tz database){hint}")


@functools.lru_cache(maxsize=1)
def _known_timezones() -> frozenset[str]:
    try:
        return frozenset(zoneinfo.available_timezones())
    except Exception:  # noqa: BLE001 - no usable tz database on this host: nothing to check
        return frozenset()


def _check_types(s: Settings) -> None:
    for f in dataclasses.fields(s):
        value = getattr(s, f.name)
        if f.name == "ssh_authorized_keys":
            if not all(isinstance(k, str) for k in value):
                raise invalid("ssh_authorized_keys must be a list of strings")
        elif f.name in ("ssh_password_auth", "wifi_hidden"):
            if not isinstance(value, bool) and not (value is None and f.name == "ssh_password_auth"):
                raise invalid(f"{f.name} must be true or false")
        elif value is not None and not isinstance(value, str):
            raise invalid(f"{f.name} must be a string")
        elif value == "":
            raise invalid(f"{f.name} must not be empty (leave it out instead)")


def _check(value: str | None, pattern: re.Pattern[str], what: str, rule: str) -> None:
    if value is not None and not pattern.fullmatch(value):
        raise invalid(f"invalid {what} {_show(value)}: expected {rule}")


def _show(value: str) -> str:
    text = value if len(value) <= 60 else value[:57] + "..."
    return ascii(text)


def _one_line_text(text: str) -> bool:
    """No control characters, line or paragraph separators or lone surrogates."""
    return not any(unicodedata.category(c) in ("Cc", "Cs", "Zl", "Zp") for c in text)


def _check_user(s: Settings) -> None:
    _check(s.user, _USER, "user name", "a lower-case letter or '_', then up to 31 of a-z 0-9 _ -")
    if s.user in _RESERVED_USERS:
        raise invalid(f"user name {s.user!r} is a system account")
    if s.password_hash is not None:
        if not _CRYPT.fullmatch(s.password_hash):
            raise invalid("password_hash is not a crypt(3) string such as '$6$salt$hash' or "
                          "'$y$...' (hash a plain password with rpiboot.provision.password_hash)")
    if s.user is None and (s.password_hash or s.ssh_authorized_keys):
        raise invalid("a password hash or SSH keys need a user name")
    if s.user is not None and not (s.password_hash or any(k.strip() for k in s.ssh_authorized_keys)):
        raise invalid(f"user {s.user!r} needs a password_hash or SSH keys to log in with")


def _check_ssh(s: Settings) -> None:
    keys = []
    for key in s.ssh_authorized_keys:
        key = key.strip()
        if not key:
            continue
        if len(key) > 16384 or not _one_line_text(key):
            raise invalid(f"SSH key {_show(key)} has control characters or is too long")
        if not _KEY.fullmatch(key):
            raise invalid(f"not an OpenSSH public key line: {_show(key)}")
        keys.append(key)
    s.ssh_authorized_keys = keys
    if s.ssh_password_auth and not s.password_hash:
        raise invalid("ssh_password_auth needs a password_hash for the user")


def _check_wifi(s: Settings) -> None:
    if s.wifi_ssid is None:
        if s.wifi_password is not None or s.wifi_hidden:
            raise invalid("wifi password or hidden given without wifi_ssid")
    else:
        size = len(s.wifi_ssid.encode("utf-8", "surrogatepass"))
        if not 1 <= size <= 32 or not _one_line_text(s.wifi_ssid):
            raise invalid(f"invalid wifi_ssid {_show(s.wifi_ssid)}: "
                          "1-32 bytes of UTF-8 without control characters")
    password = s.wifi_password
    if password is not None and not _PSK_HEX.fullmatch(password):
        if not (8 <= len(password) <= 63 and all(" " <= c <= "~" for c in password)):
            raise invalid("wifi_password must be 8-63 printable ASCII characters or 64 hex digits")
    if s.wifi_country is not None:
        s.wifi_country = s.wifi_country.upper()
        _check(s.wifi_country, _COUNTRY, "wifi_country", "a two-letter ISO 3166 country code")
