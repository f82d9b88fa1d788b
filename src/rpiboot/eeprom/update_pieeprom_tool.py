"""update-pieeprom: usbboot's tools/update-pieeprom.sh without a shell.

Builds pieeprom.bin (+ pieeprom.sig) from pieeprom.original.bin and boot.conf
in the current directory, optionally signing the config (-k / -H) and
counter-signing the firmware (-f) and recovery.bin (-r, writes bootcode5.bin).

Exit codes: 0 success, 1 error, 2 usage error, 3 missing input (see common.py).  Differences from the script:
no ``set -x`` trace, no rpi-eeprom submodule warning, an unknown option is a
usage error (the script printed the help and carried on), keys and inputs are
all checked before anything is written, and the outputs (image, .sig and
with -f also bootcode5.bin / pieeprom.signed_boot.bin) are replaced together
at the end, so a failing run leaves the previous outputs untouched.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

from . import image as img
from .common import EXIT_MISSING_INPUT, EXIT_USAGE, ToolError, read_file, run_tool, write_files_atomically
from .signing import (RsaKey, Signer, hsm_signer, key_signer, load_private_key, load_rsa_key,
                      make_sig_file, pubkey_bin, run_hsm_wrapper, sig_timestamp,
                      sign_bootcode_2712, sign_pkcs1v15, verify_pkcs1v15)

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import rsa

PROG = "update-pieeprom"

# Oldest bootloader (BUILD_TIMESTAMP) with secure-boot support.
SECURE_BOOT_MIN_VERSION = 1632136573
RECOVERY_SRC = "recovery.original.bin"
RECOVERY_DST = "bootcode5.bin"
SIGNED_BOOT_IMAGE = "pieeprom.signed_boot.bin"
CUSTOMER_KEYNUM = 16
BCM2711_IMAGE_SIZE = 512 * 1024

USAGE_LINE = "update-pieeprom [-c CONF] [-i IMAGE] [-o OUTPUT] [-k KEY] [-p PUBKEY] [-H WRAPPER] [-f] [-r]"

USAGE = f"""\
usage: {USAGE_LINE}

Put a new bootloader configuration into an EEPROM image and write the image
digest file next to it (OUTPUT with its extension replaced by .sig).

Inputs and outputs:
  -c CONF     configuration to store (default boot.conf)
  -i IMAGE    EEPROM image to start from (default pieeprom.original.bin)
  -o OUTPUT   image to create (default pieeprom.bin)

Secure boot:
  -k KEY      RSA-2048 private key file; signs the configuration and stores
              the public half in the image for the bootloader to check the
              OS boot image against
  -p PUBKEY   public key file to store instead of the one derived from -k;
              mandatory together with -H
  -H WRAPPER  program that produces the signatures instead of a key file
              (called as 'WRAPPER -a rsa2048-sha256 FILE', prints hex)
  -f          also counter-sign the bootloader firmware in the image
              (SIGN_FIRMWARE=1 in the environment does the same)
  -r          with -f: counter-sign recovery.original.bin into bootcode5.bin;
              without it bootcode5.bin is a plain copy.  Only use -r once
              secure boot is already enabled on the device.
  -h, --help  show this text
"""


@dataclass
class Options:
    config: str
    src_image: str
    dst_image: str
    pem_file: str
    public_pem_file: str
    hsm_wrapper: str
    sign_firmware: bool
    sign_recovery: bool


@dataclass
class Keys:
    """What is needed to sign: a signing function and the public key to embed."""
    signer: Signer | None = None
    private_key: rsa.RSAPrivateKey | None = None
    public_key: RsaKey | None = None

    @property
    def active(self) -> bool:
        return self.public_key is not None


@dataclass
class Outputs:
    """Files to create, in the order they are replaced on disk."""
    files: list[tuple[str, bytes]] = field(default_factory=list)

    def add(self, path: str, data: bytes) -> None:
        self.files.append((path, data))


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"usage: {USAGE_LINE}\n{PROG}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, add_help=False, usage=USAGE_LINE)
    parser.add_argument("-c", dest="config", default="boot.conf")
    parser.add_argument("-i", dest="src_image", default="pieeprom.original.bin")
    parser.add_argument("-o", dest="dst_image", default="pieeprom.bin")
    parser.add_argument("-k", dest="pem_file")
    parser.add_argument("-p", dest="public_pem_file", default="")
    parser.add_argument("-H", dest="hsm_wrapper", default="")
    parser.add_argument("-f", dest="sign_firmware", action="store_true")
    parser.add_argument("-r", dest="sign_recovery", action="store_true")
    parser.add_argument("-h", "--help", dest="help", action="store_true")
    return parser


def sig_path_for(dst_image: str) -> str:
    """pieeprom.bin -> pieeprom.sig (strip the last extension of the file name)."""
    return re.sub(r"\.[^./]*$", "", dst_image) + ".sig"


def check_output_path(dst_image: str) -> str:
    """Validate -o and return the path of its digest file."""
    if not dst_image:
        raise ToolError("the output image name (-o) is empty", 2)
    if dst_image.endswith(("/", os.sep)) or os.path.isdir(dst_image):
        raise ToolError(f"output image '{dst_image}' is a directory; -o needs a file name", 2)
    sig_path = sig_path_for(dst_image)
    if os.path.abspath(sig_path) == os.path.abspath(dst_image):
        raise ToolError(f"output image '{dst_image}' would be overwritten by its own digest "
                        f"file; choose a name not ending in .sig", 2)
    if os.path.isdir(sig_path):
        raise ToolError(f"digest file '{sig_path}' for the output image is a directory")
    return sig_path


def check_options(args: argparse.Namespace) -> Options:
    if args.pem_file is not None:
        if not args.pem_file:
            raise ToolError("-k was given an empty key file name", 2)
        if not os.path.isfile(args.pem_file):
            raise ToolError(f"cannot find the private key '{args.pem_file}'", EXIT_MISSING_INPUT)
    if not os.path.isfile(args.src_image):
        raise ToolError(f"cannot find the source image '{args.src_image}'", EXIT_MISSING_INPUT)
    if not os.path.isfile(args.config):
        raise ToolError(f"cannot find the config file '{args.config}'", EXIT_MISSING_INPUT)
    if args.hsm_wrapper:
        if shutil.which(args.hsm_wrapper) is None:
            raise ToolError(f"cannot find the HSM wrapper '{args.hsm_wrapper}'", EXIT_MISSING_INPUT)
        if not args.public_pem_file:
            raise ToolError("an HSM wrapper (-H) needs the public key as well (-p public.pem)", 2)
        if not os.path.isfile(args.public_pem_file):
            raise ToolError(f"cannot find the public key '{args.public_pem_file}'", EXIT_MISSING_INPUT)
    pem = args.pem_file or ""
    opts = Options(args.config, args.src_image, args.dst_image, pem,
                   args.public_pem_file or pem, args.hsm_wrapper,
                   args.sign_firmware or os.environ.get("SIGN_FIRMWARE", "0") == "1",
                   args.sign_recovery)
    if opts.sign_firmware and not (opts.pem_file or opts.hsm_wrapper):
        raise ToolError("counter-signing the firmware (-f) needs a key (-k) or an HSM wrapper (-H)", 2)
    return opts


def load_keys(opts: Options) -> Keys:
    """Load every key up front so a bad key fails before any work is done."""
    if opts.hsm_wrapper:
        return Keys(signer=hsm_signer(opts.hsm_wrapper), public_key=load_rsa_key(opts.public_pem_file))
    if opts.pem_file:
        private = load_private_key(opts.pem_file)
        public: RsaKey = load_rsa_key(opts.public_pem_file) if opts.public_pem_file != opts.pem_file \
            else private
        return Keys(signer=key_signer(private), private_key=private, public_key=public)
    return Keys()


def customer_countersign(keys: Keys, blob: bytes) -> bytes:
    """Append a customer (key 16, version 0) BCM2712 signature trailer."""
    assert keys.signer is not None and keys.public_key is not None
    return sign_bootcode_2712(blob, keys.signer, pubkey_bin(keys.public_key),
                              keynum=CUSTOMER_KEYNUM, version=0)


def prepare_recovery(opts: Options, keys: Keys, outputs: Outputs) -> None:
    """Queue bootcode5.bin: counter-signed with -r, else a plain copy."""
    print(f"SIGN_RECOVERY: {int(opts.sign_recovery)}")
    if not opts.sign_recovery:
        print("Using unsigned recovery.bin")
        outputs.add(RECOVERY_DST, read_file(RECOVERY_SRC, "recovery image"))
        print(f"'{RECOVERY_SRC}' -> '{RECOVERY_DST}'")
        return
    # Like the script, a missing recovery.original.bin is not an error with -r.
    if os.path.isfile(RECOVERY_SRC):
        print(f"Signing {RECOVERY_SRC} as {RECOVERY_DST}")
        outputs.add(RECOVERY_DST, customer_countersign(keys, read_file(RECOVERY_SRC, "recovery image")))


def countersign_image_firmware(src_name: str, src_data: bytes, keys: Keys) -> bytes:
    """Return the image with bootcode.bin (and bootsys on A/B images) counter-signed."""
    print(f"Signing {src_name} as {SIGNED_BOOT_IMAGE}")
    eeprom = img.EepromImage(src_data, src_name)
    new_bootcode = customer_countersign(keys, eeprom.get_file(img.BOOTCODE_BIN))
    new_bootsys = None
    if img.is_ab_capable(src_data):
        new_bootsys = customer_countersign(keys, eeprom.get_file(img.BOOTSYS_BIN))
    eeprom.update_bootcode(new_bootcode)
    if new_bootsys is not None:
        eeprom.update_file(img.BOOTSYS_BIN, new_bootsys)
    return eeprom.to_bytes()


def check_firmware_signing_chip(src_name: str, src_data: bytes, from_option: bool) -> None:
    """-f counter-signs BCM2712 firmware; a BCM2711 image has nothing it applies to."""
    if len(src_data) != BCM2711_IMAGE_SIZE:
        return   # BCM2712, or a wrong size that EepromImage reports
    how = "-f" if from_option else "SIGN_FIRMWARE=1"
    raise ToolError(f"{how} is for BCM2712 (Pi 5) images; '{src_name}' is a BCM2711 (Pi 4) image "
                    f"({len(src_data) // 1024} KiB): leave out {how} (and -r)", EXIT_USAGE)


def build_timestamp(data: bytes) -> int | None:
    """BUILD_TIMESTAMP as found by ``strings | grep BUILD_TIMESTAMP | sed 's/.*=//'``."""
    matches = [run for run in re.findall(rb"[\x20-\x7e\t]{4,}", data) if b"BUILD_TIMESTAMP" in run]
    if len(matches) != 1:
        return None
    value = matches[0].rsplit(b"=", 1)[-1].strip()
    return int(value) if value.isdigit() else None


def config_signature(opts: Options, keys: Keys, src_name: str, src_data: bytes,
                     config: bytes) -> str:
    """Return the .sig text for the config (also printed, like the script does)."""
    version = build_timestamp(src_data)
    # The script's numeric test fails (and is skipped) when no single timestamp is found.
    if version is not None and version < SECURE_BOOT_MIN_VERSION:
        raise ToolError(f"{src_name} is a bootloader release from before secure-boot support "
                        f"(build {version} < {SECURE_BOOT_MIN_VERSION}); use a newer image")
    print("Signing bootloader config")
    if opts.hsm_wrapper:
        rsa_hex = run_hsm_wrapper(opts.hsm_wrapper, opts.config)
        assert keys.public_key is not None
        if not verify_pkcs1v15(keys.public_key, config, bytes.fromhex(rsa_hex)):
            raise ToolError("the HSM signature of the config does not match the public key (-p)")
        print("Verified OK")
    else:
        assert keys.private_key is not None
        rsa_hex = sign_pkcs1v15(keys.private_key, config).hex()
    return make_sig_file(config, sig_timestamp(), "", rsa_hex)


def build_eeprom(opts: Options, keys: Keys, src_name: str, src_data: bytes, config: bytes) -> bytes:
    """The final image bytes with the new config (and signature / public key)."""
    sig_text = None
    if keys.active:
        sig_text = config_signature(opts, keys, src_name, src_data, config)
        sys.stdout.write(sig_text)
    eeprom = img.EepromImage(src_data, src_name)
    eeprom.update_file(img.BOOTCONF_TXT, config)
    if sig_text is not None:
        assert keys.public_key is not None
        eeprom.update_file(img.BOOTCONF_SIG, sig_text.encode())
        eeprom.update_file(img.PUBKEY_BIN, pubkey_bin(keys.public_key))
    return eeprom.to_bytes()


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.help:
        sys.stdout.write(USAGE)
        return 0
    opts = check_options(args)
    dst_sig = check_output_path(opts.dst_image)
    keys = load_keys(opts)
    config = read_file(opts.config, "config file")
    if len(config) > img.MAX_FILE_SIZE:
        raise ToolError(f"config file '{opts.config}' is too large ({len(config)} bytes)")
    src_name = opts.src_image
    src_data = read_file(src_name, "source image")

    outputs = Outputs()
    if opts.sign_firmware:
        check_firmware_signing_chip(src_name, src_data, args.sign_firmware)
        clash = {os.path.abspath(opts.dst_image), os.path.abspath(dst_sig)} & \
            {os.path.abspath(RECOVERY_DST), os.path.abspath(SIGNED_BOOT_IMAGE)}
        if clash:
            raise ToolError(f"with -f, '{RECOVERY_DST}' and '{SIGNED_BOOT_IMAGE}' are written too; "
                            f"choose another -o", 2)
        prepare_recovery(opts, keys, outputs)
        src_data = countersign_image_firmware(src_name, src_data, keys)
        src_name = SIGNED_BOOT_IMAGE
        outputs.add(SIGNED_BOOT_IMAGE, src_data)

    new_image = build_eeprom(opts, keys, src_name, src_data, config)
    # The digest goes in before the image: a failure between the two
    # replacements is rolled back, see write_files_atomically().
    outputs.add(dst_sig, make_sig_file(new_image, sig_timestamp()).encode())
    outputs.add(opts.dst_image, new_image)
    write_files_atomically(outputs.files)
    print(f"new-image: {opts.dst_image}\nsource-image: {src_name}\nconfig: {opts.config}")
    sys.stdout.flush()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_tool(PROG, _main, argv)


if __name__ == "__main__":
    sys.exit(main())
