"""USB access set-up: the Linux udev rule (``--udev-rule``, ``--install-udev-rule``) and the
hints for other systems shown where opening a device or loading libusb fails."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Sequence

from .errors import PermissionDeniedError, RpibootError, UsageError

RULES_PATH = Path("/etc/udev/rules.d/60-rpiboot.rules")
DEFAULT_GROUP = "plugdev"
PRODUCT_IDS = ("2763", "2764", "2711", "2712")
VENDOR_ID = "0a5c"
RELOAD_COMMANDS = (["udevadm", "control", "--reload-rules"],
                   # only Broadcom USB devices, not every device on the system
                   ["udevadm", "trigger", "--subsystem-match=usb",
                    f"--attr-match=idVendor={VENDOR_ID}"])
SUDO_SECURE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The PATH Debian's sudo uses (secure_path in /etc/sudoers), whatever the caller's PATH."""
_GROUP_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,31}\$?$")


def own_command(*, sudo: bool = False, argv0: str | None = None,
                search_path: str | None = None) -> str:
    """How to run this rpiboot again from a shell: ``rpiboot`` where that name finds this very
    program (with ``sudo``: on sudo's fixed PATH), else the program's absolute path, so a hint
    works for a virtual environment, pipx or uv install too. Run as ``python -m rpiboot``: that
    Python's absolute path with ``-m rpiboot``."""
    program = os.path.abspath(argv0 if argv0 is not None else sys.argv[0])
    if Path(program).stem != "rpiboot" or not os.path.isfile(program):
        return f"{shlex.quote(sys.executable)} -m rpiboot"
    path = SUDO_SECURE_PATH if sudo else (search_path if search_path is not None
                                          else os.environ.get("PATH", ""))
    found = shutil.which("rpiboot", path=path)
    try:
        if found and os.path.samefile(found, program):
            return "rpiboot"
    except OSError:
        pass
    return shlex.quote(program)


def udev_rule(group: str = DEFAULT_GROUP) -> str:
    """The rules file: one line per boot-mode product, group access plus ``uaccess`` (the user
    logged in at the seat gets access without being in the group)."""
    if not _GROUP_NAME.match(group):
        raise UsageError(f"not a valid group name: {group!r}")
    lines = [
        "# rpiboot: let members of group '" + group + "' and the user at the seat open",
        "# Raspberry Pis in USB boot mode (Broadcom 0a5c). Installed by 'rpiboot "
        "--install-udev-rule'.",
    ]
    for product in PRODUCT_IDS:
        lines.append(f'SUBSYSTEM=="usb", ATTR{{idVendor}}=="0a5c", ATTR{{idProduct}}=="{product}", '
                     f'MODE="0660", GROUP="{group}", TAG+="uaccess"')
    return "\n".join(lines) + "\n"


Runner = Callable[[Sequence[str]], int]


def _run(command: Sequence[str]) -> int:
    return subprocess.run(list(command), check=False).returncode


def install_udev_rule(group: str = DEFAULT_GROUP, *, path: Path = RULES_PATH,
                      confirm: Callable[[str], bool] | None = None,
                      runner: Runner = _run, which: Callable[[str], str | None] = shutil.which,
                      platform: str = sys.platform,
                      say: Callable[[str], None] = print) -> bool:
    """Write the rule to ``path`` (after ``confirm`` unless it is None), then reload udev.

    Returns False when the user declined. Raises :class:`UsageError` off Linux and
    :class:`PermissionDeniedError` when the file cannot be written (not root)."""
    if not platform.startswith("linux"):
        raise UsageError("udev rules are for Linux; " + access_hint(platform))
    text = udev_rule(group)
    if confirm is not None and not confirm(f"Write this rule to {path} and reload udev?\n\n"
                                           f"{text}\nProceed? [y/N] "):
        say("Nothing written.")
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomically(path, text)
    except PermissionError:
        raise PermissionDeniedError(
            f"cannot write {path}: permission denied; run it as root ('sudo "
            f"{own_command(sudo=True)} --install-udev-rule'), or: {own_command()} --udev-rule | "
            f"sudo tee {path}") from None
    except OSError as error:
        raise RpibootError(f"cannot write {path}: {error}") from None
    say(f"Wrote {path}")
    if which("udevadm") is None:
        say("udevadm not found: reload the rules yourself or re-plug the device.")
        return True
    for command in RELOAD_COMMANDS:
        code = runner(list(command))
        if code != 0:
            say(f"'{' '.join(command)}' failed with status {code}; re-plug the device or "
                f"reboot to apply the rule.")
            return True
    say(f"udev rules reloaded. Members of group '{group}' (add yourself with: sudo usermod "
        f"-aG {group} $USER, then log in again) can now run rpiboot without root.")
    return True


def _write_atomically(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and rename it over ``path``: udev
    never reads a half-written rules file. The file is world-readable (0644), like a rules file
    written by hand."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise


def access_hint(platform: str = sys.platform) -> str:
    """What to do when a device cannot be opened, for this operating system."""
    if platform.startswith("linux"):
        return (f"run '{own_command()} --udev-rule' to see a udev rule that lets your group "
                f"open it ('sudo {own_command(sudo=True)} --install-udev-rule' installs it), or "
                f"run as root")
    if platform == "win32":
        return ("Windows needs the WinUSB driver for the device: install it with Zadig "
                "(https://zadig.akeo.ie) or the Raspberry Pi rpiboot driver installer "
                "(rpiboot_setup.exe), then re-plug the device")
    if platform == "darwin":
        return ("on macOS make sure libusb is installed ('brew install libusb') and no other "
                "program holds the device")
    return "check that your user may open USB devices, or run as root"


def libusb_hint(platform: str = sys.platform) -> str:
    """What to install when libusb cannot be loaded, for this operating system."""
    if platform.startswith("linux"):
        return ("install libusb (Debian/Ubuntu: sudo apt install libusb-1.0-0; Fedora: sudo dnf "
                "install libusb1) or pip install libusb-package")
    if platform == "win32":
        return ("pip install libusb-package (bundles libusb-1.0.dll); the device also needs "
                "the WinUSB driver (Zadig or the rpiboot driver installer)")
    if platform == "darwin":
        return "brew install libusb (or pip install libusb-package)"
    return "install libusb 1.0 or pip install libusb-package"
