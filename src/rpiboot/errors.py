"""Failures the tool reports, each with a documented exit status."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """Process exit statuses. With several devices, the highest-ranked outcome wins."""

    OK = 0
    USAGE = 2
    BOOT_DIRECTORY = 3
    NO_DEVICE = 4
    TRANSFER = 5
    REFUSED = 6
    PERMISSION = 7
    USB_UNAVAILABLE = 8
    DUPLICATE_SERIAL = 9
    HANGUP = 129
    INTERRUPTED = 130
    TERMINATED = 143


# Worst first: the order in which outcomes win when several devices end differently.
_SEVERITY = [ExitCode.USB_UNAVAILABLE, ExitCode.PERMISSION, ExitCode.BOOT_DIRECTORY,
             ExitCode.REFUSED, ExitCode.TRANSFER, ExitCode.DUPLICATE_SERIAL, ExitCode.NO_DEVICE,
             ExitCode.TERMINATED, ExitCode.HANGUP, ExitCode.INTERRUPTED, ExitCode.USAGE,
             ExitCode.OK]


def worst(codes: "list[ExitCode]") -> ExitCode:
    return min(codes, key=_SEVERITY.index, default=ExitCode.OK)


class RpibootError(Exception):
    """An error with a stable machine-readable code and an exit status."""

    code = "error"
    exit_code = ExitCode.TRANSFER


class UsageError(RpibootError):
    code = "usage"
    exit_code = ExitCode.USAGE


class BootDirectoryError(RpibootError):
    code = "boot_directory"
    exit_code = ExitCode.BOOT_DIRECTORY


class DownloadError(BootDirectoryError):
    """--fetch-boot-files: a file could not be downloaded or did not match its digest."""
    code = "download"


class NoDeviceError(RpibootError):
    code = "no_device"
    exit_code = ExitCode.NO_DEVICE


class TransferError(RpibootError):
    code = "transfer"
    exit_code = ExitCode.TRANSFER


class DeviceGoneError(TransferError):
    code = "device_gone"


class StalledError(TransferError):
    code = "stalled"


class ProtocolError(TransferError):
    code = "protocol"


class FollowTimeoutError(TransferError):
    """--follow: the device did not reappear as its final USB function in time."""

    code = "follow_timeout"


class RefusedError(RpibootError):
    code = "refused"
    exit_code = ExitCode.REFUSED


class PermissionDeniedError(RpibootError):
    code = "permission"
    exit_code = ExitCode.PERMISSION


class UsbUnavailableError(RpibootError):
    code = "usb_unavailable"
    exit_code = ExitCode.USB_UNAVAILABLE


class Interrupted(RpibootError):
    """Ctrl-C (SIGINT). The stop signals have their own codes below."""

    code = "interrupted"
    exit_code = ExitCode.INTERRUPTED


class Terminated(Interrupted):
    """SIGTERM: systemd stopping a unit, ``timeout``, a CI runner."""

    code = "terminated"
    exit_code = ExitCode.TERMINATED


class HungUp(Interrupted):
    """SIGHUP: the controlling terminal went away."""

    code = "hangup"
    exit_code = ExitCode.HANGUP


class DuplicateSerialWarning(RpibootError):
    """-j DIR: a device reported the serial of another device's record (an impostor, or a
    changed board); both records are kept, and the run's exit status says so."""

    code = "duplicate_serial"
    exit_code = ExitCode.DUPLICATE_SERIAL
